/**
 * Streaming dedupe of landed NDJSON (PROFILE.md §6), in two passes over re-readable inputs.
 *
 * Pass 1 ({@link DedupeIndex.add}) keeps, per resource id, only small metadata of the winning line:
 * `meta.lastUpdated` (ms), `meta.versionId`, where the line is (input, line number), the earliest
 * `lastUpdated` seen for the id (its creation) and, for log entries, the app's log-entry identifier.
 * {@link DedupeIndex.finish} resolves re-uploads and marks the winning line numbers per input in a
 * bitmap. Pass 2 re-reads the inputs and keeps only the winning lines
 * ({@link DedupeIndex.isWinnerLine}, {@link DedupeIndex.winnerMask}: no need to parse a line to know).
 *
 * Rules:
 * - **Versions / redelivery**: per `(resourceType, id)` the line with the greatest `meta.lastUpdated`
 *   wins, ties broken by the numerically greatest `versionId`; an identical tie (the same line delivered
 *   twice) keeps the first occurrence in input order, then line order — whatever the order in which
 *   {@link DedupeIndex.add} sees the lines (pass 1 reads several inputs at once).
 * - **Re-uploads**: resources with the same log-entry identifier (`system|value`) but different ids are one
 *   app entry; the id created first (earliest `lastUpdated` over its versions; ties: smaller numeric
 *   `versionId` of that first version, then smallest id) wins and
 *   its latest version is used. So an entry whose original was later marked entered-in-error stays
 *   deleted even if a re-uploaded copy exists.
 *
 * Memory: O(distinct ids of one resource type) — roughly 150–250 bytes per id (the id string, one small
 * object, plus one map entry per log-entry identifier) plus one bit per input line — never the resources
 * themselves.
 *
 * @module
 */

import { IDENTIFIER_SYSTEMS } from "../profile.ts";

interface Entry {
  lu: number;
  ver: number;
  verText: string;
  input: number;
  line: number;
  created: number;
  /** Numeric versionId of the earliest version (NaN when not numeric). */
  createdVer: number;
  identifier?: string;
}

/** What pass 1 needs of a resource. */
export interface DedupeKey {
  id: string;
  lastUpdatedMs: number;
  versionId: string;
  /** `system|value` of the log-entry identifier, if any. */
  identifier?: string;
}

/** Counters of a dedupe. */
export interface DedupeStats {
  /** Lines seen in pass 1. */
  lines: number;
  /** Distinct ids. */
  ids: number;
  /** Lines that lost to another version or were a redelivered copy. */
  supersededLines: number;
  /** Ids dropped as re-uploads of an earlier id with the same log-entry identifier. */
  reuploadsDropped: number;
}

/** The log-entry identifier (`system|value`) of a resource, if it has one. */
export function logEntryIdentifier(resource: Record<string, unknown>): string | undefined {
  const ids = resource.identifier;
  if (!Array.isArray(ids)) return undefined;
  for (const i of ids) {
    if (
      i && typeof i === "object" && i.system === IDENTIFIER_SYSTEMS.logEntry && typeof i.value === "string"
    ) {
      return `${i.system}|${i.value}`;
    }
  }
  return undefined;
}

/**
 * Whether the version (`lu`, `ver`, `verText`) at (`input`, `line`) beats the entry's: newer, or the same
 * version found earlier in input and line order (so the winner does not depend on the order in which
 * pass 1 sees the lines).
 */
function newer(lu: number, ver: number, verText: string, input: number, line: number, b: Entry): boolean {
  if (lu !== b.lu) return lu > b.lu;
  if (!Number.isNaN(ver) && !Number.isNaN(b.ver)) {
    if (ver !== b.ver) return ver > b.ver;
  } else if (verText !== b.verText) return verText > b.verText;
  return input < b.input || (input === b.input && line < b.line);
}

/** Whether the id `id` (entry `e`) was created before the current group winner `g`. */
function earlier(
  e: { created: number; createdVer: number },
  id: string,
  g: { id: string; created: number; createdVer: number },
): boolean {
  if (e.created !== g.created) return e.created < g.created;
  const ev = Number.isFinite(e.createdVer) ? e.createdVer : Infinity;
  const gv = Number.isFinite(g.createdVer) ? g.createdVer : Infinity;
  if (ev !== gv) return ev < gv;
  return id < g.id;
}

