/**
 * Conversion core end to end: a generated data set (with versions, re-uploads, redelivered lines and
 * entered-in-error entries) is converted with an in-memory KMS; every output is decrypted in memory with
 * the key tools and compared with an expectation computed here directly from the NDJSON. Also checks
 * the date partitions, the column master keys by sensitivity class, that no identifying string appears
 * in any byte under the lake, and that no plaintext Parquet or temporary file is left.
 *
 * @module
 */

import { DedupeIndex } from "../fhir/convert/dedupe.ts";
import assert from "node:assert";
import { join, relative } from "node:path";
import { CryptoFactory } from "../kms/crypto_factory.ts";
import { generate, GENERATED_RESOURCE_TYPES, IDENTIFIERS_FILE } from "../fhir/generator.ts";
import {
  convert,
  ConvertConfigError,
  type ConvertInput,
  loadProjectViews,
  type Manifest,
  MANIFEST_FILE,
  type ProjectView,
  projectView,
  ProjectViewError,
  readLines,
  withConversionDate,
} from "../fhir/convert/mod.ts";
import { MemoryKms } from "./fixtures/memory_kms.ts";
import { readLakeFile } from "./fixtures/lake.ts";

// deno-lint-ignore no-explicit-any
type Json = Record<string, any>;

const LOG_ENTRY = "https://fhir-pme.example/identifier/log-entry";
const MASTER_KEYS = {
  "direct-identifier": "identity",
  "quasi-identifier": "quasi",
  "clinical": "clinical",
  "technical": null,
} as const;

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) out.push(...await walk(p));
    else out.push(p);
  }
  return out;
}

/** Latest version per id, then the first-created id per log-entry identifier (PROFILE.md §6). */
function expectedWinners(lines: Json[]): Json[] {
  const byId = new Map<string, Json[]>();
  for (const r of lines) byId.set(r.id, [...byId.get(r.id) ?? [], r]);
  const latest: { r: Json; created: number }[] = [];
  for (const versions of byId.values()) {
    const sorted = versions.toSorted((a, b) =>
      Date.parse(b.meta.lastUpdated) - Date.parse(a.meta.lastUpdated) ||
      Number(b.meta.versionId) - Number(a.meta.versionId)
    );
    latest.push({ r: sorted[0], created: Math.min(...versions.map((v) => Date.parse(v.meta.lastUpdated))) });
  }
  const byEntry = new Map<string, { r: Json; created: number }>();
  const out: Json[] = [];
  for (const x of latest) {
    const key = (x.r.identifier ?? []).find((i: Json) => i.system === LOG_ENTRY)?.value;
    if (key === undefined) {
      out.push(x.r);
      continue;
    }
    const cur = byEntry.get(key);
    if (!cur || x.created < cur.created || (x.created === cur.created && x.r.id < cur.r.id)) {
      byEntry.set(key, x);
    }
  }
  return [...out, ...[...byEntry.values()].map((x) => x.r)];
}

function component(r: Json, system: string, code: string): Json | undefined {
  return r.component.find((c: Json) =>
    c.code.coding.some((k: Json) => k.system === system && k.code === code)
  );
}

