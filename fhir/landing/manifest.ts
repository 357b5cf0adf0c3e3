/**
 * The landing manifest (`manifest.json`): the sealed segments that conversion consumes, with their
 * status (`sealed` → `published` once conversion has published their rows; published segments are then
 * deleted and leave the manifest). Replaced atomically (temporary file, fsync, rename, directory
 * fsync). It holds no resource content: ids, types, counts, sizes and times only.
 *
 * @module
 */

import { join } from "node:path";
import { writeFileAtomic } from "../../kms/atomic_file.ts";
import { LandingFormatError, LandingIoError } from "./errors.ts";
import { isNotFound } from "./file_io.ts";
import { isSegmentId, segmentFileName } from "./format.ts";
import type { SealedSegment } from "./segment_writer.ts";

/** File name of the manifest in the landing directory. */
export const MANIFEST_FILE = "manifest.json";
/** Value of the manifest's `format` member. */
export const MANIFEST_FORMAT = "fhir-pme-landing-manifest";
/** Manifest version. */
export const MANIFEST_VERSION = 1;

/** Lifecycle of a sealed segment. */
export type SegmentStatus = "sealed" | "published";

/** One sealed segment in the manifest. */
export interface ManifestEntry extends SealedSegment {
  /** File name in the landing directory (`<id>.seg`). */
  file: string;
  /** `sealed`: waiting for conversion; `published`: converted, may be deleted. */
  status: SegmentStatus;
  /** ISO time it was marked published. */
  published?: string;
}

/** The manifest document. */
export interface Manifest {
  /** Always {@link MANIFEST_FORMAT}. */
  format: string;
  /** Always {@link MANIFEST_VERSION}. */
  version: number;
  /** ISO time of the last update. */
  updated: string;
  /** Sealed and published segments, in sealing order. */
  segments: ManifestEntry[];
}

/** An empty manifest. */
export function emptyManifest(): Manifest {
  return {
    format: MANIFEST_FORMAT,
    version: MANIFEST_VERSION,
    updated: new Date(0).toISOString(),
    segments: [],
  };
}

/** A manifest entry for a newly sealed segment. */
export function entryFor(s: SealedSegment): ManifestEntry {
  return { ...s, file: segmentFileName(s.segmentId, "sealed"), status: "sealed" };
}

function checkEntry(e: unknown, i: number): ManifestEntry {
  const bad = (what: string) =>
    new LandingFormatError(`manifest entry ${i}: ${what}`, {
      hint: `${MANIFEST_FILE} was modified or damaged`,
    });
  if (e === null || typeof e !== "object") throw bad("not an object");
  const o = e as Record<string, unknown>;
  if (typeof o.segmentId !== "string" || !isSegmentId(o.segmentId)) throw bad("invalid segmentId");
  if (o.file !== segmentFileName(o.segmentId, "sealed")) throw bad("invalid file");
  if (typeof o.resourceType !== "string") throw bad("invalid resourceType");
  for (const k of ["records", "batches", "bytes"]) {
    if (!Number.isSafeInteger(o[k]) || (o[k] as number) < 0) throw bad(`invalid ${k}`);
  }
  if (o.status !== "sealed" && o.status !== "published") throw bad("invalid status");
  return o as unknown as ManifestEntry;
}

/** Loads the manifest of `dir`; an empty one when there is none yet. */
export async function loadManifest(dir: string): Promise<Manifest> {
  let text: string;
  try {
    text = await Deno.readTextFile(join(dir, MANIFEST_FILE));
  } catch (e) {
    if (isNotFound(e)) return emptyManifest();
    throw e;
  }
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(text);
  } catch (e) {
    throw new LandingFormatError(`${MANIFEST_FILE} is not JSON`, { cause: e });
  }
  if (m?.format !== MANIFEST_FORMAT || m.version !== MANIFEST_VERSION || !Array.isArray(m.segments)) {
    throw new LandingFormatError(`${MANIFEST_FILE} is not a landing manifest of version ${MANIFEST_VERSION}`);
  }
  const segments = m.segments.map(checkEntry);
  const ids = new Set(segments.map((s) => s.segmentId));
  if (ids.size !== segments.length) throw new LandingFormatError(`${MANIFEST_FILE} lists a segment twice`);
  return { format: MANIFEST_FORMAT, version: MANIFEST_VERSION, updated: String(m.updated ?? ""), segments };
}

/** Replaces the manifest of `dir` atomically (mode 0600). */
export async function saveManifest(dir: string, m: Manifest): Promise<void> {
  try {
    await writeFileAtomic(
      join(dir, MANIFEST_FILE),
      new TextEncoder().encode(JSON.stringify(m, null, 1) + "\n"),
    );
  } catch (e) {
    throw new LandingIoError(`updating ${MANIFEST_FILE} failed; the previous manifest is intact`, {
      cause: e,
    });
  }
}
