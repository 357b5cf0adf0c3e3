/**
 * The landing zone: accepted resources are appended, per resource type, to encrypted NDJSON segments
 * and are durable when `append` resolves (acknowledge only then). Segments roll by size and age, are
 * sealed into the manifest that conversion consumes, and are deleted only once conversion has marked
 * them published.
 *
 * One process owns a landing directory at a time (an exclusive lock on `<dir>/.lock`). Appends of one
 * resource type are serialized; different types proceed concurrently.
 *
 * @module
 */

import { join } from "node:path";
import type { KmsClient } from "../../kms/client.ts";
import { syncDir } from "../../kms/atomic_file.ts";
import {
  LandingError,
  LandingInputError,
  LandingIoError,
  LandingMissingSegmentError,
  LandingStateError,
} from "./errors.ts";
import { isNotFound, readAt, writeAll } from "./file_io.ts";
import {
  checkResourceType,
  CHUNK_OVERHEAD,
  MAX_CHUNK_PLAINTEXT,
  parsePrefix,
  parseSegmentFileName,
  PREFIX_BYTES,
  segmentFileName,
} from "./format.ts";
import {
  entryFor,
  loadManifest,
  type Manifest,
  MANIFEST_FILE,
  type ManifestEntry,
  saveManifest,
} from "./manifest.ts";
import { Mutex } from "./mutex.ts";
import {
  type RecoveredFile,
  recoverOpenSegment,
  type RecoveryReport,
  registerSealedSegment,
} from "./recovery.ts";
import { readSegment, readSegmentChunks, type ReadSegmentOptions } from "./segment_reader.ts";
import { type SealedSegment, SegmentWriter } from "./segment_writer.ts";

/** Options of {@link LandingZone.open}. */
export interface LandingZoneOptions {
  /** Roll a type's open segment before it would exceed this many bytes (default 64 MiB). */
  maxSegmentBytes?: number;
  /** Roll a type's open segment once it is this old (default 300 000 ms = 5 min). */
  maxSegmentAgeMs?: number;
  /**
   * Check every this many ms for open segments past `maxSegmentAgeMs` and seal them, so that idle
   * types still reach conversion (default 0: only on append and {@link LandingZone.rollExpired}).
   */
  autoRollIntervalMs?: number;
  /** Called with errors of the background roll (no resource content in them). */
  onBackgroundError?: (e: unknown) => void;
  /**
   * Recovery: treat a last chunk that is complete but does not authenticate as a torn tail and
   * truncate it (default false: it is an error). Only for file systems that may expose garbage
   * after a power loss; it also hides tampering with the last unsealed batch.
   */
  dropUnverifiableTail?: boolean;
  /** Clock in ms since the epoch (default `Date.now`), for tests. */
  now?: () => number;
}

/** What `append` stored. */
export interface AppendReceipt {
  /** Segment holding the batch. */
  segmentId: string;
  /** Chunk index of the batch in it. */
  chunkIndex: number;
  /** Lines stored. */
  records: number;
  /** Segments sealed by rolling before this batch was written. */
  rolled: SealedSegment[];
}

/** An open (unsealed) segment. */
export interface OpenSegmentInfo {
  /** Segment id. */
  segmentId: string;
  /** Resource type. */
  resourceType: string;
  /** Records so far. */
  records: number;
  /** Bytes so far. */
  bytes: number;
  /** ISO creation time. */
  created: string;
}

const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;
const DEFAULT_MAX_AGE_MS = 300_000;
const LOCK_FILE = ".lock";

