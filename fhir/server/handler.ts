/**
 * The ingest server: a write-only FHIR R4 REST subset over `Deno.serve`.
 *
 * | Request | Result |
 * |---|---|
 * | `GET /fhir/metadata` | 200 CapabilityStatement (no token needed) |
 * | `POST /fhir/{type}` | create: new server id (UUID); 201 + `Location`, `ETag`, `Last-Modified` |
 * | `PUT /fhir/{type}/{id}` | update-as-create: the body's id must equal `{id}`; 200 + `Location` |
 * | `POST /fhir` (Bundle `batch`) | each entry on its own; 200 `batch-response` |
 * | `POST /fhir` (Bundle `transaction`) | all entries valid or none written; 200 `transaction-response` |
 * | `POST /fhir/$import` (NDJSON) | streamed; 200 OperationOutcome with counts and `line N` issues |
 *
 * Every error is an OperationOutcome with the element path in `expression`: 400 (not FHIR JSON, wrong
 * structure, id mismatch, duplicate in a transaction), 401 (no/invalid token), 403 (client may not write
 * the type), 404 (unknown path or type), 405, 413 (body over `maxBodyBytes`), 415 (content type), 422
 * (valid JSON breaking a value rule, binding, profile or the allow-list), 429 (more `$import` requests
 * than `maxConcurrentImports` at once; `Retry-After`), 500 (sink failure, validation worker failure), 503
 * (shutting down: server.ts).
 *
 * On acceptance the server sets `meta.versionId` (a decimal number that increases with every write of
 * this server process: a clock in microseconds, not a version count, since the server keeps no store)
 * and `meta.lastUpdated` (now, UTC), then appends the resource as one NDJSON line to the sink; it answers
 * only after the sink's append resolved (durable). Concurrent appends of one type are merged into one
 * (group_commit.ts: one chunk and fsync for several requests).
 *
 * **Transaction boundary.** All entries are validated (and urn:uuid references rewritten) before any
 * write; any invalid entry rejects the whole Bundle and nothing is written. The writes are then one
 * `sink.append` per resource type. The sink offers no multi-type atomicity, so a sink failure in the
 * middle answers 500 while types appended before it stay durable (the 500 OperationOutcome says so);
 * a client retrying with PUT (client ids) or conditional identifiers makes that retry idempotent.
 *
 * **Validation workers.** With `validationWorkers` N > 0 resources are checked (prepare.ts) in a pool of N
 * workers (validation_pool.ts): `$import` sends batches of lines and consumes the results in line order
 * (line numbers, issue order, append order and versionIds exactly as inline), with at most 2·N batches of
 * a request in flight, so reading the body waits for validation (bounded memory for any body); the
 * entries of a Bundle go in chunks; a single resource (POST, PUT, one-entry Bundle) is checked inline,
 * which measured as fast and cheaper. A failed worker answers 500 for the request whose batch it held; the
 * worker is replaced. N = 0 checks everything inline, on the main thread. `close()` stops the pool.
 *
 * @module
 */

import { checkConditions, entryConditions, headerConditions } from "./conditional.ts";
import type { Bundle, BundleEntry, OperationOutcome } from "@medplum/fhirtypes";
import { loadR4Definitions } from "../definitions.ts";
import { DEFAULT_ALLOWED_RESOURCE_TYPES, FHIR_ID_REGEX } from "../profile.ts";
import { Authenticator, type Client, type ClientConfig } from "./auth.ts";
import { parseJsonBody, readBodyLimited, splitLines } from "./body.ts";
import { capabilityStatement } from "./capability.ts";
import { HttpError, IngestConfigError, issue, type ServerIssue, ValidationWorkerError } from "./errors.ts";
import { type LineBatch, LineBatcher } from "./line_batch.ts";
import {
  isPrepared,
  type LineResult,
  type Prepared,
  prepareItem,
  prepareLines,
  type PrepareScope,
  type Rejected,
  type ResourceItem,
} from "./prepare.ts";
import { GroupCommitSink } from "./group_commit.ts";
import type { IngestSink } from "./sink.ts";
import { ValidationPool } from "./validation_pool.ts";
import { nextVersion, reserveVersions } from "./version_clock.ts";

