/**
 * Ingest throughput of `cli serve` per validation worker count: `$import` of generated NDJSON (every type,
 * ≈16 MB requests, one client: resources/s and MB/s) and single POSTs of Observations from concurrent
 * clients for a bounded time (resources/s), each against a fresh `serve` subprocess and data folder, the
 * same method as bench/fhir_bench.ts. The load generator runs on the same machine (it competes for the
 * cores: the numbers are what one box does, not the server alone).
 *
 * `deno run -A bench/ingest_bench.ts [--gen DIR] [--workers 0,1,2] [--post-seconds 10] [--post-clients 4]
 * [--rounds 1] [--patients 300] [--days 30] [--scratch DIR]`
 *
 * Without `--gen` the data is generated (seed 1) into the scratch folder (a new temporary folder under
 * `--scratch`, default the system's, removed at the end). `--workers default` runs the server without
 * `--validation-workers`. Each line also shows the cores used by the server, by the load generator and by
 * other processes (Linux): results with "other" load are not comparable. Prints counts and rates only,
 * never resource content.
 *
 * @module
 */

import { chunks, startServer, stopServer } from "./serve_process.ts";
import { parseArgs } from "node:util";
import { join } from "node:path";
import { cpus } from "node:os";
import { generate, GENERATED_RESOURCE_TYPES } from "../fhir/generator.ts";

const TOKEN = "ingest-bench-token-0123456789abcdef";
const AUTH = { authorization: `Bearer ${TOKEN}` };

/** `serve` arguments for a worker count ("default": the server's own default). */
function serveArgs(workers: string): string[] {
  return workers === "default" ? [] : ["--validation-workers", workers];
}

/** CPU seconds: the machine's busy time and one process's (Linux /proc; undefined elsewhere). */
interface CpuSample {
  busy: number;
  server: number;
  self: number;
}

const HZ = 100; // USER_HZ of /proc/*/stat on Linux

function procCpu(pid: number | "self"): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / HZ; // utime + stime
}

function sample(serverPid: number): CpuSample | undefined {
  try {
    const [cpu] = Deno.readTextFileSync("/proc/stat").split("\n");
    const v = cpu.trim().split(/\s+/).slice(1).map(Number);
    const idle = v[3] + v[4];
    const busy = (v.reduce((a, b) => a + b, 0) - idle) / HZ;
    return { busy, server: procCpu(serverPid), self: procCpu("self") };
  } catch {
    return undefined;
  }
}

/** Cores used by the server and by processes other than the server and this load generator. */
function cpuShares(a: CpuSample | undefined, b: CpuSample | undefined, sec: number): string {
  if (!a || !b) return "";
  const server = (b.server - a.server) / sec;
  const other = (b.busy - a.busy - (b.server - a.server) - (b.self - a.self)) / sec;
  return ` [server ${fmt(server, 2)} cores, load generator ${fmt((b.self - a.self) / sec, 2)}, other ${
    fmt(Math.max(0, other), 2)
  }]`;
}

