/**
 * The fast dedupe-key extractor (`fhir/convert/dedupe_key.ts`) against its `JSON.parse` reference:
 * generated lines of every resource type, crafted variants (reordered keys, whitespace, escapes,
 * duplicate keys, nested ids/metas, unusual identifier entries, invalid JSON) and thousands of random
 * mutations must give the same key, or the same `ConvertInputError`. Also checks that the fast path is
 * taken (no fallback) for the lines our server writes.
 *
 * @module
 */

import assert from "node:assert";
import { ConvertInputError } from "../fhir/convert/errors.ts";
import {
  MAX_SCAN_DEPTH,
  parseDedupeKey,
  scanDedupeKey,
  scanDedupeKeyAt,
  scannedWithoutFallback,
} from "../fhir/convert/dedupe_key.ts";
import { GENERATED_RESOURCE_TYPES } from "../fhir/generator.ts";
import { generatedResources } from "./fixtures/generated.ts";

const dataset = generatedResources({
  patients: 25,
  days: 5,
  seed: "dedupe-key",
  enteredInErrorRate: 0.05,
  reuploadRate: 0.05,
  redeliveryRate: 0.05,
});

async function lines(type: string): Promise<string[]> {
  return (await dataset)[type].map((r) => JSON.stringify(r));
}

const LOG = "https://fhir-pme.example/identifier/log-entry";

type Outcome = { key: unknown } | { error: string; input: number; line: number };

function outcome(f: () => unknown): Outcome {
  try {
    return { key: f() };
  } catch (e) {
    if (!(e instanceof ConvertInputError)) throw e;
    return { error: e.message, input: e.input, line: e.line };
  }
}

/** Asserts that scanner and reference agree on `line`; returns the outcome. */
function agree(line: string, type = "Observation", what = line): Outcome {
  const want = outcome(() => parseDedupeKey(line, type, 3, 7));
  const got = outcome(() => scanDedupeKey(line, type, 3, 7));
  assert.deepStrictEqual(got, want, `scanner differs from JSON.parse on: ${what.slice(0, 200)}`);
  // Also as a line inside a batch string.
  const text = `{"x":1}\n${line}\n[]`;
  const inBatch = outcome(() => scanDedupeKeyAt(text, 8, 8 + line.length, type, 3, 7));
  assert.deepStrictEqual(inBatch, want, `scanner (in a batch) differs on: ${what.slice(0, 200)}`);
  return want;
}

const base = {
  resourceType: "Observation",
  id: "obs-1",
  meta: { versionId: "17", lastUpdated: "2025-01-06T14:57:36.332Z" },
  identifier: [{ system: LOG, value: "e-1" }],
  status: "final",
  code: { coding: [{ system: "http://loinc.org", code: "9052-2" }] },
  valueQuantity: { value: 512.5, unit: "kcal" },
};

Deno.test("dedupe key: generated lines of every type, fast path taken", async () => {
  let n = 0;
  for (const type of GENERATED_RESOURCE_TYPES) {
    for (const line of await lines(type)) {
      const o = agree(line, type);
      assert.ok("key" in o, "generated lines are valid");
      assert.ok(scannedWithoutFallback(line, type), `fast path for a generated ${type} line`);
      n++;
    }
  }
  assert.ok(n > 600, `${n} lines`);
});

Deno.test("dedupe key: the extracted values are the reference's", () => {
  const o = agree(JSON.stringify(base));
  assert.deepStrictEqual(o, {
    key: {
      id: "obs-1",
      lastUpdatedMs: Date.parse("2025-01-06T14:57:36.332Z"),
      versionId: "17",
      identifier: `${LOG}|e-1`,
    },
  });
});

