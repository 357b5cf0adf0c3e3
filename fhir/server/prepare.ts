/**
 * Checking resources for writing: validation (fhir/validate.ts), the checks of the URL/Bundle target, the
 * client's type permission, the id and `meta` stamp, and serialisation of the accepted resource as its
 * NDJSON line. The same functions run inline in the request handler (0 validation workers) and inside the
 * validation workers (validation_worker.ts), so both give identical results; they are synchronous and pure
 * except for new UUIDs.
 *
 * @module
 */

import { httpStatusForIssues, isValid, validateResource } from "../validate.ts";
import { parseJsonBody } from "./body.ts";
import { describeJsonError } from "./json_error.ts";
import { HttpError, issue, type ServerIssue } from "./errors.ts";

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** What the checks need of the server's configuration (fixed for the server's life). */
export interface PrepareScope {
  /** Concrete R4 resource types. */
  readonly resourceTypes: ReadonlySet<string>;
  /** Resource types the server accepts. */
  readonly allowed: ReadonlySet<string>;
}

/** Where a resource is to be written and by whom. */
export interface WriteTarget {
  /** The type of the URL (`POST /fhir/{type}`, Bundle request.url); undefined for `$import` lines. */
  type?: string;
  /** Update (PUT, or `$import` line with an id): the body's id must equal it. Undefined: create. */
  id?: string;
  /** Create: the new id (default a random UUID). */
  newId?: string;
  /** Replaces the resource type at the start of issue expressions (e.g. `Bundle.entry[2].resource`). */
  prefix?: string;
  /** The types the client may write; undefined: every accepted type. */
  clientTypes?: ReadonlySet<string>;
}

/** The `meta` stamp of an accepted resource. */
export interface Stamp {
  /** meta.versionId (see version_clock.ts). */
  versionId: string;
  /** meta.lastUpdated (ISO 8601, UTC). */
  lastUpdated: string;
}

/** An accepted resource, stamped and serialised. */
export interface Prepared {
  /** Its resourceType. */
  type: string;
  /** Its id (given, or new for a create). */
  id: string;
  /** meta.versionId. */
  versionId: string;
  /** meta.lastUpdated. */
  lastUpdated: string;
  /** The resource as one line of JSON (what the sink stores and the response returns). */
  text: string;
}

/** A rejected resource: the HTTP status and the issues (information issues removed). */
export interface Rejected {
  /** 400, 403 or 422. */
  status: number;
  /** Error issues with element paths. */
  issues: ServerIssue[];
}

/** True for an accepted resource. */
export function isPrepared(r: Prepared | Rejected): r is Prepared {
  return (r as Prepared).text !== undefined;
}

/**
 * Validates a parsed resource for writing to `target` and stamps it: a create gets `target.newId` (or a
 * new UUID), `meta` gets the stamp (other meta elements kept). Returns the serialised resource, or the
 * status and issues (with `target.prefix` replacing the resource type at the start of expressions).
 */
export function prepareResource(
  scope: PrepareScope,
  body: unknown,
  target: WriteTarget,
  stamp: Stamp,
): Prepared | Rejected {
  const { type, id, prefix } = target;
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
  const fail = (status: number, issues: ServerIssue[]): Rejected => ({ status, issues: issues.map(rebase) });
  if (!isObj(body)) return fail(400, [issue("structure", "A resource must be a JSON object")]);
  const rt = body.resourceType;
  if (type !== undefined && typeof rt === "string" && rt !== type && scope.resourceTypes.has(rt)) {
    return fail(400, [
      issue("invalid", `resourceType does not match the type of the URL (${type})`, ["resourceType"]),
    ]);
  }
  if (
    typeof rt === "string" && scope.allowed.has(rt) && target.clientTypes !== undefined &&
    !target.clientTypes.has(rt)
  ) {
    return fail(403, [issue("forbidden", `This client may not write ${rt} resources`, ["resourceType"])]);
  }
  const resource: Obj = { ...body };
  if (id === undefined) {
    resource.id = target.newId ?? crypto.randomUUID();
  } else if (body.id === undefined) {
    return fail(400, [
      issue("required", `${String(rt)}.id is required for an update`, [`${String(rt)}.id`]),
    ]);
  } else if (body.id !== id) {
    return fail(400, [
      issue("invalid", `${String(rt)}.id does not match the id of the URL`, [`${String(rt)}.id`]),
    ]);
  }
  const issues = validateResource(resource, { allowedResourceTypes: scope.allowed });
  if (!isValid(issues)) {
    return fail(httpStatusForIssues(issues), issues.filter((i) => i.severity !== "information"));
  }
  const { versionId, lastUpdated } = stamp;
  resource.meta = { ...(isObj(body.meta) ? body.meta : {}), versionId, lastUpdated };
  return {
    type: rt as string,
    id: resource.id as string,
    versionId,
    lastUpdated,
    text: JSON.stringify(resource),
  };
}

