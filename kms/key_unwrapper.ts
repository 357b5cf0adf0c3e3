/**
 * Reader side of the key tools (parquet-java `FileKeyUnwrapper`): a PME key retriever that parses
 * PKMT1 key metadata, finds internal or external key material, and unwraps data keys through the
 * KMS — directly, or through a KEK unwrapped once per (token, KEK id) and cached.
 *
 * Access problems (the KMS denied this principal the master key) make the key "not available" for
 * the PME reader, so columns protected by other master keys still read and the denial is reported
 * for the others; KMS outages and malformed material are errors.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { type KeyRequest, type KeyRetriever, PmeKeyMissingError } from "../pme/mod.ts";
import { KMS_DEFAULT, type KmsClient } from "./client.ts";
import type { TwoLevelCache } from "./cache.ts";
import { decryptKeyLocally } from "./local_wrap.ts";
import { type KeyMaterial, parseKeyMetadata } from "./key_material.ts";
import { KeyMaterialStore } from "./key_material_store.ts";
import { KmsAccessDeniedError, KmsConfigError, KmsKeyNotFoundError } from "./errors.ts";

/** What the unwrapper needs to know. */
export interface KeyUnwrapperOptions {
  /** KMS client for an instance (id, URL); called with the footer key material's instance when configured as DEFAULT. */
  kmsFor: (kmsInstanceId: string, kmsInstanceUrl: string) => Promise<KmsClient>;
  kmsInstanceId: string;
  kmsInstanceUrl: string;
  accessToken: string;
  /** KEK cache shared across files: token → base64 KEK id → KEK. */
  kekCache: TwoLevelCache<Promise<CryptoKey>>;
  /** Path of the Parquet file (needed for external key material). */
  parquetPath?: string;
  /** Use the footer key material's KMS instance id/URL when configured as DEFAULT (see DecryptionConfiguration). */
  readKmsUrl?: boolean;
}

/** Builds the key retriever of one Parquet file. */
export function keyRetriever(options: KeyUnwrapperOptions): KeyRetriever {
  let instanceId = options.kmsInstanceId;
  let instanceUrl = options.kmsInstanceUrl;
  let store: Promise<KeyMaterialStore> | undefined;

  const material = async (meta: Uint8Array): Promise<KeyMaterial> => {
    const parsed = parseKeyMetadata(meta);
    if (parsed.internal) return parsed.material;
    if (!options.parquetPath) {
      throw new KmsConfigError(
        "the file keeps its key material externally, but the Parquet file path was not given",
      );
    }
    store ??= KeyMaterialStore.load(options.parquetPath);
    return (await store).get(parsed.reference);
  };

  return async (meta: Uint8Array, request: KeyRequest) => {
    const m = await material(meta);
    if (m.isFooterKey && options.readKmsUrl) {
      // Opt-in, as in the key tools: the footer key material names the KMS instance unless configured.
      if (instanceId === KMS_DEFAULT && m.kmsInstanceId) instanceId = m.kmsInstanceId;
      if (instanceUrl === KMS_DEFAULT && m.kmsInstanceUrl) instanceUrl = m.kmsInstanceUrl;
    }
    const kms = await options.kmsFor(instanceId, instanceUrl);
    try {
      if (!m.doubleWrapping) return await kms.unwrapKey(m.wrappedDek, m.masterKeyId);
      const kekId = m.kekId!;
      const kek = await options.kekCache.getOrCreate(options.accessToken, kekId, async () => {
        const raw = await kms.unwrapKey(m.wrappedKek!, m.masterKeyId);
        try {
          return await crypto.subtle.importKey("raw", raw as Uint8Array<ArrayBuffer>, "AES-GCM", false, [
            "decrypt",
          ]);
        } finally {
          raw.fill(0);
        }
      });
      return await decryptKeyLocally(m.wrappedDek, kek, new Uint8Array(Buffer.from(kekId, "base64")));
    } catch (e) {
      // This principal cannot use the master key (denied, or its KMS/keystore lacks it): the key
      // is not available, so other columns still read and this one is reported.
      if (e instanceof KmsAccessDeniedError || e instanceof KmsKeyNotFoundError) {
        const what = request.kind === "footer" ? "the footer key" : `the key of column ${request.column}`;
        const why = e instanceof KmsAccessDeniedError ? "access was denied" : "the KMS does not have it";
        throw new PmeKeyMissingError(
          `master key ${m.masterKeyId} (${what}) is not available, ${why}: ${e.message}`,
        );
      }
      throw e;
    }
  };
}
