/**
 * PME ciphers on WebCrypto: AES-GCM modules (every module type) and AES-CTR modules (page payloads
 * in AES_GCM_CTR_V1), with the module framing of Encryption.md §5:
 *
 * - GCM: `u32le L | nonce(12) | ciphertext | tag(16)`, L = 12 + n + 16
 * - CTR: `u32le L | nonce(12) | ciphertext`, L = 12 + n, counter block = nonce || 00 00 00 01
 *
 * Raw key bytes are imported into non-extractable CryptoKeys and not retained.
 *
 * @module
 */

import { PmeAuthError, PmeConfigError, PmeFormatError } from "./errors.ts";

/** The two PME algorithms. */
export type PmeAlgorithm = "AES_GCM_V1" | "AES_GCM_CTR_V1";

/** The cipher used for one module. */
export type ModuleCipher = "gcm" | "ctr";

const NONCE = 12;
const TAG = 16;
/** Bytes a GCM module adds to its plaintext. */
export const GCM_OVERHEAD = 4 + NONCE + TAG;
/** Bytes a CTR module adds to its plaintext. */
export const CTR_OVERHEAD = 4 + NONCE;
/** Length of a plaintext-footer signature (nonce + tag). */
export const SIGNATURE_LENGTH = NONCE + TAG;
/** At most 2^32 GCM invocations with random nonces per key (Encryption.md §4.1.4). */
const MAX_INVOCATIONS = 2 ** 32;

/** Checks that key bytes are a valid AES key for PME. */
export function validateKey(bytes: Uint8Array, what: string): void {
  if (![16, 24, 32].includes(bytes.length)) {
    throw new PmeConfigError(
      `${what} has ${bytes.length} bytes`,
      {},
      "AES keys must be 16, 24 or 32 bytes (128, 192 or 256 bits)",
    );
  }
}

/** Checks a key that is about to encrypt: valid, and not all zeros (parquet-java refuses those). */
export function validateWriteKey(bytes: Uint8Array, what: string): void {
  validateKey(bytes, what);
  if (bytes.every((b) => b === 0)) {
    throw new PmeConfigError(
      `${what} is all zeros`,
      {},
      "use a random key (parquet-java refuses all-zero keys)",
    );
  }
}

/** An AES key usable for GCM and CTR modules. */
export class AesKey {
  #invocations = 0;

  private constructor(readonly gcm: CryptoKey, readonly ctr: CryptoKey) {}

  /** Imports key bytes into non-extractable CryptoKeys; the temporary copy is zeroed. */
  static async import(bytes: Uint8Array, what = "key"): Promise<AesKey> {
    validateKey(bytes, what);
    const raw = bytes.slice();
    try {
      const gcm = await crypto.subtle.importKey("raw", ab(raw), "AES-GCM", false, ["encrypt", "decrypt"]);
      const ctr = await crypto.subtle.importKey("raw", ab(raw), "AES-CTR", false, ["encrypt", "decrypt"]);
      return new AesKey(gcm, ctr);
    } finally {
      raw.fill(0);
    }
  }

  /** Counts one random-nonce invocation; fails past the NIST limit. */
  count(): void {
    if (++this.#invocations > MAX_INVOCATIONS) {
      throw new PmeConfigError(
        "a key was used for more than 2^32 encryptions",
        {},
        "use fresh data keys for files this large",
      );
    }
  }
}

/** WebCrypto's typings want ArrayBuffer-backed views; every view here is one. */
function ab(b: Uint8Array): Uint8Array<ArrayBuffer> {
  return b as Uint8Array<ArrayBuffer>;
}

function nonce(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(NONCE));
}

function ctrCounter(n: Uint8Array): Uint8Array {
  const counter = new Uint8Array(16);
  counter.set(n);
  counter[15] = 1;
  return counter;
}

/**
 * Encrypts one module; returns it as two parts to write back to back — the 16-byte prefix (length
 * and nonce) and the ciphertext (with the GCM tag) — so large pages are never copied.
 */
