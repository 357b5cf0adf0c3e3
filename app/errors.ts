/**
 * Errors of the application layer (use cases over `pme/`, `kms/` and `fhir/`). Like the lower layers'
 * errors they say what failed, where, and what to do, and whether retrying can help.
 *
 * @module
 */

/** Base class of application-layer errors. */
export class AppError extends Error {
  /** What the caller can do about it. */
  readonly hint?: string;

  constructor(message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(options.hint ? `${message} — ${options.hint}` : message, { cause: options.cause });
    this.name = new.target.name;
    this.hint = options.hint;
  }

  /** Whether retrying later may succeed (false unless a subclass says otherwise). */
  get retryable(): boolean {
    return false;
  }
}

/**
 * A data folder cannot be used as asked: it does not exist, is not a fhir-pme data folder, its record
 * is malformed, its keystore is inside it, or a master key it needs is missing or denied. Not retryable:
 * an operator has to act.
 */
export class DataFolderError extends AppError {}
