/**
 * SQL on FHIR v2 ViewDefinition: TypeScript types and structural validation.
 *
 * {@link validateViewDefinition} checks, before any data is read, the rules of the specification that a
 * runner must enforce (each failure is a {@link ViewDefinitionError} naming the element, e.g.
 * `select[0].column[1].name`):
 *
 * - `resource` is present and is a resource type name; `select` is a non-empty array;
 * - `name` (view and columns) and constant names match the sql-name rule `^[A-Za-z][A-Za-z0-9_]*$`;
 * - each constant has exactly one `value[x]` of an allowed type, with a JSON value of that type;
 * - a select uses at most one of `forEach`, `forEachOrNull`, `repeat`; these are strings (`repeat`: a
 *   non-empty array of strings); `where.path` and `column.path` are strings; `collection` is boolean;
 * - unknown keys inside `select`, `column`, `where` and `constant` are rejected (typos would otherwise
 *   silently change the output);
 * - column names are unique across the view, and every `unionAll` branch yields the same column names
 *   in the same order (the spec's ValidateColumns algorithm, which also gives the output column order).
 *
 * FHIRPath syntax is checked when the view is compiled (`runner.ts`).
 *
 * @module
 */

import { RESERVED_VARIABLES } from "../fhirpath/compile.ts";
import { FpDecimal } from "../fhirpath/values.ts";

/** A ViewDefinition (the elements a runner uses; other CanonicalResource elements are allowed). */
export interface ViewDefinition {
  resourceType?: "ViewDefinition";
  url?: string;
  name?: string;
  title?: string;
  status?: string;
  description?: string;
  fhirVersion?: string[];
  /** FHIR resource type the view is over. */
  resource: string;
  constant?: ViewConstant[];
  select: ViewSelect[];
  where?: ViewWhere[];
  [key: string]: unknown;
}

/** A named constant, `%name` in FHIRPath, with exactly one `value[x]`. */
export interface ViewConstant {
  name: string;
  valueBase64Binary?: string;
  valueBoolean?: boolean;
  valueCanonical?: string;
  valueCode?: string;
  valueDate?: string;
  valueDateTime?: string;
  valueDecimal?: number | FpDecimal;
  valueId?: string;
  valueInstant?: string;
  valueInteger?: number;
  valueInteger64?: string | number;
  valueOid?: string;
  valueString?: string;
  valuePositiveInt?: number;
  valueTime?: string;
  valueUnsignedInt?: number;
  valueUri?: string;
  valueUrl?: string;
  valueUuid?: string;
}

/** A selection structure. */
export interface ViewSelect {
  column?: ViewColumn[];
  select?: ViewSelect[];
  forEach?: string;
  forEachOrNull?: string;
  repeat?: string[];
  unionAll?: ViewSelect[];
}

/** An output column. */
export interface ViewColumn {
  name: string;
  path: string;
  /** FHIR type (relative to `http://hl7.org/fhir/StructureDefinition/`, or an absolute URI). */
  type?: string;
  collection?: boolean;
  description?: string;
  tag?: { name: string; value: string }[];
}

/** A resource filter. */
export interface ViewWhere {
  path: string;
  description?: string;
}

/** The view is invalid. `location` is the element at fault, e.g. `select[0].column[1].name`. */
export class ViewDefinitionError extends Error {
  /** The element at fault (`view` for the whole view). */
  readonly location: string;
  /** What is wrong, without the location. */
  readonly what: string;

  constructor(location: string, what: string, options?: ErrorOptions) {
    super(`ViewDefinition ${location}: ${what}`, options);
    this.name = "ViewDefinitionError";
    this.location = location;
    this.what = what;
  }
}

/** The sql-name rule for view, column and constant names. */
export const SQL_NAME = /^[A-Za-z][A-Za-z0-9_]*$/;

