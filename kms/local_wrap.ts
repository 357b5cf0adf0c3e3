/**
 * Local key wrapping of the key tools (`encryptKeyLocally` / `decryptKeyLocally`):
 * `base64(nonce(12) || AES-GCM(wrapping key, nonce, AAD, key) || tag(16))`, standard base64 with
 * padding. Used for DEKs under KEKs (AAD = the raw KEK id) and by InMemoryKMS-style master-key
 * wrapping (AAD = UTF-8 master key id).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { type CipherGCM, createCipheriv, createDecipheriv, type DecipherGCM } from "node:crypto";
import { KmsUnwrapError } from "./errors.ts";

/**
 * Key wrapping works on 16–32 byte payloads, where a WebCrypto call costs ~50 µs of async round trip
 * and node:crypto ~10 µs on the calling thread. Raw 128/256-bit wrapping keys go through node:crypto;
 * CryptoKeys and 192-bit keys (Deno's node:crypto has no aes-192-gcm) through WebCrypto.
 */
const NODE_GCM: Readonly<Record<number, string>> = { 16: "aes-128-gcm", 32: "aes-256-gcm" };

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
  if (wrappingKey instanceof Uint8Array && NODE_GCM[wrappingKey.length]) {
    const c = createCipheriv(NODE_GCM[wrappingKey.length], wrappingKey, nonce) as CipherGCM;
    c.setAAD(aad);
    const body = Buffer.concat([c.update(key), c.final()]);
    const out = Buffer.concat([nonce, body, c.getAuthTag()]).toString("base64");
    body.fill(0);
    return out;
  }
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
  if (wrappingKey instanceof Uint8Array && NODE_GCM[wrappingKey.length]) {
    const d = createDecipheriv(
      NODE_GCM[wrappingKey.length],
      wrappingKey,
      bytes.subarray(0, 12),
    ) as DecipherGCM;
    d.setAAD(aad);
    d.setAuthTag(bytes.subarray(bytes.length - 16));
    const out = new Uint8Array(d.update(bytes.subarray(12, bytes.length - 16)));
    try {
      d.final();
    } catch {
      out.fill(0);
      throw new KmsUnwrapError("wrapped key does not unwrap", {
        hint: "wrong wrapping key, or the key material was modified",
      });
    }
    return out;
  }
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
