/**
 * Dates, dateTimes and times: parsing of (partial) ISO 8601 text, precision-aware comparison and
 * equality, and `lowBoundary`/`highBoundary`.
 *
 * Rules (FHIRPath):
 * - Precision levels are year, month, day, hour, minute, second; seconds and milliseconds are one level
 *   (`10:00:00` = `10:00:00.000`).
 * - Values are compared level by level down to the coarser precision; when they are equal that far
 *   but their precisions differ, the result is empty (unknown).
 * - When both values carry a time zone they are compared in UTC; otherwise their fields are compared as
 *   written.
 * - Boundaries fill the missing fields with their lowest/highest value; a dateTime without a time zone
 *   gets the widest offsets, `+14:00` for the low boundary and `-12:00` for the high one.
 *
 * @module
 */

import { FpTemporal, type TemporalType } from "./values.ts";

/** Parsed fields of a temporal value. `precision`: 1 year … 6 second (time values: 4 hour … 6 second). */
export interface TemporalParts {
  isTime: boolean;
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
  /** Milliseconds (fraction of the second, rounded to 3 digits). */
  ms: number;
  /** Fraction digits as written (for boundaries), "" when absent. */
  fraction: string;
  /** Offset in minutes east of UTC; undefined when no time zone is given. */
  tz?: number;
  /** The time zone as written (`Z`, `+02:00`). */
  tzText?: string;
  precision: number;
}

