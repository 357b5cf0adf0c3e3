/**
 * Messages between the validation pool (validation_pool.ts) and its workers (validation_worker.ts). Jobs
 * carry resources or NDJSON bytes; answers carry serialised accepted resources and issues. An error answer
 * names the error class only: error messages may quote input (JSON.parse does), so they never cross.
 *
 * @module
 */

import type { LineJob, LineResult, Prepared, Rejected, ResourceItem } from "./prepare.ts";

/** Pool → worker. */
export type ToWorker =
  /** First message: load the R4 definitions and answer `ready` (or `failed`). */
  | { kind: "init"; allowed: readonly string[] }
  /** Check a batch of `$import` lines (answer: LineResult per line). */
  | { kind: "lines"; id: number; job: LineJob }
  /** Check resources (answer: Prepared or Rejected per item). */
  | { kind: "items"; id: number; items: ResourceItem[] };

/** Worker → pool. */
export type FromWorker =
  /** Definitions loaded (in `loadMs`). */
  | { kind: "ready"; loadMs: number }
  /** `init` failed (the worker is of no use; its message is ours, from loading the definitions). */
  | { kind: "failed"; name: string; message: string }
  /** A job's results, in job order. */
  | { kind: "done"; id: number; results: LineResult[] | (Prepared | Rejected)[] }
  /** A job threw (unexpected): the class name of the error. */
  | { kind: "error"; id: number; name: string }
  /** An uncaught error outside a job: the worker closes itself. */
  | { kind: "fatal"; name: string };
