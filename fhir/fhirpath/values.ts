/**
 * Runtime values of the FHIRPath evaluator.
 *
 * A collection is a plain JavaScript array. Its items are what `JSON.parse` gives for a FHIR resource
 * (objects, strings, numbers, booleans), plus two wrapper classes for values whose FHIR type matters and
 * that JSON cannot carry:
 *
 * - {@link FpDecimal}: a decimal that keeps its written text (`1.0`, `1.50`), so that the precision-based
 *   functions (`lowBoundary`, `highBoundary`) and output see the precision JSON.parse loses. Created by
 *   the lossless parse in `json.ts` and by decimal literals whose text differs from the shortest number.
 * - {@link FpTemporal}: a date, dateTime, instant or time whose type is known (a literal, a typed
 *   constant, a choice element read through its typed name such as `effectiveDateTime`). Plain strings
 *   compared with a temporal are parsed as that kind of temporal.
 *
 * Collections handed out by the evaluator may share arrays with the input resource: callers must treat
 * every collection as read-only.
 *
 * @module
 */

/** A FHIRPath collection. Treat as read-only. */
export type Collection = unknown[];

/** Base class of the typed wrappers (one `instanceof` tells a wrapper from a JSON node). */
export abstract class FpValue {
  /** The text form. */
  abstract readonly text: string;
}

/** A decimal that keeps its written text (precision). `value` is the nearest IEEE double. */
export class FpDecimal extends FpValue {
  constructor(readonly value: number, readonly text: string) {
    super();
  }
  /** JSON output is the number. */
  toJSON(): number {
    return this.value;
  }
  /** The written text. */
  override toString(): string {
    return this.text;
  }
}

/** Kind of a temporal value. `instant` is a dateTime that must carry seconds and a time zone. */
export type TemporalType = "date" | "dateTime" | "instant" | "time";

/** A date/time value with a known FHIR type; `text` is the ISO 8601 (possibly partial) text. */
export class FpTemporal extends FpValue {
  constructor(readonly type: TemporalType, readonly text: string) {
    super();
  }
  /** JSON output is the text. */
  toJSON(): string {
    return this.text;
  }
  /** The text. */
  override toString(): string {
    return this.text;
  }
}

/** The shared empty collection (never mutate). */
export const EMPTY: Collection = [];
/** The shared `[true]` collection (never mutate). */
export const TRUE: Collection = [true];
/** The shared `[false]` collection (never mutate). */
export const FALSE: Collection = [false];

/** `[b]` using the shared collections. */
export function bool(b: boolean): Collection {
  return b ? TRUE : FALSE;
}

/** True for a JSON object node (element or resource), false for primitives and wrappers. */
export function isNode(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !(v instanceof FpValue) && !Array.isArray(v);
}

/** True for a number or an {@link FpDecimal}. */
export function isNumeric(v: unknown): v is number | FpDecimal {
  return typeof v === "number" || v instanceof FpDecimal;
}

/** The number of a numeric value. */
export function numberOf(v: number | FpDecimal): number {
  return typeof v === "number" ? v : v.value;
}

/** A short type description of a value for error messages (never the value itself). */
export function describeType(v: unknown): string {
  if (v instanceof FpDecimal) return "decimal";
  if (v instanceof FpTemporal) return v.type;
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "decimal";
  if (typeof v === "string") return "string";
  if (typeof v === "boolean") return "boolean";
  if (isNode(v)) return typeof v.resourceType === "string" ? v.resourceType : "element";
  return typeof v;
}

/**
 * Converts an evaluated item to its plain output form: {@link FpDecimal} → number, {@link FpTemporal} →
 * its text; strings, numbers, booleans and objects are returned as they are.
 */
export function toPlain(v: unknown): unknown {
  if (v instanceof FpDecimal) return v.value;
  if (v instanceof FpTemporal) return v.text;
  return v;
}
