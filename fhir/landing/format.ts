/**
 * The landing segment format ("FPLZ", version 1): constants, the header, file names and the chunk
 * AAD. See fhir/landing/README.md for the full description.
 *
 * ```
 * segment  = prefix header chunk* final-chunk
 * prefix   = "FPLZ" (4) | version u8 (= 1) | header length u32 BE
 * header   = UTF-8 JSON {format, version, segmentId, resourceType, created, masterKeyId,
 *                        wrappedDek, cipher, aad}
 * chunk    = length u32 BE (of ciphertext‖tag) | nonce (12) | AES-256-GCM(DEK, nonce, AAD, lines)‖tag (16)
 * AAD      = "FPLZ1" | segment id (16 raw bytes) | chunk index u64 BE | final flag u8 | UTF-8 resource type
 * ```
 *
 * A data chunk's plaintext is one appended batch: NDJSON lines, each terminated by LF. The final chunk
 * (final flag 1) has an empty plaintext and ends a sealed segment.
 *
 * @module
 */

import { LandingFormatError, LandingInputError } from "./errors.ts";

/** "FPLZ": the first four bytes of every segment file. */
export const MAGIC: Uint8Array = new Uint8Array([0x46, 0x50, 0x4c, 0x5a]);
/** Format version in byte 4 and in the header JSON. */
export const FORMAT_VERSION = 1;
/** Value of the header's `format` member. */
export const SEGMENT_FORMAT = "fhir-pme-landing-segment";
/** Bytes before the header JSON: magic, version, header length. */
export const PREFIX_BYTES = 9;
/** Largest accepted header JSON. */
export const MAX_HEADER_BYTES = 64 * 1024;
/** AES-GCM nonce length. */
export const NONCE_BYTES = 12;
/** AES-GCM tag length. */
export const TAG_BYTES = 16;
/** Chunk length field. */
export const LENGTH_BYTES = 4;
/** Framing and tag bytes added to every chunk's plaintext. */
export const CHUNK_OVERHEAD: number = LENGTH_BYTES + NONCE_BYTES + TAG_BYTES;
/** Largest plaintext of one chunk (one appended batch): 64 MiB. */
export const MAX_CHUNK_PLAINTEXT: number = 64 * 1024 * 1024;
/** The header's `cipher` value. */
export const CIPHER = "AES-256-GCM";
/** Label at the start of every chunk AAD. */
export const AAD_LABEL = "FPLZ1";
/** The header's `aad` value: the chunk AAD scheme, for readers of the raw file. */
export const AAD_SCHEME =
  "FPLZ1 || segmentId (16 bytes) || chunkIndex (u64 BE) || final (u8: 0 data, 1 final) || resourceType (UTF-8)";
/** Suffix of a segment being written. */
export const OPEN_SUFFIX = ".open";
/** Suffix of a sealed segment. */
export const SEALED_SUFFIX = ".seg";

const SEGMENT_ID_RE = /^[0-9a-f]{32}$/;
const RESOURCE_TYPE_RE = /^[A-Z][A-Za-z]{0,63}$/;
const te = new TextEncoder();
const td = new TextDecoder("utf-8", { fatal: true });

/** The JSON header of a segment. */
export interface SegmentHeader {
  /** Always {@link SEGMENT_FORMAT}. */
  format: string;
  /** Always {@link FORMAT_VERSION}. */
  version: number;
  /** Random 128-bit id, 32 lower-case hex digits; also the file name. */
  segmentId: string;
  /** FHIR resource type of every line. */
  resourceType: string;
  /** ISO 8601 creation time. */
  created: string;
  /** The KMS master key that wraps the data key. */
  masterKeyId: string;
  /** The segment's 256-bit data key, wrapped by `KmsClient.wrapKey` (single wrapping). */
  wrappedDek: string;
  /** Always {@link CIPHER}. */
  cipher: string;
  /** Always {@link AAD_SCHEME}. */
  aad: string;
}

/** Whether `id` is a segment id (32 lower-case hex digits). */
export function isSegmentId(id: string): boolean {
  return SEGMENT_ID_RE.test(id);
}

/** A fresh random 128-bit segment id. */
export function newSegmentId(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0"))
    .join("");
}

/** Throws {@link LandingInputError} unless `type` looks like a FHIR resource type name. */
export function checkResourceType(type: string): void {
  if (typeof type !== "string" || !RESOURCE_TYPE_RE.test(type)) {
    throw new LandingInputError("invalid resource type", {
      hint: "a FHIR resource type name such as Observation ([A-Z][A-Za-z]*, at most 64 characters)",
    });
  }
}

/** File name of segment `id` while open or once sealed. */
export function segmentFileName(id: string, state: "open" | "sealed"): string {
  return id + (state === "open" ? OPEN_SUFFIX : SEALED_SUFFIX);
}

