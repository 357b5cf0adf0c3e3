/**
 * Entry point of a conversion worker (see `executor.ts`): compiles the views it is given, then answers
 * `keys`, `eval` and `parquet` requests; every failure goes back to the caller as a posted error. It
 * never logs: batches hold resource content.
 *
 * @module
 */

import { batchEval, batchKeys, type BatchView } from "./batch_work.ts";
import { decodeBatch, lineSource } from "./batches.ts";
import {
  batchView,
  keysTransferables,
  loadParquetEncoder,
  resultTransferables,
  type WorkerRequest,
  type WorkerResponse,
} from "./executor.ts";
import { postError } from "./posted_error.ts";
import { projectView } from "./views.ts";
import { wipeColumnBatch } from "../views/columns.ts";

interface WorkerScope {
  onmessage: ((e: MessageEvent<WorkerRequest>) => void) | null;
  postMessage(message: WorkerResponse, transfer?: ArrayBuffer[]): void;
}

const scope = globalThis as unknown as WorkerScope;
let views: BatchView[] = [];
let initError: unknown;
/** Parquet encoding (apache-arrow, parquet-wasm) loads after the views, while pass 1 runs. */
let parquet: Promise<typeof import("./parquet_encode.ts")> | undefined;

scope.onmessage = async (e) => {
  const m = e.data;
  if (m.op === "init") {
    parquet = loadParquetEncoder();
    parquet.catch(() => {}); // reported by the first parquet request
    try {
      views = m.views.map((v) =>
        batchView(
          projectView(v.definition, v.file, v.conversionDate ? { conversionDate: v.conversionDate } : {}),
        )
      );
    } catch (err) {
      initError = err;
    }
    return;
  }
  try {
    if (initError !== undefined) throw initError;
    if (m.op === "keys") {
      const result = batchKeys(decodeBatch(m.batch), m.type);
      scope.postMessage({ id: m.id, ok: true, result }, keysTransferables(result));
    } else if (m.op === "eval") {
      const result = batchEval(m.views.map((i) => views[i]), lineSource(m.batch), m.type, m.winners);
      scope.postMessage({ id: m.id, ok: true, result }, resultTransferables(result));
    } else {
      try {
        const { encodeParquet } = await parquet!;
        const result = encodeParquet(views[m.view].compiled, m.rows, m.rowGroupRows);
        scope.postMessage({ id: m.id, ok: true, result }, [result.buffer as ArrayBuffer]);
      } finally {
        wipeColumnBatch(m.rows);
      }
    }
  } catch (err) {
    scope.postMessage({ id: m.id, ok: false, error: postError(err) });
  }
};
