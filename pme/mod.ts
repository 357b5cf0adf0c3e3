/**
 * fhir-pme's Parquet Modular Encryption engine: a spec-complete, module-level reader, writer and
 * re-keyer of encrypted Parquet files, interoperable with parquet-java and Arrow C++.
 *
 * @module
 */

export { AesKey, type PmeAlgorithm } from "./cipher.ts";
export * from "./errors.ts";
export {
  type ByteSink,
  type ByteSource,
  bytesSource,
  FileSink,
  fileSource,
  MemorySink,
  NullSink,
} from "./io.ts";
export {
  type BloomFilter,
  type ColumnEncryption,
  type ColumnInfo,
  type DecryptionOptions,
  type FooterInfo,
  type FooterMode,
  type KeyRequest,
  type KeyRetriever,
  type Page,
  ParquetReader,
  peekFooter,
} from "./reader.ts";
export {
  type ColumnKey,
  type EncryptionOptions,
  transcode,
  type TranscodeOptions,
  type TranscodeResult,
} from "./writer.ts";
export { openParquetFile, transcodeFile } from "./files.ts";
export { matchesColumn } from "./plan.ts";
export { decodeStruct, encodeStruct, TStruct } from "./thrift.ts";