Deno.test("convert: generated NDJSON → encrypted, partitioned lake", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "convert-test-" });
  try {
    const gen = join(root, "gen");
    const work = join(root, "work");
    const lake = join(work, "lake");
    const summary = await generate({
      patients: 10,
      days: 5,
      seed: "convert-test",
      outDir: gen,
      enteredInErrorRate: 0.05,
      reuploadRate: 0.05,
      redeliveryRate: 0.05,
    });
    assert.ok(summary.enteredInError > 0 && summary.reuploads > 0 && summary.redelivered > 0);

    // Observation in two segments given as line sources (dedupe across segments), the rest as paths.
    const obsLines: string[] = [];
    for await (const l of readLines(join(gen, "Observation.ndjson"))) obsLines.push(l);
    const half = Math.floor(obsLines.length / 2);
    const inputs: ConvertInput[] = GENERATED_RESOURCE_TYPES.filter((t) => t !== "Observation")
      .map((type) => ({ type, path: join(gen, `${type}.ndjson`) }));
    for (const seg of [obsLines.slice(0, half), obsLines.slice(half)]) {
      inputs.push({
        type: "Observation",
        lines: async function* () {
          yield* seg;
        },
      });
    }

    const kms = new MemoryKms(Object.fromEntries(
      ["footer", "identity", "quasi", "clinical"].map((k) => [k, crypto.getRandomValues(new Uint8Array(16))]),
    ));
    const factory = new CryptoFactory(() => kms);
    const views = await loadProjectViews("views");
    assert.deepStrictEqual(views.map((v) => v.name).sort(), [
      "body_weight",
      "care_team",
      "food_log",
      "nutrition_orders",
      "patients",
    ]);
    const result = await convert({
      inputs,
      views,
      lakeDir: lake,
      factory,
      connection: {},
      masterKeys: MASTER_KEYS,
      footerMasterKey: "footer",
      rowGroupRows: 40,
      maxRowsPerFile: 80,
      maxBufferedRows: 150,
      runId: "test-run",
      conversionDate: "2031-02-03",
      durable: false,
    });

    // Expectation straight from the NDJSON.
    const all: Record<string, Json[]> = {};
    for (const type of GENERATED_RESOURCE_TYPES) {
      all[type] = [];
      for await (const l of readLines(join(gen, `${type}.ndjson`))) if (l) all[type].push(JSON.parse(l));
    }
    const live = (r: Json) => ["final", "amended", "corrected"].includes(r.status);
    const isCode = (r: Json, code: string) => r.code.coding.some((c: Json) => c.code === code);
    const obs = expectedWinners(all.Observation);
    const food = obs.filter((r) => isCode(r, "9052-2") && live(r));
    const weights = obs.filter((r) => isCode(r, "29463-7") && live(r));
    const careTeams = expectedWinners(all.CareTeam);
    const expectedCounts: Record<string, number> = {
      patients: expectedWinners(all.Patient).length,
      food_log: food.length,
      body_weight: weights.length,
      care_team: careTeams.reduce((s, c) => s + c.participant.length, 0),
      nutrition_orders: expectedWinners(all.NutritionOrder).length,
    };
    assert.strictEqual(food.length, summary.foodEntries - summary.enteredInError);
    assert.strictEqual(expectedCounts.patients, 10);
    assert.strictEqual(expectedCounts.care_team, 10 + summary.dietitianChanges);

    // Decrypt everything.
    const rows: Record<string, Json[]> = {};
    const manifest = JSON.parse(await Deno.readTextFile(join(lake, MANIFEST_FILE))) as Manifest;
    const viewByName = new Map(views.map((v) => [v.name, v]));
    for (const f of manifest.files) {
      const { columns, rows: fileRows } = await readLakeFile(factory, join(lake, f.path));
      const view = viewByName.get(f.view)!;
      assert.strictEqual(fileRows.length, f.rows);
      for (const c of columns) {
        const want = MASTER_KEYS[view.sensitivity[c.name]];
        assert.strictEqual(c.masterKeyId, want, `${f.view}.${c.name}`);
        assert.strictEqual(c.encryption, want === null ? "none" : "column-key", `${f.view}.${c.name}`);
      }
      for (const r of fileRows) assert.strictEqual(r[view.partitionColumn], f.date, f.path);
      assert.strictEqual(f.path, `${f.view}/date=${f.date}/${f.path.split("/").pop()}`);
      (rows[f.view] ??= []).push(...fileRows);
    }

    await t.step("row counts per view", () => {
      const got = Object.fromEntries(Object.keys(expectedCounts).map((v) => [v, rows[v]?.length ?? 0]));
      assert.deepStrictEqual(got, expectedCounts);
      assert.deepStrictEqual(result.run.rows, expectedCounts);
    });

    await t.step("identity columns under the direct-identifier master key", async () => {
      const f = manifest.files.find((x) => x.view === "patients")!;
      const { columns } = await readLakeFile(factory, join(lake, f.path));
      for (const name of ["user_number", "family_name", "given_names", "email", "phone", "birth_date"]) {
        assert.strictEqual(columns.find((c) => c.name === name)?.masterKeyId, "identity", name);
      }
      assert.strictEqual(columns.find((c) => c.name === "patient_id")?.masterKeyId, "quasi");
    });

    await t.step("food_log values, dedupe and entered-in-error", () => {
      const got = new Map(rows.food_log.map((r) => [r.entry_id, r]));
      assert.strictEqual(got.size, rows.food_log.length);
      const entries = rows.food_log.map((r) => r.log_entry_id);
      assert.strictEqual(new Set(entries).size, entries.length, "each app entry once");
      for (const r of food) {
        const row = got.get(r.id);
        assert.ok(row, "expected entry present");
        const item = component(r, "https://fhir-pme.example/CodeSystem/diet-log", "food-item")!;
        const meal = component(r, "https://fhir-pme.example/CodeSystem/diet-log", "meal")!;
        assert.deepStrictEqual(
          [row.time, row.date, row.meal, row.item, row.kcal, row.protein_g, row.carbohydrate_g, row.fat_g],
          [
            r.effectiveDateTime,
            r.effectiveDateTime.slice(0, 10),
            meal.valueCodeableConcept.coding[0].code,
            item.valueCodeableConcept.text,
            r.valueQuantity.value,
            component(r, "http://loinc.org", "9079-5")!.valueQuantity.value,
            component(r, "http://loinc.org", "9059-7")!.valueQuantity.value,
            component(r, "http://loinc.org", "9066-2")!.valueQuantity.value,
          ],
        );
      }
      const deleted = new Set(
        all.Observation.filter((r) => r.status === "entered-in-error").map((r) => r.identifier[0].value),
      );
      assert.ok(deleted.size > 0);
      for (const e of entries) assert.ok(!deleted.has(e), "entered-in-error entry not in food_log");
      const reuploaded = new Map<string, Set<string>>();
      for (const r of all.Observation) {
        const k = r.identifier[0].value;
        reuploaded.set(k, (reuploaded.get(k) ?? new Set()).add(r.id));
      }
      assert.ok([...reuploaded.values()].some((ids) => ids.size > 1), "data set has re-uploads");
      assert.strictEqual(result.run.dedupe.Observation.reuploadsDropped, summary.reuploads);
    });

    await t.step("date partitions", async () => {
      const foodDates = new Set(manifest.files.filter((f) => f.view === "food_log").map((f) => f.date));
      assert.deepStrictEqual(
        [...foodDates].sort(),
        ["2025-01-06", "2025-01-07", "2025-01-08", "2025-01-09", "2025-01-10"],
      );
      // Dimension views: one partition, the run's conversion date.
      assert.strictEqual(result.run.conversionDate, "2031-02-03");
      for (const view of ["patients", "care_team", "nutrition_orders"]) {
        const files = manifest.files.filter((f) => f.view === view);
        assert.deepStrictEqual(files.map((f) => f.date), ["2031-02-03"], view);
        assert.ok(rows[view].every((r) => r.date === "2031-02-03"), view);
      }
      const onDisk = (await walk(lake)).map((p) => relative(lake, p)).filter((p) => p !== MANIFEST_FILE);
      assert.deepStrictEqual(onDisk.sort(), manifest.files.map((f) => f.path).sort());
      assert.ok(manifest.files.some((f) => f.rowGroups > 1), "several row groups in some file");
    });

    await t.step(
      "no identifier in any byte under the work dir; no plaintext parquet or temp file",
      async () => {
        const ids = (await Deno.readTextFile(join(gen, IDENTIFIERS_FILE))).split("\n").filter((s) => s);
        assert.ok(ids.length > 0);
        const files = await walk(work);
        assert.ok(files.length > 5);
        for (const p of files) {
          const bytes = await Deno.readFile(p);
          const text = new TextDecoder("latin1").decode(bytes);
          for (const id of ids) {
            assert.ok(!text.includes(id), `an identifier leaked into ${relative(work, p)}`);
          }
          const name = p.split("/").pop()!;
          assert.ok(!name.startsWith("."), `temporary file left: ${name}`);
          if (name !== MANIFEST_FILE) {
            const head = text.slice(0, 4);
            const tail = text.slice(-4);
            assert.deepStrictEqual([head, tail], ["PARE", "PARE"], `${name} is not an encrypted-footer file`);
          }
        }
      },
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("loadProjectViews: a column without a sensitivity class is an error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "convert-views-" });
  try {
    const view = JSON.parse(await Deno.readTextFile("views/body_weight.json"));
    delete view.select[0].column[3].tag;
    await Deno.writeTextFile(join(dir, "bad.json"), JSON.stringify(view));
    await assert.rejects(
      loadProjectViews(dir),
      (e) => e instanceof ProjectViewError && /weight_kg/.test(e.message),
    );
    view.select[0].column[3].tag = [{ name: "sensitivity", value: "secret" }];
    await Deno.writeTextFile(join(dir, "bad.json"), JSON.stringify(view));
    await assert.rejects(loadProjectViews(dir), ProjectViewError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dedupe: a re-upload stamped in the same millisecond as its original loses on versionId", () => {
  const index = new DedupeIndex();
  const identifier = "https://fhir-pme.example/identifier/log-entry|e-1";
  // The original (id sorting last) was written first: smaller server versionId, same lastUpdated.
  index.add({ id: "ffffffff", lastUpdatedMs: 1000, versionId: "1700000000000001", identifier }, 0, 0);
  index.add({ id: "00000000", lastUpdatedMs: 1000, versionId: "1700000000000002", identifier }, 0, 1);
  // Later the original is marked entered-in-error (a newer version of the same id).
  index.add({ id: "ffffffff", lastUpdatedMs: 2000, versionId: "1700000000000003", identifier }, 0, 2);
  index.finish();
  assert.strictEqual(index.isWinner("ffffffff", 0, 2), true, "the original's latest version must win");
  assert.strictEqual(index.isWinner("00000000", 0, 1), false, "the re-upload must be dropped");
  assert.strictEqual(index.isWinner("ffffffff", 0, 0), false);
});

Deno.test("project views: %conversion_date partitions the dimension views", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "convert-views-" });
  try {
    const patient = JSON.parse(await Deno.readTextFile("views/patients.json"));
    const resource = {
      resourceType: "Patient",
      id: "p1",
      meta: { versionId: "1", lastUpdated: "2025-01-02T03:04:05.000Z" },
      active: true,
    };
    const dateOf = (v: ProjectView) => v.compiled.rows(resource)[0].date;

    await t.step("the standalone view keeps its placeholder; loadProjectViews sets the date", async () => {
      assert.strictEqual(dateOf(projectView(patient, "patients.json")), "1970-01-01");
      const views = await loadProjectViews("views", { conversionDate: "2030-12-31" });
      const byName = new Map(views.map((v) => [v.name, v]));
      assert.strictEqual(dateOf(byName.get("patients")!), "2030-12-31");
      assert.strictEqual(byName.get("patients")!.conversionDate, "2030-12-31");
      // Fact views do not declare it and keep their own partition.
      assert.strictEqual(byName.get("food_log")!.conversionDate, undefined);
      assert.strictEqual(withConversionDate(byName.get("food_log")!, "2030-01-01"), byName.get("food_log"));
      const again = withConversionDate(byName.get("patients")!, "2029-05-06");
      assert.strictEqual(dateOf(again), "2029-05-06");
      assert.strictEqual(dateOf(byName.get("patients")!), "2030-12-31", "the original is unchanged");
    });

    await t.step("a view using %conversion_date must declare it as a valueDate", async () => {
      const undeclared = structuredClone(patient);
      delete undeclared.constant;
      assert.throws(
        () => projectView(undeclared, "undeclared.json", { conversionDate: "2030-01-01" }),
        (e) =>
          e instanceof ProjectViewError && /conversion_date/.test(e.message) && /undeclared/.test(e.message),
      );
      await Deno.writeTextFile(join(dir, "undeclared.json"), JSON.stringify(undeclared));
      await assert.rejects(loadProjectViews(dir, { conversionDate: "2030-01-01" }), ProjectViewError);
      const asString = structuredClone(patient);
      asString.constant = [{ name: "conversion_date", valueString: "1970-01-01" }];
      assert.throws(
        () => projectView(asString, "string.json"),
        (e) => e instanceof ProjectViewError && /must be a valueDate/.test(e.message),
      );
    });

    await t.step("an invalid conversion date is a configuration error", () => {
      for (const bad of ["2030-02-30", "2030-1-01", "today", "2030-01-01T00:00:00Z"]) {
        assert.throws(
          () => projectView(patient, "patients.json", { conversionDate: bad }),
          (e) => e instanceof ConvertConfigError && /YYYY-MM-DD/.test(e.message),
          bad,
        );
      }
    });

    await t.step("convert defaults to the UTC date of the run start", async () => {
      const kms = new MemoryKms({ k: crypto.getRandomValues(new Uint8Array(16)) });
      const views = (await loadProjectViews("views")).filter((v) => v.name === "patients");
      const lines = [JSON.stringify(resource)];
      const before = new Date().toISOString().slice(0, 10);
      const result = await convert({
        inputs: [{
          type: "Patient",
          lines: async function* () {
            yield* lines;
          },
        }],
        views,
        lakeDir: join(dir, "lake"),
        factory: new CryptoFactory(() => kms),
        connection: {},
        masterKeys: { "direct-identifier": "k", "quasi-identifier": "k", clinical: "k", technical: null },
        footerMasterKey: "k",
        durable: false,
      });
      const after = new Date().toISOString().slice(0, 10);
      assert.ok([before, after].includes(result.run.conversionDate));
      assert.deepStrictEqual(result.files.map((f) => f.date), [result.run.conversionDate]);
      await assert.rejects(
        convert({
          inputs: [],
          views,
          lakeDir: join(dir, "lake"),
          factory: new CryptoFactory(() => kms),
          connection: {},
          masterKeys: { "direct-identifier": "k", "quasi-identifier": "k", clinical: "k", technical: null },
          footerMasterKey: "k",
          conversionDate: "31.12.2030",
        }),
        ConvertConfigError,
      );
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
