/**
 * Landing zone for accepted FHIR resources: encrypted, crash-safe NDJSON segments per resource type,
 * a manifest of sealed segments for conversion, deletion after publication (see README.md).
 *
 * Segment format, version 1:
 *
 * ```
 * segment = "FPLZ" | version u8 (1) | header length u32 BE | header JSON | chunk* | final chunk
 * header  = {format, version, segmentId (random 128-bit hex), resourceType, created, masterKeyId,
 *            wrappedDek (KmsClient.wrapKey of a fresh 256-bit DEK, single wrapping), cipher, aad}
 * chunk   = length u32 BE | nonce (12) | AES-256-GCM(DEK, nonce, AAD, LF-terminated NDJSON lines)‖tag (16)
 * AAD     = "FPLZ1" | segment id (16 raw bytes) | chunk index u64 BE | final flag u8 | UTF-8 resource type
 * ```
 *
 * One `append` = one chunk = one fdatasync, before the promise resolves. `seal` appends an empty chunk
 * with final flag 1, fdatasyncs, renames `<id>.open` → `<id>.seg` and records it in `manifest.json`
 * (atomic replace). On open, `.open` segments are verified, a torn tail is truncated and reported, and
 * they are sealed; an authentication failure before the tail is an error naming segment and chunk.
 *
 * @module
 */

export * from "./errors.ts";
export {
  AAD_SCHEME,
  FORMAT_VERSION,
  MAX_CHUNK_PLAINTEXT,
  parseSegmentFileName,
  segmentFileName,
  type SegmentHeader,
} from "./format.ts";
export { MANIFEST_FILE, type ManifestEntry, type SegmentStatus } from "./manifest.ts";
export { type RecoveredFile, type RecoveryAction, type RecoveryReport } from "./recovery.ts";
export {
  readHeader,
  readSegment,
  readSegmentChunks,
  type ReadSegmentOptions,
  type SegmentSummary,
  verifySegment,
} from "./segment_reader.ts";
export { type SealedSegment } from "./segment_writer.ts";
export {
  type AppendReceipt,
  LandingZone,
  type LandingZoneOptions,
  type OpenSegmentInfo,
} from "./landing_zone.ts";