/** Constant value types and the JSON type each must have. */
const CONSTANT_TYPES: Readonly<Record<string, "string" | "boolean" | "integer" | "decimal" | "integer64">> = {
  valueBase64Binary: "string",
  valueBoolean: "boolean",
  valueCanonical: "string",
  valueCode: "string",
  valueDate: "string",
  valueDateTime: "string",
  valueDecimal: "decimal",
  valueId: "string",
  valueInstant: "string",
  valueInteger: "integer",
  valueInteger64: "integer64",
  valueOid: "string",
  valueString: "string",
  valuePositiveInt: "integer",
  valueTime: "string",
  valueUnsignedInt: "integer",
  valueUri: "string",
  valueUrl: "string",
  valueUuid: "string",
};

const CONSTANT_KIND_TEXT = {
  string: "a string",
  boolean: "a boolean",
  integer: "an integer",
  decimal: "a number",
  integer64: "an integer (digits in a string)",
};

const BACKBONE_KEYS = ["id", "extension", "modifierExtension"];
const SELECT_KEYS = new Set([
  "column",
  "select",
  "forEach",
  "forEachOrNull",
  "repeat",
  "unionAll",
  ...BACKBONE_KEYS,
]);
const COLUMN_KEYS = new Set(["name", "path", "type", "collection", "description", "tag", ...BACKBONE_KEYS]);
const WHERE_KEYS = new Set(["path", "description", ...BACKBONE_KEYS]);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function fail(location: string, what: string): never {
  throw new ViewDefinitionError(location, what);
}

function checkKeys(obj: Record<string, unknown>, allowed: Set<string>, location: string): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.has(k)) fail(location, `unknown element ${JSON.stringify(k)}`);
  }
}

function checkString(v: unknown, location: string, what: string): void {
  if (typeof v !== "string") {
    fail(location, `${what} must be a string, got ${Array.isArray(v) ? "array" : typeof v}`);
  }
}

function checkArray(v: unknown, location: string, nonEmpty: boolean): asserts v is unknown[] {
  if (!Array.isArray(v)) fail(location, "must be an array");
  if (nonEmpty && v.length === 0) fail(location, "must not be empty");
}

function validateConstant(c: unknown, location: string, seen: Set<string>): void {
  if (!isObject(c)) fail(location, "a constant must be an object");
  if (typeof c.name !== "string" || !SQL_NAME.test(c.name)) {
    fail(`${location}.name`, `constant names must match ${SQL_NAME.source}`);
  }
  if (RESERVED_VARIABLES.has(c.name)) fail(`${location}.name`, `%${c.name} is a built-in variable`);
  if (seen.has(c.name)) fail(`${location}.name`, `constant ${c.name} is defined twice`);
  seen.add(c.name);
  const valueKeys = Object.keys(c).filter((k) => k.startsWith("value"));
  for (const k of Object.keys(c)) {
    if (k !== "name" && !k.startsWith("value") && !BACKBONE_KEYS.includes(k)) {
      fail(location, `unknown element ${JSON.stringify(k)}`);
    }
  }
  if (valueKeys.length !== 1) {
    fail(location, `constant ${c.name} must have exactly one value[x], found ${valueKeys.length}`);
  }
  const key = valueKeys[0];
  const kind = CONSTANT_TYPES[key];
  if (kind === undefined) fail(`${location}.${key}`, `${key} is not an allowed constant type`);
  const v = c[key];
  const ok = kind === "string"
    ? typeof v === "string"
    : kind === "boolean"
    ? typeof v === "boolean"
    : kind === "integer"
    ? typeof v === "number" && Number.isInteger(v)
    : kind === "decimal"
    ? typeof v === "number" || v instanceof FpDecimal
    : (typeof v === "string" && /^-?\d+$/.test(v)) || (typeof v === "number" && Number.isInteger(v));
  if (!ok) fail(`${location}.${key}`, `must be ${CONSTANT_KIND_TEXT[kind]}`);
  if (key === "valuePositiveInt" && (v as number) < 1) fail(`${location}.${key}`, "must be ≥ 1");
  if (key === "valueUnsignedInt" && (v as number) < 0) fail(`${location}.${key}`, "must be ≥ 0");
}

