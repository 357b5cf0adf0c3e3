/**
 * Byte sources (random access) and sinks (append-only) that the engine reads from and writes to.
 * Files are read with positioned reads, so memory stays bounded by what is asked for.
 *
 * @module
 */

import { PmeFormatError } from "./errors.ts";

/** Random-access input. */
export interface ByteSource {
  /** Name used in error messages (a path, or a caller-chosen label). */
  readonly name: string;
  /** Total size in bytes. */
  readonly size: number;
  /** Reads exactly `length` bytes at `offset`; fails with {@link PmeFormatError} past the end. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Releases the underlying resource. */
  close(): void;
}

/** Append-only output. */
export interface ByteSink {
  /** Bytes written so far. */
  readonly position: number;
  /** Appends bytes; the sink may keep a reference until the next write resolves. */
  write(bytes: Uint8Array): Promise<void>;
  /** Flushes and releases the resource. */
  close(): Promise<void>;
}

function checkRange(name: string, size: number, offset: number, length: number) {
  if (offset < 0 || length < 0 || offset + length > size) {
    throw new PmeFormatError(
      `read of ${length} bytes at offset ${offset} is outside the ${size}-byte file`,
      { file: name },
      "the file is truncated or its metadata points outside it",
    );
  }
}

/** A source over bytes in memory. */
export function bytesSource(bytes: Uint8Array, name = "<memory>"): ByteSource {
  return {
    name,
    size: bytes.length,
    read(offset, length) {
      checkRange(name, bytes.length, offset, length);
      return Promise.resolve(bytes.subarray(offset, offset + length));
    },
    close() {},
  };
}

/**
 * Files up to this size are read whole when opened: one read instead of a seek and a read for
 * each footer, chunk, index and filter (for a small file, a dozen async round trips or more).
 */
const READ_WHOLE_MAX = 256 << 10;

/**
 * Opens a file as a source. Small files (up to 256 KiB) are read whole at once and served from
 * memory; larger ones with positioned reads, serialised (seek + read share the file position), so
 * concurrent callers — such as a prefetch overlapping with crypto — get the right bytes.
 */
export async function fileSource(path: string): Promise<ByteSource> {
  const file = await Deno.open(path, { read: true });
  let size: number;
  try {
    size = (await file.stat()).size;
    if (size <= READ_WHOLE_MAX) {
      const bytes = new Uint8Array(size);
      const got = await readFully(file, bytes);
      if (got === size) {
        file.close();
        return bytesSource(bytes, path);
      }
      // The file changed size under us: fall back to positioned reads (which report truncation).
    }
  } catch (e) {
    file.close();
    throw e;
  }
  let queue: Promise<unknown> = Promise.resolve();
  const readAt = async (offset: number, length: number) => {
    const out = new Uint8Array(length);
    await file.seek(offset, Deno.SeekMode.Start);
    const got = await readFully(file, out);
    if (got < length) throw new PmeFormatError(`file ended after ${offset + got} bytes`, { file: path });
    return out;
  };
  return {
    name: path,
    size,
    read(offset, length) {
      checkRange(path, size, offset, length);
      const result = queue.then(() => readAt(offset, length));
      queue = result.catch(() => {});
      return result;
    },
    close() {
      file.close();
    },
  };
}

/** Reads into `out` from the current position until it is full or the file ends; returns the count. */
async function readFully(file: Deno.FsFile, out: Uint8Array): Promise<number> {
  let got = 0;
  while (got < out.length) {
    const n = await file.read(out.subarray(got));
    if (n === null) break;
    got += n;
  }
  return got;
}

/** A sink that collects bytes in memory; `bytes()` returns them. */
export class MemorySink implements ByteSink {
  #parts: Uint8Array[] = [];
  position = 0;

