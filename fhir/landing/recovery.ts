/**
 * Crash recovery of a landing directory, run when a landing zone is opened:
 *
 * - every `<id>.open` segment is verified chunk by chunk; a torn tail after the last complete chunk
 *   (a batch that was being written, hence never acknowledged) is truncated (ftruncate + fdatasync) and
 *   reported; the segment is then sealed (or removed if it holds no batch). A chunk that fails
 *   authentication before the tail is an error naming segment and chunk: nothing is dropped silently.
 * - a `<id>.open` that already ends with its final chunk (crash between the final fsync and the rename)
 *   is renamed;
 * - a `<id>.seg` missing from the manifest (crash between rename and manifest update) is verified and
 *   registered;
 * - stray temporary manifest files are removed.
 *
 * @module
 */

import { join } from "node:path";
import type { KmsClient } from "../../kms/client.ts";
import { syncDir } from "../../kms/atomic_file.ts";
import { openSegmentKey } from "./chunk_cipher.ts";
import { segmentFileName, type SegmentHeader } from "./format.ts";
import { verifySegment } from "./segment_reader.ts";
import { countLines, readSegmentHeader, scanChunks, type TailReason } from "./segment_scan.ts";
import { type SealedSegment, SegmentWriter } from "./segment_writer.ts";

/** What recovery did with one file. */
export type RecoveryAction =
  /** An `.open` segment was verified (torn tail truncated, if any) and sealed. */
  | "sealed"
  /** An `.open` segment already had its final chunk; it was renamed to `.seg`. */
  | "seal-completed"
  /** An `.open` segment held no complete batch (crash while it was created); it was removed. */
  | "removed-empty"
  /** A `.seg` segment missing from the manifest was verified and added to it. */
  | "registered"
  /** A published segment listed in the manifest was already deleted; its entry was dropped. */
  | "forgotten-published"
  /** A temporary manifest file left by a crash was removed. */
  | "removed-temp";

/** One recovery step, without any resource content. */
export interface RecoveredFile {
  /** File name in the landing directory. */
  file: string;
  /** Segment id, for segment files. */
  segmentId?: string;
  /** Resource type, when the header could be read. */
  resourceType?: string;
  /** What was done. */
  action: RecoveryAction;
  /** Records kept in the segment. */
  records: number;
  /** Bytes of torn tail removed (0 when none). */
  truncatedBytes: number;
  /** Why the tail was torn, when there was one. */
  tail?: TailReason;
}

/** What recovery did when the zone was opened. */
export interface RecoveryReport {
  /** One entry per file acted on; empty after a clean shutdown. */
  files: RecoveredFile[];
}

/** Options of {@link recoverOpenSegment}. */
export interface RecoverOptions {
  /** See {@link ScanOptions.dropUnverifiableTail}. */
  dropUnverifiableTail?: boolean;
  /** Sealing time. */
  nowMs: number;
}

/** Recovers `<id>.open` in `dir`; returns the report and the sealed segment, if one results. */
export async function recoverOpenSegment(
  dir: string,
  segmentId: string,
  kms: KmsClient,
  options: RecoverOptions,
): Promise<{ report: RecoveredFile; sealed?: SealedSegment }> {
  const name = segmentFileName(segmentId, "open");
  const path = join(dir, name);
  const file = await Deno.open(path, { read: true, write: true });
  let handedOver = false;
  try {
    const h = await readSegmentHeader(file, segmentId);
    if (h.kind === "torn") {
      file.close();
      handedOver = true;
      await Deno.remove(path);
      await syncDir(dir);
      return {
        report: {
          file: name,
          segmentId,
          action: "removed-empty",
          records: 0,
          truncatedBytes: h.size,
          tail: "incomplete",
        },
      };
    }
    const seg = h.segment;
    const header: SegmentHeader = seg.header;
    const key = await openSegmentKey(kms, header);
    let records = 0;
    let batches = 0;
    let end = seg.dataStart;
    let final = false;
    let tail: { start: number; reason: TailReason } | undefined;
    for await (
      const c of scanChunks(seg, key, {
        tolerateTornTail: true,
        dropUnverifiableTail: options.dropUnverifiableTail,
      })
    ) {
      if (c.kind === "tail") {
        tail = c;
        break;
      }
      end = c.end;
      if (c.final) final = true;
      else {
        records += countLines(c.plaintext);
        batches++;
      }
    }
    const truncatedBytes = tail ? seg.size - tail.start : 0;
    if (tail) {
      await file.truncate(tail.start);
      await file.syncData();
    }
    const base = { file: name, segmentId, resourceType: header.resourceType, records, truncatedBytes };
    const withTail = tail ? { ...base, tail: tail.reason } : base;
    if (batches === 0) {
      file.close();
      handedOver = true;
      await Deno.remove(path);
      await syncDir(dir);
      return { report: { ...withTail, action: "removed-empty" } };
    }
    if (final) {
      file.close();
      handedOver = true;
      await Deno.rename(path, join(dir, segmentFileName(segmentId, "sealed")));
      await syncDir(dir);
      return {
        report: { ...withTail, action: "seal-completed" },
        sealed: {
          segmentId,
          resourceType: header.resourceType,
          records,
          batches,
          bytes: end,
          created: header.created,
          sealed: new Date(options.nowMs).toISOString(),
        },
      };
    }
    const writer = await SegmentWriter.resume(dir, header, key, file, {
      nextChunk: batches,
      records,
      bytes: end,
    });
    handedOver = true;
    const sealed = await writer.seal(options.nowMs);
    return { report: { ...withTail, action: "sealed" }, sealed };
  } finally {
    if (!handedOver) file.close();
  }
}

/** Verifies a `.seg` missing from the manifest; returns its report and manifest data. */
export async function registerSealedSegment(
  dir: string,
  segmentId: string,
  kms: KmsClient,
): Promise<{ report: RecoveredFile; sealed: SealedSegment }> {
  const name = segmentFileName(segmentId, "sealed");
  const path = join(dir, name);
  const summary = await verifySegment(path, kms, { expectedSegmentId: segmentId });
  const mtime = (await Deno.stat(path)).mtime ?? new Date();
  return {
    report: {
      file: name,
      segmentId,
      resourceType: summary.header.resourceType,
      action: "registered",
      records: summary.records,
      truncatedBytes: 0,
    },
    sealed: {
      segmentId,
      resourceType: summary.header.resourceType,
      records: summary.records,
      batches: summary.batches,
      bytes: summary.bytes,
      created: summary.header.created,
      sealed: mtime.toISOString(),
    },
  };
}