/** The pid written into a held lock file by its owner, when readable. */
async function lockOwner(path: string): Promise<number | undefined> {
  try {
    const m = /^(\d{1,10})\n/.exec(await Deno.readTextFile(path));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}
const te = new TextEncoder();

function isManifestTemp(name: string): boolean {
  return name.startsWith(`.${MANIFEST_FILE}.tmp-`);
}

/** Encodes a batch as LF-terminated lines, checking each is a one-line JSON object. */
function encodeBatch(lines: readonly string[]): Uint8Array<ArrayBuffer> {
  if (!Array.isArray(lines) || lines.length === 0) {
    throw new LandingInputError("empty batch", { hint: "append at least one NDJSON line" });
  }
  let total = 0;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    if (typeof l !== "string" || l.length < 2 || l[0] !== "{" || l[l.length - 1] !== "}") {
      throw new LandingInputError(`line ${i} of the batch is not a JSON object`, {
        hint: "each line is one resource serialized without pretty-printing",
      });
    }
    if (l.includes("\n") || l.includes("\r")) {
      throw new LandingInputError(`line ${i} of the batch contains a line break`, {
        hint: "serialize resources with JSON.stringify and no indentation",
      });
    }
    total += l.length + 1;
  }
  const bytes = te.encode(lines.join("\n") + "\n");
  if (total > MAX_CHUNK_PLAINTEXT || bytes.length > MAX_CHUNK_PLAINTEXT) {
    throw new LandingInputError(`batch of ${bytes.length} bytes exceeds ${MAX_CHUNK_PLAINTEXT}`, {
      hint: "split it into smaller batches",
    });
  }
  return bytes;
}

/** Encrypted, crash-safe NDJSON landing zone (see the module documentation). */
export class LandingZone {
  /** The landing directory. */
  readonly dir: string;
  /** Master key wrapping new segments' data keys. */
  readonly masterKeyId: string;
  /** What crash recovery did when the zone was opened. */
  readonly recovery: RecoveryReport;
  readonly #kms: KmsClient;
  readonly #lock: Deno.FsFile;
  readonly #maxBytes: number;
  readonly #maxAgeMs: number;
  readonly #now: () => number;
  readonly #writers = new Map<string, SegmentWriter>();
  readonly #typeLocks = new Map<string, Mutex>();
  readonly #manifestLock = new Mutex();
  #manifest: Manifest;
  /** Sealed segments whose manifest update failed; retried with the next update. */
  #pending: SealedSegment[] = [];
  #timer: ReturnType<typeof setInterval> | undefined;
  #closing = false;
  #closed = false;

