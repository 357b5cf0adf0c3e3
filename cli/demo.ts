/**
 * `demo [--data DIR] [--patients N] [--days D]`: the main job end to end with the embedded defaults
 * (local keystore outside the data folder, landing zone and lake inside it):
 *
 * 1. generate synthetic Food Coach FHIR data (no real PHI);
 * 2. start the ingest server on 127.0.0.1 and send the data over HTTP (`$import`): validated,
 *    encrypted and fsync'd into the landing zone;
 * 3. convert the sealed segments into encrypted Parquet in the lake (column keys by sensitivity);
 * 4. read the patients table as a dietitian whose keys exclude direct identifiers.
 *
 * Keys are never printed.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { generate } from "../fhir/generator.ts";
import { LandingZone } from "../fhir/landing/mod.ts";
import { startIngestServer } from "../fhir/server/mod.ts";
import { readManifest } from "../fhir/convert/mod.ts";
import { decryptFileWithKms } from "../kms/files.ts";
import { CryptoFactory } from "../kms/crypto_factory.ts";
import type { KmsClient } from "../kms/client.ts";
import { KmsAccessDeniedError } from "../kms/errors.ts";
import { CONVERSION_ROLES, openDataFolder } from "../app/data_folder.ts";
import { convertLanding } from "../app/convert_landing.ts";
import { UsageError } from "./keys.ts";
import { printDataFolderEvent } from "./data_dir.ts";

/** Usage of demo. */
export const DEMO_USAGE = `Usage: fhir-pme demo [--data DIR] [--patients N] [--days D]
  The main job end to end: synthetic Food Coach data (N patients × D days; default 20 × 7) → the ingest
  server over HTTP → encrypted landing zone → conversion into the encrypted Parquet lake → a dietitian's
  read without the direct-identifier key. DIR defaults to ./data; a new DIR gets a new local keystore
  outside it (path printed). Safe to re-run: each run adds a new generated batch.`;

function count(v: string | undefined, dflt: number, option: string, max: number): number {
  if (v === undefined) return dflt;
  if (!/^\d{1,7}$/.test(v) || Number(v) < 1 || Number(v) > max) {
    throw new UsageError(`${option} expects an integer from 1 to ${max}, got ${JSON.stringify(v)}`);
  }
  return Number(v);
}

/** Runs the demo; returns the exit code. */
export async function demoCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { data: { type: "string" }, patients: { type: "string" }, days: { type: "string" } },
  });
  if (positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const patients = count(values.patients, 20, "--patients", 100_000);
  const days = count(values.days, 7, "--days", 3650);
  const data = values.data ?? "data";
  const folder = await openDataFolder(data, {
    create: true,
    needs: CONVERSION_ROLES,
    onEvent: printDataFolderEvent,
  });
  const work = await Deno.makeTempDir({ prefix: "fhir-pme-demo-" });
  try {
    // 1. Synthetic data.
    const gen = join(work, "generated");
    const summary = await generate({ patients, days, seed: 2026, outDir: gen });
    const lines = Object.entries(summary.lines).map(([t, n]) => `${t} ${n}`).join(", ");
    console.log(`1. generated ${summary.foodEntries} food entries (${lines} NDJSON lines) in ${gen}`);

    // 2. Ingest over HTTP into the encrypted landing zone.
    const zone = await LandingZone.open(
      folder.landingDir,
      await folder.kms.client(),
      folder.masterKeys.landing,
    );
    const token = Array.from(
      crypto.getRandomValues(new Uint8Array(16)),
      (b) => b.toString(16).padStart(2, "0"),
    )
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
    try {
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
        if (!res.ok || Number(m?.[2] ?? 0) > 0) {
          console.log(`   ${e.name}: HTTP ${res.status} ${m?.[0] ?? ""}`);
        }
      }
    } finally {
      stop.abort();
      await server.finished;
      await zone.close({ seal: true });
    }
    console.log(`2. ingested ${accepted} resources over HTTP into ${folder.landingDir} (encrypted segments)`);

    // 3. Convert the landing zone into the encrypted lake.
    await openDataFolder(folder.dir, {
      needs: ["footer", "direct-identifier", "quasi-identifier", "clinical"],
    });
    const r = await convertLanding(folder);
    const manifest = await readManifest(folder.lakeDir);
    const byView = new Map<string, number>();
    for (const f of manifest.files) byView.set(f.view, (byView.get(f.view) ?? 0) + f.rows);
    console.log(
      `3. converted ${r.segments} segment(s) into ${r.files.length} file(s), ${r.rows} rows; lake ${folder.lakeDir}: ` +
        [...byView].map(([v, n]) => `${v} ${n} rows`).join(", "),
    );

    // 4. A dietitian's view: every master key except direct identifiers.
    const identity = folder.masterKeys["direct-identifier"];
    const denyIdentity = (inner: KmsClient): KmsClient => ({
      wrapKey: (k, id) => inner.wrapKey(k, id),
      unwrapKey: (w, id) =>
        id === identity
          ? Promise.reject(
            new KmsAccessDeniedError(`dietitian may not use master key ${id}`, { masterKeyId: id }),
          )
          : inner.unwrapKey(w, id),
    });
    const dietitian = new CryptoFactory(async () => denyIdentity(await folder.kms.client()));
    const patientsFile = manifest.files.find((f) => f.view === "patients");
    if (patientsFile) {
      const d = await decryptFileWithKms(
        dietitian,
        {},
        join(folder.lakeDir, patientsFile.path),
        join(work, "dietitian.parquet"),
      );
      console.log(
        `4. dietitian reads patients: ${d.columns.join(", ")}; not readable: ${d.skippedColumns.join(", ")}`,
      );
    }
    return 0;
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}
