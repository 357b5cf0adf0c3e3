/**
 * Errors across threads: a conversion worker posts an error as plain data ({@link postError}) and the
 * caller rebuilds the same class with the same message and fields ({@link reviveError}), one level of
 * `cause` included. Used for errors recorded during speculative evaluation too, so that in-process and
 * worker runs throw identical errors. Messages carry no resource values (see each error class).
 *
 * @module
 */

import { ArrowConversionError } from "../views/columns.ts";
import { ViewEvaluationError } from "../views/runner.ts";
import { ConvertConfigError, ConvertInputError, ProjectViewError } from "./errors.ts";

/** An error as plain data. */
export interface PostedError {
  name: string;
  message: string;
  fields: Record<string, string | number>;
  cause?: PostedError;
}

/** Flattens an error for `postMessage` (name, message, the fields {@link reviveError} needs, cause). */
export function postError(e: unknown, depth = 0): PostedError {
  if (!(e instanceof Error)) return { name: "Error", message: String(e), fields: {} };
  const fields: Record<string, string | number> = {};
  if (e instanceof ConvertInputError) Object.assign(fields, { input: e.input, line: e.line });
  else if (e instanceof ViewEvaluationError) Object.assign(fields, { location: e.location, what: e.what });
  else if (e instanceof ArrowConversionError) Object.assign(fields, { column: e.column, row: e.row });
  else if (e instanceof ProjectViewError) Object.assign(fields, { file: e.file });
  const posted: PostedError = { name: e.name, message: e.message, fields };
  if (e.cause !== undefined && depth === 0) posted.cause = postError(e.cause, 1);
  return posted;
}

/** Rebuilds an error posted by {@link postError}. */
export function reviveError(p: PostedError): Error {
  const f = p.fields;
  const after = (prefix: string) => p.message.startsWith(prefix) ? p.message.slice(prefix.length) : p.message;
  const options = p.cause ? { cause: reviveError(p.cause) } : undefined;
  switch (p.name) {
    case "ConvertInputError": {
      const input = f.input as number;
      const line = f.line as number;
      return new ConvertInputError(input, line, after(`input ${input}, line ${line}: `), options);
    }
    case "ViewEvaluationError":
      return new ViewEvaluationError(f.location as string, f.what as string, options);
    case "ArrowConversionError": {
      const column = f.column as string;
      const row = f.row as number;
      return new ArrowConversionError(column, row, after(`column ${column}, row ${row}: `));
    }
    case "ProjectViewError":
      return new ProjectViewError(f.file as string, after(`view file ${f.file}: `), options);
    case "ConvertConfigError":
      return new ConvertConfigError(p.message);
  }
  const e = new Error(p.message, options);
  e.name = p.name;
  return e;
}
