/**
 * The server's `meta.versionId` clock: a decimal number of microseconds since the epoch that increases
 * with every write of this process (a clock, not a version count: the server keeps no store). Ranges are
 * reserved before a batch goes to a validation worker, so every resource of a later batch (or request) gets
 * a later version than those reserved before it, whichever worker finishes first.
 *
 * @module
 */

let last = 0;

/**
 * Reserves `n` (≥ 1) consecutive versions and returns the first: `first … first + n - 1` are this
 * caller's; unused ones are gaps, which is fine for a clock.
 */
export function reserveVersions(n: number): number {
  const now = Date.now() * 1000;
  const first = now > last ? now : last + 1;
  last = first + Math.max(1, n) - 1;
  return first;
}

/** One version (as the decimal string `meta.versionId` holds). */
export function nextVersion(): string {
  return String(reserveVersions(1));
}
