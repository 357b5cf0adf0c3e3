/**
 * Re-encryption with fresh data keys (for a compromised DEK or master key): the `pme` re-key
 * transcoder writes the file again with new DEKs (and new key material), the result is verified by
 * decrypting every column, and the file is replaced atomically.
 *
 * The file keeps its protection unless told otherwise: its current configuration (master key per
 * column, algorithm, footer mode, AAD prefix, internal or external key material, single or double
 * wrapping, data key and KEK lengths) is read from the file ({@link currentEncryptionConfiguration})
 * and reproduced; the fields of the caller's configuration override it. A column encrypted today is
 * never written in plaintext unless named in `decryptColumns` (else `PmeProtectionError`, nothing
 * changes), and a column whose key this principal cannot unwrap is an error, never dropped.
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
  matchesColumn,
  NullSink,
  openParquetFile,
  transcode,
  transcodeFile,
  type TranscodeResult,
} from "../pme/mod.ts";
import type { KmsConnectionConfig } from "./client.ts";
import type { CryptoFactory, DecryptionConfiguration, EncryptionConfiguration } from "./crypto_factory.ts";
import { keyMaterialPath, KeyMaterialStore } from "./key_material_store.ts";
import { syncDir } from "./atomic_file.ts";
import { columnSelectors, currentEncryptionConfiguration, type FileConfiguration } from "./files.ts";
import { KmsConfigError } from "./errors.ts";

/** Options of a re-encryption. */
export interface ReencryptOptions {
  /** Decryption of the current file (AAD prefix …). */
  decryption?: DecryptionConfiguration;
  /** fsync files (default true). */
  durable?: boolean;
  /**
   * Columns (dotted leaf or parent paths) encrypted today that the new file stores in plaintext.
   * Without them, a configuration that gives such a column no key is refused (`PmeProtectionError`
   * naming the columns). They leave the file's current column keys on their own; naming one that
   * the caller's `columnKeys` also lists is a `PmeConfigError`.
   */
  decryptColumns?: string[];
}

