/**
 * Writing one landing segment: header, one authenticated chunk per appended batch (written and
 * fdatasync'd before `append` resolves), then an empty final chunk and the rename `<id>.open` →
 * `<id>.seg` on `seal`.
 *
 * Durability: the first append also fsyncs the directory (the new file's entry); `seal` fsyncs the
 * final chunk, renames and fsyncs the directory. A write or sync failure marks the writer failed: its
 * file is left as `.open` for crash recovery at the next open, and no further chunk goes to it (after
 * a failed fsync the state of the file's cached pages is unknown).
 *
 * @module
 */

import { join } from "node:path";
import type { KmsClient } from "../../kms/client.ts";
import { syncDir } from "../../kms/atomic_file.ts";
import { newSegmentKey, sealChunk } from "./chunk_cipher.ts";
import { LandingIoError, LandingStateError } from "./errors.ts";
import { writeAll } from "./file_io.ts";
import {
  AAD_SCHEME,
  type AadContext,
  aadContext,
  CIPHER,
  encodeHeader,
  FORMAT_VERSION,
  newSegmentId,
  SEGMENT_FORMAT,
  segmentFileName,
  type SegmentHeader,
} from "./format.ts";

/** A sealed segment as recorded in the manifest. */
export interface SealedSegment {
  /** Segment id. */
  segmentId: string;
  /** Resource type of its lines. */
  resourceType: string;
  /** Number of NDJSON lines. */
  records: number;
  /** Number of data chunks (appended batches). */
  batches: number;
  /** File size in bytes. */
  bytes: number;
  /** ISO creation time (from the header). */
  created: string;
  /** ISO sealing time. */
  sealed: string;
}

/** Where a resumed writer continues (from crash recovery). */
export interface ResumePoint {
  /** Index of the next chunk. */
  nextChunk: number;
  /** Records in the verified chunks. */
  records: number;
  /** End of the last verified chunk (the file has been truncated there). */
  bytes: number;
}

const EMPTY = new Uint8Array(0);

/** Writes one segment. Not safe for concurrent calls: the landing zone serializes them per type. */
export class SegmentWriter {
  /** The segment header. */
  readonly header: SegmentHeader;
  /** Directory of the segment. */
  readonly dir: string;
  /** Creation time in ms since the epoch. */
  readonly createdMs: number;
  #file: Deno.FsFile | null;
  readonly #key: CryptoKey;
  readonly #ctx: AadContext;
  #next: number;
  #records: number;
  #bytes: number;
  #dirSynced: boolean;
  #state: "open" | "sealed" | "failed" | "closed" = "open";

  private constructor(
    dir: string,
    header: SegmentHeader,
    key: CryptoKey,
    file: Deno.FsFile,
    at: ResumePoint,
    dirSynced: boolean,
  ) {
    this.dir = dir;
    this.header = header;
    this.createdMs = Date.parse(header.created);
    this.#key = key;
    this.#ctx = aadContext(header.segmentId, header.resourceType);
    this.#file = file;
    this.#next = at.nextChunk;
    this.#records = at.records;
    this.#bytes = at.bytes;
    this.#dirSynced = dirSynced;
  }

  /**
   * Creates `<id>.open` (mode 0600) in `dir` with a fresh id and a fresh DEK wrapped by
   * `masterKeyId`, and writes its header. Nothing is synced until the first append.
   */
  static async create(
    dir: string,
    resourceType: string,
    kms: KmsClient,
    masterKeyId: string,
    nowMs: number,
  ): Promise<SegmentWriter> {
    const segmentId = newSegmentId();
    const { key, wrappedDek } = await newSegmentKey(kms, masterKeyId, segmentId);
    const header: SegmentHeader = {
      format: SEGMENT_FORMAT,
      version: FORMAT_VERSION,
      segmentId,
      resourceType,
      created: new Date(nowMs).toISOString(),
      masterKeyId,
      wrappedDek,
      cipher: CIPHER,
      aad: AAD_SCHEME,
    };
    const bytes = encodeHeader(header);
    const path = join(dir, segmentFileName(segmentId, "open"));
    let file: Deno.FsFile | undefined;
    try {
      file = await Deno.open(path, { write: true, createNew: true, mode: 0o600 });
      await writeAll(file, bytes);
    } catch (e) {
      file?.close();
      if (file) await Deno.remove(path).catch(() => {});
      throw new LandingIoError("creating the segment failed", { segmentId, cause: e });
    }
    return new SegmentWriter(
      dir,
      header,
      key,
      file,
      { nextChunk: 0, records: 0, bytes: bytes.length },
      false,
    );
  }

