/**
 * FHIRPath subset compiler for SQL on FHIR view runners: `compileFhirPath(text, {constants})` parses
 * once and returns a closure tree. See `compile.ts` for the design, `functions.ts` for the supported
 * functions and `navigation.ts`/`types.ts` for how FHIR types are handled without a FHIR model.
 *
 * @module
 */

export type { ExprNode } from "./ast.ts";
export {
  type CompiledFhirPath,
  compileFhirPath,
  type CompileOptions,
  constantCollection,
  RESERVED_VARIABLES,
} from "./compile.ts";
export { type EvalContext, type Expr, newContext } from "./context.ts";
export {
  FhirPathCompileError,
  FhirPathError,
  FhirPathEvaluationError,
  FhirPathSyntaxError,
} from "./errors.ts";
export { FUNCTIONS } from "./functions.ts";
export { parseFhirJson } from "./json.ts";
export { parseFhirPath } from "./parser.ts";
export { type Collection, FpDecimal, FpTemporal, type TemporalType, toPlain } from "./values.ts";