function validateColumn(c: unknown, location: string): void {
  if (!isObject(c)) fail(location, "a column must be an object");
  checkKeys(c, COLUMN_KEYS, location);
  if (typeof c.name !== "string" || !SQL_NAME.test(c.name)) {
    fail(`${location}.name`, `column names must match ${SQL_NAME.source}`);
  }
  if (c.path === undefined) fail(`${location}.path`, "is required");
  checkString(c.path, `${location}.path`, "path");
  if (c.type !== undefined) checkString(c.type, `${location}.type`, "type");
  if (c.collection !== undefined && typeof c.collection !== "boolean") {
    fail(`${location}.collection`, "must be true or false");
  }
  if (c.description !== undefined) checkString(c.description, `${location}.description`, "description");
  if (c.tag !== undefined) {
    checkArray(c.tag, `${location}.tag`, false);
    c.tag.forEach((t, i) => {
      if (!isObject(t) || typeof t.name !== "string" || typeof t.value !== "string") {
        fail(`${location}.tag[${i}]`, "a tag has a string name and a string value");
      }
    });
  }
}

function validateSelect(s: unknown, location: string): void {
  if (!isObject(s)) fail(location, "a select must be an object");
  checkKeys(s, SELECT_KEYS, location);
  const iterators = ["forEach", "forEachOrNull", "repeat"].filter((k) => s[k] !== undefined);
  if (iterators.length > 1) fail(location, `uses ${iterators.join(" and ")}; at most one is allowed`);
  if (s.forEach !== undefined) checkString(s.forEach, `${location}.forEach`, "forEach");
  if (s.forEachOrNull !== undefined) {
    checkString(s.forEachOrNull, `${location}.forEachOrNull`, "forEachOrNull");
  }
  if (s.repeat !== undefined) {
    checkArray(s.repeat, `${location}.repeat`, true);
    s.repeat.forEach((p, i) => checkString(p, `${location}.repeat[${i}]`, "a repeat path"));
  }
  if (s.column !== undefined) {
    checkArray(s.column, `${location}.column`, false);
    s.column.forEach((c, i) => validateColumn(c, `${location}.column[${i}]`));
  }
  if (s.select !== undefined) {
    checkArray(s.select, `${location}.select`, false);
    s.select.forEach((x, i) => validateSelect(x, `${location}.select[${i}]`));
  }
  if (s.unionAll !== undefined) {
    checkArray(s.unionAll, `${location}.unionAll`, true);
    s.unionAll.forEach((x, i) => validateSelect(x, `${location}.unionAll[${i}]`));
  }
}

/**
 * Checks the structure of a ViewDefinition and returns it typed. Throws {@link ViewDefinitionError}.
 * Also runs the column checks of {@link viewColumns} (unique names, consistent unions).
 */
export function validateViewDefinition(view: unknown): ViewDefinition {
  if (!isObject(view)) fail("view", "a ViewDefinition must be a JSON object");
  if (view.resourceType !== undefined && view.resourceType !== "ViewDefinition") {
    fail("resourceType", `must be "ViewDefinition"`);
  }
  if (view.resource === undefined) fail("resource", "is required (the FHIR resource type the view is over)");
  if (typeof view.resource !== "string" || !/^[A-Z][A-Za-z]+$/.test(view.resource)) {
    fail("resource", "must be a FHIR resource type name such as Patient");
  }
  if (view.name !== undefined && (typeof view.name !== "string" || !SQL_NAME.test(view.name))) {
    fail("name", `view names must match ${SQL_NAME.source}`);
  }
  if (view.select === undefined) fail("select", "is required (at least one select)");
  checkArray(view.select, "select", true);
  view.select.forEach((s, i) => validateSelect(s, `select[${i}]`));
  if (view.constant !== undefined) {
    checkArray(view.constant, "constant", false);
    const seen = new Set<string>();
    view.constant.forEach((c, i) => validateConstant(c, `constant[${i}]`, seen));
  }
  if (view.where !== undefined) {
    checkArray(view.where, "where", false);
    view.where.forEach((w, i) => {
      if (!isObject(w)) fail(`where[${i}]`, "must be an object");
      checkKeys(w, WHERE_KEYS, `where[${i}]`);
      if (w.path === undefined) fail(`where[${i}].path`, "is required");
      checkString(w.path, `where[${i}].path`, "path");
    });
  }
  const typed = view as ViewDefinition;
  viewColumns(typed);
  return typed;
}