  private constructor(
    dir: string,
    kms: KmsClient,
    masterKeyId: string,
    lock: Deno.FsFile,
    manifest: Manifest,
    recovery: RecoveryReport,
    options: LandingZoneOptions,
  ) {
    this.dir = dir;
    this.#kms = kms;
    this.masterKeyId = masterKeyId;
    this.#lock = lock;
    this.#manifest = manifest;
    this.recovery = recovery;
    this.#maxBytes = options.maxSegmentBytes ?? DEFAULT_MAX_BYTES;
    this.#maxAgeMs = options.maxSegmentAgeMs ?? DEFAULT_MAX_AGE_MS;
    this.#now = options.now ?? Date.now;
    const every = options.autoRollIntervalMs ?? 0;
    if (every > 0) {
      const timer = setInterval(() => {
        this.rollExpired().catch((e) => options.onBackgroundError?.(e));
      }, every);
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
  }

  /**
   * Opens (creating it, mode 0700, if needed) the landing directory `dir`, takes its lock and runs
   * crash recovery (see recovery.ts; the report is {@link LandingZone.recovery}). New segments' data
   * keys are wrapped by `masterKeyId` through `kms`. Throws {@link LandingStateError} when another
   * process holds the directory, {@link LandingKmsError} when recovery needs the KMS and it fails
   * (retryable when it is unavailable), {@link LandingIntegrityError} for tampered or missing data.
   */
  static async open(
    dir: string,
    kms: KmsClient,
    masterKeyId: string,
    options: LandingZoneOptions = {},
  ): Promise<LandingZone> {
    if (typeof masterKeyId !== "string" || masterKeyId === "") {
      throw new LandingInputError("a master key id is required");
    }
    if ((options.maxSegmentBytes ?? 1) <= 0 || (options.maxSegmentAgeMs ?? 1) <= 0) {
      throw new LandingInputError("maxSegmentBytes and maxSegmentAgeMs must be positive");
    }
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const lock = await Deno.open(join(dir, LOCK_FILE), {
      read: true,
      write: true,
      create: true,
      mode: 0o600,
    });
    try {
      if (!await lock.tryLock(true)) {
        const owner = await lockOwner(join(dir, LOCK_FILE));
        throw new LandingStateError(
          `landing directory ${dir} is in use by another process${owner ? ` (pid ${owner})` : ""}, ` +
            "normally a running ingest server (fhir-pme serve) on the same data folder",
          {
            hint:
              `one process owns a landing zone at a time: stop that process (Ctrl-C in its terminal, or kill -TERM ${
                owner ?? "PID"
              }; it seals its open segments) and run the command again`,
          },
        );
      }
      // Tell a second process who holds the lock (diagnostics only; the lock itself is the flock).
      await lock.truncate(0);
      await lock.write(new TextEncoder().encode(`${Deno.pid}\n`));
      const { manifest, report } = await LandingZone.#recover(dir, kms, options);
      return new LandingZone(dir, kms, masterKeyId, lock, manifest, report, options);
    } catch (e) {
      lock.close();
      if (e instanceof LandingError) throw e;
      throw new LandingIoError(`opening landing directory ${dir} failed`, { cause: e });
    }
  }

  static async #recover(
    dir: string,
    kms: KmsClient,
    options: LandingZoneOptions,
  ): Promise<{ manifest: Manifest; report: RecoveryReport }> {
    const manifest = await loadManifest(dir);
    const files: RecoveredFile[] = [];
    const open: string[] = [];
    const sealed = new Set<string>();
    for await (const e of Deno.readDir(dir)) {
      if (!e.isFile) continue;
      if (isManifestTemp(e.name)) {
        await Deno.remove(join(dir, e.name)).catch(() => {});
        files.push({ file: e.name, action: "removed-temp", records: 0, truncatedBytes: 0 });
        continue;
      }
      const p = parseSegmentFileName(e.name);
      if (p?.state === "open") open.push(p.id);
      else if (p?.state === "sealed") sealed.add(p.id);
    }
    const listed = new Set(manifest.segments.map((s) => s.segmentId));
    const missing = manifest.segments.filter((s) => s.status === "sealed" && !sealed.has(s.segmentId));
    if (missing.length > 0) {
      throw new LandingMissingSegmentError(
        `${missing.length} sealed segment(s) listed in ${MANIFEST_FILE} have no file`,
        {
          segmentId: missing[0].segmentId,
          hint: "acknowledged data is lost; restore the file(s) from backup before reopening",
        },
      );
    }
    let changed = false;
    const kept: ManifestEntry[] = [];
    for (const s of manifest.segments) {
      if (s.status === "published" && !sealed.has(s.segmentId)) {
        files.push({
          file: s.file,
          segmentId: s.segmentId,
          resourceType: s.resourceType,
          action: "forgotten-published",
          records: s.records,
          truncatedBytes: 0,
        });
        changed = true;
      } else kept.push(s);
    }
    const added: SealedSegment[] = [];
    for (const id of open.sort()) {
      const r = await recoverOpenSegment(dir, id, kms, {
        dropUnverifiableTail: options.dropUnverifiableTail,
        nowMs: (options.now ?? Date.now)(),
      });
      files.push(r.report);
      if (r.sealed) added.push(r.sealed);
    }
    for (const id of [...sealed].sort()) {
      if (listed.has(id)) continue;
      const r = await registerSealedSegment(dir, id, kms);
      files.push(r.report);
      added.push(r.sealed);
    }
    added.sort((a, b) => a.created.localeCompare(b.created));
    const next: Manifest = { ...manifest, segments: [...kept, ...added.map(entryFor)] };
    if (changed || added.length > 0) {
      next.updated = new Date((options.now ?? Date.now)()).toISOString();
      await saveManifest(dir, next);
    }
    return { manifest: next, report: { files } };
  }

