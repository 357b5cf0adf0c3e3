/**
 * Lossless JSON parsing of FHIR resources: like `JSON.parse`, but a number whose written text is not
 * the shortest form of its value (`1.0`, `1.50`, `1e2`) becomes an {@link FpDecimal} that keeps the text,
 * so FHIR decimal precision survives (it matters to `lowBoundary`/`highBoundary`).
 *
 * Cost: a text without such numbers is parsed by plain `JSON.parse` (a cheap regular-expression test
 * decides); otherwise a reviver with source-text access (ES2025 `JSON.parse` source text) is used.
 *
 * @module
 */

import { FpDecimal } from "./values.ts";

/** Matches a number whose text may not round-trip: trailing fractional zero, an exponent, ≥ 16 digits. */
const MAY_LOSE_PRECISION = /\d\.\d*0(?!\d)|\d[eE][+-]?\d|\d{16,}/;

interface ReviverContext {
  source?: string;
}

function reviver(this: unknown, _key: string, value: unknown, context?: ReviverContext): unknown {
  if (typeof value === "number" && context?.source !== undefined) {
    const src = context.source;
    if (src !== String(value) && /[.eE]/.test(src)) return new FpDecimal(value, src);
  }
  return value;
}

/**
 * Parses JSON text, keeping decimal precision as {@link FpDecimal} where plain parsing would lose it.
 * Throws the `SyntaxError` of `JSON.parse` on invalid JSON.
 */
export function parseFhirJson(text: string): unknown {
  if (!MAY_LOSE_PRECISION.test(text)) return JSON.parse(text);
  // deno-lint-ignore no-explicit-any
  return JSON.parse(text, reviver as any);
}