Deno.test("dedupe key: crafted variants agree with JSON.parse", () => {
  const j = (o: unknown) => JSON.stringify(o);
  const { identifier: _i, ...noIdentifier } = base;
  const { meta: _m, ...noMeta } = base;
  const variants: string[] = [
    // Key order, whitespace.
    j({
      status: "final",
      identifier: base.identifier,
      meta: base.meta,
      id: "x",
      resourceType: "Observation",
    }),
    JSON.stringify(base, null, 2).replaceAll("\n", " "),
    " \t\r" + j(base) + " \t ",
    j(base).replaceAll(",", " ,\t").replaceAll(":", " : "),
    // Unicode and escapes: in skipped values, in needed values, in keys.
    j({ ...base, note: [{ text: 'a "quoted" \\ \u00e9\u2028 \ud83c\udf4e text\n' }] }),
    j({ ...base, id: "é-ünïcode-☃" }),
    j(base).replace('"obs-1"', '"obs\\u002d1"'),
    j(base).replace('"id"', '"\\u0069d"'),
    j(base).replace('"meta"', '"m\\u0065ta"'),
    j(base).replace('"lastUpdated"', '"last\\u0055pdated"'),
    j(base).replace(`"${LOG}"`, `"${LOG.replace("/", "\\/")}"`),
    j(base).replace('"e-1"', '"e\\t1"'),
    j({ ...base, text: { div: "\\u0000 not an escape" } }),
    j(base).replace('"final"', '"fi\\u006eal"'),
    // Duplicate keys: the last wins.
    j(base).slice(0, -1) + ',"id":"obs-2"}',
    j(base).slice(0, -1) + ',"id":""}',
    j(base).slice(0, -1) + ',"id":5}',
    j(base).slice(0, -1) + ',"meta":{"lastUpdated":"2026-01-01T00:00:00Z"}}',
    j(base).slice(0, -1) + ',"meta":null}',
    j(base).slice(0, -1) + ',"identifier":[]}',
    j(base).slice(0, -1) + ',"identifier":{"system":"' + LOG + '","value":"x"}}',
    j(base).slice(0, -1) + ',"resourceType":"Patient"}',
    j({ ...base, meta: { ...base.meta } }).replace('"versionId":"17"', '"versionId":"17","versionId":"18"'),
    j(base).replace('"versionId":"17"', '"versionId":"17","versionId":18'),
    j(base).replace(
      '"lastUpdated":"2025-01-06T14:57:36.332Z"',
      '"lastUpdated":"x","lastUpdated":"2025-02-01"',
    ),
    j(base).replace(`"value":"e-1"`, `"value":"e-1","value":"e-2"`),
    j(base).replace(`"system":"${LOG}"`, `"system":"${LOG}","system":"other"`),
    // Nested ids and metas are not the top-level ones.
    j({
      contained: [{
        resourceType: "Observation",
        id: "inner",
        meta: { lastUpdated: "2030-01-01T00:00:00Z" },
      }],
      extension: [{ id: "ext", url: "u", valueString: "s" }],
      ...base,
    }),
    j({
      ...base,
      component: [{ id: "c1", meta: { versionId: "99" }, identifier: [{ system: LOG, value: "z" }] }],
    }),
    // Identifier entries: other fields, other systems first, non-objects, non-string values.
    j({
      ...base,
      identifier: [{ use: "usual", system: "other", value: "o" }, { value: "v", system: LOG, x: [1] }],
    }),
    j({
      ...base,
      identifier: [null, 5, "s", [], { system: LOG }, { system: LOG, value: 7 }, { system: LOG, value: "w" }],
    }),
    j({ ...base, identifier: [{ system: LOG, value: "first" }, { system: LOG, value: "second" }] }),
    j({ ...base, identifier: "not an array" }),
    j(noIdentifier),
    // Meta: versionId not a string, missing, meta not an object.
    j({ ...base, meta: { lastUpdated: base.meta.lastUpdated, versionId: 17 } }),
    j({ ...base, meta: { lastUpdated: base.meta.lastUpdated } }),
    j({ ...base, meta: { lastUpdated: base.meta.lastUpdated, versionId: null } }),
    j({ ...base, meta: [base.meta] }),
    j({ ...base, meta: "2025-01-01" }),
    j(noMeta),
    j({ ...base, meta: { lastUpdated: "not a date" } }),
    j({ ...base, meta: { lastUpdated: 1736175456332 } }),
    j({ ...base, meta: { lastUpdated: "2025-01-06" } }),
    // Required members.
    j({ ...base, resourceType: "Patient" }),
    j({ ...base, id: "" }),
    j({ ...base, id: null }),
    j({ ...base, id: ["x"] }),
    j({ ...base, resourceType: undefined }),
    // Literals and numbers in skipped values.
    j({ ...base, a: [true, false, null, 0, -0, 1e5, -1.5e-3, 12345678901234567890, { b: {} }, [[]]] }),
    // Not an object.
    "[]",
    "null",
    '"Observation"',
    "42",
    "",
    " ",
    // Invalid JSON.
    j(base).slice(0, -1),
    j(base) + "}",
    j(base) + " x",
    j(base).slice(0, -1) + ",}",
    j(base).replace(',"status"', ',,"status"'),
    j(base).replace('"status":"final"', '"status":final'),
    j(base).replace('"status":"final"', "'status':'final'"),
    j(base).replace("512.5", "0512.5"),
    j(base).replace("512.5", "512."),
    j(base).replace("512.5", ".5"),
    j(base).replace("512.5", "-"),
    j(base).replace("512.5", "1e"),
    j(base).replace("512.5", "1e+"),
    j(base).replace("512.5", "+1"),
    j(base).replace("512.5", "NaN"),
    j(base).replace("512.5", "Infinity"),
    j(base).replace("512.5", "tru"),
    j(base).replace("512.5", "nul"),
    j(base).replace('"kcal"', '"kc\\al"'),
    j(base).replace('"kcal"', '"kc\\u00g1"'),
    j(base).replace('"kcal"', '"kc\\u00"'),
    j(base).replace('"kcal"', '"kc\u0001al"'),
    j(base).replace('"kcal"', '"kc\tal"'),
    j(base).replace('"kcal"', '"kcal'),
    j(base).replace("{", "{/* c */"),
    "\ufeff" + j(base),
    j(base).replace(":", "\u00a0:"),
    "{" + '"a":'.repeat(1) + "[".repeat(MAX_SCAN_DEPTH + 5) + "]".repeat(MAX_SCAN_DEPTH + 5) + "," +
    j(base).slice(1),
    j({ ...base, deep: JSON.parse("[".repeat(100) + "1" + "]".repeat(100)) }),
  ];
  // Every control character, raw inside a string (invalid) and between tokens (only 4 are whitespace).
  for (let c = 0; c < 32; c++) {
    const ch = String.fromCharCode(c);
    variants.push(j(base).replace('"kcal"', `"kc${ch}al"`), j(base).replace(',"status"', `,${ch}"status"`));
  }
  let errors = 0;
  for (const v of variants) if ("error" in agree(v)) errors++;
  assert.ok(errors > 30, `invalid lines are rejected (${errors})`);
});

