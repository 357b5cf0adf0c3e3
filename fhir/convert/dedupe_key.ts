/**
 * The dedupe key of one NDJSON line (what pass 1 of the conversion needs, see `dedupe.ts`): `id`,
 * `meta.lastUpdated`, `meta.versionId` and the log-entry identifier `system|value`. Pass 1 takes it
 * from the parsed resource while it evaluates the views speculatively (`row_cache.ts`), and scans for it
 * when the row cache is full: then the resource is parsed only in pass 2, and only if it wins.
 *
 * {@link parseDedupeKey} is the reference: `JSON.parse` the line and read the members.
 * {@link scanDedupeKey} gives the same result without building the resource: one pass over the line's
 * text that validates the whole line against the JSON grammar (as strictly as `JSON.parse`: RFC 8259,
 * no trailing commas, no comments, control characters only escaped, leading zeros rejected) while it
 * reads the top-level members `resourceType`, `id`, `meta` and `identifier` and skips every other
 * value string-aware. Nested `id`/`meta` members (contained resources, extensions) are never taken
 * for the top-level ones.
 *
 * Duplicate keys: `JSON.parse` keeps the last occurrence, so the scanner reads the whole line and lets
 * a later occurrence replace an earlier one; it never stops early (stopping after the first four members
 * would miss a later duplicate, and would not validate the rest of the line).
 *
 * Whenever the fast path meets anything unusual it falls back to {@link parseDedupeKey}, so the result,
 * and the {@link ConvertInputError} of an unusable line, are always the reference's (differential tests:
 * `tests/dedupe_key_test.ts`):
 * - the line is not valid JSON, or nests deeper than {@link MAX_SCAN_DEPTH};
 * - a key of the top level, of `meta` or of an `identifier` entry contains a backslash escape (it might
 *   spell `id`), or a value the key needs does (`"\u0031"`);
 * - any check fails (wrong `resourceType`, missing `id`, missing or invalid `meta.lastUpdated`): the
 *   reference then raises the error.
 *
 * The strings it returns are copies, not views on the line (the index keeps them for the whole pass).
 * Cost: about 0.75 of `JSON.parse` on the same lines (it still reads every character).
 *
 * @module
 */

import { IDENTIFIER_SYSTEMS } from "../profile.ts";
import type { DedupeKey } from "./dedupe.ts";
import { logEntryIdentifier } from "./dedupe.ts";
import { ConvertInputError } from "./errors.ts";

/** Deeper nesting than this is left to `JSON.parse` (its own limits then apply). */
export const MAX_SCAN_DEPTH = 512;

/**
 * Parses one NDJSON line into a resource of `type` with a non-empty string id, or throws
 * {@link ConvertInputError} (`input`, 1-based line `n`) naming what is wrong, never the content.
 */
export function parseResourceLine(
  line: string,
  type: string,
  input: number,
  n: number,
): Record<string, unknown> {
  let r: unknown;
  try {
    r = JSON.parse(line);
  } catch {
    throw new ConvertInputError(input, n, "not JSON");
  }
  if (r === null || typeof r !== "object" || Array.isArray(r)) {
    throw new ConvertInputError(input, n, "not a JSON object");
  }
  const o = r as Record<string, unknown>;
  if (o.resourceType !== type) throw new ConvertInputError(input, n, `resourceType is not ${type}`);
  if (typeof o.id !== "string" || o.id === "") throw new ConvertInputError(input, n, "id is missing");
  return o;
}

/** The dedupe key of a parsed resource (line `n` of input `input`, for errors). */
export function dedupeKeyOf(r: Record<string, unknown>, input: number, n: number): DedupeKey {
  const meta = r.meta as Record<string, unknown> | undefined;
  const lu = typeof meta?.lastUpdated === "string" ? Date.parse(meta.lastUpdated) : NaN;
  if (Number.isNaN(lu)) throw new ConvertInputError(input, n, "meta.lastUpdated is missing or invalid");
  const versionId = typeof meta?.versionId === "string" ? meta.versionId : "";
  return { id: r.id as string, lastUpdatedMs: lu, versionId, identifier: logEntryIdentifier(r) };
}

