/**
 * Runs SQL on FHIR v2 conformance test files (the `tests/*.json` of the specification repository) and
 * builds the standard test report (`test_report/test-report.schema.json`):
 *
 * ```text
 * { "<file>.json": { "tests": [ { "name": "<test title>", "result": { "passed": true } },
 *                               { "name": "...", "result": { "passed": false, "error": "<reason>" } } ] } }
 * ```
 *
 * Comparison rules (those of the reference runner's compliance test): row order does not matter (both
 * lists are sorted canonically); each row must have exactly the expected keys, scalars compare with
 * `===`, arrays element by element. `expectError` passes when compiling or running the view throws;
 * `expectCount` compares the number of rows; `expectColumns` the output column order.
 *
 * Files are parsed with the lossless JSON parse so decimal precision (`1.0`) reaches the runner.
 * Failure reasons quote expected and actual rows: the suite's fixtures are synthetic public data.
 *
 * @module
 */

import { parseFhirJson } from "../fhirpath/json.ts";
import { compileView, type Row } from "./runner.ts";

/** Result of one test in the report. */
export interface TestResult {
  passed: boolean;
  error?: string;
  details?: Record<string, unknown>;
}

/** The standard test report: one entry per test file. */
export type TestReport = Record<string, { tests: { name: string; result: TestResult }[] }>;

/** One failed test. */
export interface TestFailure {
  file: string;
  name: string;
  reason: string;
}

/** A test-suite run: the report and its counts. */
export interface SuiteRun {
  report: TestReport;
  passed: number;
  failed: number;
  /** The failed tests in file and test order. */
  failures: TestFailure[];
}

/** A test-suite file as read (the fields the runner uses). */
export interface TestCaseFile {
  title: string;
  resources: unknown[];
  tests: TestCase[];
}

/** One test of a file. */
export interface TestCase {
  title: string;
  tags?: string[];
  view: unknown;
  expect?: Row[];
  expectCount?: number;
  expectError?: boolean;
  expectColumns?: string[];
}

/** Raised when a test-suite file itself is malformed. */
export class TestSuiteFileError extends Error {
  constructor(readonly file: string, what: string) {
    super(`${file}: ${what}`);
    this.name = "TestSuiteFileError";
  }
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (typeof v === "object" && v !== null) {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`).join(",")}}`;
  }
  return JSON.stringify(v) ?? "undefined";
}

function valueMatches(expected: unknown, actual: unknown): boolean {
  if (Array.isArray(expected)) {
    return Array.isArray(actual) && expected.length === actual.length &&
      expected.every((e, i) => valueMatches(e, actual[i]));
  }
  if (typeof expected === "object" && expected !== null) return canonical(expected) === canonical(actual);
  return expected === actual;
}

/** Compares rows per the suite's rules; returns undefined when equal, else a reason. */
export function compareRows(expected: Row[], actual: Row[]): string | undefined {
  if (expected.length !== actual.length) {
    return `expected ${expected.length} row(s), got ${actual.length}: ${canonical(actual)}`;
  }
  const e = [...expected].sort((a, b) =>
    canonical(a) < canonical(b) ? -1 : canonical(a) > canonical(b) ? 1 : 0
  );
  const a = [...actual].sort((x, y) =>
    canonical(x) < canonical(y) ? -1 : canonical(x) > canonical(y) ? 1 : 0
  );
  for (let i = 0; i < e.length; i++) {
    const ek = Object.keys(e[i]);
    const ak = Object.keys(a[i]);
    const same = ek.length === ak.length &&
      ek.every((k) => Object.hasOwn(a[i], k) && valueMatches(e[i][k], a[i][k]));
    if (!same) return `row mismatch: expected ${canonical(e[i])}, got ${canonical(a[i])}`;
  }
  return undefined;
}

/** Options of a suite run. */
export interface SuiteOptions {
  /** FHIRPath engine of the runner (default `"js"`, the generated code). */
  engine?: "js" | "closures";
}

