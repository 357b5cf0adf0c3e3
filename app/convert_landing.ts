/**
 * Use case: convert the sealed landing segments of a data folder into the encrypted lake, then mark them
 * published and retire (delete) them. The views are the project's (`views/`), the column master keys
 * come from the folder's sensitivity classes, the footer key from its record.
 *
 * @module
 */

import { join } from "node:path";
import { LandingZone } from "../fhir/landing/mod.ts";
import { convert, type ConvertResult, loadProjectViews, utcDate } from "../fhir/convert/mod.ts";
import type { DataFolder } from "./data_folder.ts";

/** The project's ViewDefinitions folder. */
export const PROJECT_VIEWS_DIR = join(import.meta.dirname!, "..", "views");

/** Default worker threads of a conversion: one per CPU, at most 4. */
export function defaultConvertWorkers(): number {
  return Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1));
}

/** Options of {@link convertLanding}. */
export interface ConvertLandingOptions {
  /** Only segments sealed at or before this time (ms since the epoch). */
  until?: number;
  /** ViewDefinitions folder (default {@link PROJECT_VIEWS_DIR}). */
  viewsDir?: string;
  /** `%conversion_date` of the dimension views, YYYY-MM-DD (default today, UTC). */
  conversionDate?: string;
  /** Worker threads for parsing and views (0: in process; default {@link defaultConvertWorkers}). */
  workers?: number;
  /** Row cache of pass 1 in bytes (see `fhir/convert`). */
  rowCacheBytes?: number;
  /** Keep converted segments (marked published) instead of deleting them. */
  keepSegments?: boolean;
  signal?: AbortSignal;
  /** Told the phase the run is in. */
  onProgress?: (p: { phase: "open" | "convert" | "publish" | "retire"; segments: number }) => void;
}

/** What {@link convertLanding} did (references and counts only). */
export interface ConvertLandingResult {
  /** Segments converted (0: nothing to do). */
  segments: number;
  /** Files written into the lake. */
  files: ConvertResult["files"];
  rows: number;
  /** Bytes of the files written. */
  bytes: number;
  /** Segments deleted after publishing. */
  deletedSegments: number;
  /** Master key ids used (footer and column classes). */
  masterKeys: string[];
  manifestPath?: string;
  seconds: number;
  phases?: ConvertResult["phases"];
}

/** Converts the folder's sealed segments (see the module documentation). */
export async function convertLanding(
  folder: DataFolder,
  options: ConvertLandingOptions = {},
): Promise<ConvertLandingResult> {
  const start = performance.now();
  const keys = folder.masterKeys;
  const conversionDate = options.conversionDate ?? utcDate();
  const views = await loadProjectViews(options.viewsDir ?? PROJECT_VIEWS_DIR, { conversionDate });
  options.signal?.throwIfAborted();
  const zone = await LandingZone.open(folder.landingDir, await folder.kms.client(), keys.landing);
  try {
    const until = options.until;
    const segments = zone.sealedSegments().filter((s) =>
      s.status === "sealed" && (until === undefined || Date.parse(s.sealed) <= until)
    );
    const masterKeys = [keys.footer, keys["direct-identifier"], keys["quasi-identifier"], keys.clinical];
    if (segments.length === 0) {
      return {
        segments: 0,
        files: [],
        rows: 0,
        bytes: 0,
        deletedSegments: 0,
        masterKeys: [],
        seconds: (performance.now() - start) / 1000,
      };
    }
    options.onProgress?.({ phase: "convert", segments: segments.length });
    options.signal?.throwIfAborted();
    const result = await convert({
      inputs: segments.map((s) => ({ type: s.resourceType, bytes: () => zone.readChunks(s.segmentId) })),
      views,
      conversionDate,
      workers: options.workers ?? defaultConvertWorkers(),
      ...(options.rowCacheBytes === undefined ? {} : { rowCacheBytes: options.rowCacheBytes }),
      lakeDir: folder.lakeDir,
      factory: folder.kms.factory,
      connection: folder.kms.connection,
      footerMasterKey: keys.footer,
      masterKeys: {
        "direct-identifier": keys["direct-identifier"],
        "quasi-identifier": keys["quasi-identifier"],
        clinical: keys.clinical,
        technical: null,
      },
    });
    options.onProgress?.({ phase: "publish", segments: segments.length });
    await zone.markPublished(segments.map((s) => s.segmentId));
    options.onProgress?.({ phase: "retire", segments: segments.length });
    const deleted = options.keepSegments ? [] : await zone.deletePublished();
    return {
      segments: segments.length,
      files: result.files,
      rows: result.files.reduce((n, f) => n + f.rows, 0),
      bytes: result.files.reduce((n, f) => n + f.bytes, 0),
      deletedSegments: deleted.length,
      masterKeys,
      manifestPath: result.manifestPath,
      seconds: (performance.now() - start) / 1000,
      phases: result.phases,
    };
  } finally {
    await zone.close();
  }
}
