/**
 * Running the ingest handler over HTTP (`Deno.serve`), with a drain on shutdown: Deno's own shutdown
 * cuts requests whose body is still arriving — with validation backpressure a large `$import` body is
 * always still arriving —, so on shutdown the server first answers new requests 503 (OperationOutcome,
 * `Retry-After`), lets the requests under way finish (at most `shutdownGraceMs`), then shuts Deno.serve
 * down (gracefully) and stops the validation workers.
 *
 * @module
 */

import { createIngestHandler, type IngestOptions, outcome } from "./handler.ts";
import { issue } from "./errors.ts";

/** Options of startIngestServer. */
export interface StartOptions extends IngestOptions {
  /** Port (0: any free port). */
  port: number;
  /** Interface (default 127.0.0.1). */
  hostname?: string;
  /** Aborting it shuts the server down (as `shutdown()`). */
  signal?: AbortSignal;
  /** On shutdown, how long requests under way may take to finish before they are cut (default 30 000 ms). */
  shutdownGraceMs?: number;
}

/**
 * Starts the server once the handler (and its validation workers) is ready; returns the server (its
 * `addr` has the port). `shutdown()` or aborting `signal` drains it (see the module documentation);
 * `finished` resolves once it stopped listening and the validation workers are stopped.
 */
export async function startIngestServer(options: StartOptions): Promise<Deno.HttpServer<Deno.NetAddr>> {
  const handler = await createIngestHandler(options);
  const graceMs = options.shutdownGraceMs ?? 30_000;
  let underWay = 0;
  let draining = false;
  let drained = (): void => {};
  const serve = async (req: Request): Promise<Response> => {
    if (draining) {
      await req.body?.cancel().catch(() => {});
      const oo = outcome([issue("transient", "The server is shutting down; retry shortly")]);
      return new Response(JSON.stringify(oo), {
        status: 503,
        headers: { "content-type": "application/fhir+json; charset=utf-8", "retry-after": "5" },
      });
    }
    underWay++;
    try {
      return await handler(req);
    } finally {
      if (--underWay === 0) drained();
    }
  };
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve(
      { port: options.port, hostname: options.hostname ?? "127.0.0.1", onListen: () => {} },
      serve,
    );
  } catch (e) {
    await handler.close();
    throw e;
  }
  const finished = server.finished.finally(() => handler.close());
  let stopping: Promise<void> | undefined;
  const shutdown = (): Promise<void> => {
    stopping ??= (async () => {
      draining = true;
      if (underWay > 0) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await new Promise<void>((resolve) => {
          drained = resolve;
          timer = setTimeout(resolve, graceMs);
        });
        clearTimeout(timer);
      }
      await server.shutdown();
      await finished;
    })();
    return stopping;
  };
  if (options.signal?.aborted) await shutdown();
  options.signal?.addEventListener("abort", () => void shutdown(), { once: true });
  return {
    addr: server.addr,
    finished,
    shutdown,
    ref: () => server.ref(),
    unref: () => server.unref(),
    [Symbol.asyncDispose]: shutdown,
  };
}
