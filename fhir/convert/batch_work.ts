/**
 * The CPU-heavy work of the conversion on one {@link LineBatch}, as pure functions of plain data so that
 * they run the same in process and in a conversion worker (`worker.ts`):
 *
 * - {@link batchKeys}: the dedupe key of every non-blank line (`dedupe_key.ts`, no full parse);
 * - {@link batchEval}: `JSON.parse` of the lines and every view of the type over them, the rows appended
 *   straight into columnar buffers, each row tagged with its line and date partition. Either for the
 *   winning lines only (pass 2), or speculatively for every line before the winners are known (pass 1,
 *   which then also yields the dedupe keys, taken from the parsed resources): the rows of the losers are
 *   dropped later, and an evaluation error is recorded with its line and raised only if that line wins.
 *
 * Errors of a line's view evaluation (`ViewEvaluationError`, `ArrowConversionError`, whose row number
 * counts the rows of that line) are raised as `ConvertInputError` naming input, line and view, with the
 * original as `cause`.
 *
 * @module
 */

import { ArrowConversionError, type ColumnBatch, ColumnsBuilder } from "../views/columns.ts";
import { type CompiledView, ViewEvaluationError } from "../views/runner.ts";
import { isBlankLine, type LineBatch, type LineSource, lineStart } from "./batches.ts";
import { dedupeKeyOf, parseResourceLine, scanDedupeKeyAt } from "./dedupe_key.ts";
import { ConvertInputError } from "./errors.ts";
import { type PostedError, postError } from "./posted_error.ts";

/** Partition value for rows whose date column is empty or not YYYY-MM-DD. */
export const NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__";

const DATE = /^\d{4}-\d{2}-\d{2}$/;

/** The dedupe keys of the non-blank lines of a batch, in line order. */
export interface BatchKeys {
  /** 1-based line numbers. */
  readonly lines: Int32Array;
  readonly ids: string[];
  readonly lastUpdatedMs: Float64Array;
  readonly versionIds: string[];
  /** Log-entry identifier `system|value`, or null. */
  readonly identifiers: (string | null)[];
}

/** Collects dedupe keys. */
class KeysBuilder {
  readonly lines: Int32Array;
  readonly lastUpdatedMs: Float64Array;
  readonly ids: string[] = [];
  readonly versionIds: string[] = [];
  readonly identifiers: (string | null)[] = [];
  n = 0;

  constructor(capacity: number) {
    this.lines = new Int32Array(capacity);
    this.lastUpdatedMs = new Float64Array(capacity);
  }

  add(line: number, id: string, lastUpdatedMs: number, versionId: string, identifier: string | undefined) {
    this.lines[this.n] = line;
    this.lastUpdatedMs[this.n++] = lastUpdatedMs;
    this.ids.push(id);
    this.versionIds.push(versionId);
    this.identifiers.push(identifier ?? null);
  }

  finish(): BatchKeys {
    const { ids, versionIds, identifiers } = this;
    return {
      lines: this.lines.slice(0, this.n),
      lastUpdatedMs: this.lastUpdatedMs.slice(0, this.n),
      ids,
      versionIds,
      identifiers,
    };
  }
}

/** Dedupe keys of the lines of `batch` (resources of `type`). Throws `ConvertInputError`. */
export function batchKeys(batch: LineBatch, type: string): BatchKeys {
  const { text, ends, input, firstLine } = batch;
  const keys = new KeysBuilder(ends.length);
  for (let i = 0; i < ends.length; i++) {
    const start = lineStart(batch, i);
    const end = ends[i];
    if (isBlankLine(text, start, end)) continue;
    const k = scanDedupeKeyAt(text, start, end, type, input, firstLine + i);
    keys.add(firstLine + i, k.id, k.lastUpdatedMs, k.versionId, k.identifier);
  }
  return keys.finish();
}

/** What a batch needs of a view. */
export interface BatchView {
  readonly name: string;
  readonly compiled: CompiledView;
  /** Index of the partition column. */
  readonly partitionIndex: number;
}

/** The rows of one view over a batch, in line order. */
export interface ViewRows {
  readonly rows: ColumnBatch;
  /** Distinct partitions, in order of first appearance. */
  readonly dates: string[];
  /** Per row, the index of its partition in {@link dates}. */
  readonly partitions: Int32Array;
  /** Per row, the index in the batch of the line it comes from. */
  readonly lines: Int32Array;
}

/** A line whose evaluation failed (speculative evaluation only). */
export interface LineError {
  /** Index of the line in the batch. */
  readonly line: number;
  readonly error: PostedError;
}

/** What {@link batchEval} gives. */
export interface BatchResult {
  readonly input: number;
  readonly firstLine: number;
  /** Lines in the batch. */
  readonly count: number;
  /** Dedupe keys (speculative evaluation only). */
  readonly keys?: BatchKeys;
  /** Rows per view, in the order given. */
  readonly views: ViewRows[];
  /** Failed lines, in line order (speculative evaluation only). */
  readonly errors: LineError[];
}