/** Reference: the dedupe key of a line via `JSON.parse`. Throws {@link ConvertInputError}. */
export function parseDedupeKey(line: string, type: string, input: number, n: number): DedupeKey {
  return dedupeKeyOf(parseResourceLine(line, type, input, n), input, n);
}

const LOG_ENTRY = IDENTIFIER_SYSTEMS.logEntry;

// Scanner state (module level: the scanner is synchronous and not reentrant).
let src = "";
let end = 0;
/** Whether the last string scanned by `scanString` contained a backslash escape. */
let escaped = false;

// Fields found (the last occurrence wins, as in JSON.parse). `undefined`: absent or not a string.
let fType: string | undefined;
let fId: string | undefined;
let fLastUpdated: string | undefined;
let fVersionId: string | undefined;
let fIdentifier: string | undefined;
/** Members of the identifier entry being read. */
let eSystem: string | undefined;
let eValue: string | undefined;

const BS = 92; // \
const QUOTE = 34; // "

function skipWs(i: number): number {
  while (i < end) {
    const c = src.charCodeAt(i);
    if (c !== 32 && c !== 10 && c !== 13 && c !== 9) break;
    i++;
  }
  return i;
}

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
}

/** `src[i]` is `"`: returns the index after the closing quote, or -1 if invalid. Sets `escaped`. */
function scanString(i: number): number {
  i++;
  let esc = false;
  while (i < end) {
    const c = src.charCodeAt(i);
    if (c === QUOTE) {
      escaped = esc;
      return i + 1;
    }
    if (c < 32) return -1;
    if (c === BS) {
      esc = true;
      const e = src.charCodeAt(i + 1);
      if (e === 117) { // u
        if (
          i + 5 >= end || !isHex(src.charCodeAt(i + 2)) || !isHex(src.charCodeAt(i + 3)) ||
          !isHex(src.charCodeAt(i + 4)) || !isHex(src.charCodeAt(i + 5))
        ) return -1;
        i += 6;
        continue;
      }
      // " \ / b f n r t
      if (
        e === QUOTE || e === BS || e === 47 || e === 98 || e === 102 || e === 110 || e === 114 || e === 116
      ) {
        i += 2;
        continue;
      }
      return -1;
    }
    i++;
  }
  return -1;
}

function digits(i: number): number {
  while (i < end) {
    const c = src.charCodeAt(i);
    if (c < 48 || c > 57) break;
    i++;
  }
  return i;
}

/** A JSON number at `i`: the index after it, or -1. */
function scanNumber(i: number): number {
  if (src.charCodeAt(i) === 45) i++; // -
  const c = src.charCodeAt(i);
  if (c === 48) i++;
  else if (c >= 49 && c <= 57) i = digits(i + 1);
  else return -1;
  if (src.charCodeAt(i) === 46) { // .
    const j = digits(i + 1);
    if (j === i + 1) return -1;
    i = j;
  }
  const e = src.charCodeAt(i);
  if (e === 101 || e === 69) { // e E
    i++;
    const s = src.charCodeAt(i);
    if (s === 43 || s === 45) i++;
    const j = digits(i);
    if (j === i) return -1;
    i = j;
  }
  return i;
}

function literal(i: number, word: string): number {
  return src.startsWith(word, i) ? i + word.length : -1;
}

/** Skips any JSON value at `i` (after whitespace): the index after it, or -1 if invalid. */
function skipValue(i: number, depth: number): number {
  const c = src.charCodeAt(i);
  if (c === QUOTE) return scanString(i);
  if (c === 123) return skipObject(i, depth + 1); // {
  if (c === 91) return skipArray(i, depth + 1); // [
  if (c === 116) return literal(i, "true");
  if (c === 102) return literal(i, "false");
  if (c === 110) return literal(i, "null");
  return scanNumber(i);
}