/** Options of createIngestHandler. */
export interface IngestOptions {
  /** Where accepted resources go (durable when append resolves). */
  sink: IngestSink;
  /** Bearer token → client name (or {name, types} to restrict the types it may write: else 403). */
  clients: Record<string, string | ClientConfig>;
  /** Largest JSON body (single resource or Bundle), bytes; larger → 413. */
  maxBodyBytes: number;
  /** Resource types accepted (default DEFAULT_ALLOWED_RESOURCE_TYPES). */
  allowedTypes?: readonly string[];
  /** Longest NDJSON line of $import, bytes (default maxBodyBytes); longer lines are rejected, not buffered. */
  maxLineBytes?: number;
  /** $import: lines per sink.append (default 500). */
  importBatchLines?: number;
  /** $import: buffered bytes per type that force an append (default 4 MiB). */
  importBatchBytes?: number;
  /** $import: at most this many per-line issues in the outcome (default 1000; the rest are counted). */
  maxImportIssues?: number;
  /** Largest entries in a Bundle (default 10 000). */
  maxBundleEntries?: number;
  /**
   * `$import` requests served at once (default 4); one more gets 429 `throttled` with `Retry-After`. Each
   * holds its validation batches and per-type append buffers, so this bounds the server's import memory.
   */
  maxConcurrentImports?: number;
  /**
   * Called with unexpected errors (500s) and validation worker failures. Receives the error only; default:
   * logs its name (and the message of a ValidationWorkerError, which names the worker, never data).
   */
  onError?: (error: unknown) => void;
  /**
   * Validation workers (default 0: validate inline on the main thread). N > 0 starts a pool of N workers
   * before the handler is returned; `close()` stops it.
   */
  validationWorkers?: number;
  /** $import: lines per validation batch (default 200). */
  validationBatchLines?: number;
  /** $import: bytes that make a validation batch full (default 1 MiB). */
  validationBatchBytes?: number;
  /** A validation job running longer than this marks its worker as hung: 500, replaced (default 60 s). */
  validationTimeoutMs?: number;
  /** Module of the validation workers (default validation_worker.ts; tests use one that fails on demand). */
  validationWorkerUrl?: string | URL;
}

/** A request handler for Deno.serve, with `close()` to stop its validation workers (after serving). */
export type IngestHandler = ((req: Request) => Promise<Response>) & {
  /** Stops the validation workers; requests still validating get 500. Idempotent. */
  close(): Promise<void>;
};

const FHIR_JSON = "application/fhir+json; charset=utf-8";
const JSON_TYPES = new Set(["application/fhir+json", "application/json", "application/json+fhir"]);
const NDJSON_TYPES = new Set(["application/fhir+ndjson", "application/ndjson", "application/x-ndjson"]);

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** OperationOutcome of server issues (at least one issue). */
export function outcome(issues: readonly ServerIssue[]): OperationOutcome {
  const list = issues.length
    ? issues
    : [{ severity: "information" as const, code: "informational" as const, diagnostics: "No issues" }];
  return {
    resourceType: "OperationOutcome",
    issue: list.map((i) => ({
      severity: i.severity,
      code: i.code,
      details: { text: i.diagnostics },
      diagnostics: i.diagnostics,
      ...(i.expression?.length ? { expression: [...i.expression] } : {}),
    })),
  } as OperationOutcome;
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": FHIR_JSON, ...headers } });
}

function errorResponse(e: HttpError): Response {
  return json(e.status, outcome(e.issues), e.headers);
}

