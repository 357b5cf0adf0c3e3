/**
 * Re-encryption with fresh data keys (for a compromised DEK or master key): the `pme` re-key
 * transcoder writes the file again with new DEKs (and new key material), the result is verified by
 * decrypting every column, and the file is replaced atomically.
 *
 * With external key material the data file and its key material file must change together. The
 * new keys get new references (a generation suffix), and the replacement runs: key material =
 * old ∪ new → data file renamed into place → key material = new. After a crash at any point the
 * data file on disk is readable with the key material on disk.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import {
  fileSource,
  NullSink,
  openParquetFile,
  peekFooter,
  transcode,
  transcodeFile,
  type TranscodeResult,
} from "../pme/mod.ts";
import type { KmsConnectionConfig } from "./client.ts";
import type { CryptoFactory, DecryptionConfiguration, EncryptionConfiguration } from "./crypto_factory.ts";
import { keyMaterialPath, KeyMaterialStore } from "./key_material_store.ts";
import { syncDir } from "./atomic_file.ts";
import { parseKeyMetadata } from "./key_material.ts";

/** Options of a re-encryption. */
export interface ReencryptOptions {
  /** Decryption of the current file (AAD prefix …). */
  decryption?: DecryptionConfiguration;
  /** fsync files (default true). */
  durable?: boolean;
}

/** Verifies that every column of `path` decrypts, with key material looked up for `materialFor`. */
async function verifyReadable(
  factory: CryptoFactory,
  connection: KmsConnectionConfig,
  path: string,
  materialFor: string,
): Promise<void> {
  const reader = await openParquetFile(path, factory.fileDecryptionProperties(connection, {}, materialFor));
  try {
    // Columns whose key is missing are an error here: name them all.
    await transcode(reader, new NullSink(), { columns: reader.columns.map((c) => c.dotted) });
  } finally {
    reader.close();
  }
}

/** True when the file's footer key metadata points into external key material. */
async function usesExternalMaterial(path: string): Promise<boolean> {
  const source = await fileSource(path);
  try {
    const info = await peekFooter(source);
    if (!info.footerKeyMetadata) return false;
    try {
      return !parseKeyMetadata(info.footerKeyMetadata).internal;
    } catch {
      return false;
    }
  } finally {
    source.close();
  }
}

/**
 * Removes temporary files of an earlier re-encryption of `path` that was killed (its new data file
 * and the temporary files of atomic writes). Re-encryptions of one file must not run concurrently.
 */
async function removeLeftovers(path: string): Promise<void> {
  const base = basename(path);
  const prefixes = [
    `.${base}.reencrypt-`,
    `..${base}.reencrypt-`,
    `.${basename(keyMaterialPath(path))}.tmp-`,
  ];
  for await (const e of Deno.readDir(dirname(path))) {
    if (e.isFile && prefixes.some((p) => e.name.startsWith(p))) {
      await Deno.remove(join(dirname(path), e.name)).catch(() => {});
    }
  }
}

/**
 * Re-encrypts `path` in place with fresh DEKs wrapped per `config` (which may also change master
 * keys, algorithm, footer mode or key material storage).
 */
export async function reencryptFile(
  factory: CryptoFactory,
  connection: KmsConnectionConfig,
  path: string,
  config: EncryptionConfiguration,
  options: ReencryptOptions = {},
): Promise<TranscodeResult> {
  const generation = Array.from(
    crypto.getRandomValues(new Uint8Array(4)),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
  const tmp = join(dirname(path), `.${basename(path)}.reencrypt-${generation}`);
  const external = !(config.internalKeyMaterial ?? true);
  const oldExternal = await usesExternalMaterial(path);
  const decryption = factory.fileDecryptionProperties(connection, options.decryption, path);
  // New key material is stored under the final name, with references of a new generation.
  const { encryption, keyMaterialStore: fresh } = await factory.fileEncryptionProperties(
    connection,
    config,
    path,
    {
      referenceSuffix: external ? `.g${generation}` : undefined,
    },
  );
  const materialPath = keyMaterialPath(path);
  await removeLeftovers(path);
  try {
    const result = await transcodeFile(path, tmp, decryption, {
      encryption,
      durable: options.durable ?? true,
    });
    if (fresh) {
      // Old ∪ new, so both the old and the new data file can be read during the switch.
      const merged = oldExternal ? await KeyMaterialStore.load(path) : KeyMaterialStore.empty(path);
      for (const ref of fresh.refs()) merged.set(ref, fresh.get(ref));
      await merged.save(materialPath);
    }
    await verifyReadable(factory, connection, tmp, path);
    await Deno.rename(tmp, path);
    await syncDir(dirname(path));
    if (fresh) await fresh.save(materialPath);
    else if (oldExternal) await Deno.remove(materialPath).catch(() => {});
    return result;
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  } finally {
    encryption.footerKey.fill(0);
    for (const ck of Object.values(encryption.columnKeys ?? {})) ck.key.fill(0);
  }
}
