/**
 * The library-level pipeline, end to end, on synthetic Food Coach-like data (no real PHI): DuckDB
 * writes a plaintext Parquet table into a temporary folder, fhir-pme encrypts it with one key per
 * sensitive column and an encrypted footer into `lake/demo/`, shows what a reader without keys, a
 * dietitian with the clinical key only, and an administrator with every key can see, and re-keys the
 * file. Keys are random, held in memory only and never printed.
 *
 * Usage: deno task demo [--lake DIR] [--rows N]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { DuckDBInstance } from "@duckdb/node-api";
import { openParquetFile, PmeKeyMissingError, transcodeFile } from "../pme/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { lake: { type: "string" }, rows: { type: "string" } },
});
const lake = values.lake ?? join(import.meta.dirname!, "..", "lake");
const rows = Number(values.rows ?? 100_000);
const te = new TextEncoder();
const key = () => crypto.getRandomValues(new Uint8Array(32));

await Deno.mkdir(join(lake, "demo"), { recursive: true });
const work = await Deno.makeTempDir({ prefix: "fhir-pme-demo-" });
try {
  const plain = join(work, "food_log.parquet");
  const db = await DuckDBInstance.create(":memory:");
  const conn = await db.connect();
  await conn.run(`COPY (
      SELECT 'entry-' || i AS entry_id,
             'patient-' || (i % 500) AS patient_id,
             'Synthetic Name ' || (i % 500) AS patient_name,
             TIMESTAMP '2026-01-01' + to_minutes((i * 37) % 525600) AS eaten_at,
             ['breakfast', 'lunch', 'dinner', 'snack'][1 + i % 4] AS meal,
             ['oatmeal', 'apple', 'rice', 'salmon', 'yogurt'][1 + i % 5] AS item,
             (50 + (i * 13) % 700)::DOUBLE AS kcal,
             ((i * 7) % 40)::DOUBLE AS protein_g
      FROM range(${rows}) t(i)) TO '${plain}' (FORMAT parquet, COMPRESSION zstd)`);
  conn.disconnectSync();
  db.closeSync();

  const footer = key();
  const identity = key();
  const clinical = key();
  const out = join(lake, "demo", "food_log.parquet");
  const t0 = performance.now();
  const written = await transcodeFile(plain, out, {}, {
    encryption: {
      footerKey: footer,
      footerKeyMetadata: te.encode("footer"),
      columnKeys: {
        patient_id: { key: identity, keyMetadata: te.encode("identity") },
        patient_name: { key: identity, keyMetadata: te.encode("identity") },
        kcal: { key: clinical, keyMetadata: te.encode("clinical") },
        protein_g: { key: clinical, keyMetadata: te.encode("clinical") },
      },
    },
  });
  console.log(`encrypted ${written.rows} rows into ${out} in ${(performance.now() - t0).toFixed(0)} ms`);

  const keys: Record<string, Uint8Array> = { footer, identity, clinical };
  const retriever = (allowed: string[]) => (meta: Uint8Array) => {
    const id = new TextDecoder().decode(meta);
    return Promise.resolve(allowed.includes(id) ? keys[id] : null);
  };
  try {
    await openParquetFile(out, {});
  } catch (e) {
    if (!(e instanceof PmeKeyMissingError)) throw e;
    console.log("without keys: the footer cannot even be read (encrypted footer)");
  }
  const dietitian = join(work, "dietitian.parquet");
  const r1 = await transcodeFile(out, dietitian, { keyRetriever: retriever(["footer", "clinical"]) }, {});
  console.log(
    `dietitian (footer + clinical keys): reads ${r1.columns.join(", ")}; cannot read ${
      r1.skippedColumns.join(", ")
    }`,
  );
  const admin = join(work, "admin.parquet");
  const r2 = await transcodeFile(
    out,
    admin,
    { keyRetriever: retriever(["footer", "identity", "clinical"]) },
    {},
  );
  console.log(`administrator (all keys): reads ${r2.columns.length} columns, ${r2.rows} rows`);

  const rotated = { footer: key(), identity: key(), clinical: key() };
  const rekeyed = join(lake, "demo", "food_log.rekeyed.parquet");
  await transcodeFile(out, rekeyed, { keyRetriever: retriever(["footer", "identity", "clinical"]) }, {
    encryption: {
      footerKey: rotated.footer,
      columnKeys: {
        patient_id: { key: rotated.identity },
        patient_name: { key: rotated.identity },
        kcal: { key: rotated.clinical },
        protein_g: { key: rotated.clinical },
      },
      algorithm: "AES_GCM_CTR_V1",
    },
  });
  const check = await transcodeFile(rekeyed, join(work, "check.parquet"), {
    footerKey: rotated.footer,
    columnKeys: {
      patient_id: rotated.identity,
      patient_name: rotated.identity,
      kcal: rotated.clinical,
      protein_g: rotated.clinical,
    },
  }, {});
  console.log(
    `re-keyed to fresh keys and AES_GCM_CTR_V1: ${rekeyed} (${check.rows} rows readable with the new keys)`,
  );
} finally {
  await Deno.remove(work, { recursive: true });
}
