/**
 * Typed errors of the landing zone. Every error names the segment (and the chunk, when one is at
 * fault) and carries a hint; messages never contain resource content, key bytes or wrapped keys.
 *
 * @module
 */

import { FhirError } from "../errors.ts";

/** Where a landing error happened and what to do about it. */
export interface LandingErrorOptions {
  /** The segment (128-bit hex id) at fault, when there is one. */
  segmentId?: string;
  /** The 0-based chunk index at fault, when there is one. */
  chunkIndex?: number;
  /** What the caller or operator can do about it. */
  hint?: string;
  /** The underlying error. */
  cause?: unknown;
}

/** Base class of landing-zone errors. */
export class LandingError extends FhirError {
  /** The segment at fault, when there is one. */
  readonly segmentId?: string;
  /** The 0-based chunk index at fault, when there is one. */
  readonly chunkIndex?: number;
  /** What the caller or operator can do about it. */
  readonly hint?: string;

  constructor(message: string, options: LandingErrorOptions = {}) {
    const where = [
      options.segmentId !== undefined ? `segment ${options.segmentId}` : "",
      options.chunkIndex !== undefined ? `chunk ${options.chunkIndex}` : "",
    ].filter((s) => s).join(", ");
    super(
      (where ? `${where}: ${message}` : message) + (options.hint ? ` — ${options.hint}` : ""),
      { cause: options.cause },
    );
    this.name = new.target.name;
    this.segmentId = options.segmentId;
    this.chunkIndex = options.chunkIndex;
    this.hint = options.hint;
  }

  /** Whether retrying the operation later may succeed. */
  get retryable(): boolean {
    return false;
  }
}

/** Stored data fails verification: it was modified, reordered, spliced, truncated or lost. */
export class LandingIntegrityError extends LandingError {}

/**
 * A chunk does not authenticate with the segment's data key and its expected AAD (segment id, chunk
 * index, final flag, resource type): the chunk was modified, moved from another position (reordering,
 * a dropped chunk) or spliced from another segment.
 */
export class LandingAuthError extends LandingIntegrityError {}

/** A sealed segment ends early: the final chunk (or the end of a chunk) is missing. */
export class LandingTruncatedError extends LandingIntegrityError {}

/** A segment the manifest lists as sealed (not yet published) has no file: acknowledged data is lost. */
export class LandingMissingSegmentError extends LandingIntegrityError {}

/** Bytes that are not a landing segment or manifest of a known version (bad magic, header, length). */
export class LandingFormatError extends LandingError {}

/**
 * The KMS could not wrap or unwrap a segment's data key. `retryable` follows the KMS error (true when
 * the KMS is unavailable, false for a wrong or denied master key).
 */
export class LandingKmsError extends LandingError {
  readonly #retryable: boolean;

  constructor(message: string, options: LandingErrorOptions & { retryable?: boolean } = {}) {
    super(message, options);
    this.#retryable = options.retryable ?? false;
  }

  override get retryable(): boolean {
    return this.#retryable;
  }
}

/**
 * A file-system operation failed (disk full, I/O error, permissions). When an append fails this way the
 * batch was not acknowledged; the segment it was written to is set aside (recovered on the next open)
 * and a retry goes to a new one. `retryable` is true unless the operation cannot succeed by retrying
 * (e.g. a permission error).
 */
export class LandingIoError extends LandingError {
  readonly #retryable: boolean;

  constructor(message: string, options: LandingErrorOptions & { retryable?: boolean } = {}) {
    super(message, options);
    this.#retryable = options.retryable ??
      !(options.cause instanceof Deno.errors.PermissionDenied ||
        options.cause instanceof Deno.errors.NotCapable);
  }

  override get retryable(): boolean {
    return this.#retryable;
  }
}

/** Invalid input to `append` (resource type, empty or multi-line NDJSON line, batch too large). */
export class LandingInputError extends LandingError {}

/**
 * The landing zone is used wrongly: closed, open in another process, an unknown segment id, or
 * publishing a segment that is not sealed.
 */
export class LandingStateError extends LandingError {}
