/**
 * The embedded default KMS: a {@link KmsClient} over a {@link LocalKeystore}.
 *
 * Wrapping is byte-compatible with parquet-java's `InMemoryKMS` (and Arrow C++
 * `TestOnlyInServerWrapKms`): `wrapKey` = `base64(nonce(12) || AES-GCM(master key, nonce,
 * AAD = UTF-8 master key id, key) || tag(16))` with the current master-key version; the string carries
 * no version marker, so files written with the same master key bytes by parquet-java/pyarrow test KMSs
 * and by us open on either side. `unwrapKey` therefore tries the usable versions newest first (those at
 * or above the key's minimum decryption version); the GCM tag tells which one wrapped it.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { KmsClient, KmsClientFactory } from "./client.ts";
import { KmsUnwrapError } from "./errors.ts";
import { decryptKeyLocally, encryptKeyLocally } from "./local_wrap.ts";
import { LocalKeystore, type LocalKeystoreOptions, type MasterKeyVersion } from "./local_keystore.ts";

const te = new TextEncoder();

/** Options of {@link LocalKmsClient}. */
export interface LocalKmsClientOptions {
  /**
   * Re-read the keystore before each call when the file changed on disk (inode, mtime or size), so a
   * rotation by another process is seen. Default true.
   */
  refresh?: boolean;
}

/** Checks the wrapped text's shape; throws {@link KmsUnwrapError} naming the master key. */
function checkWrappedShape(wrapped: string, masterKeyId: string): void {
  if (typeof wrapped !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(wrapped) || wrapped.length % 4 !== 0) {
    throw new KmsUnwrapError(`wrapped key for master key ${JSON.stringify(masterKeyId)} is not base64`, {
      masterKeyId,
      hint: "it was not written by the local KMS or an InMemoryKMS-compatible one",
    });
  }
  const n = Buffer.byteLength(wrapped, "base64");
  if (n < 12 + 16 + 1) {
    throw new KmsUnwrapError(
      `wrapped key for master key ${
        JSON.stringify(masterKeyId)
      } has ${n} bytes, too short for nonce, key and tag`,
      { masterKeyId },
    );
  }
}

/** Unwraps with one version; null when the tag does not verify. */
async function tryUnwrap(wrapped: string, v: MasterKeyVersion, aad: Uint8Array): Promise<Uint8Array | null> {
  try {
    return await decryptKeyLocally(wrapped, v.key, aad);
  } catch (e) {
    if (e instanceof KmsUnwrapError) return null;
    throw e;
  }
}

/**
 * KMS client over a local keystore; InMemoryKMS-compatible wrapping (see the module documentation).
 */
export class LocalKmsClient implements KmsClient {
  readonly #keystore: LocalKeystore;
  readonly #refresh: boolean;

  /** A client over an open keystore (not closed by the client). */
  constructor(keystore: LocalKeystore, options: LocalKmsClientOptions = {}) {
    this.#keystore = keystore;
    this.#refresh = options.refresh ?? true;
  }

  /** The keystore this client uses. */
  get keystore(): LocalKeystore {
    return this.#keystore;
  }

  async #fresh(): Promise<LocalKeystore> {
    if (this.#refresh) await this.#keystore.refresh();
    return this.#keystore;
  }

  /**
   * Wraps `keyBytes` with the current version of master key `masterKeyId` (AAD = its UTF-8 bytes);
   * {@link KmsKeyNotFoundError} for an unknown id.
   */
  async wrapKey(keyBytes: Uint8Array, masterKeyId: string): Promise<string> {
    const ks = await this.#fresh();
    const current = await ks.currentKey(masterKeyId);
    return await encryptKeyLocally(keyBytes, current.key, te.encode(masterKeyId));
  }

  /**
   * Unwraps with the usable versions of `masterKeyId`, newest first. Throws {@link KmsKeyNotFoundError}
   * for an unknown id and {@link KmsUnwrapError} when no usable version verifies.
   */
  async unwrapKey(wrappedKey: string, masterKeyId: string): Promise<Uint8Array> {
    const ks = await this.#fresh();
    const versions = await ks.keysNewestFirst(masterKeyId);
    checkWrappedShape(wrappedKey, masterKeyId);
    const aad = te.encode(masterKeyId);
    for (const v of versions) {
      const key = await tryUnwrap(wrappedKey, v, aad);
      if (key) return key;
    }
    const min = ks.minDecryptionVersion(masterKeyId);
    const tried = versions.length === 1
      ? `version ${versions[0].version}`
      : `versions ${versions.at(-1)!.version}..${versions[0].version}`;
    throw new KmsUnwrapError(
      `wrapped key does not unwrap with master key ${JSON.stringify(masterKeyId)} (${tried} tried)`,
      {
        masterKeyId,
        hint:
          (min > 1
            ? `it was wrapped by a version below the minimum decryption version ${min}, `
            : "it was wrapped ") +
          "by a different keystore or KMS (other key bytes under this id), or it was modified",
      },
    );
  }

  /**
   * Re-wraps a wrapped key under the current version of the same master key, inside the client (the
   * key is not returned; its transient copy is zeroed).
   */
  async rewrapKey(wrappedKey: string, masterKeyId: string): Promise<string> {
    const key = await this.unwrapKey(wrappedKey, masterKeyId);
    try {
      return await this.wrapKey(key, masterKeyId);
    } finally {
      key.fill(0);
    }
  }

  /** Whether the wrapped key verifies with the current (newest) version of `masterKeyId`. */
  async isCurrent(wrappedKey: string, masterKeyId: string): Promise<boolean> {
    const ks = await this.#fresh();
    const current = await ks.currentKey(masterKeyId);
    checkWrappedShape(wrappedKey, masterKeyId);
    const key = await tryUnwrap(wrappedKey, current, te.encode(masterKeyId));
    key?.fill(0);
    return key !== null;
  }
}

/**
 * A {@link KmsClientFactory} for the local keystore at `keystorePath`. The keystore is opened once, on
 * first use (a failed open is retried on the next call), and shared by every client; each call re-reads
 * it when the file changed on disk. The connection's instance id/URL and token are not used: a local
 * keystore has no instances or principals (key material records them as given, normally `DEFAULT`).
 */
export function localKmsClientFactory(
  keystorePath: string,
  options: LocalKeystoreOptions = {},
): KmsClientFactory {
  let client: Promise<LocalKmsClient> | undefined;
  return () => {
    if (!client) {
      const p = LocalKeystore.open(keystorePath, options).then((ks) => new LocalKmsClient(ks));
      client = p;
      p.catch(() => {
        if (client === p) client = undefined;
      });
    }
    return client;
  };
}
