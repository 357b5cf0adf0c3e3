/**
 * Conversion core: landed FHIR NDJSON → deduplicated project views → encrypted, date-partitioned
 * Parquet in the lake, with a manifest. See `convert.ts` for the pipeline and memory bound, `dedupe.ts`
 * for the dedupe rules, `dedupe_key.ts` for reading dedupe keys without parsing, `batch_work.ts` /
 * `executor.ts` for the work in process or in workers, `row_cache.ts` for the speculative first pass,
 * `lake_writer.ts` for the files, and `views.ts` for the sensitivity tags and run constants of the
 * project views.
 *
 * @module
 */

export {
  convert,
  type ConvertInput,
  type ConvertOptions,
  type ConvertResult,
  type Manifest,
  MANIFEST_FILE,
  type ManifestColumn,
  type ManifestFile,
  type ManifestRun,
  NULL_PARTITION,
  readManifest,
} from "./convert.ts";
export { DedupeIndex, type DedupeKey, type DedupeStats, logEntryIdentifier } from "./dedupe.ts";
export { parseDedupeKey, parseResourceLine, scanDedupeKey } from "./dedupe_key.ts";
export { ConvertConfigError, ConvertInputError, ProjectViewError } from "./errors.ts";
export { DEFAULT_BATCH_BYTES } from "./batches.ts";
export { DEFAULT_ROW_CACHE_BYTES } from "./row_cache.ts";
export { readLines } from "./lines.ts";
export {
  CONVERSION_DATE_CONSTANT,
  isIsoDate,
  loadProjectViews,
  type ProjectView,
  projectView,
  type ProjectViewOptions,
  SENSITIVITY_CLASSES,
  type SensitivityClass,
  utcDate,
  withConversionDate,
} from "./views.ts";
