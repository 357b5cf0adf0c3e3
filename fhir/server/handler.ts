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
 * (valid JSON breaking a value rule, binding, profile or the allow-list), 500 (sink failure).
 *
 * On acceptance the server sets `meta.versionId` (a decimal number that increases with every write of
 * this server process: a clock in microseconds, not a version count, since the server keeps no store)
 * and `meta.lastUpdated` (now, UTC), then appends the resource as one NDJSON line to the sink; it answers
 * only after the sink's append resolved (durable).
 *
 * **Transaction boundary.** All entries are validated (and urn:uuid references rewritten) before any
 * write; any invalid entry rejects the whole Bundle and nothing is written. The writes are then one
 * `sink.append` per resource type. The sink offers no multi-type atomicity, so a sink failure in the
 * middle answers 500 while types appended before it stay durable (the 500 OperationOutcome says so);
 * a client retrying with PUT (client ids) or conditional identifiers makes that retry idempotent.
 *
 * @module
 */

import type { Bundle, BundleEntry, OperationOutcome } from "@medplum/fhirtypes";
import { loadR4Definitions } from "../definitions.ts";
import { DEFAULT_ALLOWED_RESOURCE_TYPES, FHIR_ID_REGEX } from "../profile.ts";
import { httpStatusForIssues, isValid, validateResource } from "../validate.ts";
import { Authenticator, type Client, type ClientConfig, mayWrite } from "./auth.ts";
import { type NdjsonLine, parseJsonBody, readBodyLimited, splitLines } from "./body.ts";
import { capabilityStatement } from "./capability.ts";
import { HttpError, IngestConfigError, issue, type ServerIssue } from "./errors.ts";
import type { IngestSink } from "./sink.ts";

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
  /** Called with unexpected errors (500s). Receives the error only; default: logs its name. */
  onError?: (error: unknown) => void;
}

/** A request handler for Deno.serve. */
export type IngestHandler = (req: Request) => Promise<Response>;

const FHIR_JSON = "application/fhir+json; charset=utf-8";
const JSON_TYPES = new Set(["application/fhir+json", "application/json", "application/json+fhir"]);
const NDJSON_TYPES = new Set(["application/fhir+ndjson", "application/ndjson", "application/x-ndjson"]);

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

