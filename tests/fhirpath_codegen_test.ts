/**
 * The generated-JavaScript FHIRPath engine against the closure engine: the same values and the same
 * errors for every expression of the SQL-on-FHIR suite and of the project views on the suite's and
 * generated resources, for hand-written edge cases of every generated construct, and for thousands of
 * random expressions. Plus the suite itself under both engines (134/134 each).
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { compileFhirPath, FpDecimal, FpTemporal, parseFhirJson } from "../fhir/fhirpath/mod.ts";
import { compileView } from "../fhir/views/runner.ts";
import { runTestSuite } from "../fhir/views/test_suite.ts";
import { viewColumns, type ViewSelect } from "../fhir/views/view_definition.ts";
import { Prng } from "../fhir/prng.ts";
import { generatedResources } from "./fixtures/generated.ts";

const SUITE_DIR = fileURLToPath(new URL("./data/sql-on-fhir-v2/", import.meta.url));
const VIEWS_DIR = fileURLToPath(new URL("../views/", import.meta.url));

type Outcome = { value: unknown[] } | { error: string };

function outcome(f: () => unknown[]): Outcome {
  try {
    return { value: f() };
  } catch (e) {
    return { error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) };
  }
}

/** Evaluates `expr` with both engines on `focus` and asserts identical outcomes; returns the outcome. */
function same(
  expr: string,
  focus: unknown,
  options: { constants?: Record<string, unknown>; rowIndex?: number } = {},
): Outcome {
  const compile = (engine: "js" | "closures") =>
    outcome(() => {
      const f = compileFhirPath(expr, { constants: options.constants, engine });
      return f.evaluate(focus, { rowIndex: options.rowIndex ?? 0 });
    });
  const js = compile("js");
  const closures = compile("closures");
  assert.deepStrictEqual(js, closures, `engines differ on ${expr}`);
  return js;
}

interface SuiteFile {
  resources: Record<string, unknown>[];
  tests: { title: string; view: Record<string, unknown> }[];
}

async function suiteFiles(): Promise<[string, SuiteFile][]> {
  const out: [string, SuiteFile][] = [];
  for await (const e of Deno.readDir(SUITE_DIR)) {
    if (e.isFile && e.name.endsWith(".json")) {
      out.push([e.name, parseFhirJson(await Deno.readTextFile(`${SUITE_DIR}/${e.name}`)) as SuiteFile]);
    }
  }
  return out.sort((a, b) => a[0].localeCompare(b[0]));
}

/** Every FHIRPath expression of a view (columns, where, forEach, forEachOrNull, repeat). */
function viewPaths(view: Record<string, unknown>): string[] {
  const paths: string[] = [];
  const walk = (s: ViewSelect) => {
    for (const c of s.column ?? []) if (typeof c.path === "string") paths.push(c.path);
    for (const p of [s.forEach, s.forEachOrNull]) if (typeof p === "string") paths.push(p);
    for (const p of s.repeat ?? []) if (typeof p === "string") paths.push(p);
    for (const x of [...(s.select ?? []), ...(s.unionAll ?? [])]) walk(x);
  };
  for (const s of (view.select ?? []) as ViewSelect[]) walk(s);
  for (const w of (view.where ?? []) as { path?: unknown }[]) {
    if (typeof w.path === "string") paths.push(w.path);
  }
  return paths;
}

function viewConstants(view: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const c of (view.constant ?? []) as Record<string, unknown>[]) {
    const key = Object.keys(c).find((k) => k.startsWith("value"));
    if (typeof c.name === "string" && key) out[c.name] = c[key];
  }
  return out;
}

let generatedCache: Record<string, Record<string, unknown>[]> | undefined;
async function generated(): Promise<Record<string, unknown>[]> {
  generatedCache ??= await generatedResources({ patients: 6, days: 4, seed: "codegen" });
  return Object.values(generatedCache).flat();
}

// ---------------------------------------------------------------------------------------------------

