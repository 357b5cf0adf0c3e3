/**
 * Decimal helpers: written precision of a number, `lowBoundary`/`highBoundary` of decimals computed
 * exactly on the digits (BigInt), and rounding of `+ - *` results to the operands' precision so that
 * `0.1 + 0.2` gives `0.3` rather than the binary floating-point `0.30000000000000004`.
 *
 * @module
 */

import { FpDecimal, numberOf } from "./values.ts";

/** Sign, digits and scale of a decimal: value = sign × digits × 10^-scale. */
interface DecimalDigits {
  negative: boolean;
  digits: bigint;
  scale: number;
}

/** The written text of a numeric value (`FpDecimal` text, else the shortest round-trip form). */
export function decimalText(v: number | FpDecimal): string {
  return typeof v === "number" ? String(v) : v.text;
}

function parseDigits(text: string): DecimalDigits | undefined {
  const m = /^([+-]?)(\d+)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (!m) return undefined;
  const [, sign, int, frac = "", exp = "0"] = m;
  let scale = frac.length - Number(exp);
  let digits = BigInt(int + frac);
  if (scale < 0) {
    digits *= 10n ** BigInt(-scale);
    scale = 0;
  }
  return { negative: sign === "-", digits, scale };
}

function formatDigits(negative: boolean, digits: bigint, scale: number): string {
  let s = digits.toString();
  if (scale > 0) {
    s = s.padStart(scale + 1, "0");
    s = `${s.slice(0, s.length - scale)}.${s.slice(s.length - scale)}`;
  }
  return (negative && digits !== 0n ? "-" : "") + s;
}

/** Number of decimal places as written (`1.50` → 2, `3` → 0, `1e-7` → 7). */
export function decimalPlaces(v: number | FpDecimal): number {
  return parseDigits(decimalText(v))?.scale ?? 0;
}

/**
 * Low or high boundary of a decimal given its written precision: `1.0` → `0.95` / `1.05`, `3` → `2.5` /
 * `3.5`. With `precision` (number of decimal places of the result) the boundary is rounded down (low)
 * or up (high) to that many places. Undefined when the text is not a decimal or precision is invalid.
 */
export function decimalBoundary(
  v: number | FpDecimal,
  high: boolean,
  precision?: number,
): FpDecimal | undefined {
  const d = parseDigits(decimalText(v));
  if (!d) return undefined;
  if (precision !== undefined && (!Number.isInteger(precision) || precision < 0 || precision > 28)) {
    return undefined;
  }
  // Signed value × 10^(scale+1), then ± 5: half a unit of the last written digit.
  let signed = (d.negative ? -d.digits : d.digits) * 10n + (high ? 5n : -5n);
  let scale = d.scale + 1;
  if (precision !== undefined) {
    if (precision >= scale) {
      signed *= 10n ** BigInt(precision - scale);
    } else {
      const f = 10n ** BigInt(scale - precision);
      let q = signed / f; // truncates toward zero
      const r = signed % f;
      if (r !== 0n) {
        if (high && signed > 0n) q += 1n;
        if (!high && signed < 0n) q -= 1n;
      }
      signed = q;
    }
    scale = precision;
  }
  const text = formatDigits(signed < 0n, signed < 0n ? -signed : signed, scale);
  return new FpDecimal(Number(text), text);
}

/** Rounds `x` to `places` decimal places (places ≤ 15), correcting binary floating-point noise. */
export function roundTo(x: number, places: number): number {
  if (Number.isInteger(x) || !Number.isFinite(x) || places > 15) return x;
  return Number(x.toFixed(places));
}

/** `a + b` or `a - b` rounded to the larger number of written places of the operands. */
export function addDecimals(a: number | FpDecimal, b: number | FpDecimal, subtract: boolean): number {
  const x = numberOf(a);
  const y = numberOf(b);
  const r = subtract ? x - y : x + y;
  if (Number.isInteger(r) && Number.isInteger(x) && Number.isInteger(y)) return r;
  return roundTo(r, Math.max(decimalPlaces(a), decimalPlaces(b)));
}

/** `a × b` rounded to the sum of the written places of the operands. */
export function multiplyDecimals(a: number | FpDecimal, b: number | FpDecimal): number {
  const x = numberOf(a);
  const y = numberOf(b);
  const r = x * y;
  if (Number.isInteger(x) && Number.isInteger(y)) return r;
  return roundTo(r, decimalPlaces(a) + decimalPlaces(b));
}
