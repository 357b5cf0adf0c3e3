/**
 * Typed errors of the conversion core. Messages name files, views, columns and line numbers, never
 * resource values (they could be PHI).
 *
 * @module
 */

/** A project view file is missing, invalid, or lacks sensitivity/partition tags. */
export class ProjectViewError extends Error {
  /** The view file at fault. */
  readonly file: string;

  constructor(file: string, what: string, options?: ErrorOptions) {
    super(`view file ${file}: ${what}`, options);
    this.name = "ProjectViewError";
    this.file = file;
  }
}

/** An NDJSON input line cannot be used (not JSON, wrong type, missing id or meta). */
export class ConvertInputError extends Error {
  /** Index of the input in `ConvertOptions.inputs`. */
  readonly input: number;
  /** 1-based line number in that input. */
  readonly line: number;

  constructor(input: number, line: number, what: string, options?: ErrorOptions) {
    super(`input ${input}, line ${line}: ${what}`, options);
    this.name = "ConvertInputError";
    this.input = input;
    this.line = line;
  }
}

/** The conversion options are inconsistent (master keys, row group size, inputs). */
export class ConvertConfigError extends Error {
  constructor(what: string) {
    super(what);
    this.name = "ConvertConfigError";
  }
}
