/**
 * The key tools' entry point (pyarrow `CryptoFactory`, parquet-java `PropertiesDrivenCryptoFactory`):
 * turns an encryption configuration in pyarrow's vocabulary — footer master key, column master keys
 * → columns, algorithm, plaintext footer, double wrapping, internal key material, data key length,
 * — into `pme/` encryption options with freshly wrapped data keys, and a decryption
 * configuration into a key retriever. KMS clients and KEKs are cached per access token for the
 * factory's cache lifetime (default 600 s), as the key tools do.
 *
 * @module
 */

import type { DecryptionOptions, EncryptionOptions, PmeAlgorithm } from "../pme/mod.ts";
import { type KmsClient, type KmsClientFactory, type KmsConnectionConfig, withDefaults } from "./client.ts";
import { TwoLevelCache } from "./cache.ts";
import { FileKeyWrapper, type WriteKek } from "./key_wrapper.ts";
import { keyRetriever } from "./key_unwrapper.ts";
import { KeyMaterialStore } from "./key_material_store.ts";
import { KmsConfigError } from "./errors.ts";

/** Encryption configuration (pyarrow `EncryptionConfiguration`). */
export interface EncryptionConfiguration {
  /** Master key id of the footer key (and of every column with uniform encryption). */
  footerKey: string;
  /** Master key id → columns (dotted leaf or parent paths) encrypted with a DEK wrapped by it. */
  columnKeys?: Record<string, string[]>;
  /** Encrypt every column with the footer key (exclusive with columnKeys). */
  uniformEncryption?: boolean;
  /** Default AES_GCM_V1. */
  encryptionAlgorithm?: PmeAlgorithm;
  /** Default false. */
  plaintextFooter?: boolean;
  /** Default true. */
  doubleWrapping?: boolean;
  /** Default true; false writes `_KEY_MATERIAL_FOR_<file>.json` beside the file. */
  internalKeyMaterial?: boolean;
  /** DEK length: 128 (default), 192 or 256. */
  dataKeyLengthBits?: number;
  /** KEK length: 128 (default), 192 or 256. */
  kekLengthBits?: number;
  /** AAD prefix. */
  aadPrefix?: Uint8Array;
  /** Store the AAD prefix in the file (default true). */
  storeAadPrefix?: boolean;
}

/** Decryption configuration (pyarrow `DecryptionConfiguration`). */
export interface DecryptionConfiguration {
  /**
   * Take the KMS instance id and URL from the file's footer key material when the connection leaves
   * them DEFAULT (default false, as Arrow C++ and parquet-java now do: a crafted file could otherwise
   * send the reader's token to a KMS of its choosing).
   */
  readKmsUrl?: boolean;
  /** AAD prefix for files written without storing it. */
  aadPrefix?: Uint8Array;
}

/** Encryption options for one file and, for external key material, the store to save first. */
export interface FileEncryption {
  encryption: EncryptionOptions;
  /** External key material: save it (before or with the data file) or the file is unreadable. */
  keyMaterialStore?: KeyMaterialStore;
}

const DEFAULT_LIFETIME_S = 600;

/** Creates file encryption and decryption properties backed by a KMS. */
export class CryptoFactory {
  #factory: KmsClientFactory;
  #clients: TwoLevelCache<Promise<KmsClient>>;
  /** KEKs for writing by KEK length, so that a file asking for longer KEKs never gets a shorter one. */
  #writeKeks = new Map<number, TwoLevelCache<Promise<WriteKek>>>();
  #readKeks: TwoLevelCache<Promise<CryptoKey>>;
  #lifetimeMs: number;
  #now?: () => number;

  /** `cacheLifetimeSeconds` applies to the caches of this factory (clients, KEKs). */
  constructor(
    factory: KmsClientFactory,
    options: { cacheLifetimeSeconds?: number; now?: () => number } = {},
  ) {
    this.#factory = factory;
    this.#lifetimeMs = (options.cacheLifetimeSeconds ?? DEFAULT_LIFETIME_S) * 1000;
    this.#now = options.now;
    this.#clients = new TwoLevelCache(this.#lifetimeMs, options.now);
    this.#readKeks = new TwoLevelCache(this.#lifetimeMs, options.now);
  }

  /** The cache of write KEKs of one length. */
  #writeKekCache(bits: number): TwoLevelCache<Promise<WriteKek>> {
    let cache = this.#writeKeks.get(bits);
    if (!cache) {
      cache = new TwoLevelCache(this.#lifetimeMs, this.#now);
      this.#writeKeks.set(bits, cache);
    }
    return cache;
  }

