/**
 * Pass 1 evaluates the views speculatively (`batch_work.ts`) and this cache keeps the columnar results
 * for pass 2, within a byte budget, so that pass 2 only drops the rows of the losing lines instead of
 * reading (decrypting), parsing and evaluating the input again. An input is kept only whole: when the
 * budget runs out in the middle of one, what was kept of it is dropped, its remaining batches are only
 * keyed (no speculation), and pass 2 reads it again. Results are released as pass 2 takes them.
 *
 * Memory: at most the budget (the columnar rows are typically a tenth of the NDJSON they come from).
 * The kept rows are plaintext values in memory (never on disk), like the rows buffered for a file.
 *
 * @module
 */

import { type BatchResult, resultBytes } from "./batch_work.ts";

/** Default budget: 256 MiB. */
export const DEFAULT_ROW_CACHE_BYTES = 256 * 1024 * 1024;

/** Speculative pass 1 results kept for pass 2; see the module notes. */
export class RowCache {
  readonly #budget: number;
  #used = 0;
  readonly #kept = new Map<number, { results: BatchResult[]; bytes: number }>();
  readonly #dropped = new Set<number>();

  constructor(budget: number) {
    this.#budget = budget;
  }

  /** Bytes kept now. */
  get used(): number {
    return this.#used;
  }

  /** Whether the next batch of input `input` is worth evaluating speculatively. */
  wants(input: number): boolean {
    return !this.#dropped.has(input) && this.#used < this.#budget;
  }

  /** Pass 1, in order: the result of the next batch of `input` (`null`: the batch was only keyed). */
  add(input: number, result: BatchResult | null): void {
    if (this.#dropped.has(input)) return;
    const size = result === null ? 0 : resultBytes(result);
    if (result === null || this.#used + size > this.#budget) {
      this.#used -= this.#kept.get(input)?.bytes ?? 0;
      this.#kept.delete(input);
      this.#dropped.add(input);
      return;
    }
    let entry = this.#kept.get(input);
    if (!entry) this.#kept.set(input, entry = { results: [], bytes: 0 });
    entry.results.push(result);
    entry.bytes += size;
    this.#used += size;
  }

  /** After pass 1: whether every batch of input `input` was kept. */
  has(input: number): boolean {
    return this.#kept.has(input);
  }

  /** Pass 2: the kept results of input `input`, in order, each released as it is taken. */
  *replay(input: number): Generator<BatchResult> {
    const entry = this.#kept.get(input);
    if (!entry) throw new Error(`input ${input} is not in the row cache`);
    this.#kept.delete(input);
    const list = entry.results;
    try {
      while (list.length > 0) {
        const r = list.shift()!;
        const size = resultBytes(r);
        this.#used -= size;
        yield r;
      }
    } finally {
      for (const r of list) this.#used -= resultBytes(r);
      list.length = 0;
    }
  }

  /** Drops everything. */
  clear(): void {
    this.#kept.clear();
    this.#dropped.clear();
    this.#used = 0;
  }
}
