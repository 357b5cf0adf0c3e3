/**
 * Group commit in front of an IngestSink: while an append of a resource type is under way, further
 * appends of that type wait (as they would for the landing zone's per-type lock) and are then written
 * together as one append — one encrypted chunk and one fdatasync for several concurrent requests instead
 * of one each. Each caller's lines stay together and in call order; each caller's promise settles with
 * the append that holds its lines (a failure fails every caller of that append: nothing of theirs may be
 * assumed stored). A call arriving while nothing of its type is being written goes out at once.
 *
 * @module
 */

import type { IngestSink } from "./sink.ts";

interface Caller {
  lines: string[];
  bytes: number;
  resolve: () => void;
  reject: (e: unknown) => void;
}

interface TypeQueue {
  busy: boolean;
  waiting: Caller[];
}

/** An IngestSink that merges concurrent appends of one type (see the module documentation). */
export class GroupCommitSink implements IngestSink {
  readonly #inner: IngestSink;
  readonly #maxBytes: number;
  readonly #types = new Map<string, TypeQueue>();

  /** Appends of `inner`, merged up to about `maxBytes` of lines per append (one call is never split). */
  constructor(inner: IngestSink, maxBytes: number) {
    this.#inner = inner;
    this.#maxBytes = maxBytes;
  }

  /** Appends the lines, merged with other callers' of the same type that wait at the same time. */
  append(resourceType: string, ndjsonLines: string[]): Promise<unknown> {
    if (ndjsonLines.length === 0) return this.#inner.append(resourceType, ndjsonLines); // its own error
    let q = this.#types.get(resourceType);
    if (!q) this.#types.set(resourceType, q = { busy: false, waiting: [] });
    let bytes = 0;
    for (const l of ndjsonLines) bytes += l.length;
    const done = new Promise<void>((resolve, reject) => {
      q.waiting.push({ lines: ndjsonLines, bytes, resolve, reject });
    });
    if (!q.busy) void this.#drain(resourceType, q);
    return done;
  }

  async #drain(type: string, q: TypeQueue): Promise<void> {
    q.busy = true;
    while (q.waiting.length > 0) {
      const group: Caller[] = [q.waiting.shift()!];
      let bytes = group[0].bytes;
      while (q.waiting.length > 0 && bytes + q.waiting[0].bytes <= this.#maxBytes) {
        const c = q.waiting.shift()!;
        bytes += c.bytes;
        group.push(c);
      }
      const lines = group.length === 1 ? group[0].lines : group.flatMap((c) => c.lines);
      try {
        await this.#inner.append(type, lines);
        for (const c of group) c.resolve();
      } catch (e) {
        for (const c of group) c.reject(e);
      }
    }
    q.busy = false;
    this.#types.delete(type);
  }
}
