/**
 * Reading landing segments: the NDJSON lines of a segment, every chunk verified in order (AAD binds
 * segment id, chunk index, final flag and resource type), memory bounded by one chunk.
 *
 * Lines are yielded as chunks verify; a problem later in the file (tampering, truncation) throws when
 * iteration reaches it. Consumers must therefore discard what they produced from a segment whose
 * iteration did not complete.
 *
 * @module
 */

import { basename } from "node:path";
import type { KmsClient } from "../../kms/client.ts";
import { openSegmentKey } from "./chunk_cipher.ts";
import { LandingFormatError, LandingTruncatedError } from "./errors.ts";
import { parseSegmentFileName, type SegmentHeader } from "./format.ts";
import { countLines, type OpenedSegment, readSegmentHeader, scanChunks } from "./segment_scan.ts";

const td = new TextDecoder();

/** Options of {@link readSegment} and {@link verifySegment}. */
export interface ReadSegmentOptions {
  /**
   * Require the final chunk (default true): a sealed segment without it was truncated. Set false only
   * to inspect an `.open` segment (its end is then not protected against truncation at a chunk
   * boundary, and a torn tail still throws).
   */
  requireFinal?: boolean;
  /** The segment id the header must carry; default: taken from the file name `<id>.seg|.open`. */
  expectedSegmentId?: string;
  /** The resource type the header must carry, when known (e.g. from the manifest). */
  expectedResourceType?: string;
}

/** What {@link verifySegment} found. */
export interface SegmentSummary {
  /** The segment header. */
  header: SegmentHeader;
  /** Number of NDJSON lines. */
  records: number;
  /** Number of data chunks (appended batches). */
  batches: number;
  /** Whether the final chunk is present. */
  sealed: boolean;
  /** File size in bytes. */
  bytes: number;
}

async function openForRead(path: string, options: ReadSegmentOptions): Promise<OpenedSegment> {
  const expectedId = options.expectedSegmentId ?? parseSegmentFileName(basename(path))?.id;
  const file = await Deno.open(path, { read: true });
  try {
    const h = await readSegmentHeader(file, expectedId);
    if (h.kind === "torn") {
      throw new LandingTruncatedError("segment ends inside its header", {
        segmentId: expectedId,
        hint: "the file was truncated, or a crash happened while the segment was created",
      });
    }
    const t = options.expectedResourceType;
    if (t !== undefined && h.segment.header.resourceType !== t) {
      throw new LandingFormatError(`segment holds ${h.segment.header.resourceType}, expected ${t}`, {
        segmentId: h.segment.header.segmentId,
      });
    }
    return h.segment;
  } catch (e) {
    file.close();
    throw e;
  }
}

/** Verified chunks in order, the final one included; throws at a missing final chunk when required. */
async function* verifiedChunks(seg: OpenedSegment, kms: KmsClient, options: ReadSegmentOptions) {
  const key = await openSegmentKey(kms, seg.header);
  let next = 0;
  for await (const c of scanChunks(seg, key, { tolerateTornTail: false })) {
    if (c.kind !== "chunk") continue; // tails throw when not tolerated
    yield c;
    if (c.final) return;
    next = c.index + 1;
  }
  if (options.requireFinal ?? true) {
    throw new LandingTruncatedError("segment has no final chunk", {
      segmentId: seg.header.segmentId,
      chunkIndex: next,
      hint: "it was truncated at a chunk boundary, or it was never sealed",
    });
  }
}

/**
 * The plaintext of the segment at `path`, chunk by chunk in append order, each verified before it is
 * yielded: UTF-8 NDJSON, every chunk a run of whole lines each ending in LF. The cheap way to read a
 * segment in bulk (no per-line strings); {@link readSegment} gives the lines. Throws as
 * {@link readSegment} does.
 */
export async function* readSegmentChunks(
  path: string,
  kms: KmsClient,
  options: ReadSegmentOptions = {},
): AsyncGenerator<Uint8Array<ArrayBuffer>, void, undefined> {
  const seg = await openForRead(path, options);
  try {
    for await (const c of verifiedChunks(seg, kms, options)) {
      if (c.final) break;
      yield c.plaintext;
    }
  } finally {
    seg.file.close();
  }
}

/**
 * The NDJSON lines of the segment at `path`, in append order, each verified before it is yielded.
 * Throws {@link LandingAuthError} (modified, reordered or spliced chunk), {@link LandingTruncatedError}
 * (final chunk or part of a chunk missing), {@link LandingFormatError} (not a segment, renamed file,
 * unexpected resource type) or {@link LandingKmsError} (data key does not unwrap).
 */
export async function* readSegment(
  path: string,
  kms: KmsClient,
  options: ReadSegmentOptions = {},
): AsyncGenerator<string, void, undefined> {
  for await (const plaintext of readSegmentChunks(path, kms, options)) {
    const text = td.decode(plaintext);
    let start = 0;
    for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", start)) {
      yield text.slice(start, i);
      start = i + 1;
    }
  }
}

/** Verifies a whole segment without decoding its lines; returns its header and counts. */
export async function verifySegment(
  path: string,
  kms: KmsClient,
  options: ReadSegmentOptions = {},
): Promise<SegmentSummary> {
  const seg = await openForRead(path, options);
  try {
    let records = 0;
    let batches = 0;
    let sealed = false;
    for await (const c of verifiedChunks(seg, kms, options)) {
      if (c.final) sealed = true;
      else {
        records += countLines(c.plaintext);
        batches++;
      }
    }
    return { header: seg.header, records, batches, sealed, bytes: seg.size };
  } finally {
    seg.file.close();
  }
}

/** Reads and validates the header of the segment at `path` (no KMS call, no chunk verified). */
export async function readHeader(path: string): Promise<SegmentHeader> {
  const seg = await openForRead(path, {});
  seg.file.close();
  return seg.header;
}
