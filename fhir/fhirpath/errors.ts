/**
 * Typed errors of the FHIRPath compiler and evaluator. Messages name the expression position and the
 * construct at fault; they never contain resource data (values read from a resource may be PHI).
 *
 * @module
 */

/** Base class of every FHIRPath error. */
export class FhirPathError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * The expression text is not valid FHIRPath (or uses syntax outside the supported subset).
 * `position` is the 0-based character offset in `expression` where the problem was found.
 */
export class FhirPathSyntaxError extends FhirPathError {
  /** 0-based offset of the offending character or token. */
  readonly position: number;
  /** The whole expression text. */
  readonly expression: string;
  /** What is wrong, without the position. */
  readonly what: string;

  constructor(what: string, expression: string, position: number) {
    super(`${what} at position ${position} in ${JSON.stringify(expression)}`);
    this.what = what;
    this.expression = expression;
    this.position = position;
  }
}

/**
 * The expression parsed but cannot be compiled: an unknown function, a wrong number of arguments, an
 * undefined `%constant`, an unsupported type name. `position` is the 0-based offset of the construct.
 */
export class FhirPathCompileError extends FhirPathError {
  /** 0-based offset of the construct at fault. */
  readonly position: number;
  /** The whole expression text. */
  readonly expression: string;
  /** What is wrong, without the position. */
  readonly what: string;

  constructor(what: string, expression: string, position: number) {
    super(`${what} at position ${position} in ${JSON.stringify(expression)}`);
    this.what = what;
    this.expression = expression;
    this.position = position;
  }
}

/**
 * Evaluation failed on some input: e.g. an operator that needs a single item got several, or two
 * values of incompatible types were compared. The message names the operation, never the values.
 */
export class FhirPathEvaluationError extends FhirPathError {}