/** One resource to check: its JSON bytes (a request body) or its parsed value (a Bundle entry). */
export interface ResourceItem {
  /** UTF-8 JSON of the resource (parsed as a request body: 400 when not JSON). */
  json?: Uint8Array;
  /** The parsed resource (used when `json` is absent). */
  value?: unknown;
  /** Where it goes. */
  target: WriteTarget;
  /** Its stamp if accepted. */
  stamp: Stamp;
}

/** prepareResource of a ResourceItem (parsing `json` first: 400 `structure` when it is not JSON). */
export function prepareItem(scope: PrepareScope, item: ResourceItem): Prepared | Rejected {
  let body = item.value;
  if (item.json !== undefined) {
    try {
      body = parseJsonBody(item.json);
    } catch (e) {
      if (e instanceof HttpError) return { status: e.status, issues: e.issues };
      throw e;
    }
  }
  return prepareResource(scope, body, item.target, item.stamp);
}

/**
 * A batch of `$import` lines: their bytes back to back (`ends[i]` is where line i ends), `long[i]` = 1 for
 * a line that was too long (no bytes), and the stamp range: line i gets versionId `versionBase + i`.
 */
export interface LineJob {
  /** The lines' bytes, without line breaks. */
  data: Uint8Array;
  /** End offset of each line in `data` (a line starts where the previous one ends). */
  ends: Uint32Array;
  /** 1 where the line was longer than the limit (it has no bytes here). */
  long: Uint8Array;
  /** The types the client may write; undefined: every accepted type. */
  clientTypes?: ReadonlySet<string>;
  /** versionId of line 0 (reserved with reserveVersions(ends.length)). */
  versionBase: number;
  /** meta.lastUpdated of every accepted line. */
  lastUpdated: string;
}

/** The outcome of one `$import` line. */
export type LineResult =
  | { k: "ok"; type: string; text: string }
  | { k: "bad"; issues: ServerIssue[] }
  | { k: "blank" }
  | { k: "long" };

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Empty or whitespace only (as String.prototype.trim sees it); invalid UTF-8 is not blank. */
function isBlank(bytes: Uint8Array): boolean {
  if (bytes.length === 0) return true;
  if (bytes.length >= 8) return false;
  try {
    return utf8.decode(bytes).trim() === "";
  } catch {
    return false;
  }
}

/**
 * Checks every line of a batch, in order. A line is an update when it has a string id (kept), else a
 * create (new UUID). Blank lines (whitespace only) are reported as `blank`, lines that are not UTF-8 JSON
 * as a `structure` issue saying which (not UTF-8, or not JSON and why) and at which byte.
 */
export function prepareLines(scope: PrepareScope, job: LineJob): LineResult[] {
  const out: LineResult[] = new Array(job.ends.length);
  let start = 0;
  for (let i = 0; i < job.ends.length; i++) {
    const end = job.ends[i];
    const bytes = job.data.subarray(start, end);
    start = end;
    if (job.long[i]) {
      out[i] = { k: "long" };
      continue;
    }
    if (isBlank(bytes)) {
      out[i] = { k: "blank" };
      continue;
    }
    let value: unknown;
    try {
      value = JSON.parse(utf8.decode(bytes));
    } catch {
      // JSON.parse messages quote the input: never pass them on.
      out[i] = { k: "bad", issues: [issue("structure", `The line is ${describeJsonError(bytes)}`)] };
      continue;
    }
    const r = prepareResource(
      scope,
      value,
      {
        id: isObj(value) && typeof value.id === "string" ? value.id : undefined,
        clientTypes: job.clientTypes,
      },
      { versionId: String(job.versionBase + i), lastUpdated: job.lastUpdated },
    );
    out[i] = isPrepared(r) ? { k: "ok", type: r.type, text: r.text } : { k: "bad", issues: r.issues };
  }
  return out;
}