/** Bytes a result holds in its buffers (for cache budgets). */
export function resultBytes(r: BatchResult): number {
  let n = 64 * r.errors.length;
  const leaf = (
    c: { valid: Uint8Array; values?: { byteLength: number }; offsets?: Int32Array; data?: Uint8Array },
  ) =>
    c.valid.byteLength + (c.values?.byteLength ?? 0) + (c.offsets?.byteLength ?? 0) +
    (c.data?.byteLength ?? 0);
  for (const v of r.views) {
    n += v.partitions.byteLength + v.lines.byteLength + 32 * v.dates.length;
    for (const c of v.rows.columns) n += c.kind === "list" ? leaf(c) + leaf(c.child) : leaf(c);
  }
  return n;
}

/** Rows of one view being collected. */
class ViewOut {
  readonly builder: ColumnsBuilder;
  readonly dates: string[] = [];
  readonly #index = new Map<string, number>();
  partitions: Int32Array;
  lines: Int32Array;
  /** Index of the line being evaluated. */
  line = 0;
  /** Rows before that line's (an error names the row within the line's rows). */
  mark = 0;
  readonly sink: (values: readonly unknown[]) => void;

  constructor(readonly view: BatchView, capacity: number) {
    this.builder = new ColumnsBuilder(view.compiled.columns, capacity);
    this.partitions = new Int32Array(capacity);
    this.lines = new Int32Array(capacity);
    const p = view.partitionIndex;
    // Consecutive rows usually share a date: remember the last valid one (NaN matches nothing).
    let lastDate: unknown = NaN;
    let last = 0;
    this.sink = (values) => {
      const d = values[p];
      let k: number;
      if (d === lastDate) k = last;
      else {
        const date = typeof d === "string" && DATE.test(d) ? d : NULL_PARTITION;
        let found = this.#index.get(date);
        if (found === undefined) {
          this.#index.set(date, found = this.dates.length);
          this.dates.push(date);
        }
        k = found;
        if (date !== NULL_PARTITION) {
          lastDate = date;
          last = k;
        }
      }
      const row = this.builder.length;
      this.builder.appendRow(values, row - this.mark);
      if (row === this.partitions.length) {
        this.partitions = grow(this.partitions, row * 2);
        this.lines = grow(this.lines, row * 2);
      }
      this.partitions[row] = k;
      this.lines[row] = this.line;
    };
  }

  finish(): ViewRows {
    const n = this.builder.length;
    return {
      rows: this.builder.finish(),
      dates: this.dates,
      partitions: this.partitions.slice(0, n),
      lines: this.lines.slice(0, n),
    };
  }
}

function grow(a: Int32Array, n: number): Int32Array {
  const b = new Int32Array(Math.max(n, 16));
  b.set(a);
  return b;
}

/** A view evaluation error of a line as a `ConvertInputError` (others are returned as they are). */
function lineError(e: unknown, view: string, input: number, line: number): unknown {
  if (e instanceof ViewEvaluationError || e instanceof ArrowConversionError) {
    return new ConvertInputError(input, line, `view ${view}: ${e.message}`, { cause: e });
  }
  return e;
}

/**
 * Parses lines of `batch` (resources of `type`) and runs `views` over them. With `winners` (one byte per
 * line, 1 = evaluate) only those lines, and the first failing one throws. Without (`null`: speculative,
 * pass 1) every non-blank line: the dedupe keys are returned too, an unusable line (not JSON, wrong
 * type, no id or `meta.lastUpdated`) throws `ConvertInputError` as pass 1 would, and a view evaluation
 * error is recorded for its line instead of thrown.
 */
export function batchEval(
  views: readonly BatchView[],
  batch: LineSource,
  type: string,
  winners: Uint8Array | null,
): BatchResult {
  const { input, firstLine } = batch;
  const n = batch.count;
  const speculative = winners === null;
  const keys = speculative ? new KeysBuilder(n) : undefined;
  const outs = views.map((v) => new ViewOut(v, n));
  const errors: LineError[] = [];
  for (let i = 0; i < n; i++) {
    if (speculative ? batch.blank(i) : winners[i] !== 1) continue;
    const lineNo = firstLine + i;
    const r = parseResourceLine(batch.line(i), type, input, lineNo);
    if (keys) {
      const k = dedupeKeyOf(r, input, lineNo);
      keys.add(lineNo, k.id, k.lastUpdatedMs, k.versionId, k.identifier);
    }
    for (let j = 0; j < outs.length; j++) {
      const out = outs[j];
      const mark = out.mark = out.builder.length;
      out.line = i;
      try {
        out.view.compiled.emit(r, out.sink);
      } catch (e) {
        const error = lineError(e, out.view.name, input, lineNo);
        out.builder.truncate(mark);
        if (!speculative) throw error;
        errors.push({ line: i, error: postError(error) });
        break;
      }
    }
  }
  return { input, firstLine, count: n, keys: keys?.finish(), views: outs.map((o) => o.finish()), errors };
}
