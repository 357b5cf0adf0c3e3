/**
 * File-level operations with KMS-managed keys: encrypt a Parquet file (fresh data keys, key
 * material internal or beside the file), decrypt one, and read back how one is protected as the
 * key tools' encryption configuration that reproduces it. External key material is saved before
 * the data file appears, so a data file is never without its keys.
 *
 * @module
 */

import {
  type ByteSource,
  matchesColumn,
  openParquetFile,
  PmeKeyMissingError,
  transcodeFile,
  type TranscodeOptions,
  type TranscodeResult,
} from "../pme/mod.ts";
import type { KmsConnectionConfig } from "./client.ts";
import type { CryptoFactory, DecryptionConfiguration, EncryptionConfiguration } from "./crypto_factory.ts";
import { type KeyMaterial, parseKeyMetadata } from "./key_material.ts";
import { KeyMaterialStore } from "./key_material_store.ts";
import { KeyMaterialError, KmsConfigError } from "./errors.ts";

/**
 * Encrypts `input` (a path, or a source such as plaintext Parquet bytes in memory, which then never
 * touch the disk) into `output` with data keys wrapped by the configured master keys.
 */
export async function encryptFileWithKms(
  factory: CryptoFactory,
  connection: KmsConnectionConfig,
  config: EncryptionConfiguration,
  input: string | ByteSource,
  output: string,
  options: Omit<TranscodeOptions, "encryption"> & { durable?: boolean } = {},
): Promise<TranscodeResult> {
  const { encryption, keyMaterialStore } = await factory.fileEncryptionProperties(connection, config, output);
  try {
    await keyMaterialStore?.save();
    return await transcodeFile(input, output, {}, { ...options, encryption });
  } finally {
    encryption.footerKey.fill(0);
    for (const ck of Object.values(encryption.columnKeys ?? {})) ck.key.fill(0);
  }
}

/** Decrypts `input` into plaintext `output`; columns whose key is unavailable are skipped unless asked for. */
export async function decryptFileWithKms(
  factory: CryptoFactory,
  connection: KmsConnectionConfig,
  input: string,
  output: string,
  options: Omit<TranscodeOptions, "encryption"> & {
    durable?: boolean;
    decryption?: DecryptionConfiguration;
  } = {},
): Promise<TranscodeResult> {
  const decryption = factory.fileDecryptionProperties(connection, options.decryption, input);
  return await transcodeFile(input, output, decryption, options);
}

/** How a file is protected, in the key tools' vocabulary. */
export interface FileConfiguration {
  /**
   * The configuration that writes the same protection with fresh data keys. Every field is set,
   * except `aadPrefix` (only when the file has one) and `columnKeys` (not with uniform encryption).
   */
  configuration: EncryptionConfiguration;
  /** Leaf columns of the file (dotted paths), in file order. */
  columns: string[];
  /** Leaf columns stored in plaintext. */
  plaintextColumns: string[];
}

/**
 * The fewest column selectors that name exactly the leaves in `group` among a file's leaves `all`:
 * a parent path wherever every leaf under it is in the group, leaf paths elsewhere; in column order.
 */
export function columnSelectors(group: readonly string[], all: readonly string[]): string[] {
  const inGroup = new Set(group);
  const covered = new Set<string>();
  const out: string[] = [];
  for (const leaf of all) {
    if (!inGroup.has(leaf) || covered.has(leaf)) continue;
    const parts = leaf.split(".");
    for (let n = 1; n <= parts.length; n++) {
      const selector = parts.slice(0, n).join(".");
      const under = all.filter((l) => matchesColumn(selector, l));
      if (under.every((l) => inGroup.has(l))) {
        out.push(selector);
        for (const l of under) covered.add(l);
        break;
      }
    }
  }
  return out;
}

/** Length in bits of a key obtained by `get`; the key bytes are zeroed at once. */
async function keyBits(get: () => Promise<Uint8Array | null | undefined>, what: string): Promise<number> {
  const key = await get();
  if (!key) throw new PmeKeyMissingError(`${what} is not available`);
  try {
    return key.length * 8;
  } finally {
    key.fill(0);
  }
}

/**
 * Reads how `path` (written with the key tools: PKMT1 key metadata) is protected and returns the
 * encryption configuration that reproduces it with fresh data keys — what `kms reencrypt` keeps
 * unless told otherwise:
 *
 * - the footer master key, and for each master key the columns whose data keys it wraps (columns
 *   that share one data key, as a parent path gives them, stay one selector); uniform encryption
 *   when every column uses the footer key;
 * - the algorithm, plaintext or encrypted footer, and the AAD prefix (stored in the file, or
 *   supplied by readers: then `decryption.aadPrefix` is it);
 * - internal or external key material, single or double wrapping, and the data key and KEK
 *   lengths (the longest in the file).
 *
 * Columns encrypted with the footer key in a file that is not uniform get their own data keys
 * wrapped by the footer master key (the same master key, so the same readers).
 *
 * It needs the KMS access that decrypting every column needs: each data key (and, with double
 * wrapping, each KEK) is unwrapped to learn its length and zeroed at once; nothing is written, and
 * no key bytes are returned. Fails with `KmsConfigError` for a plaintext file, `KeyMaterialError`
 * for a file not written with the key tools, and the key retriever's errors (`PmeKeyMissingError`
 * naming the master key, `KmsError`s) when a key cannot be unwrapped.
 */
