/**
 * Type tests for `ofType()`, `is` and `as` on values without a FHIR model.
 *
 * - Typed wrappers are exact: an {@link FpTemporal} is its own type; an {@link FpDecimal} is a decimal.
 * - JSON primitives are tested by shape: a boolean is `boolean`; a number is `decimal`, and also an
 *   integer type when it is integral; a string is any string-based FHIR primitive (`string`, `code`,
 *   `id`, `uri`, ...), and a `date`/`dateTime`/`instant`/`time` only when its text has that format.
 * - Objects: a resource matches its `resourceType` (and `Resource`/`DomainResource`). The type of a
 *   complex element is not known from its JSON; `element.ofType(Type)` written directly after a
 *   navigation step is resolved by the navigation itself (`navigation.ts`), which is how choice types
 *   are used in practice.
 *
 * @module
 */

import type { TypeSpecifier } from "./ast.ts";
import { isPrimitiveType, PRIMITIVE_TYPES } from "./fhir_types.ts";
import { parseDateTime, parseTime } from "./temporal.ts";
import { FpDecimal, FpTemporal, isNode } from "./values.ts";

/** FHIRPath System types. */
export const SYSTEM_TYPES: ReadonlySet<string> = new Set([
  "Boolean",
  "String",
  "Integer",
  "Long",
  "Decimal",
  "Date",
  "DateTime",
  "Time",
  "Quantity",
]);

/** A type name resolved to its namespace. */
export interface ResolvedType {
  namespace: "FHIR" | "System";
  name: string;
}

/** Resolves a type specifier: lower-case FHIR primitives and capitalized names are FHIR, except System names. */
export function resolveType(spec: TypeSpecifier): ResolvedType | undefined {
  if (spec.namespace !== undefined) {
    if (spec.namespace !== "FHIR" && spec.namespace !== "System") return undefined;
    if (spec.namespace === "System" && !SYSTEM_TYPES.has(spec.name)) return undefined;
    return { namespace: spec.namespace, name: spec.name };
  }
  if (isPrimitiveType(spec.name)) return { namespace: "FHIR", name: spec.name };
  if (SYSTEM_TYPES.has(spec.name) && spec.name !== "Quantity") {
    return { namespace: "System", name: spec.name };
  }
  return { namespace: "FHIR", name: spec.name };
}

const INTEGER_TYPES = new Set(["integer", "unsignedInt", "positiveInt", "integer64"]);
const DATE_ONLY = /^\d{4}(-\d{2}(-\d{2})?)?$/;
const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

function stringMatchesFhir(s: string, name: string): boolean {
  switch (name) {
    case "date":
      return DATE_ONLY.test(s) && parseDateTime(s) !== undefined;
    case "dateTime":
      return parseDateTime(s) !== undefined;
    case "instant":
      return INSTANT.test(s);
    case "time":
      return parseTime(s) !== undefined && !s.startsWith("T");
    case "integer64":
      return /^-?\d+$/.test(s);
    default:
      return PRIMITIVE_TYPES[name] === "String";
  }
}

function matchesFhirPrimitive(v: unknown, name: string): boolean {
  if (v instanceof FpTemporal) return v.type === name;
  if (v instanceof FpDecimal) return name === "decimal";
  if (typeof v === "number") return name === "decimal" || (INTEGER_TYPES.has(name) && Number.isInteger(v));
  if (typeof v === "boolean") return name === "boolean";
  if (typeof v === "string") return stringMatchesFhir(v, name);
  return false;
}

function matchesSystem(v: unknown, name: string): boolean {
  switch (name) {
    case "Boolean":
      return typeof v === "boolean";
    case "String":
      return typeof v === "string";
    case "Integer":
    case "Long":
      return typeof v === "number" && Number.isInteger(v);
    case "Decimal":
      return typeof v === "number" || v instanceof FpDecimal;
    case "Date":
      return v instanceof FpTemporal
        ? v.type === "date"
        : typeof v === "string" && stringMatchesFhir(v, "date");
    case "DateTime":
      return v instanceof FpTemporal
        ? v.type === "dateTime" || v.type === "instant"
        : typeof v === "string" && v.includes("T") && parseDateTime(v) !== undefined;
    case "Time":
      return v instanceof FpTemporal
        ? v.type === "time"
        : typeof v === "string" && stringMatchesFhir(v, "time");
    case "Quantity":
      return isNode(v) && "value" in v;
  }
  return false;
}

/** True when `v` is of type `t` (see the module notes for what can be known without a model). */
export function matchesType(v: unknown, t: ResolvedType): boolean {
  if (t.namespace === "System") return matchesSystem(v, t.name);
  if (isPrimitiveType(t.name)) return matchesFhirPrimitive(v, t.name);
  if (!isNode(v)) return false;
  const rt = v.resourceType;
  if (typeof rt === "string") return rt === t.name || t.name === "Resource" || t.name === "DomainResource";
  return false;
}

/** Lenient test for values read from a non-choice element `x` in `x.ofType(T)`: objects are trusted. */
export function matchesDeclared(v: unknown, t: ResolvedType): boolean {
  if (isNode(v) && typeof v.resourceType !== "string") {
    return !isPrimitiveType(t.name) && t.namespace === "FHIR";
  }
  return matchesType(v, t);
}
