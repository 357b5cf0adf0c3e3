/**
 * Chunk-by-chunk verification of a segment file, shared by the reader (strict: every anomaly is an
 * error) and crash recovery (a torn tail after the last complete chunk is reported, not thrown).
 * Memory is bounded by one chunk.
 *
 * @module
 */

import { openChunk } from "./chunk_cipher.ts";
import { LandingAuthError, LandingFormatError, LandingTruncatedError } from "./errors.ts";
import { isZeroRange, readAt } from "./file_io.ts";
import {
  type AadContext,
  aadContext,
  LENGTH_BYTES,
  MAX_CHUNK_PLAINTEXT,
  NONCE_BYTES,
  parseHeader,
  parsePrefix,
  PREFIX_BYTES,
  type SegmentHeader,
  startsLikeSegment,
  TAG_BYTES,
} from "./format.ts";

/** A segment file opened for reading, with its parsed header. */
export interface OpenedSegment {
  /** The open file (the caller closes it). */
  file: Deno.FsFile;
  /** The validated header. */
  header: SegmentHeader;
  /** Offset of chunk 0 (prefix plus header). */
  dataStart: number;
  /** File size when opened. */
  size: number;
  /** Fixed AAD parts. */
  ctx: AadContext;
}

/** Result of reading a segment's header: the header, or a file that ends inside it. */
export type HeaderRead =
  | { kind: "ok"; segment: OpenedSegment }
  | { kind: "torn"; size: number };

/**
 * Reads and validates the prefix and header of an open file. A file that ends inside the header, or
 * holds only zero bytes, is `torn` (a crash while the segment was being created); bytes that are not
 * a segment throw {@link LandingFormatError}.
 */
export async function readSegmentHeader(file: Deno.FsFile, expectedId?: string): Promise<HeaderRead> {
  const size = (await file.stat()).size;
  const prefix = await readAt(file, 0, PREFIX_BYTES);
  if (prefix.length < PREFIX_BYTES) {
    if (startsLikeSegment(prefix) || await isZeroRange(file, 0, size)) return { kind: "torn", size };
    throw new LandingFormatError("not a landing segment (bad magic)", { segmentId: expectedId });
  }
  if (!startsLikeSegment(prefix) && await isZeroRange(file, 0, size)) return { kind: "torn", size };
  const n = parsePrefix(prefix, expectedId);
  if (size < PREFIX_BYTES + n) return { kind: "torn", size };
  const header = parseHeader(await readAt(file, PREFIX_BYTES, n), expectedId);
  return {
    kind: "ok",
    segment: {
      file,
      header,
      dataStart: PREFIX_BYTES + n,
      size,
      ctx: aadContext(header.segmentId, header.resourceType),
    },
  };
}

/** A verified chunk. */
export interface ScannedChunk {
  kind: "chunk";
  /** 0-based chunk index. */
  index: number;
  /** True for the (empty) final chunk of a sealed segment. */
  final: boolean;
  /** Decrypted NDJSON lines of the batch, each ending in LF (empty for the final chunk). */
  plaintext: Uint8Array<ArrayBuffer>;
  /** Offset of the chunk's length field. */
  start: number;
  /** Offset just past the chunk. */
  end: number;
}

/** Why the bytes after the last verified chunk are a torn tail. */
export type TailReason = "incomplete" | "zeros" | "unverifiable";

/** A torn tail after the last verified chunk (only when tolerated). */
export interface ScannedTail {
  kind: "tail";
  /** Index the next chunk would have had. */
  index: number;
  /** Offset of the tail (= end of the last verified chunk or of the header). */
  start: number;
  /** incomplete: the file ends inside the chunk; zeros: only zero bytes; unverifiable: see options. */
  reason: TailReason;
}

/** How {@link scanChunks} treats the end of the file. */
export interface ScanOptions {
  /**
   * Report a torn tail (an incomplete chunk, or only zero bytes, after the last complete chunk) as a
   * {@link ScannedTail} instead of throwing {@link LandingTruncatedError}. For recovering `.open`
   * segments.
   */
  tolerateTornTail: boolean;
  /**
   * With `tolerateTornTail`: also treat as a torn tail ("unverifiable") a complete last chunk (ending
   * exactly at end of file) that does not authenticate, and an impossible chunk length field (with
   * everything after it). Only for file systems that may expose garbage after a power loss (a process
   * crash never produces either); it would also hide tampering with the last batch.
   */
  dropUnverifiableTail?: boolean;
}