export async function currentEncryptionConfiguration(
  factory: CryptoFactory,
  connection: KmsConnectionConfig,
  path: string,
  decryption: DecryptionConfiguration = {},
): Promise<FileConfiguration> {
  const properties = factory.fileDecryptionProperties(connection, decryption, path);
  const retrieve = properties.keyRetriever!;
  const reader = await openParquetFile(path, properties);
  try {
    if (reader.mode === "plaintext" || !reader.algorithm) {
      throw new KmsConfigError(`${path} is not encrypted`, { hint: "encrypt it with pme encrypt" });
    }
    const footerMeta = reader.footerKeyMetadata;
    if (!footerMeta?.length) {
      throw new KeyMaterialError(`${path} has no footer key metadata`, {
        hint: "it was not written with the key tools; re-key it with pme rekey and explicit keys",
      });
    }
    let store: Promise<KeyMaterialStore> | undefined;
    const material = async (
      meta: Uint8Array,
      what: string,
    ): Promise<{ internal: boolean; m: KeyMaterial }> => {
      let parsed;
      try {
        parsed = parseKeyMetadata(meta);
      } catch (e) {
        throw new KeyMaterialError(`${path}: the key metadata of ${what}: ${(e as Error).message}`);
      }
      if (parsed.internal) return { internal: true, m: parsed.material };
      store ??= KeyMaterialStore.load(path);
      return { internal: false, m: (await store).get(parsed.reference) };
    };
    const kms = await factory.kmsClient(connection);
    let dekBits = 0;
    let kekBits = 0;
    const keks = new Set<string>();
    /** Master key id of a data key; records the lengths of the data key and its KEK. */
    const masterKeyOf = async (meta: Uint8Array, request: { kind: "footer" | "column"; column?: string }) => {
      const what = request.kind === "footer" ? "the footer key" : `column ${request.column}`;
      const { internal, m } = await material(meta, what);
      dekBits = Math.max(dekBits, await keyBits(() => retrieve(meta, { ...request, file: path }), what));
      if (m.doubleWrapping && !keks.has(m.kekId!)) {
        keks.add(m.kekId!);
        kekBits = Math.max(kekBits, await keyBits(() => kms.unwrapKey(m.wrappedKek!, m.masterKeyId), what));
      }
      return { internal, m };
    };
    const footer = await masterKeyOf(footerMeta, { kind: "footer" });

    const columns = reader.columns.map((c) => c.dotted);
    const plaintextColumns: string[] = [];
    /** Leaves sharing one data key (by key metadata; "" = the footer key), in order of appearance. */
    const groups = new Map<string, { masterKeyId: string; leaves: string[] }>();
    for (const c of reader.columns) {
      if (c.encryption === "none") {
        plaintextColumns.push(c.dotted);
        continue;
      }
      let id = "";
      if (c.encryption === "column-key") {
        if (!c.keyMetadata) {
          throw new KeyMaterialError(`${path}: column ${c.dotted} has no key metadata`, {
            hint: "it was not written with the key tools; re-key it with pme rekey and explicit keys",
          });
        }
        id = Array.from(c.keyMetadata, (b) => b.toString(16).padStart(2, "0")).join("");
      }
      let group = groups.get(id);
      if (!group) {
        const masterKeyId = id === ""
          ? footer.m.masterKeyId
          : (await masterKeyOf(c.keyMetadata!, { kind: "column", column: c.dotted })).m.masterKeyId;
        group = { masterKeyId, leaves: [] };
        groups.set(id, group);
      }
      group.leaves.push(c.dotted);
    }
    // No row group: nothing says how columns are protected; the strongest choice is uniform.
    const uniform = reader.numRowGroups === 0 ||
      (plaintextColumns.length === 0 && groups.size === 1 && groups.has(""));
    const configuration: EncryptionConfiguration = {
      footerKey: footer.m.masterKeyId,
      uniformEncryption: uniform,
      encryptionAlgorithm: reader.algorithm.algorithm,
      plaintextFooter: reader.mode === "signed",
      doubleWrapping: footer.m.doubleWrapping,
      internalKeyMaterial: footer.internal,
      dataKeyLengthBits: dekBits,
      kekLengthBits: kekBits || 128,
      storeAadPrefix: !reader.algorithm.supplyAadPrefix,
    };
    const aadPrefix = reader.algorithm.aadPrefix ??
      (reader.algorithm.supplyAadPrefix ? decryption.aadPrefix : undefined);
    if (aadPrefix) configuration.aadPrefix = aadPrefix.slice();
    if (!uniform) {
      const columnKeys: Record<string, string[]> = {};
      for (const g of groups.values()) {
        (columnKeys[g.masterKeyId] ??= []).push(...columnSelectors(g.leaves, columns));
      }
      configuration.columnKeys = columnKeys;
    }
    return {
      configuration,
      columns,
      plaintextColumns: reader.numRowGroups === 0 ? [] : plaintextColumns,
    };
  } finally {
    reader.close();
  }
}