  #check(): void {
    if (this.#closed || this.#closing) throw new LandingStateError("landing zone is closed");
  }

  #typeLock(type: string): Mutex {
    let m = this.#typeLocks.get(type);
    if (!m) this.#typeLocks.set(type, m = new Mutex());
    return m;
  }

  /**
   * Replaces the manifest with `change` applied to the current entries (including sealed segments
   * whose registration failed earlier). Call under the manifest lock.
   */
  async #update(change: (current: ManifestEntry[]) => ManifestEntry[]): Promise<void> {
    const next: Manifest = {
      ...this.#manifest,
      updated: new Date(this.#now()).toISOString(),
      segments: change([...this.#manifest.segments, ...this.#pending.map(entryFor)]),
    };
    await saveManifest(this.dir, next);
    this.#pending = [];
    this.#manifest = next;
  }

  /** Adds sealed segments to the manifest, atomically; kept pending (retried) if that fails. */
  #register(sealed: SealedSegment[]): Promise<void> {
    return this.#manifestLock.run(async () => {
      try {
        await this.#update((cur) => [...cur, ...sealed.map(entryFor)]);
      } catch (e) {
        this.#pending.push(...sealed);
        throw e;
      }
    });
  }

  async #sealWriter(type: string, w: SegmentWriter): Promise<SealedSegment | null> {
    this.#writers.delete(type);
    if (w.records === 0) {
      await w.discard();
      return null;
    }
    const s = await w.seal(this.#now());
    await this.#register([s]);
    return s;
  }

  #shouldRoll(w: SegmentWriter, incoming: number): boolean {
    if (this.#now() - w.createdMs >= this.#maxAgeMs) return true;
    return w.batches > 0 && w.bytes + incoming + 2 * CHUNK_OVERHEAD > this.#maxBytes;
  }

  /**
   * Appends a batch of NDJSON lines (one resource each, of type `resourceType`) as one encrypted
   * chunk of the type's open segment, rolling it first when it is too big or too old. Resolves only
   * once the batch is durable (written and fdatasync'd): acknowledge the resources after that, never
   * before. Throws {@link LandingInputError} (bad type or lines), {@link LandingKmsError} (a new
   * segment's key could not be wrapped; `retryable` when the KMS is down) or {@link LandingIoError}.
   */
  append(resourceType: string, lines: readonly string[]): Promise<AppendReceipt> {
    try {
      this.#check();
      checkResourceType(resourceType);
    } catch (e) {
      return Promise.reject(e);
    }
    let plaintext: Uint8Array<ArrayBuffer>;
    try {
      plaintext = encodeBatch(lines);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#typeLock(resourceType).run(async () => {
      this.#check();
      const rolled: SealedSegment[] = [];
      let w = this.#writers.get(resourceType);
      if (w && !w.usable) {
        this.#writers.delete(resourceType);
        w = undefined;
      }
      if (w && this.#shouldRoll(w, plaintext.length)) {
        const s = await this.#sealWriter(resourceType, w);
        if (s) rolled.push(s);
        w = undefined;
      }
      if (!w) {
        w = await SegmentWriter.create(this.dir, resourceType, this.#kms, this.masterKeyId, this.#now());
        this.#writers.set(resourceType, w);
      }
      let chunkIndex: number;
      try {
        ({ chunkIndex } = await w.append(plaintext, lines.length));
      } catch (e) {
        if (!w.usable) {
          this.#writers.delete(resourceType);
          if (w.records === 0) await w.discard().catch(() => {});
        }
        throw e;
      }
      return { segmentId: w.segmentId, chunkIndex, records: lines.length, rolled };
    });
  }

  /** Seals the open segment of `resourceType` (of every type when omitted) now. */
  seal(resourceType?: string): Promise<SealedSegment[]> {
    try {
      this.#check();
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#sealTypes(resourceType === undefined ? [...this.#writers.keys()] : [resourceType]);
  }

  async #sealTypes(types: string[]): Promise<SealedSegment[]> {
    const out: SealedSegment[] = [];
    for (const t of types) {
      const s = await this.#typeLock(t).run(async () => {
        const w = this.#writers.get(t);
        return w && w.usable ? await this.#sealWriter(t, w) : null;
      });
      if (s) out.push(s);
    }
    return out;
  }

  /** Seals open segments older than `maxSegmentAgeMs`; returns them. */
  async rollExpired(): Promise<SealedSegment[]> {
    if (this.#closed || this.#closing) return [];
    const out: SealedSegment[] = [];
    for (const t of [...this.#writers.keys()]) {
      const s = await this.#typeLock(t).run(async () => {
        const w = this.#writers.get(t);
        if (this.#closed || this.#closing || !w || !w.usable || this.#now() - w.createdMs < this.#maxAgeMs) {
          return null;
        }
        return await this.#sealWriter(t, w);
      });
      if (s) out.push(s);
    }
    return out;
  }

  /** The open segments (one per resource type at most). */
  openSegments(): OpenSegmentInfo[] {
    return [...this.#writers.values()].filter((w) => w.usable).map((w) => ({
      segmentId: w.segmentId,
      resourceType: w.resourceType,
      records: w.records,
      bytes: w.bytes,
      created: w.header.created,
    }));
  }

  /** The manifest entries (copies): sealed and published segments, in sealing order. */
  manifest(): ManifestEntry[] {
    return this.#manifest.segments.map((s) => ({ ...s }));
  }

  /** The sealed segments waiting for conversion, optionally of one type. */
  sealedSegments(resourceType?: string): ManifestEntry[] {
    return this.manifest().filter((s) =>
      s.status === "sealed" && (resourceType === undefined || s.resourceType === resourceType)
    );
  }

  /** Path of a sealed segment's file. */
  segmentPath(segmentId: string): string {
    return join(this.dir, segmentFileName(segmentId, "sealed"));
  }

  #entry(segmentId: string): ManifestEntry {
    const e = this.#manifest.segments.find((s) => s.segmentId === segmentId) ??
      this.#pending.map(entryFor).find((s) => s.segmentId === segmentId);
    if (!e) {
      throw new LandingStateError("no such sealed segment in the manifest", {
        segmentId,
        hint: "only sealed segments listed in the manifest can be read or published",
      });
    }
    return e;
  }

  /**
   * The lines of a sealed segment listed in the manifest, verified (see {@link readSegment}).
   * Discard what was produced from it if iteration throws.
   */
  read(segmentId: string): AsyncGenerator<string, void, undefined> {
    return readSegment(...this.#readArgs(segmentId));
  }

  /**
   * The plaintext of a sealed segment listed in the manifest, chunk by chunk (whole LF-terminated
   * NDJSON lines), verified (see {@link readSegmentChunks}). The bulk form of {@link read}.
   */
  readChunks(segmentId: string): AsyncGenerator<Uint8Array<ArrayBuffer>, void, undefined> {
    return readSegmentChunks(...this.#readArgs(segmentId));
  }

  /** Path, KMS and checks of a sealed segment to read (throws at once for an unknown one). */
  #readArgs(segmentId: string): [string, KmsClient, ReadSegmentOptions] {
    this.#check();
    const e = this.#entry(segmentId);
    return [this.segmentPath(segmentId), this.#kms, {
      expectedSegmentId: segmentId,
      expectedResourceType: e.resourceType,
    }];
  }

  /**
   * Marks sealed segments as published (conversion has durably published their rows); atomic over
   * all `ids`. Unknown ids throw {@link LandingStateError} and nothing is marked; already published
   * ones are left as they are.
   */
  markPublished(ids: readonly string[]): Promise<void> {
    try {
      this.#check();
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#manifestLock.run(async () => {
      for (const id of ids) this.#entry(id);
      const wanted = new Set(ids);
      const at = new Date(this.#now()).toISOString();
      await this.#update((cur) =>
        cur.map((s) =>
          wanted.has(s.segmentId) && s.status === "sealed" ? { ...s, status: "published", published: at } : s
        )
      );
    });
  }

  /**
   * Deletes the published segments: each file's header JSON (with the wrapped data key) is
   * overwritten with zeros and fdatasync'd, then the file is unlinked (up to 8 files at once); the
   * directory is fsynced and the entries leave the manifest (atomically). Sealed, unpublished segments
   * are never deleted. On a failure the manifest is left as it is and the first error is thrown; a
   * later call finishes the job. Returns the ids deleted.
   */
  deletePublished(): Promise<string[]> {
    try {
      this.#check();
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#manifestLock.run(async () => {
      const victims = this.#manifest.segments.filter((s) => s.status === "published");
      if (victims.length === 0) return [];
      // Several at once: each waits on its own fdatasync. A failure stops the rest and leaves the
      // manifest as it is (files already gone are skipped next time).
      let next = 0;
      const failures: unknown[] = [];
      const shredder = async () => {
        while (next < victims.length && failures.length === 0) {
          const s = victims[next++];
          await shredAndRemove(join(this.dir, s.file), s.segmentId).catch((e) => failures.push(e));
        }
      };
      await Promise.all(Array.from({ length: Math.min(SHRED_CONCURRENCY, victims.length) }, shredder));
      if (failures.length > 0) throw failures[0];
      await syncDir(this.dir);
      const gone = new Set(victims.map((s) => s.segmentId));
      await this.#update((cur) => cur.filter((s) => !gone.has(s.segmentId)));
      return [...gone];
    });
  }

  /**
   * Closes the zone: by default seals every open segment first (so conversion sees them); with
   * `{ seal: false }` they stay `.open` and are recovered at the next open. Releases the lock.
   */
  async close(options: { seal?: boolean } = {}): Promise<void> {
    if (this.#closed || this.#closing) return;
    this.#closing = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    let failure: unknown;
    try {
      if (options.seal ?? true) await this.#sealTypes([...this.#writers.keys()]);
    } catch (e) {
      failure = e;
    }
    this.#closed = true;
    for (const t of [...this.#writers.keys()]) {
      await this.#typeLock(t).run(() => {
        this.#writers.get(t)?.close();
        this.#writers.delete(t);
        return Promise.resolve();
      });
    }
    await this.#manifestLock.run(() => Promise.resolve());
    this.#lock.close();
    if (failure) throw failure;
  }
}

/** Segments shredded at once by {@link LandingZone.deletePublished}. */
const SHRED_CONCURRENCY = 8;

/** Overwrites the header JSON of a segment file with zeros, syncs, and unlinks it. */
async function shredAndRemove(path: string, segmentId: string): Promise<void> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true, write: true });
  } catch (e) {
    if (isNotFound(e)) return;
    throw e;
  }
  try {
    const prefix = await readAt(file, 0, PREFIX_BYTES);
    let n = 0;
    try {
      n = parsePrefix(prefix, segmentId);
    } catch (e) {
      if (!(e instanceof LandingError)) throw e;
    }
    if (n > 0) {
      await file.seek(PREFIX_BYTES, Deno.SeekMode.Start);
      await writeAll(file, new Uint8Array(n));
      await file.syncData();
    }
  } finally {
    file.close();
  }
  await Deno.remove(path).catch((e) => {
    if (!isNotFound(e)) throw e;
  });
}
