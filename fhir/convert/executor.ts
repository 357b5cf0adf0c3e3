/**
 * Where the CPU-heavy batch work of the conversion runs (`batch_work.ts`): in process, or in a pool of
 * Deno Workers (`worker.ts`). Both give the same results for the same batches; the caller consumes
 * results in submission order, so the output does not depend on which worker finished first.
 *
 * Workers receive the views as ViewDefinition JSON (plus the run's `%conversion_date`) and compile them
 * themselves; batches go to the workers round-robin as UTF-8 bytes plus line offsets, and results come
 * back as typed arrays (both transferred, not copied). Errors thrown in a worker are rebuilt in the
 * caller as the same class with the same message and fields (`posted_error.ts`).
 *
 * @module
 */

import { type ColumnBatch, columnBatchTransferables, wipeColumnBatch } from "../views/columns.ts";
import { batchTransferables, decodeBatch, type EncodedBatch, lineSource } from "./batches.ts";
import { batchEval, type BatchKeys, batchKeys, type BatchResult, type BatchView } from "./batch_work.ts";
import { ConvertConfigError } from "./errors.ts";
import { type PostedError, reviveError } from "./posted_error.ts";
import type { ProjectView } from "./views.ts";

/** Runs batch work; see the module notes. */
export interface BatchExecutor {
  /** Batches worth keeping in flight (1 in process). */
  readonly inFlight: number;
  /** `batchKeys` on `batch` (resources of `type`); the batch may be transferred (unusable afterwards). */
  keys(type: string, batch: EncodedBatch): Promise<BatchKeys>;
  /**
   * `batchEval` on `batch` for the views with indexes `views` (of the list the executor was made with),
   * for the `winners` or speculatively (`null`). The batch may be transferred (unusable afterwards).
   */
  eval(
    type: string,
    views: readonly number[],
    batch: EncodedBatch,
    winners: Uint8Array | null,
  ): Promise<BatchResult>;
  /**
   * Plaintext Parquet bytes of `rows` of view `view` (index in the executor's list), row groups of
   * `rowGroupRows` rows. Takes ownership of `rows` (transferred to a worker, zeroed after use).
   */
  parquet(view: number, rows: ColumnBatch, rowGroupRows: number): Promise<Uint8Array>;
  /** Stops the workers (pending work is rejected). */
  close(): void;
}

/** The batch view of a project view: compiled view plus the index of its partition column. */
export function batchView(view: ProjectView): BatchView {
  return {
    name: view.name,
    compiled: view.compiled,
    partitionIndex: view.compiled.columns.findIndex((c) => c.name === view.partitionColumn),
  };
}

/**
 * The Parquet encoder (apache-arrow and parquet-wasm, whose 5 MB module compiles on import), loaded on
 * first use: a process whose workers encode never loads it, and a worker loads it while it evaluates.
 */
export function loadParquetEncoder(): Promise<typeof import("./parquet_encode.ts")> {
  return import("./parquet_encode.ts");
}

/** Runs the work synchronously in the calling thread (Parquet encoding after a first, lazy load). */
export class InProcessExecutor implements BatchExecutor {
  readonly inFlight = 1;
  readonly #views: BatchView[];

  constructor(views: readonly ProjectView[]) {
    this.#views = views.map(batchView);
  }