  /** Every cache of this factory. */
  #caches(): { removeToken(token: string): void; clear(): void }[] {
    return [this.#clients, ...this.#writeKeks.values(), this.#readKeks];
  }

  /** The (cached) KMS client of a connection. */
  kmsClient(connection: KmsConnectionConfig): Promise<KmsClient> {
    const c = withDefaults(connection);
    return this.#clients.getOrCreate(
      c.keyAccessToken,
      `${c.kmsInstanceId}\u0000${c.kmsInstanceUrl}`,
      async () => await this.#factory(c),
    );
  }

  /**
   * Encryption options for one file: fresh DEKs wrapped with the configured master keys. With
   * external key material, `parquetPath` is required and the returned store must be saved.
   */
  async fileEncryptionProperties(
    connection: KmsConnectionConfig,
    config: EncryptionConfiguration,
    parquetPath?: string,
    options: { referenceSuffix?: string } = {},
  ): Promise<FileEncryption> {
    const c = withDefaults(connection);
    const hasColumns = config.columnKeys && Object.keys(config.columnKeys).length > 0;
    if (!config.footerKey) throw new KmsConfigError("the footer master key is required");
    if (config.uniformEncryption && hasColumns) {
      throw new KmsConfigError("uniform encryption and column keys exclude each other");
    }
    if (!config.uniformEncryption && !hasColumns) {
      throw new KmsConfigError("give column keys, or ask for uniform encryption");
    }
    const internal = config.internalKeyMaterial ?? true;
    if (!internal && !parquetPath) {
      throw new KmsConfigError("external key material needs the Parquet file path");
    }
    const store = internal ? undefined : KeyMaterialStore.empty(parquetPath!);
    const kekLengthBits = config.kekLengthBits ?? 128;
    const wrapper = new FileKeyWrapper({
      kms: await this.kmsClient(c),
      kmsInstanceId: c.kmsInstanceId,
      kmsInstanceUrl: c.kmsInstanceUrl,
      accessToken: c.keyAccessToken,
      doubleWrapping: config.doubleWrapping ?? true,
      dataKeyLengthBits: config.dataKeyLengthBits ?? 128,
      kekLengthBits,
      kekCache: this.#writeKekCache(kekLengthBits),
      store,
      referenceSuffix: options.referenceSuffix,
    });
    const footer = await wrapper.footerKey(config.footerKey);
    const encryption: EncryptionOptions = {
      footerKey: footer.key,
      footerKeyMetadata: footer.keyMetadata,
      algorithm: config.encryptionAlgorithm,
      plaintextFooter: config.plaintextFooter ?? false,
      aadPrefix: config.aadPrefix,
      storeAadPrefix: config.storeAadPrefix,
    };
    if (hasColumns) {
      encryption.columnKeys = {};
      const seen = new Map<string, string>();
      for (const [masterKeyId, columns] of Object.entries(config.columnKeys!)) {
        for (const column of columns) {
          if (seen.has(column)) {
            throw new KmsConfigError(
              `column ${column} is listed under master keys ${seen.get(column)} and ${masterKeyId}`,
            );
          }
          seen.set(column, masterKeyId);
          const k = await wrapper.columnKey(masterKeyId);
          encryption.columnKeys[column] = { key: k.key, keyMetadata: k.keyMetadata };
        }
      }
    }
    return { encryption, keyMaterialStore: store };
  }

  /**
   * Decryption options whose key retriever unwraps through the KMS. `parquetPath` locates external
   * key material.
   */
  fileDecryptionProperties(
    connection: KmsConnectionConfig,
    config: DecryptionConfiguration = {},
    parquetPath?: string,
  ): DecryptionOptions {
    const c = withDefaults(connection);
    return {
      aadPrefix: config.aadPrefix,
      keyRetriever: keyRetriever({
        kmsFor: (kmsInstanceId, kmsInstanceUrl) => this.kmsClient({ ...c, kmsInstanceId, kmsInstanceUrl }),
        kmsInstanceId: c.kmsInstanceId,
        kmsInstanceUrl: c.kmsInstanceUrl,
        accessToken: c.keyAccessToken,
        kekCache: this.#readKeks,
        parquetPath,
        readKmsUrl: config.readKmsUrl ?? false,
      }),
    };
  }

  /** Forgets cached clients and KEKs of a token (for example after it was revoked). */
  removeCacheEntriesForToken(token: string): void {
    for (const cache of this.#caches()) cache.removeToken(token);
  }

  /** Forgets every cached client and KEK. */
  removeCacheEntriesForAllTokens(): void {
    for (const cache of this.#caches()) cache.clear();
  }
}