/** Parses a segment file name; null for other files. */
export function parseSegmentFileName(name: string): { id: string; state: "open" | "sealed" } | null {
  for (const [suffix, state] of [[OPEN_SUFFIX, "open"], [SEALED_SUFFIX, "sealed"]] as const) {
    if (name.endsWith(suffix)) {
      const id = name.slice(0, -suffix.length);
      return isSegmentId(id) ? { id, state } : null;
    }
  }
  return null;
}

function hexBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Encodes prefix and header JSON. */
export function encodeHeader(header: SegmentHeader): Uint8Array<ArrayBuffer> {
  const json = te.encode(JSON.stringify(header));
  const out = new Uint8Array(PREFIX_BYTES + json.length);
  out.set(MAGIC, 0);
  out[4] = FORMAT_VERSION;
  new DataView(out.buffer).setUint32(5, json.length);
  out.set(json, PREFIX_BYTES);
  return out;
}

/** Whether the first `bytes.length` bytes could start a segment (a prefix of the magic). */
export function startsLikeSegment(bytes: Uint8Array): boolean {
  for (let i = 0; i < Math.min(bytes.length, MAGIC.length); i++) if (bytes[i] !== MAGIC[i]) return false;
  return true;
}

/**
 * Checks the 9-byte prefix; returns the header JSON length. Throws {@link LandingFormatError} for a
 * wrong magic, an unknown version or an oversized header.
 */
export function parsePrefix(prefix: Uint8Array, segmentId?: string): number {
  if (prefix.length < PREFIX_BYTES || !startsLikeSegment(prefix)) {
    throw new LandingFormatError("not a landing segment (bad magic)", { segmentId });
  }
  if (prefix[4] !== FORMAT_VERSION) {
    throw new LandingFormatError(`unsupported segment format version ${prefix[4]}`, {
      segmentId,
      hint: `this reader knows version ${FORMAT_VERSION}`,
    });
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, PREFIX_BYTES).getUint32(5);
  if (n < 2 || n > MAX_HEADER_BYTES) {
    throw new LandingFormatError(`segment header length ${n} out of range`, { segmentId });
  }
  return n;
}

/**
 * Parses and validates the header JSON. `expectedId` (from the file name) must match the header's
 * segment id: a segment file renamed to another id is refused.
 */
export function parseHeader(json: Uint8Array, expectedId?: string): SegmentHeader {
  let h: Record<string, unknown>;
  try {
    h = JSON.parse(td.decode(json));
  } catch (e) {
    throw new LandingFormatError("segment header is not JSON", { segmentId: expectedId, cause: e });
  }
  const bad = (what: string) => new LandingFormatError(`segment header: ${what}`, { segmentId: expectedId });
  if (h === null || typeof h !== "object" || Array.isArray(h)) throw bad("not an object");
  if (h.format !== SEGMENT_FORMAT) throw bad("wrong format");
  if (h.version !== FORMAT_VERSION) throw bad(`unsupported version ${String(h.version)}`);
  if (typeof h.segmentId !== "string" || !isSegmentId(h.segmentId)) throw bad("invalid segmentId");
  if (expectedId !== undefined && h.segmentId !== expectedId) {
    throw new LandingFormatError(`segment header names segment ${h.segmentId}`, {
      segmentId: expectedId,
      hint: "the file was renamed or copied from another segment",
    });
  }
  if (typeof h.resourceType !== "string" || !RESOURCE_TYPE_RE.test(h.resourceType)) {
    throw bad("invalid resourceType");
  }
  if (typeof h.created !== "string" || Number.isNaN(Date.parse(h.created))) throw bad("invalid created");
  if (typeof h.masterKeyId !== "string" || h.masterKeyId === "") throw bad("invalid masterKeyId");
  if (typeof h.wrappedDek !== "string" || h.wrappedDek === "") throw bad("invalid wrappedDek");
  if (h.cipher !== CIPHER) throw bad("unsupported cipher");
  if (h.aad !== AAD_SCHEME) throw bad("unsupported AAD scheme");
  return h as unknown as SegmentHeader;
}

/** The parts of the chunk AAD that do not change from chunk to chunk. */
export interface AadContext {
  /** Segment id as 16 raw bytes. */
  segmentId: Uint8Array;
  /** UTF-8 resource type. */
  resourceType: Uint8Array;
}

/** The fixed AAD parts of a segment. */
export function aadContext(segmentId: string, resourceType: string): AadContext {
  return { segmentId: hexBytes(segmentId), resourceType: te.encode(resourceType) };
}

/** The AAD of chunk `index`: "FPLZ1" ‖ segment id ‖ u64 BE index ‖ final flag ‖ resource type. */
export function chunkAad(ctx: AadContext, index: number, final: boolean): Uint8Array<ArrayBuffer> {
  const label = AAD_LABEL.length;
  const out = new Uint8Array(label + 16 + 8 + 1 + ctx.resourceType.length);
  for (let i = 0; i < label; i++) out[i] = AAD_LABEL.charCodeAt(i);
  out.set(ctx.segmentId, label);
  new DataView(out.buffer).setBigUint64(label + 16, BigInt(index));
  out[label + 24] = final ? 1 : 0;
  out.set(ctx.resourceType, label + 25);
  return out;
}