let lastVersion = 0;
/** A versionId that increases with every write of this process (microseconds since the epoch). */
function nextVersion(): string {
  const now = Date.now() * 1000;
  lastVersion = now > lastVersion ? now : lastVersion + 1;
  return String(lastVersion);
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

/** The result of checking one resource for writing. */
interface Prepared {
  type: string;
  id: string;
  versionId: string;
  lastUpdated: string;
  resource: Obj;
}

/** Creates the request handler; throws IngestConfigError for bad options. */
export async function createIngestHandler(options: IngestOptions): Promise<IngestHandler> {
  const defs = loadR4Definitions();
  const allowedTypes = options.allowedTypes ?? DEFAULT_ALLOWED_RESOURCE_TYPES;
  for (const t of allowedTypes) {
    if (!defs.resourceTypes.has(t)) throw new IngestConfigError(`not an R4 resource type: ${t}`);
  }
  if (!(options.maxBodyBytes > 0)) throw new IngestConfigError("maxBodyBytes must be > 0");
  const allowed = new Set(allowedTypes);
  const auth = await Authenticator.create(options.clients);
  const sink = options.sink;
  const maxLineBytes = options.maxLineBytes ?? options.maxBodyBytes;
  const batchLines = options.importBatchLines ?? 500;
  const batchBytes = options.importBatchBytes ?? 4 * 1024 * 1024;
  const maxImportIssues = options.maxImportIssues ?? 1000;
  const maxBundleEntries = options.maxBundleEntries ?? 10_000;
  const onError = options.onError ??
    ((e: unknown) => console.error(`ingest: internal error (${e instanceof Error ? e.name : typeof e})`));
  const validateOpts = { allowedResourceTypes: allowed };

  /**
   * Validates a resource for writing as `type` (id given for update, else a new UUID) and stamps meta.
   * Returns issues (with `prefix` replacing the resource type at the start of expressions) or the result.
   */
  function prepare(
    client: Client,
    body: unknown,
    type: string | undefined,
    id: string | undefined,
    prefix: string | undefined,
  ): { status: number; issues: ServerIssue[] } | Prepared {
    const rebase = (i: ServerIssue): ServerIssue => {
      if (!prefix || !i.expression) return i;
      return {
        ...i,
        expression: i.expression.map((x) => {
          const dot = x.indexOf(".");
          return dot > 0 && /^[A-Z]/.test(x) ? prefix + x.slice(dot) : `${prefix}.${x}`;
        }),
      };
    };
    const fail = (status: number, issues: ServerIssue[]) => ({ status, issues: issues.map(rebase) });
    if (!isObj(body)) return fail(400, [issue("structure", "A resource must be a JSON object")]);
    const rt = body.resourceType;
    if (type !== undefined && typeof rt === "string" && rt !== type && defs.resourceTypes.has(rt)) {
      return fail(400, [
        issue("invalid", `resourceType does not match the type of the URL (${type})`, ["resourceType"]),
      ]);
    }
    if (typeof rt === "string" && allowed.has(rt) && !mayWrite(client, rt)) {
      return fail(403, [issue("forbidden", `This client may not write ${rt} resources`, ["resourceType"])]);
    }
    const resource: Obj = { ...body };
    if (id === undefined) {
      resource.id = crypto.randomUUID();
    } else if (body.id === undefined) {
      return fail(400, [
        issue("required", `${String(rt)}.id is required for an update`, [`${String(rt)}.id`]),
      ]);
    } else if (body.id !== id) {
      return fail(400, [
        issue("invalid", `${String(rt)}.id does not match the id of the URL`, [`${String(rt)}.id`]),
      ]);
    }
    const issues = validateResource(resource, validateOpts);
    if (!isValid(issues)) {
      return fail(httpStatusForIssues(issues), issues.filter((i) => i.severity !== "information"));
    }
    const versionId = nextVersion();
    const lastUpdated = new Date().toISOString();
    resource.meta = { ...(isObj(body.meta) ? body.meta : {}), versionId, lastUpdated };
    return { type: rt as string, id: resource.id as string, versionId, lastUpdated, resource };
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
    return json(status, p.resource, headers);
  }

  async function single(req: Request, client: Client, base: string, type: string, id?: string) {
    if (!defs.resourceTypes.has(type)) {
      throw HttpError.of(404, "not-found", "Unknown resource type in the URL");
    }
    if (id !== undefined && !FHIR_ID_REGEX.test(id)) {
      throw HttpError.of(400, "value", "The id in the URL must match [A-Za-z0-9\\-\\.]{1,64}", [
        `${type}.id`,
      ]);
    }
    requireJson(req);
    const body = parseJsonBody(await readBodyLimited(req, options.maxBodyBytes));
    const r = prepare(client, body, type, id, undefined);
    if (!("resource" in r)) throw new HttpError(r.status, r.issues);
    await append(r.type, [JSON.stringify(r.resource)]);
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
      if (typeof e.fullUrl === "string") {
        const prev = seenFullUrl.get(e.fullUrl);
        if (prev !== undefined) {
          return bad(400, "duplicate", `fullUrl repeats that of entry ${prev} (bdl-7)`, `${p}.fullUrl`);
        }
        seenFullUrl.set(e.fullUrl, i);
      }
      const parts = url.split("/");
      const type = parts[0];
      if (!defs.resourceTypes.has(type)) {
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
    // Pass 2: validate each resource.
    const results: ({ status: number; issues: ServerIssue[] } | Prepared)[] = targets.map((t, i) => {
      if (t.issues) return { status: t.status!, issues: t.issues };
      let res = t.resource;
      if (urnMap.size > 0) res = rewriteRefs(res, urnMap);
      if (isObj(res) && entries[i].request.method === "POST") res = { ...res, id: undefined };
      const method = entries[i].request.method as string;
      const r = prepare(
        client,
        res,
        t.type,
        method === "PUT" ? t.id : undefined,
        `Bundle.entry[${i}].resource`,
      );
      if ("resource" in r && method === "POST") {
        r.resource.id = t.id; // the id other entries' urn:uuid references were rewritten to
        r.id = t.id!;
      }
      return r;
    });
    if (tx) {
      const failed = results.filter((r): r is { status: number; issues: ServerIssue[] } =>
        !("resource" in r)
      );
      if (failed.length > 0) {
        const status = failed.some((f) => f.status === 400) ? 400 : failed[0].status;
        throw new HttpError(status, failed.flatMap((f) => f.issues));
      }
    }
    // Writes: one append per type.
    const byType = new Map<string, number[]>();
    results.forEach((r, i) => {
      if ("resource" in r) {
        let a = byType.get(r.type);
        if (!a) byType.set(r.type, a = []);
        a.push(i);
      }
    });
    const failedWrite = new Set<number>();
    let written = 0;
    for (const [type, idx] of byType) {
      try {
        await sink.append(type, idx.map((i) => JSON.stringify((results[i] as Prepared).resource)));
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
      if (!("resource" in r)) {
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
    const utf8 = new TextDecoder("utf-8", { fatal: true });
    let line: NdjsonLine;
    for await (line of splitLines(req.body, maxLineBytes)) {
      if (line.tooLong !== undefined) {
        reject(line.lineNo, [issue("too-long", `The line is longer than ${maxLineBytes} bytes`)]);
        continue;
      }
      if (line.bytes.length === 0 || (line.bytes.length < 8 && utf8.decode(line.bytes).trim() === "")) {
        blank++;
        continue;
      }
      let value: unknown;
      try {
        value = JSON.parse(utf8.decode(line.bytes));
      } catch {
        reject(line.lineNo, [issue("structure", "The line is not valid UTF-8 JSON")]);
        continue;
      }
      const r = prepare(
        client,
        value,
        undefined,
        isObj(value) && typeof value.id === "string" ? value.id : undefined,
        undefined,
      );
      if (!("resource" in r)) {
        reject(line.lineNo, r.issues);
        continue;
      }
      const text = JSON.stringify(r.resource);
      let p = pending.get(r.type);
      if (!p) pending.set(r.type, p = { lines: [], bytes: 0 });
      p.lines.push(text);
      p.bytes += text.length;
      if (p.lines.length >= batchLines || p.bytes >= batchBytes) await flush(r.type);
    }
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

  return async (req: Request): Promise<Response> => {
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
        return await ndjsonImport(req, client);
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

/** Options of startIngestServer. */
export interface StartOptions extends IngestOptions {
  /** Port (0: any free port). */
  port: number;
  /** Interface (default 127.0.0.1). */
  hostname?: string;
  /** Aborts the server. */
  signal?: AbortSignal;
}

/** Starts the server with Deno.serve; returns the server (its `addr` has the port). */
export async function startIngestServer(options: StartOptions): Promise<Deno.HttpServer<Deno.NetAddr>> {
  const handler = await createIngestHandler(options);
  return Deno.serve({
    port: options.port,
    hostname: options.hostname ?? "127.0.0.1",
    signal: options.signal,
    onListen: () => {},
  }, handler);
}