function skipObject(i: number, depth: number): number {
  if (depth > MAX_SCAN_DEPTH) return -1;
  i = skipWs(i + 1);
  if (src.charCodeAt(i) === 125) return i + 1; // }
  for (;;) {
    if (src.charCodeAt(i) !== QUOTE) return -1;
    i = scanString(i);
    if (i < 0) return -1;
    i = skipWs(i);
    if (src.charCodeAt(i) !== 58) return -1; // :
    i = skipValue(skipWs(i + 1), depth);
    if (i < 0) return -1;
    i = skipWs(i);
    const c = src.charCodeAt(i);
    if (c === 125) return i + 1;
    if (c !== 44) return -1; // ,
    i = skipWs(i + 1);
  }
}

function skipArray(i: number, depth: number): number {
  if (depth > MAX_SCAN_DEPTH) return -1;
  i = skipWs(i + 1);
  if (src.charCodeAt(i) === 93) return i + 1; // ]
  for (;;) {
    i = skipValue(i, depth);
    if (i < 0) return -1;
    i = skipWs(i);
    const c = src.charCodeAt(i);
    if (c === 93) return i + 1;
    if (c !== 44) return -1;
    i = skipWs(i + 1);
  }
}

/** The text of the value read by `readNeeded` (undefined when it is not a string). */
let strText: string | undefined;

/**
 * A value whose text the key needs (a string without escapes, else the fast path gives up): sets
 * `strText`, returns the index after the value or -1.
 */
function readNeeded(i: number, depth: number): number {
  if (src.charCodeAt(i) === QUOTE) {
    const j = scanString(i);
    if (j < 0) return -1;
    if (escaped) return -1;
    strText = src.slice(i + 1, j - 1);
    return j;
  }
  strText = undefined;
  return skipValue(i, depth);
}

/**
 * Reads an object member by member; `member(key, i, depth)` reads or skips the value at `i` and returns
 * the index after it, or -1. Returns the index after the object, -1 when invalid or unusual.
 */
function readObject(
  i: number,
  depth: number,
  member: (key: string, i: number, depth: number) => number,
): number {
  if (depth > MAX_SCAN_DEPTH) return -1;
  i = skipWs(i + 1);
  if (src.charCodeAt(i) === 125) return i + 1;
  for (;;) {
    if (src.charCodeAt(i) !== QUOTE) return -1;
    const k = scanString(i);
    if (k < 0) return -1;
    if (escaped) return -1;
    const key = src.slice(i + 1, k - 1);
    i = skipWs(k);
    if (src.charCodeAt(i) !== 58) return -1;
    i = member(key, skipWs(i + 1), depth);
    if (i < 0) return -1;
    i = skipWs(i);
    const c = src.charCodeAt(i);
    if (c === 125) return i + 1;
    if (c !== 44) return -1;
    i = skipWs(i + 1);
  }
}

function metaMember(key: string, i: number, depth: number): number {
  if (key === "lastUpdated") {
    const j = readNeeded(i, depth);
    fLastUpdated = strText;
    return j;
  }
  if (key === "versionId") {
    const j = readNeeded(i, depth);
    fVersionId = strText;
    return j;
  }
  return skipValue(i, depth);
}

function entryMember(key: string, i: number, depth: number): number {
  if (key === "system") {
    const j = readNeeded(i, depth);
    eSystem = strText;
    return j;
  }
  if (key === "value") {
    const j = readNeeded(i, depth);
    eValue = strText;
    return j;
  }
  return skipValue(i, depth);
}

