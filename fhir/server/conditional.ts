/**
 * Conditional interactions. The ingest server is write-only and keeps no resource store, so it cannot
 * evaluate conditions when a request arrives. It never ignores one either (that could duplicate or
 * overwrite data a client protected):
 *
 * - **Conditional create on the log-entry identifier** — `If-None-Exist:
 *   identifier=https://fhir-pme.example/identifier/log-entry|<uuid>` on a POST (or `ifNoneExist` on a
 *   POST entry of a Bundle), naming an identifier the resource carries — is accepted: it is exactly the
 *   deduplication conversion performs (fhir/PROFILE.md §6: of all resources with that identifier the one
 *   created first wins). The server answers 201 for each copy; only the first survives conversion.
 * - Every other condition (`If-Match`, `If-None-Match`, `If-Modified-Since`, other `If-None-Exist`
 *   queries, conditions on a PUT) is refused with 400 `not-supported`.
 *
 * @module
 */

import { IDENTIFIER_SYSTEMS } from "../profile.ts";
import { issue, type ServerIssue } from "./errors.ts";

/** HTTP headers of conditional interactions. */
export const CONDITIONAL_HEADERS = [
  "If-None-Exist",
  "If-Match",
  "If-None-Match",
  "If-Modified-Since",
] as const;

/** The Bundle `entry.request` fields with the same meaning, in the order of {@link CONDITIONAL_HEADERS}. */
export const CONDITIONAL_ENTRY_FIELDS = ["ifNoneExist", "ifMatch", "ifNoneMatch", "ifModifiedSince"] as const;

/** A condition found on a request: its name (header or entry field), its value, where it was. */
export interface Condition {
  name: string;
  value: unknown;
  /** FHIRPath-style location for the issue (e.g. `Bundle.entry[2].request.ifNoneExist`), if any. */
  expression?: string;
}

const LOG_ENTRY_QUERY = `identifier=${IDENTIFIER_SYSTEMS.logEntry}|`;

function refused(c: Condition, why: string): ServerIssue {
  return issue(
    "not-supported",
    `${c.name}: ${why} This write-only server keeps no resource store to evaluate conditions, and does not ` +
      `ignore them. The one supported condition is a create with If-None-Exist: ${LOG_ENTRY_QUERY}<uuid> ` +
      "naming the resource's own log-entry identifier (resolved at conversion, fhir/PROFILE.md).",
    c.expression ? [c.expression] : undefined,
  );
}

/** Whether `resource` carries the identifier `system|value`. */
function carriesIdentifier(resource: unknown, value: string): boolean {
  const ids = (resource as { identifier?: unknown } | null)?.identifier;
  return Array.isArray(ids) &&
    ids.some((i) => i?.system === IDENTIFIER_SYSTEMS.logEntry && i?.value === value);
}

/**
 * Checks the conditions of one create (`create` true) or update against the resource. Returns the issue
 * that refuses the request, or undefined when there is none or only the supported conditional create.
 * `resource` may be anything the client sent (validation reports other problems).
 */
export function checkConditions(
  conditions: readonly Condition[],
  create: boolean,
  resource: unknown,
): ServerIssue | undefined {
  for (const c of conditions) {
    if (c.name !== "If-None-Exist" && c.name !== "ifNoneExist") return refused(c, "not supported.");
    if (!create) return refused(c, "a conditional create needs POST, not PUT.");
    if (typeof c.value !== "string" || !c.value.startsWith(LOG_ENTRY_QUERY)) {
      return refused(c, "only the log-entry identifier query is supported.");
    }
    const value = c.value.slice(LOG_ENTRY_QUERY.length);
    if (value === "" || /[&,|]/.test(value)) return refused(c, "the query must name exactly one identifier.");
    if (!carriesIdentifier(resource, value)) {
      return refused(c, "the resource does not carry the log-entry identifier the query names.");
    }
  }
  return undefined;
}

/** The conditions of an HTTP request (its conditional headers). */
export function headerConditions(req: Request): Condition[] {
  const out: Condition[] = [];
  for (const h of CONDITIONAL_HEADERS) {
    const v = req.headers.get(h);
    if (v !== null) out.push({ name: h, value: v });
  }
  return out;
}

/** The conditions of a Bundle entry's `request`. */
export function entryConditions(request: Record<string, unknown>, at: string): Condition[] {
  return CONDITIONAL_ENTRY_FIELDS.filter((f) => request[f] !== undefined).map((f) => ({
    name: f,
    value: request[f],
    expression: `${at}.request.${f}`,
  }));
}