Deno.test("suite: 134/134 with each engine", async () => {
  for (const engine of ["js", "closures"] as const) {
    const run = await runTestSuite(SUITE_DIR, { engine });
    assert.strictEqual(run.passed, 134, `${engine}: ${run.failures.map((f) => f.name).join(", ")}`);
    assert.strictEqual(run.failed, 0);
  }
});

Deno.test("suite views: identical rows or errors per resource with both engines", async () => {
  let rows = 0;
  let errors = 0;
  for (const [file, data] of await suiteFiles()) {
    for (const t of data.tests) {
      const compile = (engine: "js" | "closures") => outcome(() => [compileView(t.view, { engine })]);
      const js = compile("js");
      const cl = compile("closures");
      if ("error" in js || "error" in cl) {
        assert.deepStrictEqual(js, cl, `${file} :: ${t.title}: compile`);
        continue;
      }
      const [vj, vc] = [js.value[0], cl.value[0]] as ReturnType<typeof compileView>[];
      for (const r of data.resources) {
        const a = outcome(() => vj.rowArrays(r));
        const b = outcome(() => vc.rowArrays(r));
        assert.deepStrictEqual(a, b, `${file} :: ${t.title}`);
        if ("error" in a) errors++;
        else rows += a.value.length;
      }
    }
  }
  assert(rows > 300, `only ${rows} rows compared`);
  assert(errors > 0, "some suite views fail at run time (e.g. collection columns) and must fail alike");
});

Deno.test("every path of the suite and of the project views: same values on suite and generated resources", async () => {
  const resources: Record<string, unknown>[] = [...await generated()];
  const exprs: { path: string; constants: Record<string, unknown> }[] = [];
  for (const [, data] of await suiteFiles()) {
    resources.push(...data.resources);
    for (const t of data.tests) {
      for (const path of viewPaths(t.view)) exprs.push({ path, constants: viewConstants(t.view) });
    }
  }
  for await (const e of Deno.readDir(VIEWS_DIR)) {
    const view = JSON.parse(await Deno.readTextFile(`${VIEWS_DIR}/${e.name}`));
    for (const path of viewPaths(view)) exprs.push({ path, constants: viewConstants(view) });
    // Project views also as views, row by row.
    const vj = compileView(view, { engine: "js" });
    const vc = compileView(view, { engine: "closures" });
    assert.ok(viewColumns(vj.view).length > 0);
    for (const r of resources) {
      assert.deepStrictEqual(outcome(() => vj.rowArrays(r)), outcome(() => vc.rowArrays(r)), e.name);
    }
  }
  let nonEmpty = 0;
  for (const { path, constants } of exprs) {
    for (const r of resources) {
      const o = same(path, r, { constants });
      if ("value" in o && o.value.length > 0) nonEmpty++;
    }
  }
  assert(exprs.length > 300, `${exprs.length} expressions`);
  assert(nonEmpty > 5_000, `only ${nonEmpty} non-empty results compared`);
});