/** What a re-encryption did. */
export interface ReencryptResult extends TranscodeResult {
  /** The file's protection before. */
  before: FileConfiguration;
  /** The protection written. */
  after: FileConfiguration;
  /** Aspects of the protection that stayed as they were, as short phrases without key bytes. */
  kept: string[];
  /** Aspects that changed, as "NEW (was OLD)". */
  changed: string[];
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

/** Verifies that every column of `path` decrypts, with key material looked up for `materialFor`. */
async function verifyReadable(
  factory: CryptoFactory,
  connection: KmsConnectionConfig,
  path: string,
  materialFor: string,
  decryption: DecryptionConfiguration,
): Promise<void> {
  const reader = await openParquetFile(
    path,
    factory.fileDecryptionProperties(connection, decryption, materialFor),
  );
  try {
    // Columns whose key is missing are an error here: name them all.
    await transcode(reader, new NullSink(), { columns: reader.columns.map((c) => c.dotted) });
  } finally {
    reader.close();
  }
}

/**
 * Column master keys without the columns named to be decrypted: a selector loses those leaves
 * (its remaining leaves get the fewest selectors), and is dropped when none remain.
 */
function withoutColumns(
  columnKeys: Record<string, string[]>,
  decrypt: readonly string[],
  leaves: readonly string[],
): Record<string, string[]> {
  const named = (leaf: string) => decrypt.some((d) => matchesColumn(d, leaf));
  const out: Record<string, string[]> = {};
  for (const [masterKeyId, selectors] of Object.entries(columnKeys)) {
    for (const selector of selectors) {
      const under = leaves.filter((l) => matchesColumn(selector, l));
      const kept = under.filter((l) => !named(l));
      if (kept.length === under.length) (out[masterKeyId] ??= []).push(selector);
      else if (kept.length) (out[masterKeyId] ??= []).push(...columnSelectors(kept, leaves));
    }
  }
  return out;
}

/**
 * The configuration to write: the file's current one, with every field the caller set replacing
 * it. Column keys given replace the file's column keys as a whole (and uniform encryption asks for
 * it); otherwise the file's stay, less the columns named to be decrypted.
 */
function resolve(
  current: FileConfiguration,
  overrides: Partial<EncryptionConfiguration>,
  decrypt: readonly string[],
): FileConfiguration {
  const explicitColumns = !!overrides.columnKeys && Object.keys(overrides.columnKeys).length > 0;
  if (explicitColumns && overrides.uniformEncryption) {
    throw new KmsConfigError("uniform encryption and column keys exclude each other");
  }
  const config: EncryptionConfiguration = { ...current.configuration };
  for (const [k, v] of Object.entries(overrides)) {
    if (v !== undefined && k !== "columnKeys" && k !== "uniformEncryption") {
      (config as unknown as Record<string, unknown>)[k] = v;
    }
  }
  if (explicitColumns) {
    config.columnKeys = overrides.columnKeys;
    config.uniformEncryption = false;
  } else if (overrides.uniformEncryption) {
    delete config.columnKeys;
    config.uniformEncryption = true;
  } else if (config.columnKeys && decrypt.length) {
    config.columnKeys = withoutColumns(config.columnKeys, decrypt, current.columns);
    if (Object.keys(config.columnKeys).length === 0) {
      throw new KmsConfigError("no column would stay encrypted", {
        hint:
          "to decrypt the whole file use pme decrypt; to keep columns encrypted, name fewer columns to decrypt",
      });
    }
  }
  const named = (leaf: string) => decrypt.some((d) => matchesColumn(d, leaf));
  const encrypted = (leaf: string) =>
    config.uniformEncryption
      ? !named(leaf)
      : Object.values(config.columnKeys ?? {}).flat().some((s) => matchesColumn(s, leaf));
  return {
    configuration: config,
    columns: current.columns,
    plaintextColumns: current.columns.filter((l) => !encrypted(l)),
  };
}

/** Leaf → where its key comes from, for comparing column protection. */
function columnTargets(fc: FileConfiguration): string[] {
  const c = fc.configuration;
  return fc.columns.map((leaf) => {
    if (fc.plaintextColumns.includes(leaf)) return `${leaf}:plaintext`;
    if (c.uniformEncryption) return `${leaf}:footer:${c.footerKey}`;
    const id = Object.entries(c.columnKeys ?? {}).find(([, sels]) => sels.some((s) => matchesColumn(s, leaf)))
      ?.[0];
    return `${leaf}:${id}`;
  });
}

/** The aspects of a protection, in a fixed order: [what is compared, phrase shown]. */
function aspects(fc: FileConfiguration): [string, string][] {
  const c = fc.configuration;
  const shown = (phrase: string): [string, string] => [phrase, phrase];
  const columns: string[] = [];
  if (c.uniformEncryption) {
    columns.push(
      `${fc.plaintextColumns.length ? "every other column" : "every column"} → ${c.footerKey} (uniform)`,
    );
  } else {
    for (const [id, sels] of Object.entries(c.columnKeys ?? {})) columns.push(`${sels.join(", ")} → ${id}`);
  }
  if (fc.plaintextColumns.length) columns.push(`plaintext: ${fc.plaintextColumns.join(", ")}`);
  const aad = !c.aadPrefix
    ? "no AAD prefix"
    : c.storeAadPrefix === false
    ? "AAD prefix supplied by readers"
    : "stored AAD prefix";
  const doubleWrapping = c.doubleWrapping ?? true;
  const out: [string, string][] = [
    shown(`footer key → ${c.footerKey}`),
    // Compared leaf by leaf: the same protection written with other selectors is kept.
    [columnTargets(fc).join(";"), columns.join("; ")],
    shown(c.encryptionAlgorithm ?? "AES_GCM_V1"),
    shown(c.plaintextFooter ? "plaintext footer" : "encrypted footer"),
    // The prefix bytes are compared, not shown.
    [`${aad}:${c.aadPrefix?.join(",") ?? ""}`, aad],
    shown(c.internalKeyMaterial ?? true ? "internal key material" : "external key material"),
    shown(doubleWrapping ? "double wrapping" : "single wrapping"),
    shown(`${c.dataKeyLengthBits ?? 128}-bit data keys`),
  ];
  if (doubleWrapping) out.push(shown(`${c.kekLengthBits ?? 128}-bit KEKs`));
  return out;
}

/** What stayed and what changed between two protections of a file, as phrases. */
function compare(before: FileConfiguration, after: FileConfiguration): { kept: string[]; changed: string[] } {
  const old = aspects(before);
  const kept: string[] = [];
  const changed: string[] = [];
  for (const [i, [key, shown]] of aspects(after).entries()) {
    if (i < old.length && old[i][0] === key) kept.push(shown);
    else changed.push(`${shown} (was ${i < old.length ? old[i][1] : "none"})`);
  }
  return { kept, changed };
}

/**
 * Re-encrypts `path` in place with fresh DEKs. Without `overrides` the file keeps its protection
 * exactly (read with {@link currentEncryptionConfiguration}); each field set in `overrides`
 * replaces that aspect (`columnKeys` replaces all column master keys; `uniformEncryption: true`
 * asks for uniform encryption). Columns encrypted today that would get no key are refused with
 * `PmeProtectionError` unless `options.decryptColumns` names them. The result says what was kept
 * and what changed.
 */
export async function reencryptFile(
  factory: CryptoFactory,
  connection: KmsConnectionConfig,
  path: string,
  overrides: Partial<EncryptionConfiguration> = {},
  options: ReencryptOptions = {},
): Promise<ReencryptResult> {
  const before = await currentEncryptionConfiguration(factory, connection, path, options.decryption);
  const after = resolve(before, overrides, options.decryptColumns ?? []);
  const config = after.configuration;
  const generation = Array.from(
    crypto.getRandomValues(new Uint8Array(4)),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
  const tmp = join(dirname(path), `.${basename(path)}.reencrypt-${generation}`);
  const external = !(config.internalKeyMaterial ?? true);
  const oldExternal = before.configuration.internalKeyMaterial === false;
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
      // Every column: one whose key is not available is an error, never left out.
      columns: before.columns,
      decryptColumns: options.decryptColumns,
      durable: options.durable ?? true,
    });
    if (fresh) {
      // Old ∪ new, so both the old and the new data file can be read during the switch.
      const merged = oldExternal ? await KeyMaterialStore.load(path) : KeyMaterialStore.empty(path);
      for (const ref of fresh.refs()) merged.set(ref, fresh.get(ref));
      await merged.save(materialPath);
    }
    // The new file is read as its readers will: with the AAD prefix when it is not stored.
    await verifyReadable(factory, connection, tmp, path, {
      ...options.decryption,
      aadPrefix: config.storeAadPrefix === false ? config.aadPrefix : undefined,
    });
    await Deno.rename(tmp, path);
    await syncDir(dirname(path));
    if (fresh) await fresh.save(materialPath);
    else if (oldExternal) await Deno.remove(materialPath).catch(() => {});
    return { ...result, before, after, ...compare(before, after) };
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  } finally {
    encryption.footerKey.fill(0);
    for (const ck of Object.values(encryption.columnKeys ?? {})) ck.key.fill(0);
  }
}