  keys(type: string, batch: EncodedBatch): Promise<BatchKeys> {
    try {
      return Promise.resolve(batchKeys(decodeBatch(batch), type));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  eval(
    type: string,
    views: readonly number[],
    batch: EncodedBatch,
    winners: Uint8Array | null,
  ): Promise<BatchResult> {
    try {
      return Promise.resolve(batchEval(views.map((i) => this.#views[i]), lineSource(batch), type, winners));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  async parquet(view: number, rows: ColumnBatch, rowGroupRows: number): Promise<Uint8Array> {
    try {
      const { encodeParquet } = await loadParquetEncoder();
      return encodeParquet(this.#views[view].compiled, rows, rowGroupRows);
    } finally {
      wipeColumnBatch(rows);
    }
  }

  close(): void {}
}

/** What the worker is told at start: the views to compile. */
export interface WorkerInit {
  op: "init";
  views: { definition: unknown; file: string; conversionDate?: string }[];
}

/** A request to a worker. */
export type WorkerRequest =
  | WorkerInit
  | { op: "keys"; id: number; type: string; batch: EncodedBatch }
  | {
    op: "eval";
    id: number;
    type: string;
    views: readonly number[];
    batch: EncodedBatch;
    winners: Uint8Array | null;
  }
  | { op: "parquet"; id: number; view: number; rows: ColumnBatch; rowGroupRows: number };

/** A worker's answer. */
export type WorkerResponse =
  | { id: number; ok: true; result: BatchKeys | BatchResult | Uint8Array }
  | { id: number; ok: false; error: PostedError };

/** Buffers to transfer with a pass 1 result. */
export function keysTransferables(k: BatchKeys): ArrayBuffer[] {
  return [k.lines.buffer as ArrayBuffer, k.lastUpdatedMs.buffer as ArrayBuffer];
}

/** Buffers to transfer with a {@link BatchExecutor.eval} result. */
export function resultTransferables(r: BatchResult): ArrayBuffer[] {
  return [
    ...(r.keys ? keysTransferables(r.keys) : []),
    ...r.views.flatMap((v) => [
      ...columnBatchTransferables(v.rows),
      v.partitions.buffer as ArrayBuffer,
      v.lines.buffer as ArrayBuffer,
    ]),
  ];
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
}

/** Runs the work in `n` Deno Workers, round-robin. */
export class WorkerExecutor implements BatchExecutor {
  readonly inFlight: number;
  readonly #workers: Worker[];
  readonly #pending = new Map<number, Pending>();
  #next = 0;
  #failed: Error | undefined;

  /** Starts `n` workers compiling `views` (they load while the caller reads its first batches). */
  constructor(views: readonly ProjectView[], n: number) {
    if (!Number.isInteger(n) || n < 1) throw new ConvertConfigError("workers must be a positive integer");
    this.inFlight = 2 * n;
    const init: WorkerInit = {
      op: "init",
      views: views.map((v) => ({
        definition: v.definition,
        file: v.file,
        ...(v.conversionDate === undefined ? {} : { conversionDate: v.conversionDate }),
      })),
    };
    this.#workers = Array.from({ length: n }, () => {
      const w = new Worker(new URL("./worker.ts", import.meta.url).href, { type: "module" });
      w.onmessage = (e: MessageEvent<WorkerResponse>) => this.#answer(e.data);
      w.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        this.#fail(new Error(`conversion worker failed: ${e.message}`));
      };
      w.postMessage(init);
      return w;
    });
  }

  #answer(m: WorkerResponse): void {
    const p = this.#pending.get(m.id);
    if (!p) return;
    this.#pending.delete(m.id);
    if (m.ok) p.resolve(m.result);
    else p.reject(reviveError(m.error));
  }

  #fail(e: Error): void {
    this.#failed ??= e;
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
  }

  #post<T>(request: WorkerRequest & { id: number }, transfer: ArrayBuffer[]): Promise<T> {
    if (this.#failed) return Promise.reject(this.#failed);
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(request.id, { resolve: resolve as (v: unknown) => void, reject });
      this.#workers[request.id % this.#workers.length].postMessage(request, transfer);
    });
  }

  keys(type: string, batch: EncodedBatch): Promise<BatchKeys> {
    return this.#post({ op: "keys", id: this.#next++, type, batch }, batchTransferables(batch));
  }

  eval(
    type: string,
    views: readonly number[],
    batch: EncodedBatch,
    winners: Uint8Array | null,
  ): Promise<BatchResult> {
    return this.#post(
      { op: "eval", id: this.#next++, type, views, batch, winners },
      [...batchTransferables(batch), ...(winners ? [winners.buffer as ArrayBuffer] : [])],
    );
  }

  parquet(view: number, rows: ColumnBatch, rowGroupRows: number): Promise<Uint8Array> {
    return this.#post(
      { op: "parquet", id: this.#next++, view, rows, rowGroupRows },
      columnBatchTransferables(rows),
    );
  }

  close(): void {
    for (const w of this.#workers) w.terminate();
    this.#fail(new Error("conversion workers closed"));
  }
}