/** Runs one test on the file's resources. */
export function runTestCase(
  resources: readonly unknown[],
  test: TestCase,
  options: SuiteOptions = {},
): TestResult {
  let rows: Row[];
  let columnNames: string[];
  try {
    const view = compileView(test.view, { engine: options.engine });
    columnNames = view.columns.map((c) => c.name);
    rows = [];
    for (const r of resources) for (const row of view.rows(r)) rows.push(row);
  } catch (e) {
    const msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    if (test.expectError === true) return { passed: true };
    return { passed: false, error: msg };
  }
  if (test.expectError === true) {
    return { passed: false, error: `expected an error, but the view ran and gave ${rows.length} row(s)` };
  }
  if (test.expectColumns !== undefined) {
    const same = test.expectColumns.length === columnNames.length &&
      test.expectColumns.every((c, i) => c === columnNames[i]);
    if (!same) {
      return {
        passed: false,
        error: `expected columns [${test.expectColumns.join(", ")}], got [${columnNames.join(", ")}]`,
      };
    }
  }
  if (test.expectCount !== undefined) {
    return rows.length === test.expectCount
      ? { passed: true }
      : { passed: false, error: `expected ${test.expectCount} row(s), got ${rows.length}` };
  }
  if (test.expect !== undefined) {
    const reason = compareRows(test.expect, rows);
    return reason === undefined ? { passed: true } : { passed: false, error: reason };
  }
  return test.expectColumns !== undefined
    ? { passed: true }
    : { passed: false, error: "the test has no expect, expectCount, expectError or expectColumns" };
}

function checkFile(file: string, data: unknown): TestCaseFile {
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new TestSuiteFileError(file, "not a JSON object");
  }
  const d = data as Record<string, unknown>;
  if (!Array.isArray(d.resources)) throw new TestSuiteFileError(file, "resources must be an array");
  if (!Array.isArray(d.tests) || d.tests.length === 0) {
    throw new TestSuiteFileError(file, "tests must be a non-empty array");
  }
  d.tests.forEach((t, i) => {
    if (typeof t !== "object" || t === null || typeof (t as TestCase).title !== "string") {
      throw new TestSuiteFileError(file, `tests[${i}] has no title`);
    }
  });
  return d as unknown as TestCaseFile;
}

/** Runs the tests of one parsed file and appends them to `run`. */
export function runTestFile(file: string, data: unknown, run: SuiteRun, options: SuiteOptions = {}): void {
  const tf = checkFile(file, data);
  const tests = tf.tests.map((t) => {
    const result = runTestCase(tf.resources, t, options);
    if (result.passed) run.passed++;
    else {
      run.failed++;
      run.failures.push({ file, name: t.title, reason: result.error ?? "failed" });
    }
    return { name: t.title, result };
  });
  run.report[file] = { tests };
}

/**
 * Runs every `*.json` file of a test-suite folder (sorted by name) and returns the report with counts.
 * Throws {@link TestSuiteFileError} for an unreadable or malformed file, `Deno.errors.NotFound` for a
 * missing folder.
 */
export async function runTestSuite(dir: string, options: SuiteOptions = {}): Promise<SuiteRun> {
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && e.name.endsWith(".json")) files.push(e.name);
  }
  files.sort();
  if (files.length === 0) throw new TestSuiteFileError(dir, "no *.json test files in this folder");
  const run: SuiteRun = { report: {}, passed: 0, failed: 0, failures: [] };
  for (const f of files) {
    const text = await Deno.readTextFile(`${dir}/${f}`);
    let data: unknown;
    try {
      data = parseFhirJson(text);
    } catch (e) {
      throw new TestSuiteFileError(f, `invalid JSON (${e instanceof Error ? e.message : String(e)})`);
    }
    runTestFile(f, data, run, options);
  }
  return run;
}
