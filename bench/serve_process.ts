/**
 * The ingest server as a subprocess for the benchmarks: start `cli serve` on a free port and wait until it
 * answers, stop it, and split NDJSON into `$import` requests.
 *
 * @module
 */

import { dirname, join } from "node:path";

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * Starts `cli serve --data DATA --clients CLIENTS [extra args]` and waits until `GET /fhir/metadata`
 * answers; `startMs` is how long that took. Default keystores go to `FHIR_PME_CONFIG_DIR`, else next to
 * DATA.
 */
export async function startServer(
  data: string,
  clients: string,
  extraArgs: string[] = [],
): Promise<{ base: string; child: Deno.ChildProcess; startMs: number }> {
  const port = freePort();
  const t0 = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      join(import.meta.dirname!, "..", "cli", "main.ts"),
      "serve",
      "--data",
      data,
      "--port",
      String(port),
      "--clients",
      clients,
      ...extraArgs,
    ],
    // A new data folder's keystore goes next to it, inside the benchmark's scratch folder.
    env: {
      FHIR_PME_CONFIG_DIR: Deno.env.get("FHIR_PME_CONFIG_DIR") ?? join(dirname(data), "fhir-pme-config"),
    },
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const base = `http://127.0.0.1:${port}/fhir`;
  for (let i = 0; i < 1200; i++) {
    try {
      const r = await fetch(`${base}/metadata`);
      await r.body?.cancel();
      if (r.ok) return { base, child, startMs: performance.now() - t0 };
    } catch {
      // not yet listening
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  child.kill("SIGKILL");
  throw new Error("serve did not start");
}

/** Stops the server with SIGTERM (it drains and seals) and checks its exit status. */
export async function stopServer(child: Deno.ChildProcess): Promise<void> {
  child.kill("SIGTERM");
  const st = await child.status;
  if (st.code !== 0) throw new Error(`serve exited with ${st.code}`);
}

/** Splits NDJSON bytes at line boundaries into chunks of about `size` bytes. */
export function chunks(bytes: Uint8Array<ArrayBuffer>, size: number): Uint8Array<ArrayBuffer>[] {
  const out: Uint8Array<ArrayBuffer>[] = [];
  let start = 0;
  while (start < bytes.length) {
    let end = Math.min(start + size, bytes.length);
    while (end < bytes.length && bytes[end - 1] !== 0x0a) end++;
    out.push(bytes.subarray(start, end));
    start = end;
  }
  return out;
}