Deno.test("edge cases of every generated construct: same values and errors", () => {
  const obs = {
    resourceType: "Observation",
    id: "o1",
    status: "final",
    code: { coding: [{ system: "s", code: "a" }, null, { system: "s", code: "b" }], text: "T" },
    valueQuantity: { value: 1.50, unit: "kg" },
    effectiveDateTime: "2024-01-02T03:04:05Z",
    component: [
      { code: { coding: [{ system: "s", code: "x" }] }, valueString: "one" },
      { code: { coding: [{ system: "s", code: "y" }] }, valueBoolean: false },
      { code: { coding: [{ system: "s", code: "y" }] }, valueBoolean: true },
      { code: { coding: [] } },
    ],
    given: ["A", null, "B"],
    _given: [null, { extension: [{ url: "u", valueString: "e" }] }, null],
    subject: { reference: "Patient/p1" },
    basedOn: [{ reference: "NutritionOrder/n1" }, { reference: "#c" }, { reference: "urn:uuid:x" }],
    flag: true,
    count: 3,
  };
  const patient = {
    resourceType: "Patient",
    id: "p1",
    name: [{ given: ["Ann"], family: "Lee" }],
    active: false,
  };
  const cases = [
    // navigation
    "code",
    "code.coding",
    "code.coding.code",
    "Observation.code.text",
    "Patient.name",
    "Observation",
    "value",
    "valueQuantity.value",
    "effective",
    "effectiveDateTime",
    "component.value",
    "_given",
    "given",
    "missing.deeper",
    "code.text.length()",
    // where / exists / all / select
    "component.where(code.coding.code = 'y')",
    "component.where(value)",
    "component.where(code.coding.exists())",
    "component.where($index > 1)",
    "component.where(code.coding.code = 'y').value",
    "component.exists(value = false)",
    "component.all(code.coding.exists())",
    "component.all(value.exists())",
    "component.select(code.coding.code)",
    "component.select($index)",
    "component.select(value | code.coding.code)",
    "code.coding.where(code = 'a' or code = 'b').count()",
    "code.coding.where(system = 's' and code = 'b').code",
    "where(status = 'final')",
    "exists()",
    "exists(status)",
    "component.where(code.coding.where(code = 'y').exists()).value.first()",
    "component.where(code.coding.code = 'y' and value)",
    "component.where(code.coding.code.where($this = 'x').exists())",
    // first / last / count / empty / not
    "code.coding.first()",
    "code.coding.last()",
    "code.coding.first().code",
    "code.first()",
    "missing.first()",
    "component.value.last()",
    "component.count()",
    "missing.count()",
    "code.count()",
    "missing.empty()",
    "code.empty()",
    "flag.not()",
    "status.not()",
    "missing.not()",
    "component.value.not()",
    // equality with literals and general operators
    "status = 'final'",
    "status != 'final'",
    "missing = 'x'",
    "code.coding.code = 'a'",
    "code.coding.code != 'a'",
    "count = '3'",
    "effectiveDateTime = '2024-01-02T03:04:05Z'",
    "effective = '2024-01-02T03:04:05Z'",
    "effective = @2024-01-02T03:04:05Z",
    "effective = @2024-01-02",
    "valueQuantity.value = 1.5",
    "valueQuantity.value = 1.50",
    "count = 3",
    "count + 1",
    "count > 2",
    "count < 'x'",
    "status | status",
    "status in ('final' | 'amended')",
    "('final' | 'x') contains status",
    "status ~ 'FINAL'",
    "status !~ 'FINAL'",
    "flag xor true",
    "flag implies false",
    "missing implies false",
    "status and true",
    "flag or missing",
    "missing and false",
    "missing or true",
    "code.coding.code and true",
    "true and code.coding.code",
    "false and code.coding.code",
    "true or code.coding.code",
    "code.coding.code or true",
    "given.exists() and _given.exists()",
    // specials, env, constants, fallbacks
    "$this",
    "$this.id",
    "%resource.id",
    "%rowIndex",
    "%rootResource.status",
    "%ucum",
    "%c",
    "%c.length()",
    "%list",
    "code.coding[1].code",
    "code.coding[5]",
    "-count",
    "valueQuantity.value is decimal",
    "value is Quantity",
    "value as Quantity",
    "value.ofType(Quantity).unit",
    "component.value.ofType(boolean)",
    "component.where(value.ofType(boolean) = true).code.coding.code",
    "subject.getReferenceKey(Patient)",
    "subject.getReferenceKey(Practitioner)",
    "basedOn.getReferenceKey()",
    "basedOn.getReferenceKey(NutritionOrder).first()",
    "getResourceKey()",
    "effectiveDateTime.toString().substring(0, 10)",
    "effective.toString().substring(0, 4)",
    "component.where(code.coding.code.join(',') = 'y')",
    "component.where(iif(value.exists(), value.toString(), 'none') = 'true').count()",
    "component.where(code.coding.code.substring($index) = '').count()",
    "component.select(iif($index = 0, 'first', 'other'))",
    "code.coding.code.where($this.startsWith('a') or $this = 'b')",
    "name.where(given = 'Ann').family",
    "component.where(value = %c)",
    "component.where(value.exists() = %flag).count()",
  ];
  const constants = { c: "one", list: ["x", "y"], flag: true };
  for (const focus of [obs, patient, [obs, patient], [], "text", 5, new FpDecimal(1.5, "1.50")]) {
    for (const expr of cases) same(expr, focus, { constants, rowIndex: 2 });
  }
  // Errors are the same, not merely both errors.
  assert.deepStrictEqual(same("where(code.coding.code)", obs), {
    error: "FhirPathEvaluationError: where() criteria needs a single boolean, got 2 items",
  });
  assert.deepStrictEqual(same("code.coding.code and true", obs), {
    error: "FhirPathEvaluationError: and needs a single boolean, got 2 items",
  });
  assert.deepStrictEqual(same("code.coding.code = 'a'", obs), { value: [false] });
  assert.deepStrictEqual(same("effective", obs), {
    value: [new FpTemporal("dateTime", obs.effectiveDateTime)],
  });
  assert.deepStrictEqual(same("given", obs), { value: ["A", "B"] });
});

