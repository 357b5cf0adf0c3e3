/**
 * FHIRPath operator semantics on collections: equality (`=`, `!=`), equivalence (`~`, `!~`),
 * comparison (`< <= > >=`), arithmetic (`+ - * / div mod &`), three-valued boolean logic (`and or
 * xor implies`), union (`|`) and membership (`in`, `contains`).
 *
 * Empty propagation: equality, comparison and arithmetic return empty when an operand is empty.
 * Operands of comparison and arithmetic must be single items, else a {@link FhirPathEvaluationError}
 * (naming the operator, never the values) is thrown.
 *
 * Typing without a FHIR model: a plain string compared with a date/time value ({@link FpTemporal}) is
 * parsed as that kind of temporal; numbers and {@link FpDecimal}s compare numerically.
 *
 * @module
 */

import { addDecimals, multiplyDecimals } from "./decimal.ts";
import { FhirPathEvaluationError } from "./errors.ts";
import { compareTemporal, parseLike, partsOf, type TemporalParts } from "./temporal.ts";
import {
  bool,
  type Collection,
  describeType,
  EMPTY,
  FpDecimal,
  FpTemporal,
  isNode,
  isNumeric,
  numberOf,
} from "./values.ts";

/** Parsed temporal pair when at least one side is a temporal, else undefined. */
function temporalPair(x: unknown, y: unknown): [TemporalParts, TemporalParts] | undefined | null {
  const tx = x instanceof FpTemporal;
  const ty = y instanceof FpTemporal;
  if (!tx && !ty) return undefined;
  let px: TemporalParts | undefined;
  let py: TemporalParts | undefined;
  if (tx && ty) {
    px = partsOf(x);
    py = partsOf(y);
    if (px && py && px.isTime !== py.isTime) return null;
  } else if (tx) {
    px = partsOf(x);
    py = typeof y === "string" && px ? parseLike(y, px) : undefined;
  } else {
    py = partsOf(y as FpTemporal);
    px = typeof x === "string" && py ? parseLike(x, py) : undefined;
  }
  if (!px || !py) return null;
  return [px, py];
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (isNumeric(a) && isNumeric(b)) return numberOf(a) === numberOf(b);
  if (a instanceof FpTemporal || b instanceof FpTemporal) return String(a) === String(b);
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  }
  if (isNode(a) && isNode(b)) {
    const ka = Object.keys(a).filter((k) => a[k] !== undefined);
    const kb = Object.keys(b).filter((k) => b[k] !== undefined);
    return ka.length === kb.length && ka.every((k) => deepEqual(a[k], b[k]));
  }
  return false;
}

/** Equality of two items: true, false, or undefined (unknown: temporal values of different precision). */
export function itemEquals(x: unknown, y: unknown): boolean | undefined {
  if (typeof x === "string" && typeof y === "string") return x === y;
  if (isNumeric(x) && isNumeric(y)) return numberOf(x) === numberOf(y);
  const tp = temporalPair(x, y);
  if (tp === null) return false;
  if (tp) {
    const c = compareTemporal(tp[0], tp[1]);
    return c === undefined ? undefined : c === 0;
  }
  if (typeof x === "boolean" || typeof y === "boolean") return x === y;
  return deepEqual(x, y);
}

/** `a = b`: empty if either is empty; false if sizes differ; else item-wise in order. */
export function equals(a: Collection, b: Collection): Collection {
  if (a.length === 0 || b.length === 0) return EMPTY;
  if (a.length !== b.length) return bool(false);
  let unknown = false;
  for (let i = 0; i < a.length; i++) {
    const e = itemEquals(a[i], b[i]);
    if (e === false) return bool(false);
    if (e === undefined) unknown = true;
  }
  return unknown ? EMPTY : bool(true);
}

/** `a != b`. */
export function notEquals(a: Collection, b: Collection): Collection {
  const r = equals(a, b);
  return r.length === 0 ? EMPTY : bool(!r[0]);
}

function normalizeString(s: string): string {
  return s.trim().replace(/\s+/g, " ").toLowerCase();
}

/** Equivalence of two items (strings ignore case and whitespace; decimals compare at the coarser precision). */
function itemEquivalent(x: unknown, y: unknown): boolean {
  if (typeof x === "string" && typeof y === "string") return normalizeString(x) === normalizeString(y);
  if (isNumeric(x) && isNumeric(y)) {
    const places = Math.min(placesOf(x), placesOf(y));
    return Number(numberOf(x).toFixed(places)) === Number(numberOf(y).toFixed(places));
  }
  const tp = temporalPair(x, y);
  if (tp === null) return false;
  if (tp) return compareTemporal(tp[0], tp[1]) === 0;
  return itemEquals(x, y) === true;
}

function placesOf(v: number | FpDecimal): number {
  const s = typeof v === "number" ? String(v) : v.text;
  const i = s.indexOf(".");
  return i < 0 ? 0 : Math.min(s.length - i - 1, 15);
}

/** `a ~ b`: both empty → true; one empty → false; order-independent item matching. */
export function equivalent(a: Collection, b: Collection): Collection {
  if (a.length === 0 && b.length === 0) return bool(true);
  if (a.length !== b.length) return bool(false);
  const used = new Array<boolean>(b.length).fill(false);
  for (const x of a) {
    const j = b.findIndex((y, k) => !used[k] && itemEquivalent(x, y));
    if (j < 0) return bool(false);
    used[j] = true;
  }
  return bool(true);
}