/** A deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ALPHABET = [
  '"',
  "\\",
  "{",
  "}",
  "[",
  "]",
  ",",
  ":",
  " ",
  "\t",
  "0",
  "1",
  "-",
  ".",
  "e",
  "u",
  "a",
  "\u00e9",
];

Deno.test("dedupe key: random mutations of real lines agree with JSON.parse", async () => {
  const obs = await lines("Observation");
  const random = rng(20250106);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(random() * a.length)];
  let invalid = 0;
  let valid = 0;
  for (let n = 0; n < 4000; n++) {
    let s = pick(obs);
    const edits = 1 + Math.floor(random() * 3);
    for (let e = 0; e < edits; e++) {
      // Bias edits towards the start, where the members the key needs are.
      const at = Math.floor((random() ** 2) * s.length);
      const op = random();
      if (op < 0.3) s = s.slice(0, at) + s.slice(at + 1);
      else if (op < 0.6) s = s.slice(0, at) + pick(ALPHABET) + s.slice(at);
      else if (op < 0.8) s = s.slice(0, at) + pick(ALPHABET) + s.slice(at + 1);
      else {
        // Move a top-level member (a structural edit that usually stays valid).
        const o = JSON.parse(pick(obs));
        const keys = Object.keys(o);
        const k = pick(keys);
        const v = o[k];
        delete o[k];
        o[k] = v;
        s = JSON.stringify(o);
      }
    }
    if ("error" in agree(s)) invalid++;
    else valid++;
  }
  assert.ok(invalid > 1000 && valid > 500, `both outcomes exercised (${valid} valid, ${invalid} invalid)`);
});
