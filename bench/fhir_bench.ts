/**
 * FHIR pipeline throughput.
 *
 * Primary figure — conversion end to end: the encrypted landing zone → the published encrypted lake
 * (`cli convert`: decrypt the segments, dedupe, views, Arrow/Parquet, PME with KMS-wrapped keys, fsync,
 * manifest, segments marked published and deleted), in food-log Observations/s, against DuckDB in the
 * same run flattening the same `Observation.ndjson` with `read_json` + SQL (same food_log columns, same
 * dedupe, entered-in-error dropped, partitioned by date) into plaintext zstd Parquet. Each conversion
 * runs in a fresh process (`--convert-only`, timed inside it, so process start-up and module loading
 * are excluded as DuckDB's instance creation is) on a fresh copy of the landing zone, once per
 * `--workers` value.
 *
 * Scales: every `--patients` value (default 600 and 3000 patients × 30 days: ≈ 220 MB and ≈ 1.1 GB of
 * Observation NDJSON) is generated, ingested and converted on its own. A conversion has a fixed cost per
 * run (worker start-up and JIT warm-up, the files all written at the end, segment deletion) that DuckDB
 * has far less of, so the ratio at the small scale measures start-up as much as throughput; the summary
 * prints the ratio at each scale and, from the two ends, each side's fixed cost and marginal rate. The
 * goal line reads the largest scale.
 *
 * Reported separately: ingest over HTTP into the `serve` subprocess (`$import` NDJSON in MB/s and
 * resources/s; single POSTs from 4 concurrent clients for a bounded time, resources/s, at the first
 * scale), and an ingest + conversion line (all of `$import`, then conversion) against the same DuckDB
 * time.
 *
 * `deno task bench:fhir [--patients 600,3000] [--days 30] [--workers 0,2] [--repeat 1]
 *  [--post-seconds 10] [--skip-post] [--keep DIR]`
 *
 * Prints counts and rates only, never resource content.
 *
 * @module
 */

import { chunks, startServer, stopServer } from "./serve_process.ts";
import { parseArgs } from "node:util";
import { join } from "node:path";
import { cpus } from "node:os";
import { DuckDBInstance } from "@duckdb/node-api";
import { generate, GENERATED_RESOURCE_TYPES } from "../fhir/generator.ts";
import { CONVERSION_ROLES, openDataFolder } from "../app/data_folder.ts";
import { convertLanding, defaultConvertWorkers } from "../app/convert_landing.ts";
import { type Manifest, MANIFEST_FILE } from "../fhir/convert/mod.ts";

const TOKEN = "fhir-bench-token-0123456789abcdef";
const AUTH = { authorization: `Bearer ${TOKEN}` };
const LOINC = "http://loinc.org";
const DIET_LOG = "https://fhir-pme.example/CodeSystem/diet-log";
const LOG_ENTRY = "https://fhir-pme.example/identifier/log-entry";