/** `a !~ b`. */
export function notEquivalent(a: Collection, b: Collection): Collection {
  return bool(!equivalent(a, b)[0]);
}

/** Checks a singleton operand; returns its item, or undefined for empty. */
export function singleton(c: Collection, op: string): unknown {
  if (c.length === 0) return undefined;
  if (c.length > 1) {
    throw new FhirPathEvaluationError(
      `operator ${op} needs a single item on each side, got ${c.length} items`,
    );
  }
  return c[0];
}

/** `<`, `<=`, `>`, `>=` on two singletons. */
export function compare(op: "<" | "<=" | ">" | ">=", a: Collection, b: Collection): Collection {
  const x = singleton(a, op);
  const y = singleton(b, op);
  if (x === undefined || y === undefined) return EMPTY;
  let c: number | undefined;
  if (isNumeric(x) && isNumeric(y)) {
    const nx = numberOf(x);
    const ny = numberOf(y);
    c = nx < ny ? -1 : nx > ny ? 1 : 0;
  } else if (typeof x === "string" && typeof y === "string") {
    c = x < y ? -1 : x > y ? 1 : 0;
  } else {
    const tp = temporalPair(x, y);
    if (!tp) {
      throw new FhirPathEvaluationError(
        `operator ${op} cannot compare ${describeType(x)} with ${describeType(y)}`,
      );
    }
    c = compareTemporal(tp[0], tp[1]);
    if (c === undefined) return EMPTY;
  }
  switch (op) {
    case "<":
      return bool(c < 0);
    case "<=":
      return bool(c <= 0);
    case ">":
      return bool(c > 0);
    case ">=":
      return bool(c >= 0);
  }
}

/** Arithmetic operators on two singletons. Division by zero gives empty. */
export function arithmetic(op: string, a: Collection, b: Collection): Collection {
  if (op === "&") {
    const x = singleton(a, op);
    const y = singleton(b, op);
    return [stringOf(x, op) + stringOf(y, op)];
  }
  const x = singleton(a, op);
  const y = singleton(b, op);
  if (x === undefined || y === undefined) return EMPTY;
  if (op === "+" && typeof x === "string" && typeof y === "string") return [x + y];
  if (!isNumeric(x) || !isNumeric(y)) {
    throw new FhirPathEvaluationError(
      `operator ${op} is not supported between ${describeType(x)} and ${describeType(y)}`,
    );
  }
  const nx = numberOf(x);
  const ny = numberOf(y);
  switch (op) {
    case "+":
      return [addDecimals(x, y, false)];
    case "-":
      return [addDecimals(x, y, true)];
    case "*":
      return [multiplyDecimals(x, y)];
    case "/":
      return ny === 0 ? EMPTY : [nx / ny];
    case "div":
      return ny === 0 ? EMPTY : [Math.trunc(nx / ny)];
    case "mod":
      return ny === 0 ? EMPTY : [nx % ny];
  }
  throw new FhirPathEvaluationError(`unknown operator ${op}`);
}

function stringOf(v: unknown, op: string): string {
  if (v === undefined) return "";
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "boolean" || v instanceof FpDecimal || v instanceof FpTemporal) {
    return String(v);
  }
  throw new FhirPathEvaluationError(`operator ${op} needs strings, got ${describeType(v)}`);
}

/**
 * Boolean value of a collection in a boolean context: empty → undefined, a single boolean → itself, a
 * single non-boolean item → true (FHIRPath singleton evaluation); several items → error.
 */
export function toBoolean(c: Collection, what: string): boolean | undefined {
  if (c.length === 0) return undefined;
  if (c.length > 1) {
    throw new FhirPathEvaluationError(`${what} needs a single boolean, got ${c.length} items`);
  }
  const v = c[0];
  return typeof v === "boolean" ? v : true;
}

/** Three-valued `and`. */
export function and(a: boolean | undefined, b: boolean | undefined): Collection {
  if (a === false || b === false) return bool(false);
  if (a === true && b === true) return bool(true);
  return EMPTY;
}

/** Three-valued `or`. */
export function or(a: boolean | undefined, b: boolean | undefined): Collection {
  if (a === true || b === true) return bool(true);
  if (a === false && b === false) return bool(false);
  return EMPTY;
}

/** Three-valued `xor`. */
export function xor(a: boolean | undefined, b: boolean | undefined): Collection {
  if (a === undefined || b === undefined) return EMPTY;
  return bool(a !== b);
}

/** Three-valued `implies`. */
export function implies(a: boolean | undefined, b: boolean | undefined): Collection {
  if (a === false) return bool(true);
  if (a === true) return b === undefined ? EMPTY : bool(b);
  return b === true ? bool(true) : EMPTY;
}

/** Appends the items of `from` not already in `out` (by equality). */
export function addDistinct(out: unknown[], from: Collection): void {
  for (const x of from) {
    if (!out.some((y) => itemEquals(x, y) === true)) out.push(x);
  }
}

/** `a | b`: union without duplicates. */
export function union(a: Collection, b: Collection): Collection {
  const out: unknown[] = [];
  addDistinct(out, a);
  addDistinct(out, b);
  return out;
}

/** `x in coll`: empty if x is empty; x must be a single item. */
export function membership(x: Collection, coll: Collection, op: string): Collection {
  const v = singleton(x, op);
  if (v === undefined) return EMPTY;
  return bool(coll.some((y) => itemEquals(v, y) === true));
}