  write(bytes: Uint8Array): Promise<void> {
    this.#parts.push(bytes);
    this.position += bytes.length;
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  /** All bytes written. */
  bytes(): Uint8Array {
    const out = new Uint8Array(this.position);
    let at = 0;
    for (const p of this.#parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}

/** Fsyncs a directory so that a rename in it is durable (ignored where directories cannot be synced). */
export async function syncDir(dir: string): Promise<void> {
  const d = await Deno.open(dir, { read: true });
  try {
    await d.sync();
  } catch {
    // Some file systems refuse fsync on directories; the rename is still atomic.
  } finally {
    d.close();
  }
}

/** A sink that only counts what it is given (verification passes, benchmarks). */
export class NullSink implements ByteSink {
  position = 0;

  write(bytes: Uint8Array): Promise<void> {
    this.position += bytes.length;
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Bytes a {@link FileSink} buffers at first; the buffer doubles up to its `bufferSize`. */
const INITIAL_BUFFER = 64 << 10;

/**
 * A buffered sink writing to a file handle. The buffer starts small and grows up to `bufferSize`
 * (default 1 MiB), so a small output does not pay for a large buffer.
 */
export class FileSink implements ByteSink {
  #file: Promise<Deno.FsFile>;
  #buf: Uint8Array;
  #max: number;
  #used = 0;
  position = 0;

  #durable: boolean;

  /**
   * `file` may still be opening: writes that reach the file, and {@link close}, wait for it (and
   * report its failure). `durable`: fsync on close (default true).
   */
  constructor(
    file: Deno.FsFile | Promise<Deno.FsFile>,
    options: { durable?: boolean; bufferSize?: number } = {},
  ) {
    this.#file = Promise.resolve(file);
    this.#file.catch(() => {}); // reported by the first write that needs the file, or by close()
    this.#max = Math.max(1, options.bufferSize ?? 1 << 20);
    this.#buf = new Uint8Array(Math.min(INITIAL_BUFFER, this.#max));
    this.#durable = options.durable ?? true;
  }

  /** Creates (or truncates) a file with owner-only permissions. */
  static async create(path: string, options: { durable?: boolean } = {}): Promise<FileSink> {
    return new FileSink(await openForWrite(path), options);
  }

  /**
   * Like {@link create}, but returns at once while the file is created in the background, so
   * that opening overlaps with producing the first bytes (for small outputs, all of them). An
   * open failure is reported by the first write that needs the file, or by {@link close}, which
   * always closes the handle.
   */
  static createInBackground(path: string, options: { durable?: boolean } = {}): FileSink {
    return new FileSink(openForWrite(path), options);
  }

  async write(bytes: Uint8Array): Promise<void> {
    this.position += bytes.length;
    if (bytes.length >= this.#max) {
      await this.#flush();
      await writeAll(await this.#file, bytes);
      return;
    }
    if (this.#used + bytes.length > this.#max) await this.#flush();
    if (this.#used + bytes.length > this.#buf.length) {
      let size = this.#buf.length * 2;
      while (size < this.#used + bytes.length) size *= 2;
      const grown = new Uint8Array(Math.min(size, this.#max));
      grown.set(this.#buf.subarray(0, this.#used));
      this.#buf = grown;
    }
    this.#buf.set(bytes, this.#used);
    this.#used += bytes.length;
  }

  async #flush() {
    if (this.#used === 0) return;
    await writeAll(await this.#file, this.#buf.subarray(0, this.#used));
    this.#used = 0;
  }

  /** Flushes buffered bytes and, for a durable sink, fsyncs. */
  async sync(): Promise<void> {
    await this.#flush();
    if (this.#durable) await (await this.#file).sync();
  }

  async close(): Promise<void> {
    const file = await this.#file;
    try {
      await this.sync();
    } finally {
      file.close();
    }
  }
}

function openForWrite(path: string): Promise<Deno.FsFile> {
  return Deno.open(path, { write: true, create: true, truncate: true, mode: 0o600 });
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array) {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done));
}