/** A column with where it was declared. */
export interface LocatedColumn {
  column: ViewColumn;
  /** Element path, e.g. `select[0].column[1]`. */
  location: string;
}

function validateColumns(s: ViewSelect, location: string, acc: LocatedColumn[]): LocatedColumn[] {
  const ret = [...acc];
  const add = (c: LocatedColumn) => {
    if (ret.some((r) => r.column.name === c.column.name)) {
      fail(c.location, `column ${c.column.name} is already defined (Column Already Defined)`);
    }
    ret.push(c);
  };
  (s.column ?? []).forEach((column, i) => add({ column, location: `${location}.column[${i}]` }));
  (s.select ?? []).forEach((sel, i) => {
    for (const c of validateColumns(sel, `${location}.select[${i}]`, ret).slice(ret.length)) add(c);
  });
  if (s.unionAll !== undefined && s.unionAll.length > 0) {
    const branches = s.unionAll.map((u, i) =>
      validateColumns(u, `${location}.unionAll[${i}]`, ret).slice(ret.length)
    );
    const names0 = branches[0].map((c) => c.column.name);
    branches.forEach((b, i) => {
      const names = b.map((c) => c.column.name);
      if (names.length !== names0.length || names.some((n, j) => n !== names0[j])) {
        fail(
          `${location}.unionAll[${i}]`,
          `branch columns [${names.join(", ")}] differ from branch 0 [${names0.join(", ")}] ` +
            "(Union Branches Inconsistent: same names in the same order are required)",
        );
      }
    });
    for (const c of branches[0]) add(c);
  }
  return ret;
}

/**
 * The output columns of a view in output order (a select's own columns, then its nested selects',
 * then its `unionAll`'s). Throws {@link ViewDefinitionError} on a duplicate name or inconsistent union.
 */
export function viewColumns(view: ViewDefinition): LocatedColumn[] {
  const out: LocatedColumn[] = [];
  view.select.forEach((s, i) => {
    for (const c of validateColumns(s, `select[${i}]`, out).slice(out.length)) {
      if (out.some((r) => r.column.name === c.column.name)) {
        fail(c.location, `column ${c.column.name} is already defined (Column Already Defined)`);
      }
      out.push(c);
    }
  });
  return out;
}

/** The columns declared by one select and its descendants (used for `forEachOrNull` null rows). */
export function selectColumns(s: ViewSelect): ViewColumn[] {
  const out: ViewColumn[] = [...(s.column ?? [])];
  for (const x of s.select ?? []) out.push(...selectColumns(x));
  if (s.unionAll !== undefined && s.unionAll.length > 0) out.push(...selectColumns(s.unionAll[0]));
  return out;
}

const FHIR_SD = "http://hl7.org/fhir/StructureDefinition/";

/**
 * The FHIR type of a column: `type` with the `http://hl7.org/fhir/StructureDefinition/` prefix
 * removed (`string`, `dateTime`, `CodeableConcept`, `Observation.referenceRange`), or undefined.
 */
export function columnType(c: ViewColumn): string | undefined {
  if (c.type === undefined) return undefined;
  return c.type.startsWith(FHIR_SD) ? c.type.slice(FHIR_SD.length) : c.type;
}
