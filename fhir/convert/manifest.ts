/**
 * The lake manifest `lake/_manifest.json`: every run and every file it published. It is rewritten
 * atomically (temporary file + rename) once, at the end of a successful run, after all of the run's
 * files are in place; readers list files from it.
 *
 * @module
 */

import { join } from "node:path";
import { writeFileAtomic } from "../../kms/atomic_file.ts";
import type { DedupeStats } from "./dedupe.ts";
import { ConvertConfigError } from "./errors.ts";
import type { SensitivityClass } from "./views.ts";

/** A column of a written file. */
export interface ManifestColumn {
  name: string;
  sensitivity: SensitivityClass;
  /** Master key of the column key, or null for a plaintext column. */
  masterKeyId: string | null;
}

/** A written file, as listed in the manifest. */
export interface ManifestFile {
  /** Path relative to the lake directory, with `/`. */
  path: string;
  view: string;
  /** Partition date, YYYY-MM-DD, or `__HIVE_DEFAULT_PARTITION__` for rows without one. */
  date: string;
  rows: number;
  rowGroups: number;
  bytes: number;
  runId: string;
  footerMasterKey: string;
  columns: ManifestColumn[];
}

/** One run, as listed in the manifest. */
export interface ManifestRun {
  runId: string;
  started: string;
  finished: string;
  /** `%conversion_date` of the run (UTC date of its start unless given). */
  conversionDate: string;
  /** Rows written per view. */
  rows: Record<string, number>;
  /** Dedupe counters per resource type. */
  dedupe: Record<string, DedupeStats>;
}

/** `lake/_manifest.json`. */
export interface Manifest {
  format: "fhir-pme-lake-manifest";
  version: 1;
  updated: string;
  runs: ManifestRun[];
  files: ManifestFile[];
}

/** Name of the manifest in the lake directory. */
export const MANIFEST_FILE = "_manifest.json";

/** Reads the manifest of a lake, or an empty one. */
export async function readManifest(lakeDir: string): Promise<Manifest> {
  let text: string;
  try {
    text = await Deno.readTextFile(join(lakeDir, MANIFEST_FILE));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      return { format: "fhir-pme-lake-manifest", version: 1, updated: "", runs: [], files: [] };
    }
    throw e;
  }
  const m = JSON.parse(text) as Manifest;
  if (m.format !== "fhir-pme-lake-manifest" || m.version !== 1) {
    throw new ConvertConfigError(`${MANIFEST_FILE} is not a version 1 lake manifest`);
  }
  return m;
}

/** Adds `run` and its `files` to the lake's manifest (atomic replace); returns the manifest's path. */
export async function appendToManifest(
  lakeDir: string,
  run: ManifestRun,
  files: readonly ManifestFile[],
): Promise<string> {
  const manifest = await readManifest(lakeDir);
  manifest.runs.push(run);
  manifest.files.push(...files);
  manifest.updated = run.finished;
  const path = join(lakeDir, MANIFEST_FILE);
  await writeFileAtomic(path, new TextEncoder().encode(JSON.stringify(manifest, null, 2) + "\n"));
  return path;
}
