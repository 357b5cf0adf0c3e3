/**
 * A validation worker (a Deno module Worker started by validation_pool.ts): loads the R4 definitions once
 * on `init`, then answers `lines` and `items` jobs with prepare.ts, one at a time, in arrival order. It
 * never lets an error escape unhandled (Deno would print its message, which may quote resource content):
 * a job error is answered with the error's class name, any other uncaught error is reported as `fatal` and
 * the worker closes itself (the pool replaces it).
 *
 * @module
 */

import { loadR4Definitions } from "../definitions.ts";
import { prepareItem, prepareLines, type PrepareScope } from "./prepare.ts";
import type { FromWorker, ToWorker } from "./validation_protocol.ts";

/** The parts of a dedicated worker's global scope used here. */
interface WorkerScope {
  onmessage: ((e: MessageEvent<ToWorker>) => void) | null;
  postMessage(message: FromWorker): void;
  close(): void;
}

const worker = globalThis as unknown as WorkerScope;
let scope: PrepareScope | undefined;

function errorName(e: unknown): string {
  return e instanceof Error ? e.name : typeof e;
}

function fatal(e: Event, error: unknown): void {
  e.preventDefault();
  try {
    worker.postMessage({ kind: "fatal", name: errorName(error) });
  } finally {
    worker.close();
  }
}

globalThis.addEventListener("error", (e) => fatal(e, (e as ErrorEvent).error));
globalThis.addEventListener("unhandledrejection", (e) => fatal(e, (e as PromiseRejectionEvent).reason));

worker.onmessage = (e: MessageEvent<ToWorker>): void => {
  const m = e.data;
  if (m.kind === "init") {
    try {
      const defs = loadR4Definitions();
      scope = { resourceTypes: defs.resourceTypes, allowed: new Set(m.allowed) };
      worker.postMessage({ kind: "ready", loadMs: defs.loadMs });
    } catch (err) {
      worker.postMessage({
        kind: "failed",
        name: errorName(err),
        message: err instanceof Error ? err.message : "unknown error",
      });
    }
    return;
  }
  try {
    if (!scope) throw new Error("job before init");
    const results = m.kind === "lines"
      ? prepareLines(scope, m.job)
      : m.items.map((item) => prepareItem(scope!, item));
    worker.postMessage({ kind: "done", id: m.id, results });
  } catch (err) {
    worker.postMessage({ kind: "error", id: m.id, name: errorName(err) });
  }
};
