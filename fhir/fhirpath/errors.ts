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

/** An error located in an expression: `position` is the 0-based character offset in `expression`. */
export abstract class FhirPathPositionedError extends FhirPathError {
  /** 0-based offset of the offending character, token or construct. */
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

/** The expression text is not valid FHIRPath (or uses syntax outside the supported subset). */
export class FhirPathSyntaxError extends FhirPathPositionedError {}

/**
 * The expression parsed but cannot be compiled: an unknown function, a wrong number of arguments, an
 * undefined `%constant`, an unsupported type name.
 */
export class FhirPathCompileError extends FhirPathPositionedError {}

/**
 * Evaluation failed on some input: e.g. an operator that needs a single item got several, or two
 * values of incompatible types were compared. The message names the operation, never the values.
 */
export class FhirPathEvaluationError extends FhirPathError {}