const DATETIME_RE =
  /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(?:(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;
const TIME_RE = /^T?(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?$/;

function tzMinutes(tz: string): number {
  if (tz === "Z") return 0;
  const sign = tz[0] === "-" ? -1 : 1;
  return sign * (Number(tz.slice(1, 3)) * 60 + Number(tz.slice(4, 6)));
}

/** Parses a date or dateTime text (partial allowed). Returns undefined if the text is not one. */
export function parseDateTime(text: string): TemporalParts | undefined {
  const m = DATETIME_RE.exec(text);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  let precision = 1;
  if (mo !== undefined) precision = 2;
  if (d !== undefined) precision = 3;
  if (h !== undefined) precision = 4;
  if (mi !== undefined) precision = 5;
  if (s !== undefined) precision = 6;
  const parts: TemporalParts = {
    isTime: false,
    year: Number(y),
    month: mo === undefined ? 1 : Number(mo),
    day: d === undefined ? 1 : Number(d),
    hour: h === undefined ? 0 : Number(h),
    minute: mi === undefined ? 0 : Number(mi),
    second: s === undefined ? 0 : Number(s),
    ms: frac === undefined ? 0 : Math.round(Number(`0.${frac}`) * 1000),
    fraction: frac ?? "",
    precision,
  };
  if (tz !== undefined && precision >= 4) {
    parts.tz = tzMinutes(tz);
    parts.tzText = tz;
  }
  if (
    parts.month < 1 || parts.month > 12 || parts.day < 1 || parts.day > daysInMonth(parts.year, parts.month)
  ) {
    return undefined;
  }
  return parts;
}

/** Parses a time text (`hh[:mm[:ss[.fff]]]`, optional leading `T`). Undefined if not a time. */
export function parseTime(text: string): TemporalParts | undefined {
  const m = TIME_RE.exec(text);
  if (!m) return undefined;
  const [, h, mi, s, frac] = m;
  let precision = 4;
  if (mi !== undefined) precision = 5;
  if (s !== undefined) precision = 6;
  return {
    isTime: true,
    year: 0,
    month: 1,
    day: 1,
    hour: Number(h),
    minute: mi === undefined ? 0 : Number(mi),
    second: s === undefined ? 0 : Number(s),
    ms: frac === undefined ? 0 : Math.round(Number(`0.${frac}`) * 1000),
    fraction: frac ?? "",
    precision,
  };
}

const cache = new WeakMap<FpTemporal, TemporalParts | null>();

/** Parsed fields of a temporal value (cached), or undefined when its text is malformed. */
export function partsOf(t: FpTemporal): TemporalParts | undefined {
  let p = cache.get(t);
  if (p === undefined) {
    p = (t.type === "time" ? parseTime(t.text) : parseDateTime(t.text)) ?? null;
    cache.set(t, p);
  }
  return p ?? undefined;
}

/** Parses a string as the same kind of temporal as `like` (time vs date/dateTime). */
export function parseLike(text: string, like: TemporalParts): TemporalParts | undefined {
  return like.isTime ? parseTime(text) : parseDateTime(text);
}

/** Days in a month (Gregorian). */
export function daysInMonth(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

/** Field values by precision level 1..6 (second includes milliseconds as a fraction). */
function fields(p: TemporalParts): number[] {
  return [p.year, p.month, p.day, p.hour, p.minute, p.second + p.ms / 1000];
}

/** Shifts a dateTime with a time zone to UTC (fields only; precision and fraction kept). */
function toUtc(p: TemporalParts): TemporalParts {
  if (p.tz === undefined || p.tz === 0 || p.isTime) return p;
  const d = new Date(0);
  d.setUTCFullYear(p.year, p.month - 1, p.day);
  d.setUTCHours(p.hour, p.minute - p.tz, p.second, p.ms);
  return {
    ...p,
    year: d.getUTCFullYear(),
    month: d.getUTCMonth() + 1,
    day: d.getUTCDate(),
    hour: d.getUTCHours(),
    minute: d.getUTCMinutes(),
    second: d.getUTCSeconds(),
    ms: d.getUTCMilliseconds(),
    tz: 0,
  };
}

/**
 * Compares two temporal values: -1, 0 or 1, or undefined when the result is unknown because the
 * precisions differ and the values are equal down to the coarser one.
 */
export function compareTemporal(a: TemporalParts, b: TemporalParts): -1 | 0 | 1 | undefined {
  if (a.tz !== undefined && b.tz !== undefined) {
    a = toUtc(a);
    b = toUtc(b);
  }
  const fa = fields(a);
  const fb = fields(b);
  const start = a.isTime ? 3 : 0;
  const common = Math.min(a.precision, b.precision);
  for (let i = start; i < common; i++) {
    if (fa[i] < fb[i]) return -1;
    if (fa[i] > fb[i]) return 1;
  }
  return a.precision === b.precision ? 0 : undefined;
}

const pad = (n: number, w = 2) => String(n).padStart(w, "0");

function formatDate(p: { year: number; month: number; day: number }, precision: number): string {
  let s = pad(p.year, 4);
  if (precision >= 6) s += `-${pad(p.month)}`;
  if (precision >= 8) s += `-${pad(p.day)}`;
  return s;
}

function formatTime(p: { hour: number; minute: number; second: number; ms: number }, digits: number): string {
  let s = pad(p.hour);
  if (digits >= 4) s += `:${pad(p.minute)}`;
  if (digits >= 6) s += `:${pad(p.second)}`;
  if (digits >= 9) s += `.${pad(p.ms, 3)}`;
  return s;
}

/** Milliseconds for a boundary from the written fraction: low pads with 0, high with 9. */
function boundaryMs(fraction: string, high: boolean): number {
  const f = (fraction + (high ? "999" : "000")).slice(0, 3);
  return Number(f);
}

/**
 * The low or high boundary of a temporal value, as a new {@link FpTemporal} of the same type.
 * `precision` is the FHIRPath output precision in digits (date: 4, 6, 8; dateTime: 4 … 17; time: 2 …
 * 9); undefined returns the finest one. Returns undefined for a malformed value or unsupported precision.
 */
export function temporalBoundary(
  type: TemporalType,
  p: TemporalParts,
  high: boolean,
  precision?: number,
): FpTemporal | undefined {
  if (type === "time") {
    const digits = precision ?? 9;
    if (![2, 4, 6, 9].includes(digits)) return undefined;
    const q = {
      hour: p.hour,
      minute: p.precision >= 5 ? p.minute : high ? 59 : 0,
      second: p.precision >= 6 ? p.second : high ? 59 : 0,
      ms: p.precision >= 6 ? boundaryMs(p.fraction, high) : high ? 999 : 0,
    };
    return new FpTemporal("time", formatTime(q, digits));
  }
  const month = p.precision >= 2 ? p.month : high ? 12 : 1;
  const day = p.precision >= 3 ? p.day : high ? daysInMonth(p.year, month) : 1;
  if (type === "date") {
    const digits = precision ?? 8;
    if (![4, 6, 8].includes(digits)) return undefined;
    return new FpTemporal("date", formatDate({ year: p.year, month, day }, digits));
  }
  const digits = precision ?? 17;
  if (![4, 6, 8, 10, 12, 14, 17].includes(digits)) return undefined;
  if (digits <= 8) return new FpTemporal(type, formatDate({ year: p.year, month, day }, digits));
  const q = {
    hour: p.precision >= 4 ? p.hour : high ? 23 : 0,
    minute: p.precision >= 5 ? p.minute : high ? 59 : 0,
    second: p.precision >= 6 ? p.second : high ? 59 : 0,
    ms: p.precision >= 6 ? boundaryMs(p.fraction, high) : high ? 999 : 0,
  };
  const tz = p.tzText ?? (high ? "-12:00" : "+14:00");
  const timeDigits = digits === 10 ? 2 : digits === 12 ? 4 : digits === 14 ? 6 : 9;
  return new FpTemporal(
    type,
    `${formatDate({ year: p.year, month, day }, 8)}T${formatTime(q, timeDigits)}${tz}`,
  );
}
