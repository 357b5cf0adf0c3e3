/**
 * A pool of validation workers (Deno module Workers running validation_worker.ts), so that validation —
 * most of the ingest server's CPU time — runs on several cores while the main thread reads requests and
 * writes the landing zone.
 *
 * - **Start.** `ValidationPool.start` resolves once every worker has loaded the R4 definitions (each loads
 *   them once); it rejects with ValidationWorkerError `start` when one cannot.
 * - **Dispatch.** Jobs queue in the pool and go to the ready worker with the fewest jobs, at most 2 per
 *   worker (one running, one waiting, so a worker never idles between jobs). Small `items` jobs waiting in
 *   the queue are merged into one message (up to 64 resources): under load, concurrent single requests
 *   share a message. Each job's promise resolves with its results in job order; callers that need an order
 *   across jobs (`$import`) await their jobs in order.
 * - **Failures.** A worker that stops (uncaught error) or does not finish a job within `jobTimeoutMs` is
 *   terminated and replaced; the job it was running fails with ValidationWorkerError (`crash`, `timeout`),
 *   the job waiting behind it goes back to the front of the queue. A job that throws fails alone (`job`).
 *   If no worker is left (a replacement could not start), queued jobs fail and the next job starts one.
 * - **Close.** `close()` terminates the workers and fails every unfinished job (`closed`).
 *
 * @module
 */

import { IngestConfigError, ValidationWorkerError } from "./errors.ts";
import type { LineJob, LineResult, Prepared, Rejected, ResourceItem } from "./prepare.ts";
import type { FromWorker, ToWorker } from "./validation_protocol.ts";

/** Options of ValidationPool.start. */
export interface ValidationPoolOptions {
  /** Number of workers (≥ 1). */
  size: number;
  /** Resource types the server accepts. */
  allowedTypes: readonly string[];
  /** Module of the workers (default validation_worker.ts; tests substitute one that fails on demand). */
  workerUrl?: string | URL;
  /** A job running longer than this marks its worker as hung (default 60 000 ms). */
  jobTimeoutMs?: number;
  /** Told about crashed, hung or replaced workers and failed jobs (the error names no data). */
  onError?: (error: ValidationWorkerError) => void;
}

/** Jobs given to one worker at a time (one running, the next waiting). */
const MAX_JOBS_PER_WORKER = 2;
/** Most resources merged into one `items` message. */
const MAX_MERGED_ITEMS = 64;

type JobMessage =
  | { kind: "lines"; job: LineJob }
  | { kind: "items"; items: ResourceItem[] };

interface Waiter {
  count: number;
  resolve: (results: unknown[]) => void;
  reject: (error: unknown) => void;
}

interface Job {
  msg: JobMessage;
  waiters: Waiter[];
}

interface InFlight {
  id: number;
  job: Job;
  timer?: ReturnType<typeof setTimeout>;
}

interface Slot {
  name: string;
  worker: Worker;
  state: "starting" | "ready" | "dead";
  inflight: InFlight[];
  started: Promise<void>;
  resolveStarted: () => void;
  rejectStarted: (e: unknown) => void;
}

/** A pool of validation workers (see the module documentation). */
export class ValidationPool {
  /** Number of workers the pool keeps running. */
  readonly size: number;
  readonly #allowed: readonly string[];
  readonly #workerUrl: string;
  readonly #timeoutMs: number;
  readonly #onError: (error: ValidationWorkerError) => void;
  #slots: Slot[] = [];
  #queue: Job[] = [];
  #nextId = 1;
  #nextName = 1;
  #closed = false;
  #restarts = 0;

  private constructor(options: ValidationPoolOptions) {
    this.size = options.size;
    this.#allowed = [...options.allowedTypes];
    this.#workerUrl = String(options.workerUrl ?? new URL("./validation_worker.ts", import.meta.url));
    this.#timeoutMs = options.jobTimeoutMs ?? 60_000;
    this.#onError = options.onError ?? (() => {});
  }

