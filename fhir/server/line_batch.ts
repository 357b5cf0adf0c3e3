/**
 * Collects consecutive `$import` lines (from body.ts splitLines) into validation batches: their bytes back
 * to back in one buffer, a too-long flag per line, and — when the batch is taken — a reserved range of
 * versionIds and one lastUpdated, so that the batch can be checked anywhere (prepare.ts prepareLines, in a
 * worker or inline) and still stamp its lines later than every line before it.
 *
 * @module
 */

import type { NdjsonLine } from "./body.ts";
import type { LineJob } from "./prepare.ts";
import { reserveVersions } from "./version_clock.ts";

/** A taken batch: the job and the line number of its first line (its lines are consecutive). */
export interface LineBatch {
  /** What prepareLines (or a worker) checks. */
  job: LineJob;
  /** 1-based line number of line 0 of the job. */
  firstLineNo: number;
}

/** Builds LineJobs of at most `maxLines` lines, taken once they hold `maxBytes` (see the module doc). */
export class LineBatcher {
  readonly #maxLines: number;
  readonly #maxBytes: number;
  #buf: Uint8Array;
  #len = 0;
  #ends: number[] = [];
  #long: number[] = [];
  #first = 0;

  /** `maxLines` ≥ 1 lines or `maxBytes` bytes make a batch full. */
  constructor(maxLines: number, maxBytes: number) {
    this.#maxLines = Math.max(1, maxLines);
    this.#maxBytes = Math.max(1, maxBytes);
    this.#buf = new Uint8Array(Math.min(this.#maxBytes, 64 * 1024));
  }

  /** Lines collected since the last take. */
  get size(): number {
    return this.#ends.length;
  }

  /** True when the batch should be taken. */
  get full(): boolean {
    return this.#ends.length >= this.#maxLines || this.#len >= this.#maxBytes;
  }

  /** Adds the next line (line numbers must follow each other). */
  add(line: NdjsonLine): void {
    if (this.#ends.length === 0) this.#first = line.lineNo;
    if (line.bytes !== undefined && line.bytes.length > 0) {
      const need = this.#len + line.bytes.length;
      if (need > this.#buf.length) {
        const next = new Uint8Array(Math.max(need, this.#buf.length * 2));
        next.set(this.#buf.subarray(0, this.#len));
        this.#buf = next;
      }
      this.#buf.set(line.bytes, this.#len);
      this.#len = need;
    }
    this.#ends.push(this.#len);
    this.#long.push(line.tooLong !== undefined ? 1 : 0);
  }

  /**
   * Takes the collected lines as a job (with the client's permitted types, versionIds reserved now and
   * lastUpdated now) and starts a new batch.
   */
  take(clientTypes: ReadonlySet<string> | undefined): LineBatch {
    const n = this.#ends.length;
    const job: LineJob = {
      data: this.#buf.slice(0, this.#len),
      ends: Uint32Array.from(this.#ends),
      long: Uint8Array.from(this.#long),
      clientTypes,
      versionBase: reserveVersions(n),
      lastUpdated: new Date().toISOString(),
    };
    const batch = { job, firstLineNo: this.#first };
    this.#len = 0;
    this.#ends = [];
    this.#long = [];
    return batch;
  }
}
