/**
 * Typed errors of the PME engine. Every error says what failed, where (file, row group, column,
 * page, module) and what to do about it; none of them carries key bytes or decrypted data.
 *
 * @module
 */

/** Where in a Parquet file an error happened. Fields are omitted when not applicable. */
export interface PmeLocation {
  file?: string;
  rowGroup?: number;
  column?: string;
  page?: number;
  module?: string;
}

/** Base class of all engine errors. */
export class PmeError extends Error {
  /** Location of the failure. */
  readonly location: PmeLocation;
  /** What failed, without location and hint. */
  readonly what: string;
  /** What the caller can do about it. */
  readonly hint?: string;

  constructor(what: string, location: PmeLocation = {}, hint?: string) {
    super(formatMessage(what, location, hint));
    this.name = new.target.name;
    this.what = what;
    this.location = location;
    this.hint = hint;
  }

  /** Returns a copy of this error with more location facts (existing ones win). */
  at(extra: PmeLocation): PmeError {
    const Ctor = this.constructor as new (w: string, l: PmeLocation, h?: string) => PmeError;
    return new Ctor(this.what, { ...extra, ...this.location }, this.hint);
  }

  /**
   * Whether retrying the same call may succeed: never for engine errors (bytes, keys and options
   * do not change by waiting). A key retriever's own errors, such as a KMS outage, pass through
   * unchanged and say for themselves.
   */
  get retryable(): boolean {
    return false;
  }
}

function formatMessage(what: string, loc: PmeLocation, hint?: string): string {
  const parts: string[] = [];
  if (loc.file !== undefined) parts.push(`file ${loc.file}`);
  if (loc.rowGroup !== undefined) parts.push(`row group ${loc.rowGroup}`);
  if (loc.column !== undefined) parts.push(`column ${loc.column}`);
  if (loc.page !== undefined) parts.push(`page ${loc.page}`);
  if (loc.module !== undefined) parts.push(`module ${loc.module}`);
  let msg = what;
  if (parts.length) msg += ` [at ${parts.join(", ")}]`;
  if (hint) msg += ` — ${hint}`;
  return msg;
}

/** The file's bytes are not valid Parquet/PME (bad magic, truncated, malformed Thrift, bad sizes). */
export class PmeFormatError extends PmeError {}

/**
 * Authentication failed: an AES-GCM tag, the plaintext-footer signature or a page CRC did not
 * verify. Either the key is wrong or the bytes were changed, truncated or moved.
 */
export class PmeAuthError extends PmeError {}

/** A key needed for the requested data is not available (no explicit key, retriever gave none). */
export class PmeKeyMissingError extends PmeError {}

/** The AAD prefix is missing, unexpected or different from the one stored in the file. */
export class PmeAadPrefixError extends PmeError {}

/** The file uses a feature this engine does not support. */
export class PmeUnsupportedError extends PmeError {}

/** The caller's options are invalid (bad key length, unknown column, conflicting settings). */
export class PmeConfigError extends PmeError {}

/**
 * A transcode with encryption would write in plaintext columns that are encrypted in the input
 * (they get no key in the new encryption), and the caller did not name them in
 * `TranscodeOptions.decryptColumns`. Nothing is written. `columns` lists them (dotted leaf paths).
 */
export class PmeProtectionError extends PmeError {
  /** The columns that would lose their encryption. */
  readonly columns: readonly string[];

  constructor(what: string, location: PmeLocation = {}, hint?: string, columns: readonly string[] = []) {
    super(what, location, hint);
    this.columns = columns;
  }

  override at(extra: PmeLocation): PmeProtectionError {
    return new PmeProtectionError(this.what, { ...extra, ...this.location }, this.hint, this.columns);
  }

  /** The same error with another hint, for callers with their own vocabulary (command-line flags). */
  withHint(hint: string): PmeProtectionError {
    return new PmeProtectionError(this.what, this.location, hint, this.columns);
  }
}
