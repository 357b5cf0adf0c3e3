/**
 * Writer side of the key tools (parquet-java `FileKeyWrapper`): a fresh random data key (DEK) per
 * footer and per encrypted column, wrapped by the KMS directly (single wrapping) or by a
 * key-encryption key (KEK) that the KMS wraps once per master key and cache lifetime (double
 * wrapping: `wrappedDEK = encryptKeyLocally(DEK, KEK, AAD = KEK id)`).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { KmsClient } from "./client.ts";
import type { TwoLevelCache } from "./cache.ts";
import { encryptKeyLocally } from "./local_wrap.ts";
import { externalKeyMetadata, internalKeyMetadata, type KeyMaterial } from "./key_material.ts";
import type { KeyMaterialStore } from "./key_material_store.ts";
import { KmsConfigError } from "./errors.ts";

/** A KEK as cached for writing: usable key, its id, and its wrapping by the master key. */
export interface WriteKek {
  key: CryptoKey;
  id: Uint8Array;
  wrapped: string;
}

/** What the wrapper needs to know. */
export interface KeyWrapperOptions {
  kms: KmsClient;
  kmsInstanceId: string;
  kmsInstanceUrl: string;
  accessToken: string;
  doubleWrapping: boolean;
  /** DEK length in bits (128, 192 or 256). */
  dataKeyLengthBits: number;
  /** KEK length in bits (128, 192 or 256). */
  kekLengthBits: number;
  /** KEK cache shared across files: token → master key id → KEK. */
  kekCache: TwoLevelCache<Promise<WriteKek>>;
  /** External key material store; undefined = internal key material. */
  store?: KeyMaterialStore;
  /** Appended to external key references (`footerKey`, `columnKey0`, …) to keep generations apart. */
  referenceSuffix?: string;
}

/** A data key and the key metadata to store in the Parquet file. */
export interface WrappedDataKey {
  key: Uint8Array;
  keyMetadata: Uint8Array;
}

function checkBits(bits: number, what: string): number {
  if (![128, 192, 256].includes(bits)) {
    throw new KmsConfigError(`${what} must be 128, 192 or 256 bits, not ${bits}`);
  }
  return bits / 8;
}

/** Creates and wraps the data keys of one Parquet file. */
export class FileKeyWrapper {
  #o: KeyWrapperOptions;
  #columnCounter = 0;

  constructor(options: KeyWrapperOptions) {
    checkBits(options.dataKeyLengthBits, "data key length");
    checkBits(options.kekLengthBits, "KEK length");
    this.#o = options;
  }

  /** A new footer DEK wrapped with `masterKeyId`. */
  footerKey(masterKeyId: string): Promise<WrappedDataKey> {
    return this.#dataKey(masterKeyId, true, `footerKey${this.#o.referenceSuffix ?? ""}`);
  }

  /** A new column DEK wrapped with `masterKeyId`. */
  columnKey(masterKeyId: string): Promise<WrappedDataKey> {
    return this.#dataKey(
      masterKeyId,
      false,
      `columnKey${this.#columnCounter++}${this.#o.referenceSuffix ?? ""}`,
    );
  }

  async #dataKey(masterKeyId: string, isFooterKey: boolean, reference: string): Promise<WrappedDataKey> {
    const o = this.#o;
    if (!masterKeyId) throw new KmsConfigError("a master key id is empty");
    const dek = crypto.getRandomValues(new Uint8Array(o.dataKeyLengthBits / 8));
    let material: KeyMaterial;
    if (o.doubleWrapping) {
      const kek = await o.kekCache.getOrCreate(o.accessToken, masterKeyId, () => this.#newKek(masterKeyId));
      material = {
        isFooterKey,
        masterKeyId,
        wrappedDek: await encryptKeyLocally(dek, kek.key, kek.id),
        doubleWrapping: true,
        kekId: Buffer.from(kek.id).toString("base64"),
        wrappedKek: kek.wrapped,
      };
    } else {
      material = {
        isFooterKey,
        masterKeyId,
        wrappedDek: await o.kms.wrapKey(dek, masterKeyId),
        doubleWrapping: false,
      };
    }
    if (isFooterKey) {
      material.kmsInstanceId = o.kmsInstanceId;
      material.kmsInstanceUrl = o.kmsInstanceUrl;
    }
    if (!o.store) return { key: dek, keyMetadata: internalKeyMetadata(material) };
    o.store.set(reference, material);
    return { key: dek, keyMetadata: externalKeyMetadata(reference) };
  }

  async #newKek(masterKeyId: string): Promise<WriteKek> {
    const raw = crypto.getRandomValues(new Uint8Array(this.#o.kekLengthBits / 8));
    try {
      const wrapped = await this.#o.kms.wrapKey(raw, masterKeyId);
      const key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt"]);
      return { key, id: crypto.getRandomValues(new Uint8Array(16)), wrapped };
    } finally {
      raw.fill(0);
    }
  }
}
