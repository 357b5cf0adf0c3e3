/**
 * Segment data keys and chunk encryption (WebCrypto AES-256-GCM). A segment gets a fresh random
 * 256-bit DEK, wrapped once by the KMS master key (single wrapping) and kept in memory only as a
 * non-extractable `CryptoKey`; raw key bytes are zeroed as soon as they are imported.
 *
 * @module
 */

import type { KmsClient } from "../../kms/client.ts";
import { KmsError } from "../../kms/errors.ts";
import { LandingKmsError } from "./errors.ts";
import { type AadContext, chunkAad, LENGTH_BYTES, NONCE_BYTES, TAG_BYTES } from "./format.ts";

/** A new segment's data key: the key for this process and its wrapped form for the header. */
export interface NewSegmentKey {
  /** Non-extractable AES-GCM key. */
  key: CryptoKey;
  /** The DEK wrapped by the master key. */
  wrappedDek: string;
}

function kmsFailure(what: string, e: unknown, segmentId: string, masterKeyId: string): LandingKmsError {
  const retryable = e instanceof KmsError ? e.retryable : false;
  return new LandingKmsError(`${what} the data key with master key ${JSON.stringify(masterKeyId)} failed`, {
    segmentId,
    cause: e,
    retryable,
    hint: retryable
      ? "the KMS is unavailable; retry later"
      : "check the master key id, the KMS the landing zone uses and the caller's access to the key",
  });
}

async function importDek(raw: Uint8Array<ArrayBuffer>): Promise<CryptoKey> {
  try {
    return await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
  } finally {
    raw.fill(0);
  }
}

/** Generates a DEK for segment `segmentId` and wraps it with `masterKeyId`. */
export async function newSegmentKey(
  kms: KmsClient,
  masterKeyId: string,
  segmentId: string,
): Promise<NewSegmentKey> {
  const raw = crypto.getRandomValues(new Uint8Array(32));
  let wrappedDek: string;
  try {
    wrappedDek = await kms.wrapKey(raw, masterKeyId);
  } catch (e) {
    raw.fill(0);
    throw kmsFailure("wrapping", e, segmentId, masterKeyId);
  }
  return { key: await importDek(raw), wrappedDek };
}

/** Unwraps a segment's DEK. */
export async function openSegmentKey(
  kms: KmsClient,
  header: { segmentId: string; masterKeyId: string; wrappedDek: string },
): Promise<CryptoKey> {
  let raw: Uint8Array;
  try {
    raw = await kms.unwrapKey(header.wrappedDek, header.masterKeyId);
  } catch (e) {
    throw kmsFailure("unwrapping", e, header.segmentId, header.masterKeyId);
  }
  if (raw.length !== 32) {
    raw.fill(0);
    throw new LandingKmsError(`unwrapped data key has ${raw.length} bytes, expected 32`, {
      segmentId: header.segmentId,
      hint: "the wrapped key in the header is not a landing data key",
    });
  }
  return await importDek(new Uint8Array(raw));
}

/**
 * Encrypts one chunk and frames it: `length u32 BE | nonce | ciphertext‖tag`, length = ciphertext
 * plus tag bytes.
 */
export async function sealChunk(
  key: CryptoKey,
  ctx: AadContext,
  index: number,
  final: boolean,
  plaintext: Uint8Array<ArrayBuffer>,
): Promise<Uint8Array<ArrayBuffer>> {
  const nonce = crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
  const ct = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: nonce, additionalData: chunkAad(ctx, index, final), tagLength: TAG_BYTES * 8 },
      key,
      plaintext,
    ),
  );
  const out = new Uint8Array(LENGTH_BYTES + NONCE_BYTES + ct.length);
  new DataView(out.buffer).setUint32(0, ct.length);
  out.set(nonce, LENGTH_BYTES);
  out.set(ct, LENGTH_BYTES + NONCE_BYTES);
  return out;
}

/** Decrypts one chunk body (`nonce | ciphertext‖tag`); null when it does not authenticate. */
export async function openChunk(
  key: CryptoKey,
  ctx: AadContext,
  index: number,
  final: boolean,
  body: Uint8Array<ArrayBuffer>,
): Promise<Uint8Array<ArrayBuffer> | null> {
  try {
    return new Uint8Array(
      await crypto.subtle.decrypt(
        {
          name: "AES-GCM",
          iv: body.subarray(0, NONCE_BYTES),
          additionalData: chunkAad(ctx, index, final),
          tagLength: TAG_BYTES * 8,
        },
        key,
        body.subarray(NONCE_BYTES),
      ),
    );
  } catch {
    return null;
  }
}
