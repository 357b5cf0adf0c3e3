/**
 * Crash-safe file replacement: write a temporary file in the same directory, fsync it, rename it
 * over the target, fsync the directory. Readers see the old or the new content, never a mix.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { syncDir } from "../pme/io.ts";

export { syncDir };

/**
 * Atomically replaces `path` with `bytes` (file mode `mode`, default 0o600). `tmpName` names the
 * temporary file (default `.<name>.tmp-<random>`), in the same directory.
 */
export async function writeFileAtomic(
  path: string,
  bytes: Uint8Array,
  options: { mode?: number; tmpName?: string } = {},
): Promise<void> {
  const dir = dirname(path);
  const rand = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0"))
    .join("");
  const tmp = join(dir, options.tmpName ?? `.${basename(path)}.tmp-${rand}`);
  const f = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: options.mode ?? 0o600 });
  try {
    let done = 0;
    while (done < bytes.length) done += await f.write(bytes.subarray(done));
    await f.sync();
  } catch (e) {
    f.close();
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  f.close();
  try {
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  await syncDir(dir);
}