export async function encryptModuleParts(
  key: AesKey,
  cipher: ModuleCipher,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Promise<[Uint8Array, Uint8Array]> {
  key.count();
  const iv = nonce();
  const body = cipher === "gcm"
    ? await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: ab(iv), additionalData: ab(aad), tagLength: 128 },
      key.gcm,
      ab(plaintext),
    )
    : await crypto.subtle.encrypt(
      { name: "AES-CTR", counter: ab(ctrCounter(iv)), length: 32 },
      key.ctr,
      ab(plaintext),
    );
  const prefix = new Uint8Array(4 + NONCE);
  new DataView(prefix.buffer).setUint32(0, NONCE + body.byteLength, true);
  prefix.set(iv, 4);
  return [prefix, new Uint8Array(body)];
}

/** Encrypts one module; returns the framed bytes (length prefix included) in one array. */
export async function encryptModule(
  key: AesKey,
  cipher: ModuleCipher,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array> {
  const [prefix, body] = await encryptModuleParts(key, cipher, plaintext, aad);
  const out = new Uint8Array(prefix.length + body.length);
  out.set(prefix);
  out.set(body, prefix.length);
  return out;
}

/**
 * Reads the length prefix of a module at `offset` and returns the module's total size on disk
 * (4 + L), checking that it fits in `limit` bytes.
 */
export function moduleSize(buf: Uint8Array, offset: number, limit: number, cipher: ModuleCipher): number {
  if (limit < 4 || offset + 4 > buf.length) {
    throw new PmeFormatError("encrypted module is truncated before its length prefix");
  }
  const len = new DataView(buf.buffer, buf.byteOffset + offset, 4).getUint32(0, true);
  const min = cipher === "gcm" ? NONCE + TAG : NONCE;
  if (len < min) {
    throw new PmeFormatError(`encrypted module length ${len} is shorter than its ${min}-byte framing`);
  }
  if (4 + len > limit || offset + 4 + len > buf.length) {
    throw new PmeFormatError(`encrypted module of ${4 + len} bytes runs past the available ${limit} bytes`);
  }
  return 4 + len;
}

/**
 * Decrypts one framed module (`module` must be exactly the module bytes). Throws
 * {@link PmeAuthError} when the GCM tag does not verify.
 */
export async function decryptModule(
  key: AesKey,
  cipher: ModuleCipher,
  module: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array> {
  const size = moduleSize(module, 0, module.length, cipher);
  if (size !== module.length) {
    throw new PmeFormatError(`module length prefix says ${size} bytes but ${module.length} are framed`);
  }
  const iv = module.subarray(4, 4 + NONCE);
  const body = module.subarray(4 + NONCE);
  try {
    if (cipher === "gcm") {
      return new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "AES-GCM", iv: ab(iv), additionalData: ab(aad), tagLength: 128 },
          key.gcm,
          ab(body),
        ),
      );
    }
    return new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-CTR", counter: ab(ctrCounter(iv)), length: 32 },
        key.ctr,
        ab(body),
      ),
    );
  } catch (e) {
    if (e instanceof DOMException && e.name === "OperationError") {
      throw new PmeAuthError("authentication tag does not verify", {}, "wrong key, or the file was modified");
    }
    throw e;
  }
}

/** Computes a plaintext-footer signature: nonce(12) || GCM tag(16) over `footer`. */
export async function signFooter(key: AesKey, footer: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
  key.count();
  const iv = nonce();
  const sig = new Uint8Array(SIGNATURE_LENGTH);
  sig.set(iv);
  sig.set(await gcmTag(key, iv, footer, aad), NONCE);
  return sig;
}

/** Verifies a plaintext-footer signature over the raw footer bytes. */
export async function verifyFooterSignature(
  key: AesKey,
  footer: Uint8Array,
  aad: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  if (signature.length !== SIGNATURE_LENGTH) return false;
  const tag = await gcmTag(key, signature.subarray(0, NONCE), footer, aad);
  let diff = 0;
  for (let i = 0; i < TAG; i++) diff |= tag[i] ^ signature[NONCE + i];
  return diff === 0;
}

async function gcmTag(key: AesKey, iv: Uint8Array, data: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
  const out = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: ab(iv), additionalData: ab(aad), tagLength: 128 },
    key.gcm,
    ab(data),
  );
  return new Uint8Array(out, out.byteLength - TAG, TAG);
}