function fmt(n: number, digits = 0): string {
  return n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

interface Row {
  workers: string;
  startMs: number;
  importRes: number;
  importMBs: number;
  importCpu: string;
  postRes: number;
  postCpu: string;
}

async function importAll(
  base: string,
  gen: string,
): Promise<{ resources: number; bytes: number; sec: number }> {
  let bytes = 0;
  let resources = 0;
  const t0 = performance.now();
  for (const type of GENERATED_RESOURCE_TYPES) {
    const body = await Deno.readFile(join(gen, `${type}.ndjson`));
    for (const chunk of chunks(body, 16 * 1024 * 1024)) {
      const r = await fetch(`${base}/$import`, {
        method: "POST",
        headers: { ...AUTH, "content-type": "application/fhir+ndjson" },
        body: chunk,
      });
      await r.body?.cancel();
      if (r.status !== 200 || r.headers.get("x-rejected-count") !== "0") {
        throw new Error(`$import ${type}: HTTP ${r.status}, rejected ${r.headers.get("x-rejected-count")}`);
      }
      resources += Number(r.headers.get("x-accepted-count"));
      bytes += chunk.length;
    }
  }
  return { resources, bytes, sec: (performance.now() - t0) / 1000 };
}

async function postFor(base: string, obsLines: string[], ms: number, clients: number): Promise<number> {
  let posted = 0;
  let next = 0;
  const t0 = performance.now();
  const client = async () => {
    while (performance.now() - t0 < ms) {
      const { id: _id, meta: _meta, ...rest } = JSON.parse(obsLines[next++ % obsLines.length]);
      const r = await fetch(`${base}/Observation`, {
        method: "POST",
        headers: { ...AUTH, "content-type": "application/fhir+json", prefer: "return=minimal" },
        body: JSON.stringify(rest),
      });
      await r.body?.cancel();
      if (r.status !== 201) throw new Error(`POST Observation: HTTP ${r.status}`);
      posted++;
    }
  };
  await Promise.all(Array.from({ length: clients }, client));
  return posted / ((performance.now() - t0) / 1000);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      gen: { type: "string" },
      workers: { type: "string", default: "0,1,2" },
      "post-seconds": { type: "string", default: "10" },
      "post-clients": { type: "string", default: "4" },
      rounds: { type: "string", default: "1" },
      patients: { type: "string", default: "300" },
      days: { type: "string", default: "30" },
      scratch: { type: "string" },
    },
  });
  if (values.scratch) await Deno.mkdir(values.scratch, { recursive: true });
  const root = await Deno.makeTempDir({ prefix: "ingest-bench-", dir: values.scratch });
  try {
    let gen = values.gen;
    if (!gen) {
      gen = join(root, "gen");
      await generate({
        patients: Number(values.patients),
        days: Number(values.days),
        seed: "1",
        outDir: gen,
      });
    }
    const clients = join(root, "clients.json");
    await Deno.writeTextFile(clients, JSON.stringify({ [TOKEN]: "bench" }));
    const obsLines = new TextDecoder().decode(await Deno.readFile(join(gen, "Observation.ndjson")))
      .split("\n").filter((l) => l);
    const postMs = Number(values["post-seconds"]) * 1000;
    const postClients = Number(values["post-clients"]);
    console.log(`cpus: ${cpus().length}; data: ${gen}; POST: ${postClients} clients × ${postMs / 1000} s`);
    const rows: Row[] = [];
    let run = 0;
    for (let round = 0; round < Number(values.rounds); round++) {
      for (const workers of values.workers.split(",").map((s) => s.trim())) {
        run++;
        let s = await startServer(join(root, `data-${run}`), clients, serveArgs(workers));
        const startMs = s.startMs;
        let c0 = sample(s.child.pid);
        const imp = await importAll(s.base, gen);
        const importCpu = cpuShares(c0, sample(s.child.pid), imp.sec);
        await stopServer(s.child);
        s = await startServer(join(root, `post-${run}`), clients, serveArgs(workers));
        c0 = sample(s.child.pid);
        const t0 = performance.now();
        const postRes = await postFor(s.base, obsLines, postMs, postClients);
        const postCpu = cpuShares(c0, sample(s.child.pid), (performance.now() - t0) / 1000);
        await stopServer(s.child);
        const row = {
          workers,
          startMs,
          importRes: imp.resources / imp.sec,
          importMBs: imp.bytes / 1e6 / imp.sec,
          importCpu,
          postRes,
          postCpu,
        };
        rows.push(row);
        console.log(
          `workers ${workers}: start ${fmt(startMs)} ms; $import ${fmt(imp.resources)} resources, ` +
            `${fmt(imp.bytes / 1e6, 1)} MB in ${fmt(imp.sec, 2)} s → ${fmt(row.importRes)} resources/s, ` +
            `${fmt(row.importMBs, 1)} MB/s${importCpu}; POST → ${fmt(postRes)} resources/s${postCpu}`,
        );
      }
    }
    console.log("\n| workers | start (ms) | $import resources/s | $import MB/s | POST resources/s |");
    console.log("|---|---|---|---|---|");
    for (const r of rows) {
      console.log(
        `| ${r.workers} | ${fmt(r.startMs)} | ${fmt(r.importRes)} | ${fmt(r.importMBs, 1)} | ${
          fmt(r.postRes)
        } |`,
      );
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

if (import.meta.main) await main();