Deno.test("random expressions: same values and errors on generated resources", async () => {
  const rng = new Prng("fhirpath-codegen-fuzz");
  const pick = <T>(xs: readonly T[]): T => xs[rng.int(0, xs.length - 1)];
  const names = [
    "component",
    "code",
    "coding",
    "system",
    "value",
    "valueQuantity",
    "valueCodeableConcept",
    "text",
    "identifier",
    "name",
    "given",
    "family",
    "subject",
    "reference",
    "status",
    "effective",
    "effectiveDateTime",
    "meta",
    "versionId",
    "lastUpdated",
    "id",
    "participant",
    "member",
    "period",
    "start",
    "Observation",
    "Patient",
  ];
  const literals = [
    "'final'",
    "'http://loinc.org'",
    "'9052-2'",
    "'kcal'",
    "'meal'",
    "'breakfast'",
    "1",
    "2.5",
    "true",
    "false",
    "{}",
    "@2025-01-01",
  ];
  const gen = (depth: number): string => {
    const r = rng.int(0, depth <= 0 ? 2 : 13);
    switch (r) {
      case 0:
        return pick(names);
      case 1:
        return pick(literals);
      case 2:
        return pick(["$this", "$index", "%rowIndex", "%resource"]);
      case 3:
      case 4:
        return `${gen(depth - 1)}.${pick(names)}`;
      case 5:
        return `${gen(depth - 1)}.${pick(["where", "exists", "all", "select"])}(${gen(depth - 1)})`;
      case 6:
        return `${gen(depth - 1)}.${
          pick(["first", "last", "count", "empty", "not", "exists", "toString"])
        }()`;
      case 7:
      case 8:
        return `(${gen(depth - 1)} ${pick(["=", "!=", "and", "or", "xor", "implies"])} ${gen(depth - 1)})`;
      case 9:
        return `${gen(depth - 1)} = ${pick(literals.filter((l) => l.startsWith("'")))}`;
      case 10:
        return `(${gen(depth - 1)} ${pick(["|", "<", "+", "~", "in"])} ${gen(depth - 1)})`;
      case 11:
        return `${gen(depth - 1)}.getReferenceKey(${pick(["", "Patient", "NutritionOrder"])})`;
      case 12:
        return `${gen(depth - 1)}[${rng.int(0, 2)}]`;
      default:
        return `${pick(names)}.where(${pick(names)}.${pick(names)} = ${pick(literals)})`;
    }
  };
  const resources = (await generated()).slice(0, 40);
  let values = 0;
  let errors = 0;
  for (let i = 0; i < 1500; i++) {
    const expr = gen(4);
    const focus = pick(resources);
    const o = same(expr, focus, { rowIndex: rng.int(0, 2) });
    if ("error" in o) errors++;
    else if (o.value.length > 0) values++;
  }
  assert(values > 300, `only ${values} non-empty values`);
  assert(errors > 20, `only ${errors} errors`);
});
