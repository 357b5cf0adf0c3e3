/**
 * Small file helpers of the landing zone: full writes, exact reads at an offset, zero detection.
 *
 * @module
 */

/** Writes all of `bytes` at the file's current position. */
export async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done));
}

/**
 * Reads `n` bytes at `offset`; returns fewer only at end of file. The returned buffer is a fresh
 * allocation of the bytes read.
 */
export async function readAt(file: Deno.FsFile, offset: number, n: number): Promise<Uint8Array<ArrayBuffer>> {
  await file.seek(offset, Deno.SeekMode.Start);
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await file.read(buf.subarray(got));
    if (r === null) break;
    got += r;
  }
  return got === n ? buf : buf.slice(0, got);
}

/** Whether the file holds only zero bytes from `offset` to `end` (read in 64 KiB pieces). */
export async function isZeroRange(file: Deno.FsFile, offset: number, end: number): Promise<boolean> {
  for (let pos = offset; pos < end; pos += 65536) {
    const b = await readAt(file, pos, Math.min(65536, end - pos));
    if (b.length === 0) return true;
    for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  }
  return true;
}

/** Whether an error is a missing-file error. */
export function isNotFound(e: unknown): boolean {
  return e instanceof Deno.errors.NotFound;
}