  /**
   * Starts `size` workers and resolves when all have loaded the definitions. Throws IngestConfigError for
   * a bad size or timeout, ValidationWorkerError `start` when a worker cannot start.
   */
  static async start(options: ValidationPoolOptions): Promise<ValidationPool> {
    if (!Number.isInteger(options.size) || options.size < 1) {
      throw new IngestConfigError("the validation pool needs an integer size ≥ 1");
    }
    if (options.jobTimeoutMs !== undefined && !(options.jobTimeoutMs > 0)) {
      throw new IngestConfigError("jobTimeoutMs must be > 0");
    }
    const pool = new ValidationPool(options);
    for (let i = 0; i < options.size; i++) pool.#spawn();
    try {
      await Promise.all(pool.#slots.map((s) => s.started));
    } catch (e) {
      pool.close();
      throw e;
    }
    return pool;
  }

  /** Workers replaced after a crash or timeout so far. */
  get restarts(): number {
    return this.#restarts;
  }

  /** Checks a batch of `$import` lines (prepare.ts prepareLines) in a worker. */
  lines(job: LineJob): Promise<LineResult[]> {
    return this.#submit({ kind: "lines", job }, job.ends.length) as Promise<LineResult[]>;
  }

  /** Checks resources (prepare.ts prepareItem) in a worker; results in the order of `items`. */
  items(items: ResourceItem[]): Promise<(Prepared | Rejected)[]> {
    if (items.length === 0) return Promise.resolve([]);
    // A view into a larger buffer would be copied whole: send only its bytes.
    const own = items.map((i) =>
      i.json && (i.json.byteOffset !== 0 || i.json.byteLength !== i.json.buffer.byteLength)
        ? { ...i, json: i.json.slice() }
        : i
    );
    return this.#submit({ kind: "items", items: own }, items.length) as Promise<(Prepared | Rejected)[]>;
  }

  /** Terminates the workers; unfinished jobs fail with ValidationWorkerError `closed`. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const err = new ValidationWorkerError("closed", "the validation pool was closed");
    for (const s of this.#slots) {
      s.state = "dead";
      s.worker.terminate();
      for (const f of s.inflight) {
        clearTimeout(f.timer);
        for (const w of f.job.waiters) w.reject(err);
      }
      s.inflight = [];
      s.rejectStarted(err);
    }
    this.#slots = [];
    for (const j of this.#queue) for (const w of j.waiters) w.reject(err);
    this.#queue = [];
  }

  #submit(msg: JobMessage, count: number): Promise<unknown[]> {
    if (this.#closed) {
      return Promise.reject(new ValidationWorkerError("closed", "the validation pool was closed"));
    }
    return new Promise((resolve, reject) => {
      this.#queue.push({ msg, waiters: [{ count, resolve, reject }] });
      if (this.#slots.length === 0) this.#spawn();
      this.#pump();
    });
  }

  #spawn(): Slot {
    const name = `validation-${this.#nextName++}`;
    let resolveStarted!: () => void;
    let rejectStarted!: (e: unknown) => void;
    const started = new Promise<void>((res, rej) => {
      resolveStarted = res;
      rejectStarted = rej;
    });
    started.catch(() => {}); // start failures are handled where they happen
    const worker = new Worker(this.#workerUrl, { type: "module", name });
    const slot: Slot = {
      name,
      worker,
      state: "starting",
      inflight: [],
      started,
      resolveStarted,
      rejectStarted,
    };
    this.#slots.push(slot);
    worker.onmessage = (e: MessageEvent<FromWorker>) => this.#onMessage(slot, e.data);
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault(); // its message may quote data; the main thread must not die of it either
      this.#fail(slot, "crash", `validation worker ${name} stopped with an uncaught error`);
    };
    worker.onmessageerror = () => {
      this.#fail(slot, "crash", `validation worker ${name} sent a message that could not be read`);
    };
    worker.postMessage({ kind: "init", allowed: this.#allowed } satisfies ToWorker);
    return slot;
  }

  #onMessage(slot: Slot, m: FromWorker): void {
    if (slot.state === "dead") return;
    switch (m.kind) {
      case "ready":
        slot.state = "ready";
        slot.resolveStarted();
        this.#pump();
        return;
      case "failed":
        this.#fail(slot, "start", `validation worker ${slot.name} could not start: ${m.name}: ${m.message}`);
        return;
      case "fatal":
        this.#fail(slot, "crash", `validation worker ${slot.name} stopped with an uncaught ${m.name}`);
        return;
      case "done":
      case "error": {
        const i = slot.inflight.findIndex((f) => f.id === m.id);
        if (i < 0) return;
        const [f] = slot.inflight.splice(i, 1);
        clearTimeout(f.timer);
        if (m.kind === "done") {
          let off = 0;
          for (const w of f.job.waiters) {
            w.resolve(m.results.slice(off, off + w.count));
            off += w.count;
          }
        } else {
          const err = new ValidationWorkerError(
            "job",
            `validation worker ${slot.name} failed on a job (${m.name})`,
          );
          this.#onError(err);
          for (const w of f.job.waiters) w.reject(err);
        }
        this.#arm(slot);
        this.#pump();
        return;
      }
    }
  }

  /** Ends a worker: fails the job it was running, requeues the one waiting behind it, replaces it. */
  #fail(slot: Slot, failure: "start" | "crash" | "timeout", message: string): void {
    if (slot.state === "dead") return;
    const starting = slot.state === "starting";
    slot.state = "dead";
    slot.worker.terminate();
    this.#slots = this.#slots.filter((s) => s !== slot);
    const err = new ValidationWorkerError(starting ? "start" : failure, message);
    slot.rejectStarted(err);
    const [running, ...waiting] = slot.inflight;
    slot.inflight = [];
    for (const f of [running, ...waiting]) if (f) clearTimeout(f.timer);
    if (running) { for (const w of running.job.waiters) w.reject(err); }
    this.#queue.unshift(...waiting.map((f) => f.job));
    this.#onError(err);
    if (this.#closed) return;
    if (!starting) {
      this.#restarts++;
      this.#spawn();
    } else if (this.#slots.length === 0) {
      // Nothing left that could run the queue: fail it; the next job starts a worker again.
      for (const j of this.#queue) for (const w of j.waiters) w.reject(err);
      this.#queue = [];
    }
    this.#pump();
  }

  /** Starts the job timeout of the job a worker is running. */
  #arm(slot: Slot): void {
    const head = slot.inflight[0];
    if (!head || head.timer !== undefined) return;
    head.timer = setTimeout(() => {
      this.#fail(
        slot,
        "timeout",
        `validation worker ${slot.name} did not finish a job in ${this.#timeoutMs} ms`,
      );
    }, this.#timeoutMs);
  }

  #pump(): void {
    while (this.#queue.length > 0) {
      let best: Slot | undefined;
      for (const s of this.#slots) {
        if (s.state !== "ready" || s.inflight.length >= MAX_JOBS_PER_WORKER) continue;
        if (!best || s.inflight.length < best.inflight.length) best = s;
      }
      if (!best) return;
      let job = this.#queue.shift()!;
      if (job.msg.kind === "items") job = this.#merge(job, job.msg.items);
      const id = this.#nextId++;
      best.inflight.push({ id, job });
      best.worker.postMessage({ ...job.msg, id } satisfies ToWorker);
      this.#arm(best);
    }
  }

  /** Merges `items` jobs waiting behind `first` into it (up to MAX_MERGED_ITEMS resources). */
  #merge(first: Job, firstItems: ResourceItem[]): Job {
    const items = [...firstItems];
    const waiters = [...first.waiters];
    while (this.#queue.length > 0) {
      const next = this.#queue[0];
      if (next.msg.kind !== "items" || items.length + next.msg.items.length > MAX_MERGED_ITEMS) break;
      this.#queue.shift();
      items.push(...next.msg.items);
      waiters.push(...next.waiters);
    }
    return waiters.length === first.waiters.length ? first : { msg: { kind: "items", items }, waiters };
  }
}
