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
 * Opens a file as a source. Reads are serialised (seek + read share the file position), so
 * concurrent callers — such as a prefetch overlapping with crypto — get the right bytes.
 */
export async function fileSource(path: string): Promise<ByteSource> {
  const file = await Deno.open(path, { read: true });
  const size = (await file.stat()).size;
  let queue: Promise<unknown> = Promise.resolve();
  const readAt = async (offset: number, length: number) => {
    const out = new Uint8Array(length);
    await file.seek(offset, Deno.SeekMode.Start);
    let got = 0;
    while (got < length) {
      const n = await file.read(out.subarray(got));
      if (n === null) throw new PmeFormatError(`file ended after ${offset + got} bytes`, { file: path });
      got += n;
    }
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

/** A buffered sink writing to a file handle. */
export class FileSink implements ByteSink {
  #file: Deno.FsFile;
  #buf: Uint8Array;
  #used = 0;
  position = 0;

  #durable: boolean;

  /** `durable`: fsync on close (default true). */
  constructor(file: Deno.FsFile, options: { durable?: boolean; bufferSize?: number } = {}) {
    this.#file = file;
    this.#buf = new Uint8Array(options.bufferSize ?? 1 << 20);
    this.#durable = options.durable ?? true;
  }

  /** Creates (or truncates) a file with owner-only permissions. */
  static async create(path: string, options: { durable?: boolean } = {}): Promise<FileSink> {
    return new FileSink(
      await Deno.open(path, { write: true, create: true, truncate: true, mode: 0o600 }),
      options,
    );
  }

  async write(bytes: Uint8Array): Promise<void> {
    this.position += bytes.length;
    if (bytes.length >= this.#buf.length) {
      await this.#flush();
      await writeAll(this.#file, bytes);
      return;
    }
    if (this.#used + bytes.length > this.#buf.length) await this.#flush();
    this.#buf.set(bytes, this.#used);
    this.#used += bytes.length;
  }

  async #flush() {
    if (this.#used === 0) return;
    await writeAll(this.#file, this.#buf.subarray(0, this.#used));
    this.#used = 0;
  }

  /** Flushes buffered bytes and, for a durable sink, fsyncs. */
  async sync(): Promise<void> {
    await this.#flush();
    if (this.#durable) await this.#file.sync();
  }

  async close(): Promise<void> {
    try {
      await this.sync();
    } finally {
      this.#file.close();
    }
  }
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array) {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done));
}
