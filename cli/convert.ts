/**
 * `convert --data DIR [--until TIMESTAMP]`: the conversion core without Temporal. Sealed landing
 * segments (optionally only those sealed before TIMESTAMP) → dedupe → project views → encrypted
 * Parquet under `DIR/lake/<view>/date=YYYY-MM-DD/` with column master keys by sensitivity class →
 * lake manifest; then the converted segments are marked published and deleted (their DEKs with them).
 * `--conversion-date` sets `%conversion_date`, the partition of the dimension views (default: today,
 * UTC).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { LandingZone } from "../fhir/landing/mod.ts";
import { convert, isIsoDate, loadProjectViews, utcDate } from "../fhir/convert/mod.ts";
import { UsageError } from "./keys.ts";
import { KMS_OPTIONS } from "./kms_connect.ts";
import { dataDirKms, DEFAULT_MASTER_KEYS } from "./data_dir.ts";

/** Usage of convert. */
export const CONVERT_USAGE =
  `Usage: deno task cli convert --data DIR [--until TIMESTAMP] [--views DIR] [--keep-segments]
          [--conversion-date YYYY-MM-DD] [--workers N] [--row-cache-mb N]
          [--kms local --keystore FILE | --kms vault ...]
  Converts sealed landing segments of DIR/landing into encrypted Parquet under DIR/lake (views from
  views/ by default), then deletes the converted segments (unless --keep-segments). Views that declare
  %conversion_date (the dimension views) are partitioned by --conversion-date (default: today, UTC).
  --workers N parses and evaluates the views in N worker threads (0: in process; default: the number
  of CPUs, at most 4). --row-cache-mb N keeps up to N MiB of rows evaluated in the first pass so that
  inputs are read once (default 256; 0 reads every input twice).`;

/** Default `--workers`: one per CPU, at most 4. */
export function defaultConvertWorkers(): number {
  return Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1));
}

/** Runs a conversion; returns the exit code. */
export async function convertCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      data: { type: "string" },
      until: { type: "string" },
      views: { type: "string" },
      "keep-segments": { type: "boolean" },
      "conversion-date": { type: "string" },
      workers: { type: "string" },
      "row-cache-mb": { type: "string" },
      ...KMS_OPTIONS,
    },
  });
  if (!values.data) throw new UsageError(`--data DIR is required\n${CONVERT_USAGE}`);
  const until = values.until === undefined ? undefined : Date.parse(values.until);
  if (until !== undefined && Number.isNaN(until)) throw new UsageError("--until must be an ISO timestamp");
  const conversionDate = values["conversion-date"] ?? utcDate();
  if (!isIsoDate(conversionDate)) {
    throw new UsageError("--conversion-date must be a calendar date YYYY-MM-DD (e.g. 2025-06-01)");
  }
  const workers = values.workers === undefined ? defaultConvertWorkers() : Number(values.workers);
  if (!Number.isInteger(workers) || workers < 0 || workers > 64) {
    throw new UsageError("--workers must be an integer from 0 (in process) to 64");
  }
  const rowCacheMb = values["row-cache-mb"] === undefined ? undefined : Number(values["row-cache-mb"]);
  if (rowCacheMb !== undefined && (!Number.isInteger(rowCacheMb) || rowCacheMb < 0)) {
    throw new UsageError("--row-cache-mb must be an integer ≥ 0 (MiB)");
  }
  const kms = await dataDirKms(values, values.data);
  const views = await loadProjectViews(values.views ?? join(import.meta.dirname!, "..", "views"), {
    conversionDate,
  });
  const zone = await LandingZone.open(
    join(values.data, "landing"),
    await kms.client(),
    DEFAULT_MASTER_KEYS.landing,
  );
  try {
    const segments = zone.sealedSegments().filter((s) =>
      s.status === "sealed" && (until === undefined || Date.parse(s.sealed) <= until)
    );
    if (segments.length === 0) {
      console.log(
        "nothing to convert: no sealed segments" + (values.until ? ` sealed by ${values.until}` : ""),
      );
      return 0;
    }
    const result = await convert({
      inputs: segments.map((s) => ({ type: s.resourceType, bytes: () => zone.readChunks(s.segmentId) })),
      views,
      conversionDate,
      workers,
      ...(rowCacheMb === undefined ? {} : { rowCacheBytes: rowCacheMb * 1024 * 1024 }),
      lakeDir: join(values.data, "lake"),
      factory: kms.factory,
      connection: kms.connection,
      footerMasterKey: DEFAULT_MASTER_KEYS.footer,
      masterKeys: {
        "direct-identifier": DEFAULT_MASTER_KEYS["direct-identifier"],
        "quasi-identifier": DEFAULT_MASTER_KEYS["quasi-identifier"],
        clinical: DEFAULT_MASTER_KEYS.clinical,
        technical: null,
      },
    });
    await zone.markPublished(segments.map((s) => s.segmentId));
    const deleted = values["keep-segments"] ? [] : await zone.deletePublished();
    const rows = result.files.reduce((n, f) => n + f.rows, 0);
    const p = result.phases;
    console.log(
      `converted ${segments.length} segment(s) into ${result.files.length} file(s), ${rows} rows, in ` +
        `${result.seconds.toFixed(1)} s (pass 1 ${p.pass1.toFixed(1)} s, pass 2 ${p.pass2.toFixed(1)} s, ` +
        `last files ${p.write.toFixed(1)} s; ${workers} workers); ${deleted.length} segment(s) deleted; ` +
        `manifest ${result.manifestPath}`,
    );
    return 0;
  } finally {
    await zone.close();
  }
}