/** The `identifier` value: sets `fIdentifier` to the first log-entry identifier, or undefined. */
function readIdentifier(i: number, depth: number): number {
  fIdentifier = undefined;
  if (src.charCodeAt(i) !== 91) return skipValue(i, depth);
  depth++;
  if (depth > MAX_SCAN_DEPTH) return -1;
  i = skipWs(i + 1);
  if (src.charCodeAt(i) === 93) return i + 1;
  let found = false;
  for (;;) {
    if (src.charCodeAt(i) === 123) {
      eSystem = undefined;
      eValue = undefined;
      i = readObject(i, depth + 1, entryMember);
      if (i < 0) return -1;
      if (!found && eSystem === LOG_ENTRY && eValue !== undefined) {
        found = true;
        fIdentifier = `${eSystem}|${eValue}`;
      }
    } else {
      i = skipValue(i, depth);
      if (i < 0) return -1;
    }
    i = skipWs(i);
    const c = src.charCodeAt(i);
    if (c === 93) return i + 1;
    if (c !== 44) return -1;
    i = skipWs(i + 1);
  }
}

function topMember(key: string, i: number, depth: number): number {
  switch (key) {
    case "resourceType": {
      const j = readNeeded(i, depth);
      fType = strText;
      return j;
    }
    case "id": {
      const j = readNeeded(i, depth);
      fId = strText;
      return j;
    }
    case "meta":
      // A later "meta" replaces an earlier one entirely.
      fLastUpdated = undefined;
      fVersionId = undefined;
      if (src.charCodeAt(i) === 123) return readObject(i, depth + 1, metaMember);
      return skipValue(i, depth);
    case "identifier":
      return readIdentifier(i, depth);
    default:
      return skipValue(i, depth);
  }
}

/** The fast path over `text[start, stop)`; undefined when the reference must decide. */
function scan(text: string, start: number, stop: number, type: string): DedupeKey | undefined {
  src = text;
  end = stop;
  fType =
    fId =
    fLastUpdated =
    fVersionId =
    fIdentifier =
      undefined;
  let i = skipWs(start);
  if (src.charCodeAt(i) !== 123) return undefined;
  i = readObject(i, 1, topMember);
  if (i < 0 || skipWs(i) !== end) return undefined;
  if (fType !== type || fId === undefined || fId === "" || fLastUpdated === undefined) return undefined;
  const lu = Date.parse(fLastUpdated);
  if (Number.isNaN(lu)) return undefined;
  return {
    id: own(fId),
    lastUpdatedMs: lu,
    versionId: fVersionId === undefined ? "" : own(fVersionId),
    identifier: fIdentifier === undefined ? undefined : own(fIdentifier),
  };
}

/**
 * A copy of `s` that does not keep the text it was sliced from alive (V8 represents a substring as a
 * view on its parent; the dedupe index keeps ids for the whole pass, and must not keep every batch).
 */
function own(s: string): string {
  return (" " + s).slice(1);
}

/**
 * The dedupe key of line `n` of input `input`, always equal to {@link parseDedupeKey}'s (see the
 * module notes), without parsing the resource in the common case. Throws {@link ConvertInputError}.
 */
export function scanDedupeKey(line: string, type: string, input: number, n: number): DedupeKey {
  return scanDedupeKeyAt(line, 0, line.length, type, input, n);
}

/**
 * {@link scanDedupeKey} of the line `text[start, stop)` (e.g. one line of a batch of lines joined by
 * `\n`: scanning a flat batch string is faster than scanning substrings).
 */
export function scanDedupeKeyAt(
  text: string,
  start: number,
  stop: number,
  type: string,
  input: number,
  n: number,
): DedupeKey {
  let key: DedupeKey | undefined;
  try {
    key = scan(text, start, stop, type);
  } finally {
    src = "";
  }
  return key ?? parseDedupeKey(text.slice(start, stop), type, input, n);
}

/** @internal For tests: whether the fast path decided `line` itself (no fallback to `JSON.parse`). */
export function scannedWithoutFallback(line: string, type: string): boolean {
  try {
    return scan(line, 0, line.length, type) !== undefined;
  } finally {
    src = "";
  }
}
