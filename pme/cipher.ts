/**
 * PME ciphers: AES-GCM modules (every module type) and AES-CTR modules (page payloads in
 * AES_GCM_CTR_V1), with the module framing of Encryption.md §5:
 *
 * - GCM: `u32le L | nonce(12) | ciphertext | tag(16)`, L = 12 + n + 16
 * - CTR: `u32le L | nonce(12) | ciphertext`, L = 12 + n, counter block = nonce || 00 00 00 01
 *
 * Two implementations of the same algorithms, chosen per module by size: small modules (page
 * headers, metadata, indexes, footers, small pages) are processed synchronously with node:crypto,
 * which costs a few microseconds; larger ones go to WebCrypto, whose every call is an async round
 * trip through a worker thread (tens of microseconds) but whose AES-GCM is ~3× faster per byte.
 * See {@link syncThresholds} for the cut-over sizes. Both give the same bytes for the same key,
 * nonce and AAD.
 *
 * Raw key bytes are held only inside a node:crypto `KeyObject` (native memory); the caller's bytes
 * are copied and the temporary copy zeroed. WebCrypto keys are imported from it on first use (the
 * exported copy is zeroed too).
 *
 * @module
 */

import {
  type CipherGCM,
  createCipheriv,
  createDecipheriv,
  createSecretKey,
  type DecipherGCM,
  getCiphers,
  type KeyObject,
} from "node:crypto";
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

/**
 * Largest module, in bytes, that each cipher processes synchronously with node:crypto; larger
 * ones go to WebCrypto. The size counted is the plaintext (for decryption: the ciphertext without
 * the tag) plus, for GCM, the AAD.
 */
export interface SyncThresholds {
  /** AES-GCM modules (128- and 256-bit keys; Deno's node:crypto has no aes-192-gcm). */
  gcm: number;
  /** AES-CTR page payloads (all key sizes). */
  ctr: number;
}

/**
 * Measured on Deno 2.9 (2-core x86-64 VM with AES-NI; pme/README.md has the table): a WebCrypto
 * call is an async op served by a worker thread and takes L + ~1.6 µs/KiB (GCM) or ~0.8 µs/KiB
 * (CTR), where L, mostly waking that thread, was 10–65 µs depending on what else the machine ran;
 * a node:crypto call runs on the calling thread and takes ~5 µs + ~5.5 µs/KiB (GCM: Deno's
 * node:crypto GCM is ~190 MB/s against WebCrypto's ~650) or ~3 µs + ~2.4 µs/KiB (CTR). The
 * thresholds (8 KiB GCM, 16 KiB CTR) keep the worst-case loss against the better choice small
 * over that whole range of L — at most ~30 µs (GCM) or ~35 µs (CTR) per module near the threshold,
 * where 4 KiB (GCM) or 32 KiB (CTR) would lose ~45 µs — node:crypto blocks the thread for under
 * ~50 µs, and bulk pages (hundreds of KiB) keep WebCrypto's speed and its use of the other cores.
 */
const DEFAULT_THRESHOLDS: Readonly<SyncThresholds> = { gcm: 8192, ctr: 16384 };
let thresholds: SyncThresholds = { ...DEFAULT_THRESHOLDS };

/** The current cut-over sizes between node:crypto (up to this many bytes) and WebCrypto. */
export function syncThresholds(): SyncThresholds {
  return { ...thresholds };
}

/**
 * Changes the cut-over sizes for tests and benchmarks (`-1` sends every module to WebCrypto,
 * `Infinity` every module to node:crypto where it has the cipher) and returns the previous ones;
 * without an argument, restores the defaults. Output bytes do not depend on it.
 */
export function setSyncThresholds(next?: Partial<SyncThresholds>): SyncThresholds {
  const merged = next ? { ...thresholds, ...next } : { ...DEFAULT_THRESHOLDS };
  for (const v of [merged.gcm, merged.ctr]) {
    if (typeof v !== "number" || Number.isNaN(v)) {
      throw new PmeConfigError(`sync threshold ${v} is not a number`);
    }
  }
  const previous = thresholds;
  thresholds = merged;
  return { ...previous };
}

/** node:crypto cipher names this runtime has (Deno 2.9 lacks aes-192-gcm). */
const NODE_CIPHERS = new Set(getCiphers());

/** What the module functions need of a key; kept out of the class so that nothing exposes it. */
interface KeyState {
  /** The key bytes, in native memory. */
  node: KeyObject;
  /** node:crypto cipher names for this key size, when the runtime has them. */
  gcmName?: string;
  ctrName?: string;
  /** WebCrypto keys, imported on first use. */
  gcm?: Promise<CryptoKey>;
  ctr?: Promise<CryptoKey>;
}

const keyStates = new WeakMap<AesKey, KeyState>();

/** An AES key usable for GCM and CTR modules. */
export class AesKey {
  #invocations = 0;

  private constructor(node: KeyObject, bits: number) {
    const gcm = `aes-${bits}-gcm`;
    const ctr = `aes-${bits}-ctr`;
    keyStates.set(this, {
      node,
      gcmName: NODE_CIPHERS.has(gcm) ? gcm : undefined,
      ctrName: NODE_CIPHERS.has(ctr) ? ctr : undefined,
    });
  }