/** The winners of one resource type. */
export class DedupeIndex {
  #ids = new Map<string, Entry>();
  #lines = 0;
  #superseded = 0;
  #dropped: Set<string> | undefined;
  /** Highest line number seen per input (pass 1). */
  #lastLine = new Map<number, number>();
  /** Winning lines per input: bit `line` set (after finish). */
  #winners = new Map<number, Uint8Array>();

  /** Pass 1: records the line `line` of input `input`. */
  add(key: DedupeKey, input: number, line: number): void {
    this.addLine(key.id, key.lastUpdatedMs, key.versionId, key.identifier, input, line);
  }

  /** {@link add} without a key object (the hot path of the conversion). */
  addLine(
    id: string,
    lastUpdatedMs: number,
    versionId: string,
    identifier: string | undefined,
    input: number,
    line: number,
  ): void {
    this.#lines++;
    if (line > (this.#lastLine.get(input) ?? -1)) this.#lastLine.set(input, line);
    const lu = lastUpdatedMs;
    const ver = Number(versionId);
    const cur = this.#ids.get(id);
    if (!cur) {
      this.#ids.set(id, {
        lu,
        ver,
        verText: versionId,
        input,
        line,
        created: lu,
        createdVer: ver,
        identifier,
      });
      return;
    }
    this.#superseded++;
    if (lu < cur.created || (lu === cur.created && ver < cur.createdVer)) {
      cur.created = lu;
      cur.createdVer = ver;
    }
    if (newer(lu, ver, versionId, input, line, cur)) {
      cur.lu = lu;
      cur.ver = ver;
      cur.verText = versionId;
      cur.input = input;
      cur.line = line;
      cur.identifier = identifier;
    }
  }

  /**
   * Ends pass 1: resolves re-uploads. The id created first wins: earliest `lastUpdated` of its first
   * version, then the smaller numeric `versionId` of that version (the ingest server's versionIds grow
   * with every write, so they order resources stamped in the same millisecond), then the smaller id.
   */
  finish(): void {
    const groups = new Map<string, { id: string; created: number; createdVer: number }>();
    const dropped = new Set<string>();
    for (const [id, e] of this.#ids) {
      if (e.identifier === undefined) continue;
      const g = groups.get(e.identifier);
      if (!g) {
        groups.set(e.identifier, { id, created: e.created, createdVer: e.createdVer });
      } else if (earlier(e, id, g)) {
        dropped.add(g.id);
        g.id = id;
        g.created = e.created;
        g.createdVer = e.createdVer;
      } else {
        dropped.add(id);
      }
    }
    this.#dropped = dropped;
    for (const [input, last] of this.#lastLine) this.#winners.set(input, new Uint8Array((last >> 3) + 1));
    for (const [id, e] of this.#ids) {
      if (!dropped.has(id)) this.#winners.get(e.input)![e.line >> 3] |= 1 << (e.line & 7);
    }
  }

  /** Pass 2 (after {@link finish}): whether line `line` of input `input` is one to keep. */
  isWinnerLine(input: number, line: number): boolean {
    const bits = this.#winners.get(input);
    return bits !== undefined && line >= 0 && (bits[line >> 3] & (1 << (line & 7))) !== 0;
  }

  /** Pass 2 (after {@link finish}): one byte per line `firstLine … firstLine + count - 1`, 1 = keep. */
  winnerMask(input: number, firstLine: number, count: number): Uint8Array {
    const mask = new Uint8Array(count);
    for (let i = 0; i < count; i++) if (this.isWinnerLine(input, firstLine + i)) mask[i] = 1;
    return mask;
  }

  /** Pass 2: whether line `line` of input `input`, holding resource `id`, is the one to keep. */
  isWinner(id: string, input: number, line: number): boolean {
    const e = this.#ids.get(id);
    return e !== undefined && e.input === input && e.line === line && !this.#dropped?.has(id);
  }

  /** Counters so far. */
  get stats(): DedupeStats {
    return {
      lines: this.#lines,
      ids: this.#ids.size,
      supersededLines: this.#superseded,
      reuploadsDropped: this.#dropped?.size ?? 0,
    };
  }
}
