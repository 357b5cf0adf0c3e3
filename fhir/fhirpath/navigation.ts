/**
 * Path navigation on FHIR JSON: `.name` steps, choice elements (`value` → `valueQuantity`, see
 * `fhir_types.ts`), resource type names at the root (`Patient.name`) and the fused `name.ofType(T)`
 * step, which reads the key `name<T>` directly.
 *
 * JSON details: arrays are flattened into the collection, `null` entries (placeholders paired with
 * `_name` primitive extensions) are skipped, and `_name` keys are never navigated into.
 * Choice values of a date/time type are wrapped as {@link FpTemporal} so they compare as temporals.
 *
 * @module
 */

import type { Step } from "./context.ts";
import { CHOICE_SUFFIXES, upperFirst } from "./fhir_types.ts";
import { matchesDeclared, type ResolvedType } from "./types.ts";
import { type Collection, EMPTY, FpTemporal, isNode, type TemporalType } from "./values.ts";

const TEMPORAL_TYPES: ReadonlySet<string> = new Set(["date", "dateTime", "instant", "time"]);

/** Appends a JSON value (array or single) to `out`, skipping nulls; wraps strings as temporals if asked. */
function pushValue(v: unknown, out: unknown[], temporal?: TemporalType): void {
  if (Array.isArray(v)) {
    for (const x of v) {
      if (x !== null && x !== undefined) {
        out.push(temporal && typeof x === "string" ? new FpTemporal(temporal, x) : x);
      }
    }
  } else if (v !== null && v !== undefined) {
    out.push(temporal && typeof v === "string" ? new FpTemporal(temporal, v) : v);
  }
}

/** Appends the values of choice keys `name<Type>` of `node`. */
function pushChoice(node: Record<string, unknown>, name: string, out: unknown[]): void {
  for (const k in node) {
    if (k.length > name.length && k.startsWith(name)) {
      const t = CHOICE_SUFFIXES.get(k.slice(name.length));
      if (t !== undefined) pushValue(node[k], out, TEMPORAL_TYPES.has(t) ? t as TemporalType : undefined);
    }
  }
}

/** The choice values `name<Type>` of `node` (empty when it has none). */
export function choiceValues(node: Record<string, unknown>, name: string): Collection {
  const out: unknown[] = [];
  pushChoice(node, name, out);
  return out;
}

/** Drops `null` placeholders from a JSON array (the array itself when it has none). */
export function withoutNulls(v: unknown[]): Collection {
  return v.indexOf(null) < 0 ? v : v.filter((x) => x !== null);
}

/**
 * `.name` applied to `input` (`name` does not start with `_`). With `typeName` (an upper-case name at
 * the start of an expression) an item whose `resourceType` is `name` is selected itself.
 */
export function navigate(input: Collection, name: string, typeName: boolean): Collection {
  if (input.length === 1) {
    // The common case: one item in, the element's own array (or one value) out, no copy.
    const item = input[0];
    if (!isNode(item)) return EMPTY;
    if (typeName && item.resourceType === name) return input;
    const v = item[name];
    if (v !== undefined) {
      if (Array.isArray(v)) return withoutNulls(v);
      return v === null ? EMPTY : [v];
    }
    return choiceValues(item, name);
  }
  if (input.length === 0) return EMPTY;
  const out: unknown[] = [];
  for (const item of input) {
    if (!isNode(item)) continue;
    if (typeName && item.resourceType === name) {
      out.push(item);
      continue;
    }
    const v = item[name];
    if (v !== undefined) pushValue(v, out);
    else pushChoice(item, name, out);
  }
  return out;
}

/** Whether `.name` at the start of an expression may select a resource by its type. */
export function isTypeName(name: string, atRoot: boolean): boolean {
  return atRoot && /^[A-Z]/.test(name);
}

/**
 * The `.name` step. With `atRoot` (a name at the start of an expression) an upper-case `name` equal to
 * an item's `resourceType` selects the item itself.
 */
export function memberStep(name: string, atRoot: boolean): Step {
  if (name.startsWith("_")) return () => EMPTY;
  const typeName = isTypeName(name, atRoot);
  return (input: Collection): Collection => navigate(input, name, typeName);
}

/**
 * The fused `name.ofType(T)` step: the key `name<T>` (a choice element of type T); when the node has
 * a plain key `name` instead, its values are kept if they can be of type T (see `types.ts`).
 */
export function typedMemberStep(name: string, type: ResolvedType): Step {
  const key = name + upperFirst(type.name);
  const temporal = type.namespace === "FHIR" && TEMPORAL_TYPES.has(type.name)
    ? type.name as TemporalType
    : undefined;
  return (input: Collection): Collection => {
    if (input.length === 0) return EMPTY;
    const out: unknown[] = [];
    for (const item of input) {
      if (!isNode(item)) continue;
      const v = item[key];
      if (v !== undefined) {
        pushValue(v, out, temporal);
        continue;
      }
      const plain = item[name];
      if (plain === undefined) continue;
      const tmp: unknown[] = [];
      pushValue(plain, tmp);
      for (const x of tmp) if (matchesDeclared(x, type)) out.push(x);
    }
    return out;
  };
}
