/**
 * Local key wrapping of the key tools (`encryptKeyLocally` / `decryptKeyLocally`):
 * `base64(nonce(12) || AES-GCM(wrapping key, nonce, AAD, key) || tag(16))`, standard base64 with
 * padding. Used for DEKs under KEKs (AAD = the raw KEK id) and by InMemoryKMS-style master-key
 * wrapping (AAD = UTF-8 master key id).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { KmsUnwrapError } from "./errors.ts";

function ab(b: Uint8Array): Uint8Array<ArrayBuffer> {
  return b as Uint8Array<ArrayBuffer>;
}

async function importKey(key: Uint8Array | CryptoKey): Promise<CryptoKey> {
  if (key instanceof CryptoKey) return key;
  if (![16, 24, 32].includes(key.length)) throw new KmsUnwrapError(`wrapping key has ${key.length} bytes`);
  return await crypto.subtle.importKey("raw", ab(key), "AES-GCM", false, ["encrypt", "decrypt"]);
}

/** Wraps `key` with `wrappingKey` (bytes or an AES-GCM CryptoKey) and `aad`. */
export async function encryptKeyLocally(
  key: Uint8Array,
  wrappingKey: Uint8Array | CryptoKey,
  aad: Uint8Array,
): Promise<string> {
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const ct = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: nonce, additionalData: ab(aad), tagLength: 128 },
    await importKey(wrappingKey),
    ab(key),
  );
  return Buffer.concat([nonce, new Uint8Array(ct)]).toString("base64");
}

/** Unwraps a locally wrapped key; throws {@link KmsUnwrapError} when the tag does not verify. */
export async function decryptKeyLocally(
  wrapped: string,
  wrappingKey: Uint8Array | CryptoKey,
  aad: Uint8Array,
): Promise<Uint8Array> {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(wrapped)) throw new KmsUnwrapError("wrapped key is not base64");
  const bytes = new Uint8Array(Buffer.from(wrapped, "base64"));
  if (bytes.length < 12 + 16) throw new KmsUnwrapError(`wrapped key has ${bytes.length} bytes, too short`);
  try {
    return new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: bytes.subarray(0, 12), additionalData: ab(aad), tagLength: 128 },
        await importKey(wrappingKey),
        bytes.subarray(12),
      ),
    );
  } catch (e) {
    if (e instanceof DOMException && e.name === "OperationError") {
      throw new KmsUnwrapError("wrapped key does not unwrap", {
        hint: "wrong wrapping key, or the key material was modified",
      });
    }
    throw e;
  }
}