  /**
   * Copies key bytes into a native key object (the temporary copy is zeroed; the caller's bytes
   * are left alone). Resolves at once: nothing is awaited.
   */
  static import(bytes: Uint8Array, what = "key"): Promise<AesKey> {
    try {
      return Promise.resolve(AesKey.from(bytes, what));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Synchronous form of {@link AesKey.import}; throws {@link PmeConfigError} for a bad key length. */
  static from(bytes: Uint8Array, what = "key"): AesKey {
    validateKey(bytes, what);
    const raw = bytes.slice();
    try {
      return new AesKey(createSecretKey(raw), raw.length * 8);
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

function state(key: AesKey): KeyState {
  return keyStates.get(key)!;
}

/** The node:crypto cipher for a module of `size` bytes, or undefined when WebCrypto does it. */
function nodeCipher(s: KeyState, cipher: ModuleCipher, size: number): string | undefined {
  return cipher === "gcm"
    ? (size <= thresholds.gcm ? s.gcmName : undefined)
    : (size <= thresholds.ctr ? s.ctrName : undefined);
}

/** The WebCrypto key of a cipher, imported on first use; the exported key copy is zeroed. */
function webKey(s: KeyState, cipher: ModuleCipher): Promise<CryptoKey> {
  const load = async (name: "AES-GCM" | "AES-CTR") => {
    const raw = s.node.export();
    try {
      return await crypto.subtle.importKey("raw", ab(raw), name, false, ["encrypt", "decrypt"]);
    } finally {
      raw.fill(0);
    }
  };
  return cipher === "gcm" ? (s.gcm ??= load("AES-GCM")) : (s.ctr ??= load("AES-CTR"));
}

function authError(): PmeAuthError {
  return new PmeAuthError("authentication tag does not verify", {}, "wrong key, or the file was modified");
}

/** Copies a node:crypto output Buffer into a plain array that owns its memory. */
function own(parts: Uint8Array[], extra: Uint8Array | undefined, total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  if (extra) out.set(extra, at);
  return out;
}

/** GCM encryption with node:crypto: ciphertext || tag. */
function nodeGcmEncrypt(s: KeyState, name: string, iv: Uint8Array, data: Uint8Array, aad: Uint8Array) {
  const c = createCipheriv(name, s.node, iv) as CipherGCM;
  if (aad.length) c.setAAD(aad);
  const body = c.update(data);
  const last = c.final();
  return own([body, last], c.getAuthTag(), data.length + TAG);
}

/** CTR keystream with node:crypto (encryption and decryption are the same operation). */
function nodeCtr(s: KeyState, name: string, iv: Uint8Array, data: Uint8Array): Uint8Array {
  const c = createCipheriv(name, s.node, ctrCounter(iv));
  const body = c.update(data);
  return own([body, c.final()], undefined, data.length);
}

/** GCM decryption with node:crypto; unauthenticated output is wiped before a failure is thrown. */
function nodeGcmDecrypt(s: KeyState, name: string, iv: Uint8Array, body: Uint8Array, aad: Uint8Array) {
  const n = body.length - TAG;
  const d = createDecipheriv(name, s.node, iv) as DecipherGCM;
  d.setAuthTag(body.subarray(n));
  if (aad.length) d.setAAD(aad);
  const plain = d.update(body.subarray(0, n));
  try {
    const last = d.final();
    return own([plain, last], undefined, n);
  } catch {
    throw authError();
  } finally {
    plain.fill(0);
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
  const s = state(key);
  const iv = nonce();
  const name = nodeCipher(s, cipher, plaintext.length + (cipher === "gcm" ? aad.length : 0));
  let body: Uint8Array;
  if (name) {
    body = cipher === "gcm" ? nodeGcmEncrypt(s, name, iv, plaintext, aad) : nodeCtr(s, name, iv, plaintext);
  } else {
    body = new Uint8Array(
      cipher === "gcm"
        ? await crypto.subtle.encrypt(
          { name: "AES-GCM", iv: ab(iv), additionalData: ab(aad), tagLength: 128 },
          await webKey(s, "gcm"),
          ab(plaintext),
        )
        : await crypto.subtle.encrypt(
          { name: "AES-CTR", counter: ab(ctrCounter(iv)), length: 32 },
          await webKey(s, "ctr"),
          ab(plaintext),
        ),
    );
  }
  const prefix = new Uint8Array(4 + NONCE);
  new DataView(prefix.buffer).setUint32(0, NONCE + body.byteLength, true);
  prefix.set(iv, 4);
  return [prefix, body];
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
  const s = state(key);
  const iv = module.subarray(4, 4 + NONCE);
  const body = module.subarray(4 + NONCE);
  const name = nodeCipher(s, cipher, cipher === "gcm" ? body.length - TAG + aad.length : body.length);
  if (name) return cipher === "gcm" ? nodeGcmDecrypt(s, name, iv, body, aad) : nodeCtr(s, name, iv, body);
  try {
    if (cipher === "gcm") {
      return new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "AES-GCM", iv: ab(iv), additionalData: ab(aad), tagLength: 128 },
          await webKey(s, "gcm"),
          ab(body),
        ),
      );
    }
    return new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-CTR", counter: ab(ctrCounter(iv)), length: 32 },
        await webKey(s, "ctr"),
        ab(body),
      ),
    );
  } catch (e) {
    if (e instanceof DOMException && e.name === "OperationError") throw authError();
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
  const s = state(key);
  const name = nodeCipher(s, "gcm", data.length + aad.length);
  if (name) {
    const c = createCipheriv(name, s.node, iv) as CipherGCM;
    if (aad.length) c.setAAD(aad);
    c.update(data);
    c.final();
    return new Uint8Array(c.getAuthTag());
  }
  const out = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: ab(iv), additionalData: ab(aad), tagLength: 128 },
    await webKey(s, "gcm"),
    ab(data),
  );
  return new Uint8Array(out, out.byteLength - TAG, TAG);
}
