/**
 * Options and results of the transcoder (writer side).
 *
 * @module
 */

import type { PmeAlgorithm } from "./cipher.ts";

/** A column key and the key metadata to store with it. */
export interface ColumnKey {
  key: Uint8Array;
  /** Opaque bytes stored in the file so a reader's key retriever can find the key. */
  keyMetadata?: Uint8Array;
}

/** Writer-side encryption options. */
export interface EncryptionOptions {
  /** Footer key: encrypts (or signs) the footer, and every column in uniform encryption. */
  footerKey: Uint8Array;
  /** Key metadata of the footer key. */
  footerKeyMetadata?: Uint8Array;
  /**
   * Column keys by dotted column path (a leaf such as `a.list.element`, or a parent such as `a`
   * meaning all its leaves). Omitted: every column is encrypted with the footer key (uniform
   * encryption). Given: the listed columns get their keys, the others stay plaintext.
   */
  columnKeys?: Record<string, ColumnKey>;
  /** Default AES_GCM_V1. */
  algorithm?: PmeAlgorithm;
  /** Plaintext footer with a GCM signature ("PAR1") instead of an encrypted one ("PARE"). */
  plaintextFooter?: boolean;
  /** AAD prefix (for example a file identity that readers must confirm). */
  aadPrefix?: Uint8Array;
  /** Store the AAD prefix in the file (default true); false means readers must supply it. */
  storeAadPrefix?: boolean;
  /**
   * Data page V2 framing: "whole-body" (default; Arrow C++, arrow-rs, DuckDB) encrypts levels and
   * values as one module; "levels-plaintext" (parquet-java) leaves the level bytes in clear.
   */
  pageV2Framing?: "whole-body" | "levels-plaintext";
  /** Unique part of the file AAD (tests only; default 8 random bytes). */
  aadFileUnique?: Uint8Array;
}

/** Options of a transcode. */
export interface TranscodeOptions {
  /** Encrypt the output; omitted: write plaintext Parquet. */
  encryption?: EncryptionOptions;
  /**
   * Columns to keep (dotted leaf or parent paths). Omitted: every column whose key is available;
   * columns whose key is missing are skipped and reported.
   */
  columns?: string[];
  /**
   * Columns (dotted leaf or parent paths) to write in plaintext although the input encrypts them.
   * With `encryption`, a column that is encrypted in the input and gets no key in the output is
   * refused (`PmeProtectionError`, nothing written) unless it is named here: a re-key never
   * lowers a column's protection silently. Named columns are written in plaintext, also with
   * uniform encryption (the others then keep the footer key); naming a column that is also given a
   * column key is a `PmeConfigError`. Without `encryption` every column is written in
   * plaintext (the explicit decrypt operation) and this is not needed.
   */
  decryptColumns?: string[];
  /** Write page CRCs on every page (default: keep CRCs where the input had them). */
  pageChecksums?: boolean;
  /** Progress callback: bytes of column chunks done / total. */
  onProgress?: (done: number, total: number) => void;
}

/** What a transcode did. */
export interface TranscodeResult {
  rows: number;
  rowGroups: number;
  columns: string[];
  /** Columns left out because their key was not available. */
  skippedColumns: string[];
  /** Columns encrypted in the input and written in plaintext (named in `decryptColumns`, or all without `encryption`). */
  decryptedColumns: string[];
  bytesWritten: number;
}
