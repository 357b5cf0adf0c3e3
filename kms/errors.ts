/**
 * Typed errors of the key-management layer. Messages name the master key and the KMS, never key
 * bytes or wrapped keys.
 *
 * @module
 */

/** Base class of KMS and key-tool errors. */
export class KmsError extends Error {
  /** The master key involved, when there is one. */
  readonly masterKeyId?: string;
  /** What the caller can do about it. */
  readonly hint?: string;

  constructor(message: string, options: { masterKeyId?: string; hint?: string; cause?: unknown } = {}) {
    super(options.hint ? `${message} — ${options.hint}` : message, { cause: options.cause });
    this.name = new.target.name;
    this.masterKeyId = options.masterKeyId;
    this.hint = options.hint;
  }

  /** Whether retrying later may succeed. */
  get retryable(): boolean {
    return false;
  }
}

/** The caller's credentials may not use this master key (HTTP 401/403, keystore policy). */
export class KmsAccessDeniedError extends KmsError {}

/** The master key does not exist in the KMS. */
export class KmsKeyNotFoundError extends KmsError {}

/** The KMS cannot answer now (sealed, unreachable, overloaded): retry later. */
export class KmsUnavailableError extends KmsError {
  override get retryable(): boolean {
    return true;
  }
}

/** A wrapped key does not unwrap (wrong master key or version, tampered, or too old for the policy). */
export class KmsUnwrapError extends KmsError {}

/** Key material or key metadata is malformed or inconsistent. */
export class KeyMaterialError extends KmsError {}

/** Invalid key-tools configuration. */
export class KmsConfigError extends KmsError {}