function fmt(n: number, digits = 0): string {
  return n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function sqlString(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

/** The first component whose code has `system|code`. */
function comp(system: string, code: string): string {
  return `list_filter(component, c -> len(list_filter(c.code.coding, k -> k.system = ${sqlString(system)} ` +
    `AND k.code = ${sqlString(code)})) > 0)[1]`;
}

/** DuckDB: the food_log view of `ndjson` with PROFILE.md §6 dedupe, as zstd Parquet partitioned by date. */
export function duckdbFoodLogSql(ndjson: string, outDir: string): string {
  const columns = `{
    id: 'VARCHAR',
    meta: 'STRUCT(versionId VARCHAR, lastUpdated VARCHAR)',
    identifier: 'STRUCT(system VARCHAR, value VARCHAR)[]',
    status: 'VARCHAR',
    code: 'STRUCT(coding STRUCT(system VARCHAR, code VARCHAR)[])',
    subject: 'STRUCT(reference VARCHAR)',
    basedOn: 'STRUCT(reference VARCHAR)[]',
    effectiveDateTime: 'VARCHAR',
    valueQuantity: 'STRUCT(value DOUBLE)',
    component: 'STRUCT(code STRUCT(coding STRUCT(system VARCHAR, code VARCHAR)[]), valueQuantity STRUCT(value DOUBLE, code VARCHAR), valueCodeableConcept STRUCT(coding STRUCT(system VARCHAR, code VARCHAR)[], text VARCHAR))[]'
  }`;
  return `COPY (
    WITH src AS (
      SELECT * FROM read_json(${sqlString(ndjson)}, format = 'newline_delimited', columns = ${columns})
    ), latest AS (
      SELECT *, min(meta.lastUpdated::TIMESTAMPTZ) OVER (PARTITION BY id) AS created,
        list_filter(identifier, i -> i.system = ${sqlString(LOG_ENTRY)})[1].value AS log_entry_id
      FROM src
      QUALIFY row_number() OVER (PARTITION BY id
        ORDER BY meta.lastUpdated::TIMESTAMPTZ DESC, TRY_CAST(meta.versionId AS BIGINT) DESC) = 1
    ), entries AS (
      SELECT * FROM latest
      QUALIFY row_number() OVER (PARTITION BY coalesce(log_entry_id, id) ORDER BY created, id) = 1
    )
    SELECT
      id AS entry_id,
      replace(subject.reference, 'Patient/', '') AS patient_id,
      log_entry_id,
      effectiveDateTime AS time,
      list_filter(${comp(DIET_LOG, "meal")}.valueCodeableConcept.coding,
        k -> k.system = 'https://fhir-pme.example/CodeSystem/meal')[1].code AS meal,
      ${comp(DIET_LOG, "food-item")}.valueCodeableConcept.text AS item,
      list_filter(${comp(DIET_LOG, "food-item")}.valueCodeableConcept.coding,
        k -> k.system = 'https://fhir-pme.example/CodeSystem/food')[1].code AS item_code,
      ${comp(DIET_LOG, "portion")}.valueQuantity.value AS portion,
      ${comp(DIET_LOG, "portion")}.valueQuantity.code AS portion_unit,
      valueQuantity.value AS kcal,
      ${comp(LOINC, "9079-5")}.valueQuantity.value AS protein_g,
      ${comp(LOINC, "9059-7")}.valueQuantity.value AS carbohydrate_g,
      ${comp(LOINC, "9066-2")}.valueQuantity.value AS fat_g,
      status,
      replace(basedOn[1].reference, 'NutritionOrder/', '') AS nutrition_order_id,
      meta.versionId AS version_id,
      meta.lastUpdated AS last_updated,
      substr(effectiveDateTime, 1, 10) AS date
    FROM entries
    WHERE len(list_filter(code.coding, k -> k.system = '${LOINC}' AND k.code = '9052-2')) > 0
      AND status IN ('final', 'amended', 'corrected')
  ) TO ${sqlString(outDir)} (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date), OVERWRITE_OR_IGNORE)`;
}

/**
 * Copies a data folder (landing zone + keystore) so that every conversion starts from the same state,
 * then flushes it to disk: the ingest server fsyncs what it lands, so a conversion must not pay for
 * writing out a fresh copy (its fdatasync calls would).
 */
async function copyDir(from: string, to: string): Promise<void> {
  for (const [cmd, args] of [["cp", ["-a", from, to]], ["sync", []]] as const) {
    const out = await new Deno.Command(cmd, { args: [...args] }).output();
    if (!out.success) throw new Error(`${cmd} ${from} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** `--convert-only DATA WORKERS`: one timed conversion in this (fresh) process; prints its seconds. */
async function convertOnly(data: string, workers: string): Promise<void> {
  const t0 = performance.now();
  const folder = await openDataFolder(data, { needs: CONVERSION_ROLES });
  await convertLanding(folder, { workers: Number(workers) });
  const seconds = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({ seconds }));
}

/** Converts a copy of `data` with `workers` in a fresh process; returns its seconds and food_log rows. */
async function timedConversion(
  data: string,
  copy: string,
  workers: number,
): Promise<{ seconds: number; foodRows: number; files: number }> {
  await Deno.remove(copy, { recursive: true }).catch(() => {});
  await copyDir(data, copy);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", import.meta.filename!, "--convert-only", copy, String(workers)],
    stdin: "null",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim().split("\n");
  if (!out.success) throw new Error(`conversion with ${workers} workers failed`);
  const { seconds } = JSON.parse(text[text.length - 1]);
  const manifest = JSON.parse(await Deno.readTextFile(join(copy, "lake", MANIFEST_FILE))) as Manifest;
  const foodRows = manifest.files.filter((f) => f.view === "food_log").reduce((n, f) => n + f.rows, 0);
  await Deno.remove(copy, { recursive: true });
  return { seconds, foodRows, files: manifest.files.length };
}

/** DuckDB's food_log of `ndjson` into `out`; seconds and rows. */
export async function duckdbRun(ndjson: string, out: string): Promise<{ seconds: number; rows: number }> {
  const instance = await DuckDBInstance.create(":memory:");
  try {
    const conn = await instance.connect();
    try {
      await Deno.remove(out, { recursive: true }).catch(() => {});
      const t0 = performance.now();
      await conn.run(duckdbFoodLogSql(ndjson, out));
      const seconds = (performance.now() - t0) / 1000;
      const reader = await conn.runAndReadAll(
        `SELECT count(*)::INTEGER AS n FROM read_parquet(${sqlString(join(out, "**", "*.parquet"))})`,
      );
      return { seconds, rows: Number(reader.getRowObjectsJS()[0].n) };
    } finally {
      conn.disconnectSync();
    }
  } finally {
    instance.closeSync();
  }
}

/** Options of one scale of the benchmark. */
interface ScaleOptions {
  patients: number;
  days: number;
  workerCounts: number[];
  repeat: number;
  /** Seconds of single POSTs (0: none). */
  postSeconds: number;
  /** Folder of this scale's data (removed afterwards unless `keep`). */
  root: string;
  keep: boolean;
}

/** What one scale measured. */
interface ScaleResult {
  patients: number;
  days: number;
  foodObs: number;
  ndjsonBytes: number;
  /** Best conversion seconds per worker count. */
  ours: Map<number, number>;
  duckdb: number;
  importSeconds: number;
}

/** Generate → ingest (→ POSTs) → conversions and DuckDB at one scale; prints as it goes. */
async function runScale(o: ScaleOptions): Promise<ScaleResult> {
  const { root, workerCounts, repeat } = o;
  await Deno.mkdir(root, { recursive: true });
  try {
    const gen = join(root, "gen");
    const data = join(root, "data");
    const clients = join(root, "clients.json");
    await Deno.writeTextFile(clients, JSON.stringify({ [TOKEN]: "bench" }));
    console.log(`\n== ${o.patients} patients × ${o.days} days (cpus: ${cpus().length})`);

    let t0 = performance.now();
    const summary = await generate({ patients: o.patients, days: o.days, seed: "fhir-bench", outDir: gen });
    const foodObs = summary.foodEntries + summary.reuploads + summary.enteredInError + summary.redelivered;
    const obsBytes = (await Deno.stat(join(gen, "Observation.ndjson"))).size;
    console.log(
      `generate: ${fmt(summary.foodEntries)} food entries (${fmt(foodObs)} food-log Observation lines, ` +
        `Observation.ndjson ${fmt(obsBytes / 1e6, 1)} MB) in ${fmt((performance.now() - t0) / 1000, 1)} s`,
    );
    // 1. Ingest: $import of every type, in ≈16 MB requests.
    let server = await startServer(data, clients);
    let bytes = 0;
    let resources = 0;
    t0 = performance.now();
    for (const type of GENERATED_RESOURCE_TYPES) {
      const body = await Deno.readFile(join(gen, `${type}.ndjson`));
      for (const chunk of chunks(body, 16 * 1024 * 1024)) {
        const r = await fetch(`${server.base}/$import`, {
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
    const importSec = (performance.now() - t0) / 1000;
    await stopServer(server.child);
    console.log(
      `ingest $import: ${fmt(resources)} resources, ${fmt(bytes / 1e6, 1)} MB in ${fmt(importSec, 2)} s → ` +
        `${fmt(resources / importSec)} resources/s, ${fmt(bytes / 1e6 / importSec, 1)} MB/s`,
    );

    // 2. Single POSTs, 4 concurrent clients, bounded time, into a fresh data folder.
    if (o.postSeconds > 0) {
      const postData = join(root, "post-data");
      server = await startServer(postData, clients);
      const obsLines = new TextDecoder().decode(await Deno.readFile(join(gen, "Observation.ndjson")))
        .split("\n").filter((l) => l);
      const postMs = o.postSeconds * 1000;
      let posted = 0;
      let next = 0;
      t0 = performance.now();
      const client = async () => {
        while (performance.now() - t0 < postMs) {
          const { id: _id, meta: _meta, ...rest } = JSON.parse(obsLines[next++ % obsLines.length]);
          const r = await fetch(`${server.base}/Observation`, {
            method: "POST",
            headers: { ...AUTH, "content-type": "application/fhir+json", prefer: "return=minimal" },
            body: JSON.stringify(rest),
          });
          await r.body?.cancel();
          if (r.status !== 201) throw new Error(`POST Observation: HTTP ${r.status}`);
          posted++;
        }
      };
      await Promise.all([client(), client(), client(), client()]);
      const postSec = (performance.now() - t0) / 1000;
      await stopServer(server.child);
      await Deno.remove(postData, { recursive: true });
      console.log(
        `ingest POST (4 clients): ${fmt(posted)} resources in ${fmt(postSec, 1)} s → ` +
          `${fmt(posted / postSec)} resources/s`,
      );
    }

    // 3. Conversion end to end, per worker count, each in a fresh process on a fresh copy; and DuckDB.
    const conversions: { workers: number; seconds: number }[] = [];
    let foodRows = -1;
    for (let r = 0; r < repeat; r++) {
      for (const workers of workerCounts) {
        const c = await timedConversion(data, join(root, "data-copy"), workers);
        if (foodRows >= 0 && c.foodRows !== foodRows) {
          throw new Error("conversions disagree on food_log rows");
        }
        foodRows = c.foodRows;
        conversions.push({ workers, seconds: c.seconds });
        console.log(
          `convert (workers ${workers}): ${fmt(c.foodRows)} food_log rows, ${c.files} files in ` +
            `${fmt(c.seconds, 2)} s → ${fmt(foodObs / c.seconds)} food-log Observations/s`,
        );
      }
    }
    let duck = { seconds: Infinity, rows: 0 };
    for (let r = 0; r < repeat; r++) {
      const d = await duckdbRun(join(gen, "Observation.ndjson"), join(root, "duckdb_food_log"));
      console.log(
        `duckdb read_json → zstd Parquet: ${fmt(d.rows)} food_log rows in ${fmt(d.seconds, 2)} s → ` +
          `${fmt(foodObs / d.seconds)} food-log Observations/s`,
      );
      if (d.seconds < duck.seconds) duck = d;
    }
    if (duck.rows !== foodRows) {
      console.log(`note: row counts differ (ours ${foodRows}, duckdb ${duck.rows})`);
    }

    const best = (w: number) => Math.min(...conversions.filter((c) => c.workers === w).map((c) => c.seconds));
    const primary = workerCounts[workerCounts.length - 1];
    console.log(
      `ratio ours/DuckDB at ${o.patients} × ${o.days} (food-log Observations/s; best of ${repeat} each):\n` +
        workerCounts.map((w) =>
          `  conversion end to end, workers ${w}: encrypted landing → published encrypted lake:  ` +
          `${fmt(duck.seconds / best(w), 2)}\n`
        ).join("") +
        `  ingest ($import of all resources) + conversion (workers ${primary}):              ` +
        `${fmt(duck.seconds / (importSec + best(primary)), 2)}`,
    );
    return {
      patients: o.patients,
      days: o.days,
      foodObs,
      ndjsonBytes: obsBytes,
      ours: new Map(workerCounts.map((w) => [w, best(w)])),
      duckdb: duck.seconds,
      importSeconds: importSec,
    };
  } finally {
    if (!o.keep) await Deno.remove(root, { recursive: true });
  }
}

/**
 * Time = fixed + n / rate through two scales (the smallest and the largest): the fixed cost of a run and
 * the marginal rate, in food-log Observations/s.
 */
function linearFit(
  a: { n: number; s: number },
  b: { n: number; s: number },
): { fixed: number; rate: number } {
  const perItem = (b.s - a.s) / (b.n - a.n);
  return { fixed: a.s - perItem * a.n, rate: 1 / perItem };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      patients: { type: "string", default: "600,3000" },
      days: { type: "string", default: "30" },
      workers: { type: "string", default: `0,${defaultConvertWorkers()}` },
      repeat: { type: "string", default: "1" },
      "post-seconds": { type: "string", default: "10" },
      "skip-post": { type: "boolean" },
      keep: { type: "string" },
      "convert-only": { type: "boolean" },
    },
    allowPositionals: true,
  });
  if (values["convert-only"]) {
    const [data, workers] = Deno.args.filter((a) => !a.startsWith("--"));
    return await convertOnly(data, workers);
  }
  const workerCounts = values.workers.split(",").map(Number);
  if (workerCounts.some((w) => !Number.isInteger(w) || w < 0)) throw new Error("--workers: e.g. 0,2");
  const repeat = Number(values.repeat);
  if (!Number.isInteger(repeat) || repeat < 1) throw new Error("--repeat: a positive integer");
  const scales = values.patients.split(",").map(Number);
  if (scales.some((n) => !Number.isInteger(n) || n < 1)) throw new Error("--patients: e.g. 600,3000");
  scales.sort((a, b) => a - b);
  const days = Number(values.days);
  const root = values.keep ?? await Deno.makeTempDir({ prefix: "fhir-bench-" });
  // The data folders' keystores (made by `serve` on first use) stay with the bench's files.
  Deno.env.set("FHIR_PME_CONFIG_DIR", join(root, "config"));
  const results: ScaleResult[] = [];
  try {
    for (const [k, patients] of scales.entries()) {
      results.push(
        await runScale({
          patients,
          days,
          workerCounts,
          repeat,
          // Single POSTs once, at the first scale.
          postSeconds: k === 0 && !values["skip-post"] ? Number(values["post-seconds"]) : 0,
          root: join(root, `p${patients}`),
          keep: values.keep !== undefined,
        }),
      );
    }
  } finally {
    if (!values.keep) await Deno.remove(root, { recursive: true }).catch(() => {});
  }

  const primary = workerCounts[workerCounts.length - 1];
  console.log(
    `\nsummary: conversion end to end (workers ${primary}) vs DuckDB, best of ${repeat} each\n` +
      `  scale              food-log obs   NDJSON MB   ours s   DuckDB s   ratio\n` +
      results.map((r) =>
        `  ${`${r.patients} × ${r.days}`.padEnd(17)}${fmt(r.foodObs).padStart(13)}` +
        `${fmt(r.ndjsonBytes / 1e6).padStart(12)}${fmt(r.ours.get(primary)!, 2).padStart(9)}` +
        `${fmt(r.duckdb, 2).padStart(11)}${fmt(r.duckdb / r.ours.get(primary)!, 2).padStart(8)}\n`
      ).join(""),
  );
  if (results.length > 1) {
    const a = results[0];
    const b = results[results.length - 1];
    const ours = linearFit({ n: a.foodObs, s: a.ours.get(primary)! }, {
      n: b.foodObs,
      s: b.ours.get(primary)!,
    });
    const duck = linearFit({ n: a.foodObs, s: a.duckdb }, { n: b.foodObs, s: b.duckdb });
    console.log(
      `fixed cost per run and marginal rate (fit through the two ends):\n` +
        `  ours:   ${fmt(ours.fixed, 2)} s + n / ${fmt(ours.rate)} food-log Observations/s\n` +
        `  DuckDB: ${fmt(duck.fixed, 2)} s + n / ${fmt(duck.rate)} food-log Observations/s\n` +
        `  marginal ratio: ${fmt(ours.rate / duck.rate, 2)}`,
    );
  }
  const last = results[results.length - 1];
  console.log(
    `goal: conversion end to end ≥ 0.5 of DuckDB — at the largest scale (${last.patients} × ${last.days}): ` +
      `${fmt(last.duckdb / last.ours.get(primary)!, 2)}`,
  );
}

if (import.meta.main) await main();