function lineFeedTerminated(pt: Uint8Array): boolean {
  return pt.length > 0 && pt[pt.length - 1] === 0x0a;
}

/**
 * Verifies the chunks of a segment in order and yields them. Throws {@link LandingAuthError} for a
 * chunk that does not authenticate at its position (modified, reordered, spliced), {@link
 * LandingFormatError} for impossible framing or data after the final chunk, and {@link
 * LandingTruncatedError} for a torn tail unless tolerated. Ends after the final chunk, or at end of
 * file (the caller decides whether a missing final chunk is an error).
 */
export async function* scanChunks(
  seg: OpenedSegment,
  key: CryptoKey,
  options: ScanOptions,
): AsyncGenerator<ScannedChunk | ScannedTail> {
  const { file, size, ctx } = seg;
  const segmentId = seg.header.segmentId;
  let pos = seg.dataStart;
  let index = 0;
  const tail = async (reason: TailReason): Promise<ScannedTail> => {
    if (reason !== "unverifiable" && await isZeroRange(file, pos, size)) reason = "zeros";
    if (!options.tolerateTornTail) {
      throw new LandingTruncatedError(
        reason === "incomplete"
          ? `segment ends inside a chunk (${size - pos} bytes after the last complete chunk)`
          : "segment ends with unwritten (zero) bytes",
        {
          segmentId,
          chunkIndex: index,
          hint: "the file was truncated or damaged, or it is an unsealed segment still being written",
        },
      );
    }
    return { kind: "tail", index, start: pos, reason };
  };
  while (pos < size) {
    if (size - pos < LENGTH_BYTES + NONCE_BYTES + TAG_BYTES) {
      yield await tail("incomplete");
      return;
    }
    const lengthBytes = await readAt(file, pos, LENGTH_BYTES);
    const len = new DataView(lengthBytes.buffer).getUint32(0);
    if (len < TAG_BYTES || len > MAX_CHUNK_PLAINTEXT + TAG_BYTES) {
      if (await isZeroRange(file, pos, size)) {
        yield await tail("zeros");
        return;
      }
      if (options.tolerateTornTail && options.dropUnverifiableTail) {
        yield await tail("unverifiable");
        return;
      }
      throw new LandingFormatError(`invalid chunk length ${len}`, {
        segmentId,
        chunkIndex: index,
        hint: "the segment was modified or damaged at this chunk",
      });
    }
    const end = pos + LENGTH_BYTES + NONCE_BYTES + len;
    if (end > size) {
      yield await tail("incomplete");
      return;
    }
    const body = await readAt(file, pos + LENGTH_BYTES, NONCE_BYTES + len);
    if (body.length !== NONCE_BYTES + len) {
      throw new LandingTruncatedError("segment shrank while being read", { segmentId, chunkIndex: index });
    }
    const final = len === TAG_BYTES;
    const plaintext = await openChunk(key, ctx, index, final, body);
    if (plaintext === null) {
      if (end === size && options.tolerateTornTail) {
        if (await isZeroRange(file, pos, size)) {
          yield await tail("zeros");
          return;
        }
        if (options.dropUnverifiableTail) {
          yield await tail("unverifiable");
          return;
        }
      }
      throw new LandingAuthError("chunk does not authenticate", {
        segmentId,
        chunkIndex: index,
        hint: "it was modified, moved from another position (reordered or a chunk dropped before it), " +
          "or spliced from another segment",
      });
    }
    if (!final && !lineFeedTerminated(plaintext)) {
      throw new LandingFormatError("chunk does not hold LF-terminated lines", {
        segmentId,
        chunkIndex: index,
      });
    }
    if (final && end !== size) {
      throw new LandingFormatError(`${size - end} bytes after the final chunk`, {
        segmentId,
        chunkIndex: index + 1,
        hint: "data was appended to a sealed segment",
      });
    }
    yield { kind: "chunk", index, final, plaintext, start: pos, end };
    if (final) return;
    pos = end;
    index++;
  }
}

/** Counts the records (LF-terminated lines) in a chunk's plaintext. */
export function countLines(plaintext: Uint8Array): number {
  let n = 0;
  let i = plaintext.indexOf(0x0a);
  while (i !== -1) {
    n++;
    i = plaintext.indexOf(0x0a, i + 1);
  }
  return n;
}