  /**
   * Continues an existing `.open` segment whose chunks were verified up to `at` (crash recovery).
   * `file` must be open for writing; it is positioned at `at.bytes`.
   */
  static async resume(
    dir: string,
    header: SegmentHeader,
    key: CryptoKey,
    file: Deno.FsFile,
    at: ResumePoint,
  ): Promise<SegmentWriter> {
    await file.seek(at.bytes, Deno.SeekMode.Start);
    return new SegmentWriter(dir, header, key, file, at, true);
  }

  /** Segment id. */
  get segmentId(): string {
    return this.header.segmentId;
  }

  /** Resource type. */
  get resourceType(): string {
    return this.header.resourceType;
  }

  /** Records written so far. */
  get records(): number {
    return this.#records;
  }

  /** Data chunks (batches) written so far. */
  get batches(): number {
    return this.#next;
  }

  /** Durable file size so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Whether the writer still accepts batches. */
  get usable(): boolean {
    return this.#state === "open";
  }

  /** Path of the file while open. */
  get path(): string {
    return join(this.dir, segmentFileName(this.segmentId, "open"));
  }

  #check(): Deno.FsFile {
    if (this.#state !== "open" || !this.#file) {
      throw new LandingStateError(`segment writer is ${this.#state}`, { segmentId: this.segmentId });
    }
    return this.#file;
  }

  #fail(): void {
    this.#state = "failed";
    try {
      this.#file?.close();
    } catch {
      // already closed
    }
    this.#file = null;
  }

  /**
   * Appends one batch (`plaintext` = LF-terminated NDJSON lines, `records` of them) as one chunk and
   * returns once it is durable (written, fdatasync'd; the directory too for the first chunk).
   */
  async append(plaintext: Uint8Array<ArrayBuffer>, records: number): Promise<{ chunkIndex: number }> {
    const file = this.#check();
    const chunkIndex = this.#next;
    const chunk = await sealChunk(this.#key, this.#ctx, chunkIndex, false, plaintext);
    try {
      await writeAll(file, chunk);
      await file.syncData();
      if (!this.#dirSynced) {
        await syncDir(this.dir);
        this.#dirSynced = true;
      }
    } catch (e) {
      this.#fail();
      throw new LandingIoError("writing a batch failed; it was not stored", {
        segmentId: this.segmentId,
        chunkIndex,
        cause: e,
        hint: "retry: the next batch goes to a new segment; this one is recovered when the zone is reopened",
      });
    }
    this.#next++;
    this.#records += records;
    this.#bytes += chunk.length;
    return { chunkIndex };
  }

  /**
   * Seals the segment: appends the empty final chunk, fdatasyncs, renames `<id>.open` → `<id>.seg`
   * and fsyncs the directory. The caller records it in the manifest.
   */
  async seal(nowMs: number): Promise<SealedSegment> {
    const file = this.#check();
    const chunkIndex = this.#next;
    const chunk = await sealChunk(this.#key, this.#ctx, chunkIndex, true, EMPTY);
    try {
      await writeAll(file, chunk);
      await file.syncData();
      file.close();
      this.#file = null;
      await Deno.rename(this.path, join(this.dir, segmentFileName(this.segmentId, "sealed")));
      await syncDir(this.dir);
    } catch (e) {
      this.#fail();
      throw new LandingIoError("sealing the segment failed", {
        segmentId: this.segmentId,
        chunkIndex,
        cause: e,
        hint: "its acknowledged batches are safe; it is recovered when the zone is reopened",
      });
    }
    this.#state = "sealed";
    this.#bytes += chunk.length;
    return {
      segmentId: this.segmentId,
      resourceType: this.resourceType,
      records: this.#records,
      batches: this.#next,
      bytes: this.#bytes,
      created: this.header.created,
      sealed: new Date(nowMs).toISOString(),
    };
  }

  /** Removes a segment that holds no batch (nothing in it was acknowledged). */
  async discard(): Promise<void> {
    if (this.#records > 0) {
      throw new LandingStateError("refusing to discard a segment with acknowledged batches", {
        segmentId: this.segmentId,
      });
    }
    this.#fail();
    this.#state = "closed";
    await Deno.remove(this.path).catch(() => {});
    await syncDir(this.dir);
  }

  /** Closes the file without sealing; the `.open` segment is recovered at the next open. */
  close(): void {
    if (this.#state === "open") {
      this.#fail();
      this.#state = "closed";
    }
  }
}