function mediaType(req: Request): string {
  return (req.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
}

function requireJson(req: Request): void {
  const t = mediaType(req);
  if (!JSON_TYPES.has(t)) {
    throw HttpError.of(415, "not-supported", "Content-Type must be application/fhir+json");
  }
}

/** Most resources of a Bundle per validation job. */
const BUNDLE_CHUNK = 64;

/**
 * Creates the request handler; throws IngestConfigError for bad options, ValidationWorkerError `start`
 * when the validation workers cannot start. With validation workers it resolves once they are ready.
 */
export async function createIngestHandler(options: IngestOptions): Promise<IngestHandler> {
  const allowedTypes = options.allowedTypes ?? DEFAULT_ALLOWED_RESOURCE_TYPES;
  if (!(options.maxBodyBytes > 0)) throw new IngestConfigError("maxBodyBytes must be > 0");
  const workers = options.validationWorkers ?? 0;
  if (!Number.isInteger(workers) || workers < 0) {
    throw new IngestConfigError("validationWorkers must be an integer ≥ 0");
  }
  const maxConcurrentImports = options.maxConcurrentImports ?? 4;
  if (!Number.isInteger(maxConcurrentImports) || maxConcurrentImports < 1) {
    throw new IngestConfigError("maxConcurrentImports must be a positive integer");
  }
  const auth = await Authenticator.create(options.clients);
  const onError = options.onError ?? defaultOnError;
  // The workers load the definitions while this thread does (single resources are checked here).
  const starting = workers > 0
    ? ValidationPool.start({
      size: workers,
      allowedTypes,
      workerUrl: options.validationWorkerUrl,
      jobTimeoutMs: options.validationTimeoutMs,
      onError,
    })
    : undefined;
  starting?.catch(() => {}); // awaited below
  let resourceTypes: ReadonlySet<string>;
  try {
    resourceTypes = loadR4Definitions().resourceTypes;
    for (const t of allowedTypes) {
      if (!resourceTypes.has(t)) throw new IngestConfigError(`not an R4 resource type: ${t}`);
    }
  } catch (e) {
    (await starting?.catch(() => undefined))?.close();
    throw e;
  }
  const pool = await starting;
  const allowed = new Set(allowedTypes);
  const scope: PrepareScope = { resourceTypes, allowed };
  const batchBytes = options.importBatchBytes ?? 4 * 1024 * 1024;
  const sink = new GroupCommitSink(options.sink, batchBytes);
  const maxLineBytes = options.maxLineBytes ?? options.maxBodyBytes;
  const batchLines = options.importBatchLines ?? 500;
  const maxImportIssues = options.maxImportIssues ?? 1000;
  const maxBundleEntries = options.maxBundleEntries ?? 10_000;
  const validationBatchLines = options.validationBatchLines ?? 200;
  const validationBatchBytes = options.validationBatchBytes ?? 1024 * 1024;
  /** $import batches of one request being validated at once (bounds its memory). */
  const importInFlight = pool ? 2 * pool.size : 1;
  let importsRunning = 0;

  /** A validation worker failure as a 500 (the pool has reported crashes and timeouts already). */
  function workerFailure(e: unknown, stored: string): unknown {
    if (!(e instanceof ValidationWorkerError)) return e;
    if (e.failure === "closed") onError(e);
    return HttpError.of(500, "exception", `Validation failed unexpectedly (server side); ${stored}`);
  }

  /**
   * Checks resources, results in order: several in the pool (in chunks), one inline — measured, a trip to
   * a worker costs about half of what validating one resource does and gains no throughput for single
   * requests (README.md).
   */
  async function prepareAll(items: ResourceItem[]): Promise<(Prepared | Rejected)[]> {
    if (!pool || items.length < 2) return items.map((item) => prepareItem(scope, item));
    const chunk = Math.min(BUNDLE_CHUNK, Math.max(1, Math.ceil(items.length / pool.size)));
    const jobs: Promise<(Prepared | Rejected)[]>[] = [];
    for (let i = 0; i < items.length; i += chunk) jobs.push(pool.items(items.slice(i, i + chunk)));
    try {
      return (await Promise.all(jobs)).flat();
    } catch (e) {
      throw workerFailure(e, "nothing of this request was stored");
    }
  }

  function writeHeaders(base: string, p: Prepared): Record<string, string> {
    return {
      location: `${base}/${p.type}/${p.id}/_history/${p.versionId}`,
      etag: `W/"${p.versionId}"`,
      "last-modified": new Date(p.lastUpdated).toUTCString(),
    };
  }

  function preferReturn(
    req: Request,
    p: Prepared,
    status: number,
    headers: Record<string, string>,
  ): Response {
    const prefer = req.headers.get("prefer") ?? "";
    if (/return=minimal/.test(prefer)) return new Response(null, { status, headers });
    if (/return=OperationOutcome/.test(prefer)) {
      return json(
        status,
        outcome([{ severity: "information", code: "informational", diagnostics: "Stored" }]),
        headers,
      );
    }
    return new Response(p.text, { status, headers: { "content-type": FHIR_JSON, ...headers } });
  }

  async function single(req: Request, client: Client, base: string, type: string, id?: string) {
    if (!resourceTypes.has(type)) {
      throw HttpError.of(404, "not-found", "Unknown resource type in the URL");
    }
    if (id !== undefined && !FHIR_ID_REGEX.test(id)) {
      throw HttpError.of(400, "value", "The id in the URL must match [A-Za-z0-9\\-\\.]{1,64}", [
        `${type}.id`,
      ]);
    }
    const conditions = headerConditions(req);
    requireJson(req);
    const bytes = await readBodyLimited(req, options.maxBodyBytes);
    if (conditions.length > 0) {
      const refusal = checkConditions(conditions, id === undefined, parsedOrUndefined(bytes));
      if (refusal) throw new HttpError(400, [refusal]);
    }
    const item: ResourceItem = {
      json: bytes,
      target: { type, id, clientTypes: client.types },
      stamp: { versionId: nextVersion(), lastUpdated: new Date().toISOString() },
    };
    const [r] = await prepareAll([item]);
    if (!isPrepared(r)) throw new HttpError(r.status, r.issues);
    await append(r.type, [r.text]);
    return preferReturn(req, r, id === undefined ? 201 : 200, writeHeaders(base, r));
  }

  async function append(type: string, lines: string[]): Promise<void> {
    try {
      await sink.append(type, lines);
    } catch (e) {
      onError(e);
      throw HttpError.of(500, "exception", "The resource could not be stored; nothing was acknowledged");
    }
  }

  async function bundle(req: Request, client: Client, base: string): Promise<Response> {
    requireJson(req);
    const body = parseJsonBody(await readBodyLimited(req, options.maxBodyBytes));
    if (!isObj(body) || body.resourceType !== "Bundle") {
      throw HttpError.of(400, "structure", "POST /fhir expects a Bundle", ["resourceType"]);
    }
    const btype = body.type;
    if (btype !== "batch" && btype !== "transaction") {
      throw HttpError.of(400, "value", "Bundle.type must be batch or transaction", ["Bundle.type"]);
    }
    const entries = body.entry === undefined ? [] : body.entry;
    if (!Array.isArray(entries)) {
      throw HttpError.of(400, "structure", "Bundle.entry must be an array", ["Bundle.entry"]);
    }
    if (entries.length > maxBundleEntries) {
      throw HttpError.of(413, "too-long", `A Bundle may have at most ${maxBundleEntries} entries`, [
        "Bundle.entry",
      ]);
    }
    const tx = btype === "transaction";
    // Pass 1: shape of each entry, target, duplicates; the urn:uuid → Type/id map (transaction).
    interface Target {
      status?: number;
      issues?: ServerIssue[];
      type?: string;
      id?: string; // PUT id, or assigned id of a POST
      resource?: unknown;
    }
    const targets: Target[] = [];
    const seenFullUrl = new Map<string, number>();
    const seenTarget = new Map<string, number>();
    const urnMap = new Map<string, string>();
    entries.forEach((e: unknown, i: number) => {
      const p = `Bundle.entry[${i}]`;
      const bad = (status: number, code: ServerIssue["code"], d: string, x: string): void => {
        targets.push({ status, issues: [issue(code, d, [x])] });
      };
      if (!isObj(e)) return bad(400, "structure", "An entry must be an object", p);
      const rq = e.request;
      if (!isObj(rq)) return bad(400, "required", "entry.request is required (bdl-3)", `${p}.request`);
      const method = rq.method;
      const url = typeof rq.url === "string" ? rq.url.replace(/^\/+/, "").split("?")[0] : undefined;
      if (method !== "POST" && method !== "PUT") {
        return bad(405, "not-supported", "Only POST and PUT entries are supported", `${p}.request.method`);
      }
      if (!url) return bad(400, "required", "entry.request.url is required", `${p}.request.url`);
      const refusal = checkConditions(entryConditions(rq, p), method === "POST", e.resource);
      if (refusal) {
        targets.push({ status: 400, issues: [refusal] });
        return;
      }
      if (typeof e.fullUrl === "string") {
        const prev = seenFullUrl.get(e.fullUrl);
        if (prev !== undefined) {
          return bad(400, "duplicate", `fullUrl repeats that of entry ${prev} (bdl-7)`, `${p}.fullUrl`);
        }
        seenFullUrl.set(e.fullUrl, i);
      }
      const parts = url.split("/");
      const type = parts[0];
      if (!resourceTypes.has(type)) {
        return bad(404, "not-found", "Unknown resource type in request.url", `${p}.request.url`);
      }
      let id: string;
      if (method === "POST") {
        if (parts.length !== 1) {
          return bad(400, "value", "A POST url is the resource type", `${p}.request.url`);
        }
        id = crypto.randomUUID();
      } else {
        if (parts.length !== 2 || !FHIR_ID_REGEX.test(parts[1])) {
          return bad(400, "value", "A PUT url is Type/id with a valid id", `${p}.request.url`);
        }
        id = parts[1];
        const prev = seenTarget.get(url);
        if (prev !== undefined) {
          return bad(
            400,
            "duplicate",
            `Entry ${prev} already writes the same resource (${type} id)`,
            `${p}.request.url`,
          );
        }
        seenTarget.set(url, i);
      }
      if (e.resource === undefined) {
        return bad(400, "required", "entry.resource is required", `${p}.resource`);
      }
      if (tx && typeof e.fullUrl === "string" && e.fullUrl.startsWith("urn:uuid:")) {
        urnMap.set(e.fullUrl, `${type}/${id}`);
      }
      targets.push({ type, id, resource: e.resource });
    });
    // Pass 2: validate each resource (a POST gets the id other entries' urn:uuid references now name).
    const items: ResourceItem[] = [];
    const itemOf: number[] = [];
    const versionBase = reserveVersions(targets.length);
    const lastUpdated = new Date().toISOString();
    targets.forEach((t, i) => {
      if (t.issues) return;
      const post = entries[i].request.method === "POST";
      itemOf[i] = items.length;
      items.push({
        value: urnMap.size > 0 ? rewriteRefs(t.resource, urnMap) : t.resource,
        target: {
          type: t.type,
          id: post ? undefined : t.id,
          newId: post ? t.id : undefined,
          prefix: `Bundle.entry[${i}].resource`,
          clientTypes: client.types,
        },
        stamp: { versionId: String(versionBase + i), lastUpdated },
      });
    });
    const prepared = await prepareAll(items);
    const results: (Rejected | Prepared)[] = targets.map((t, i) =>
      t.issues ? { status: t.status!, issues: t.issues } : prepared[itemOf[i]]
    );
    if (tx) {
      const failed = results.filter((r): r is Rejected => !isPrepared(r));
      if (failed.length > 0) {
        const status = failed.some((f) => f.status === 400) ? 400 : failed[0].status;
        throw new HttpError(status, failed.flatMap((f) => f.issues));
      }
    }
    // Writes: one append per type.
    const byType = new Map<string, number[]>();
    results.forEach((r, i) => {
      if (isPrepared(r)) {
        let a = byType.get(r.type);
        if (!a) byType.set(r.type, a = []);
        a.push(i);
      }
    });
    const failedWrite = new Set<number>();
    let written = 0;
    for (const [type, idx] of byType) {
      try {
        await sink.append(type, idx.map((i) => (results[i] as Prepared).text));
        written += idx.length;
      } catch (e) {
        onError(e);
        if (tx) {
          throw HttpError.of(
            500,
            "exception",
            `The transaction could not be stored completely: ${written} of ${targets.length} entries ` +
              "(whole resource types) were stored before the failure; retry the transaction",
          );
        }
        for (const i of idx) failedWrite.add(i);
      }
    }
    const out: BundleEntry[] = results.map((r, i) => {
      if (failedWrite.has(i)) {
        const oo = outcome([issue("exception", "The resource could not be stored")]);
        return { response: { status: "500 Internal Server Error", outcome: oo } };
      }
      if (!isPrepared(r)) {
        return {
          response: { status: `${r.status} ${STATUS_TEXT[r.status] ?? "Error"}`, outcome: outcome(r.issues) },
        };
      }
      const h = writeHeaders(base, r);
      const created = entries[i].request.method === "POST";
      return {
        fullUrl: `${base}/${r.type}/${r.id}`,
        response: {
          status: created ? "201 Created" : "200 OK",
          location: `${r.type}/${r.id}/_history/${r.versionId}`,
          etag: h.etag,
          lastModified: r.lastUpdated,
        },
      };
    });
    const resp: Bundle = {
      resourceType: "Bundle",
      type: tx ? "transaction-response" : "batch-response",
      entry: out,
    };
    return json(200, resp);
  }

  async function ndjsonImport(req: Request, client: Client): Promise<Response> {
    const t = mediaType(req);
    if (!NDJSON_TYPES.has(t)) {
      throw HttpError.of(415, "not-supported", "Content-Type must be application/fhir+ndjson");
    }
    if (!req.body) throw HttpError.of(400, "structure", "The request body is empty");
    const pending = new Map<string, { lines: string[]; bytes: number }>();
    let accepted = 0;
    let rejected = 0;
    let blank = 0;
    const issues: ServerIssue[] = [];
    const reject = (lineNo: number, is: ServerIssue[]): void => {
      rejected++;
      for (const i of is) {
        if (issues.length >= maxImportIssues) return;
        issues.push({
          ...i,
          expression: [`line ${lineNo}`, ...(i.expression ?? [])],
          diagnostics: `line ${lineNo}: ${i.diagnostics}`,
        });
      }
    };
    const flush = async (type: string): Promise<void> => {
      const p = pending.get(type);
      if (!p || p.lines.length === 0) return;
      pending.delete(type);
      try {
        await sink.append(type, p.lines);
      } catch (e) {
        onError(e);
        throw HttpError.of(
          500,
          "exception",
          `Storing failed; ${accepted} resources of earlier batches were stored, the rest of the body was not`,
        );
      }
      accepted += p.lines.length;
    };
    // Batches being validated, in line order; each is consumed (results → outcome, sink) in that order.
    const inFlight: { batch: LineBatch; results: Promise<LineResult[]> }[] = [];
    const dispatch = (): void => {
      const batch = batcher.take(client.types);
      let results: Promise<LineResult[]>;
      if (pool) {
        results = pool.lines(batch.job);
        results.catch(() => {}); // awaited in order below; one after a failure is never awaited
      } else results = Promise.resolve(prepareLines(scope, batch.job));
      inFlight.push({ batch, results });
    };
    const consume = async (): Promise<void> => {
      const { batch, results } = inFlight.shift()!;
      let rs: LineResult[];
      try {
        rs = await results;
      } catch (e) {
        throw workerFailure(
          e,
          `${accepted} resources of earlier batches were stored, the rest of the body was not`,
        );
      }
      for (let i = 0; i < rs.length; i++) {
        const r = rs[i];
        const lineNo = batch.firstLineNo + i;
        if (r.k === "ok") {
          let p = pending.get(r.type);
          if (!p) pending.set(r.type, p = { lines: [], bytes: 0 });
          p.lines.push(r.text);
          p.bytes += r.text.length;
          if (p.lines.length >= batchLines || p.bytes >= batchBytes) await flush(r.type);
        } else if (r.k === "bad") reject(lineNo, r.issues);
        else if (r.k === "blank") blank++;
        else reject(lineNo, [issue("too-long", `The line is longer than ${maxLineBytes} bytes`)]);
      }
    };
    const batcher = new LineBatcher(validationBatchLines, validationBatchBytes);
    for await (const line of splitLines(req.body, maxLineBytes)) {
      batcher.add(line);
      if (!batcher.full) continue;
      dispatch();
      while (inFlight.length >= importInFlight) await consume();
    }
    if (batcher.size > 0) dispatch();
    while (inFlight.length > 0) await consume();
    for (const type of [...pending.keys()]) await flush(type);
    const summary: ServerIssue = {
      severity: "information",
      code: "informational",
      diagnostics: `accepted ${accepted}, rejected ${rejected}` + (blank ? `, blank lines ${blank}` : "") +
        (rejected > 0 && issues.length >= maxImportIssues ? ` (first ${maxImportIssues} issues listed)` : ""),
    };
    return json(200, outcome([summary, ...issues]), {
      "x-accepted-count": String(accepted),
      "x-rejected-count": String(rejected),
    });
  }

  const handler = async (req: Request): Promise<Response> => {
    try {
      const url = new URL(req.url);
      const path = url.pathname.replace(/\/+$/, "");
      const base = `${url.origin}/fhir`;
      if (path !== "/fhir" && !path.startsWith("/fhir/")) throw HttpError.of(404, "not-found", "Not found");
      const segs = path.split("/").slice(2).map(decodeURIComponent);
      if (segs.length === 1 && segs[0] === "metadata") {
        if (req.method !== "GET" && req.method !== "HEAD") throw methodNotAllowed("GET");
        return json(200, capabilityStatement(allowedTypes, base));
      }
      const client = await auth.authenticate(req);
      if (segs.length === 0) {
        if (req.method !== "POST") throw methodNotAllowed("POST");
        return await bundle(req, client, base);
      }
      if (segs.length === 1 && segs[0] === "$import") {
        if (req.method !== "POST") throw methodNotAllowed("POST");
        if (importsRunning >= maxConcurrentImports) {
          throw HttpError.of(
            429,
            "throttled",
            `${maxConcurrentImports} $import requests are running; send this one again later`,
            undefined,
            { "retry-after": "5" },
          );
        }
        importsRunning++;
        try {
          return await ndjsonImport(req, client);
        } finally {
          importsRunning--;
        }
      }
      if (segs.length === 1) {
        if (req.method !== "POST") throw methodNotAllowed("POST");
        return await single(req, client, base, segs[0]);
      }
      if (segs.length === 2) {
        if (req.method !== "PUT") throw methodNotAllowed("PUT");
        return await single(req, client, base, segs[0], segs[1]);
      }
      throw HttpError.of(404, "not-found", "Not found");
    } catch (e) {
      if (req.body && !req.bodyUsed) await req.body.cancel().catch(() => {});
      if (e instanceof HttpError) return errorResponse(e);
      onError(e);
      return errorResponse(HttpError.of(500, "exception", "Internal error"));
    }
  };
  return Object.assign(handler, {
    close: (): Promise<void> => {
      pool?.close();
      return Promise.resolve();
    },
  });
}

function defaultOnError(e: unknown): void {
  if (e instanceof ValidationWorkerError) console.error(`ingest: ${e.message}`);
  else console.error(`ingest: internal error (${e instanceof Error ? e.name : typeof e})`);
}

/** The body as JSON for checking a condition, or undefined (validation then reports what is wrong). */
function parsedOrUndefined(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return undefined;
  }
}

function methodNotAllowed(allow: string): HttpError {
  return HttpError.of(405, "not-supported", `Method not allowed here (allowed: ${allow})`, undefined, {
    allow,
  });
}

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  422: "Unprocessable Entity",
  429: "Too Many Requests",
};

/** Replaces `reference` values found in `map` (urn:uuid → Type/id), deep, returning a copy. */
function rewriteRefs(v: unknown, map: Map<string, string>): unknown {
  if (Array.isArray(v)) return v.map((x) => rewriteRefs(x, map));
  if (!isObj(v)) return v;
  const out: Obj = {};
  for (const [k, x] of Object.entries(v)) {
    out[k] = k === "reference" && typeof x === "string" && map.has(x) ? map.get(x) : rewriteRefs(x, map);
  }
  return out;
}
