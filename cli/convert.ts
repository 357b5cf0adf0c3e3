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
import { isIsoDate, utcDate } from "../fhir/convert/mod.ts";
import { convertLanding, defaultConvertWorkers } from "../app/convert_landing.ts";
import { UsageError } from "./keys.ts";
import { KMS_OPTIONS, KMS_OPTIONS_USAGE, kmsSpecFromOptions } from "./kms_connect.ts";
import { CONVERSION_ROLES, openDataFolder } from "../app/data_folder.ts";

/** Usage of convert. */
export const CONVERT_USAGE =
  `Usage: fhir-pme convert --data DIR [--until TIMESTAMP] [--views DIR] [--keep-segments]
          [--conversion-date YYYY-MM-DD] [--workers N] [--row-cache-mb N] [KMS options]
  Converts sealed landing segments of DIR/landing into encrypted Parquet under DIR/lake (column keys by
  sensitivity class, footer key, manifest), then deletes the converted segments.
  --data DIR                an existing data folder (made by init or serve); refused when it does not exist
  --until TIMESTAMP         only segments sealed at or before this ISO time
  --views DIR               ViewDefinitions (default: the project's views/)
  --keep-segments           keep converted segments (marked published) instead of deleting them
  --conversion-date DATE    partition of the dimension views (those declaring %conversion_date);
                            default today, UTC
  --workers N               parse and evaluate views in N worker threads (0: in process; default one per
                            CPU, at most 4)
  --row-cache-mb N          keep up to N MiB of first-pass rows so inputs are read once (default 256; 0
                            reads every input twice)
  ${KMS_OPTIONS_USAGE}
  Without --kms the KMS recorded in DIR/fhir-pme.json is used. Refuses to start when a master key it
  needs is missing or denied. The ingest server must not be running on DIR (one process owns a landing
  zone at a time).`;

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
  const folder = await openDataFolder(values.data, {
    kms: kmsSpecFromOptions(values),
    needs: CONVERSION_ROLES,
  });
  const r = await convertLanding(folder, {
    until,
    viewsDir: values.views,
    conversionDate,
    workers,
    rowCacheBytes: rowCacheMb === undefined ? undefined : rowCacheMb * 1024 * 1024,
    keepSegments: values["keep-segments"],
  });
  if (r.segments === 0) {
    console.log(
      "nothing to convert: no sealed segments" + (values.until ? ` sealed by ${values.until}` : ""),
    );
    return 0;
  }
  const p = r.phases!;
  console.log(
    `converted ${r.segments} segment(s) into ${r.files.length} file(s), ${r.rows} rows, in ` +
      `${r.seconds.toFixed(1)} s (pass 1 ${p.pass1.toFixed(1)} s, pass 2 ${p.pass2.toFixed(1)} s, ` +
      `last files ${p.write.toFixed(1)} s; ${workers} workers); ${r.deletedSegments} segment(s) deleted; ` +
      `manifest ${r.manifestPath}`,
  );
  return 0;
}
