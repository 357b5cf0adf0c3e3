/**
 * Conversion core: landed FHIR NDJSON → deduplicated project views → encrypted, date-partitioned
 * Parquet in the lake, with a manifest. See `convert.ts` for the pipeline and memory bound, `dedupe.ts`
 * for the dedupe rules and `views.ts` for the sensitivity tags of the project views.
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
export { ConvertConfigError, ConvertInputError, ProjectViewError } from "./errors.ts";
export { readLines } from "./lines.ts";
export {
  loadProjectViews,
  type ProjectView,
  projectView,
  SENSITIVITY_CLASSES,
  type SensitivityClass,
} from "./views.ts";
