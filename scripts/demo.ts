/**
 * The main job, until the Temporal orchestration lands: the library-level pipeline end to end with
 * the embedded defaults (local keystore and lake under the data folder, default `./data`).
 *
 * 1. generate synthetic Food Coach FHIR data (no real PHI);
 * 2. start the ingest server on 127.0.0.1 and send the data over HTTP (`$import`): validated,
 *    encrypted and fsync'd into the landing zone;
 * 3. convert the sealed segments into encrypted Parquet in the lake (column keys by sensitivity);
 * 4. read a food-log file as a dietitian whose keys exclude direct identifiers.
 *
 * Keys live in the keystore (`data/keystore.json`, mode 0600) and are never printed.
 *
 * Usage: deno task demo [--data DIR] [--patients N] [--days D]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { generate } from "../fhir/generator.ts";
import { LandingZone } from "../fhir/landing/mod.ts";
import { startIngestServer } from "../fhir/server/mod.ts";
import { readManifest } from "../fhir/convert/mod.ts";
import { convertCommand } from "../cli/convert.ts";
import { dataDirKms, DEFAULT_MASTER_KEYS } from "../cli/data_dir.ts";
import { decryptFileWithKms } from "../kms/files.ts";
import { CryptoFactory } from "../kms/crypto_factory.ts";
import type { KmsClient } from "../kms/client.ts";
import { KmsAccessDeniedError } from "../kms/errors.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { data: { type: "string" }, patients: { type: "string" }, days: { type: "string" } },
});
const data = values.data ?? join(import.meta.dirname!, "..", "data");
const work = await Deno.makeTempDir({ prefix: "fhir-pme-demo-" });
try {
  // 1. Synthetic data.
  const gen = join(work, "generated");
  const summary = await generate({
    patients: Number(values.patients ?? 20),
    days: Number(values.days ?? 7),
    seed: 2026,
    outDir: gen,
  });
  const lines = Object.entries(summary.lines).map(([t, n]) => `${t} ${n}`).join(", ");
  console.log(`1. generated ${summary.foodEntries} food entries (${lines} NDJSON lines) in ${gen}`);

  // 2. Ingest over HTTP into the encrypted landing zone.
  const kms = await dataDirKms({}, data);
  const zone = await LandingZone.open(join(data, "landing"), await kms.client(), DEFAULT_MASTER_KEYS.landing);
  const token = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0"))
    .join("");
  const stop = new AbortController();
  const server = await startIngestServer({
    sink: zone,
    clients: { [token]: "demo-app" },
    maxBodyBytes: 64 * 1024 * 1024,
    port: 0,
    signal: stop.signal,
  });
  const base = `http://127.0.0.1:${server.addr.port}/fhir`;
  let accepted = 0;
  for await (const e of Deno.readDir(gen)) {
    if (!e.name.endsWith(".ndjson")) continue;
    const res = await fetch(`${base}/$import`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/fhir+ndjson" },
      body: await Deno.readFile(join(gen, e.name)),
    });
    const outcome = await res.json();
    const m = /accepted (\d+), rejected (\d+)/.exec(outcome.issue?.[0]?.diagnostics ?? "");
    accepted += Number(m?.[1] ?? 0);
    if (!res.ok || Number(m?.[2] ?? 0) > 0) console.log(`   ${e.name}: HTTP ${res.status} ${m?.[0] ?? ""}`);
  }
  stop.abort();
  await server.finished;
  await zone.close({ seal: true });
  console.log(
    `2. ingested ${accepted} resources over HTTP into ${join(data, "landing")} (encrypted segments)`,
  );

  // 3. Convert the landing zone into the encrypted lake.
  await convertCommand(["--data", data]);
  const manifest = await readManifest(join(data, "lake"));
  const byView = new Map<string, number>();
  for (const f of manifest.files) byView.set(f.view, (byView.get(f.view) ?? 0) + f.rows);
  console.log(`3. lake ${join(data, "lake")}: ${[...byView].map(([v, n]) => `${v} ${n} rows`).join(", ")}`);

  // 4. A dietitian's view: every master key except direct identifiers.
  const denyIdentity = (inner: KmsClient): KmsClient => ({
    wrapKey: (k, id) => inner.wrapKey(k, id),
    unwrapKey: (w, id) => {
      if (id === DEFAULT_MASTER_KEYS["direct-identifier"]) {
        return Promise.reject(
          new KmsAccessDeniedError(`dietitian may not use master key ${id}`, { masterKeyId: id }),
        );
      }
      return inner.unwrapKey(w, id);
    },
  });
  const dietitian = new CryptoFactory(async () => denyIdentity(await kms.client()));
  const patientsFile = manifest.files.find((f) => f.view === "patients");
  if (patientsFile) {
    const r = await decryptFileWithKms(
      dietitian,
      {},
      join(data, "lake", patientsFile.path),
      join(work, "dietitian.parquet"),
    );
    console.log(
      `4. dietitian reads patients: ${r.columns.join(", ")}; not readable: ${r.skippedColumns.join(", ")}`,
    );
  }
} finally {
  await Deno.remove(work, { recursive: true });
}
