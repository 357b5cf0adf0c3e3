/**
 * fhir/generator.ts: determinism, counts, plausibility, versions and duplicates, identifiers.txt
 * completeness, validity of every resource, streaming throughput; and the `generate` CLI.
 */

import assert from "node:assert/strict";
import { main } from "../cli/main.ts";
import { atwaterKcal, energyConsistent } from "../fhir/foods.ts";
import {
  generate,
  GENERATED_RESOURCE_TYPES,
  type GenerateSummary,
  IDENTIFIERS_FILE,
} from "../fhir/generator.ts";
import { Prng } from "../fhir/prng.ts";
import { IDENTIFIER_SYSTEMS, LOINC } from "../fhir/profile.ts";
import { validateResource } from "../fhir/validate.ts";

// deno-lint-ignore no-explicit-any
type R = any;

const root = await Deno.makeTempDir({ prefix: "generator_test_" });
addEventListener("unload", () => Deno.removeSync(root, { recursive: true }));

async function readDir(dir: string): Promise<Record<string, Uint8Array>> {
  const out: Record<string, Uint8Array> = {};
  for await (const e of Deno.readDir(dir)) out[e.name] = await Deno.readFile(`${dir}/${e.name}`);
  return out;
}

async function lines(dir: string, type: string): Promise<string[]> {
  return (await Deno.readTextFile(`${dir}/${type}.ndjson`)).split("\n").filter(Boolean);
}

function isFood(o: R): boolean {
  return o.code.coding[0].code === LOINC.energyIntake.code;
}

function component(o: R, code: string): R {
  return o.component.find((c: R) => c.code.coding[0].code === code);
}

// A data set with higher event rates so that every kind appears.
const MAIN = `${root}/main`;
const mainSummary: GenerateSummary = await generate({
  patients: 40,
  days: 21,
  seed: "generator-test",
  outDir: MAIN,
  patientsPerDietitian: 10,
  enteredInErrorRate: 0.03,
  reuploadRate: 0.03,
  redeliveryRate: 0.02,
});

Deno.test("prng: same seed and stream give the same sequence, others differ", () => {
  const a = new Prng("s", 1, 2), b = new Prng("s", 1, 2), c = new Prng("s", 1, 3), d = new Prng("t", 1, 2);
  const take = (p: Prng) => Array.from({ length: 8 }, () => p.uint32());
  const xa = take(a);
  assert.deepEqual(xa, take(b));
  assert.notDeepEqual(xa, take(c));
  assert.notDeepEqual(xa, take(d));
  const u = new Prng(1).uuid();
  assert.match(u, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  const p = new Prng(9);
  let sum = 0;
  for (let i = 0; i < 10000; i++) {
    const x = p.next();
    assert.ok(x >= 0 && x < 1);
    sum += x;
  }
  assert.ok(Math.abs(sum / 10000 - 0.5) < 0.02);
});

Deno.test("determinism: the same seed gives identical bytes, another seed different data", async () => {
  const opts = { patients: 15, days: 9, patientsPerDietitian: 4 };
  await generate({ ...opts, seed: 7, outDir: `${root}/a` });
  await generate({ ...opts, seed: 7, outDir: `${root}/b` });
  await generate({ ...opts, seed: 8, outDir: `${root}/c` });
  const [a, b, c] = await Promise.all([readDir(`${root}/a`), readDir(`${root}/b`), readDir(`${root}/c`)]);
  assert.deepEqual(
    Object.keys(a).sort(),
    [...GENERATED_RESOURCE_TYPES.map((t) => `${t}.ndjson`), IDENTIFIERS_FILE].sort(),
  );
  for (const name of Object.keys(a)) assert.deepEqual(a[name], b[name], name);
  for (const name of ["Patient.ndjson", "Observation.ndjson", IDENTIFIERS_FILE]) {
    assert.notDeepEqual(a[name], c[name], name);
  }
});

Deno.test("counts per type match the options and the summary", async () => {
  const s = mainSummary;
  assert.equal(s.lines.Patient, 40);
  assert.equal(s.lines.CareTeam, 40);
  assert.equal(s.lines.NutritionOrder, 40);
  assert.equal(s.lines.Practitioner, 4);
  assert.equal(s.lines.PractitionerRole, 4);
  assert.equal(s.lines.Organization, 1);
  assert.equal(
    s.lines.Observation,
    s.foodEntries + s.bodyWeights + s.enteredInError + s.reuploads + s.redelivered,
  );
  for (const t of GENERATED_RESOURCE_TYPES) assert.equal((await lines(MAIN, t)).length, s.lines[t], t);
  assert.ok(s.enteredInError > 0 && s.reuploads > 0 && s.redelivered > 0, JSON.stringify(s));
  // 3–6 food entries a day: 40 × 21 patient-days.
  assert.ok(s.foodEntries >= 40 * 21 * 3 && s.foodEntries <= 40 * 21 * 6);
  // Weighed about weekly: day 0, then every 6–8 days.
  assert.ok(s.bodyWeights >= 40 * 3 && s.bodyWeights <= 40 * 4, String(s.bodyWeights));
});

Deno.test("every generated resource passes fhir/validate.ts (with meta required)", async () => {
  let n = 0;
  for (const t of GENERATED_RESOURCE_TYPES) {
    for (const line of await lines(MAIN, t)) {
      const r = JSON.parse(line);
      const issues = validateResource(r, { requireMeta: true });
      assert.deepEqual(issues, [], `${t}/${r.id}: ${JSON.stringify(issues)}`);
      n++;
    }
  }
  assert.ok(n > 3000);
});

Deno.test("food log: 3–6 entries per patient-day across meals, in the patient's local day, plausible nutrients", async () => {
  const obs = (await lines(MAIN, "Observation")).map((l) => JSON.parse(l));
  const seenIds = new Set<string>();
  const perDay = new Map<string, { entries: number; kcal: number }>();
  const hours: Record<string, number[]> = { breakfast: [], lunch: [], dinner: [], snack: [] };
  for (const o of obs) {
    if (!isFood(o) || o.status !== "final") continue;
    const entry = o.identifier.find((i: R) => i.system === IDENTIFIER_SYSTEMS.logEntry).value;
    if (seenIds.has(entry)) continue; // re-upload or redelivery
    seenIds.add(entry);
    const kcal = o.valueQuantity.value;
    assert.ok(kcal >= 0 && kcal <= 1500, `entry kcal ${kcal}`);
    const p = component(o, LOINC.proteinIntake.code).valueQuantity.value;
    const c = component(o, LOINC.carbohydrateIntake.code).valueQuantity.value;
    const f = component(o, LOINC.fatIntake.code).valueQuantity.value;
    assert.ok(energyConsistent(kcal, p, c, f), `kcal ${kcal} vs Atwater ${atwaterKcal(p, c, f)}`);
    const portion = component(o, "portion").valueQuantity;
    assert.ok(portion.value > 0 && portion.value <= 1000 && ["g", "mL"].includes(portion.code));
    const meal = component(o, "meal").valueCodeableConcept.coding[0].code;
    const local: string = o.effectiveDateTime;
    assert.match(local, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$/);
    hours[meal].push(Number(local.slice(11, 13)) + Number(local.slice(14, 16)) / 60);
    // logged after eating, stored after logging
    assert.ok(
      Date.parse(o.issued) > Date.parse(local) && Date.parse(o.meta.lastUpdated) > Date.parse(o.issued),
    );
    const key = `${o.subject.reference} ${local.slice(0, 10)}`;
    const d = perDay.get(key) ?? { entries: 0, kcal: 0 };
    d.entries++;
    d.kcal += kcal;
    perDay.set(key, d);
  }
  // Entries that were later deleted still count for the day's structure check.
  assert.ok(perDay.size >= 40 * 21 - 5, String(perDay.size));
  let total = 0;
  for (const [key, d] of perDay) {
    assert.ok(d.entries >= 1 && d.entries <= 6, `${key}: ${d.entries} entries`);
    assert.ok(d.kcal >= 150 && d.kcal <= 6000, `${key}: ${d.kcal} kcal`);
    total += d.kcal;
  }
  const mean = total / perDay.size;
  assert.ok(mean > 1100 && mean < 3200, `mean daily kcal ${mean}`);
  const within = (xs: number[], lo: number, hi: number) => xs.every((h) => h >= lo && h < hi);
  assert.ok(within(hours.breakfast, 6.5, 10), "breakfast times");
  assert.ok(within(hours.lunch, 11.5, 14.5), "lunch times");
  assert.ok(within(hours.dinner, 17.5, 21), "dinner times");
  assert.ok(hours.snack.length > 0 && within(hours.snack, 10, 22.1), "snack times");
});

Deno.test("body weights: kg, plausible, weekly-ish, with a bounded trend", async () => {
  const obs = (await lines(MAIN, "Observation")).map((l) => JSON.parse(l)).filter((o) => !isFood(o));
  const byPatient = new Map<string, { t: number; kg: number }[]>();
  for (const o of obs) {
    assert.equal(o.valueQuantity.code, "kg");
    assert.ok(o.valueQuantity.value >= 40 && o.valueQuantity.value <= 200);
    const list = byPatient.get(o.subject.reference) ?? [];
    list.push({ t: Date.parse(o.effectiveDateTime), kg: o.valueQuantity.value });
    byPatient.set(o.subject.reference, list);
  }
  assert.equal(byPatient.size, 40);
  for (const [, list] of byPatient) {
    for (let i = 1; i < list.length; i++) {
      const days = (list[i].t - list[i - 1].t) / 86_400_000;
      assert.ok(days > 5 && days < 9, `gap ${days}`);
      assert.ok(Math.abs(list[i].kg - list[i - 1].kg) < 4, "weekly change below 4 kg");
    }
  }
});

Deno.test("entered-in-error versions, re-uploads and redelivered lines are there for dedupe", async () => {
  const all = await lines(MAIN, "Observation");
  const byId = new Map<string, R[]>();
  const byEntry = new Map<string, Set<string>>();
  for (const l of all) {
    const o = JSON.parse(l);
    byId.set(o.id, [...(byId.get(o.id) ?? []), o]);
    const entry = o.identifier[0].value;
    byEntry.set(entry, (byEntry.get(entry) ?? new Set()).add(o.id));
  }
  const v2 = [...byId.values()].flat().filter((o) => o.meta.versionId === "2");
  assert.equal(v2.length, mainSummary.enteredInError);
  for (const o of v2) {
    assert.equal(o.status, "entered-in-error");
    const v1 = byId.get(o.id)!.find((x) => x.meta.versionId === "1");
    assert.ok(v1, "version 1 exists");
    assert.ok(Date.parse(o.meta.lastUpdated) > Date.parse(v1.meta.lastUpdated));
    assert.deepEqual({ ...o, meta: undefined, status: undefined }, {
      ...v1,
      meta: undefined,
      status: undefined,
    });
  }
  const reuploaded = [...byEntry.values()].filter((ids) => ids.size > 1);
  assert.equal(reuploaded.length, mainSummary.reuploads);
  for (const ids of reuploaded) {
    const [a, b] = [...ids].map((id) => byId.get(id)![0]);
    assert.deepEqual({ ...a, id: 0, meta: 0 }, { ...b, id: 0, meta: 0 });
  }
  assert.equal(all.length - new Set(all).size, mainSummary.redelivered);
});

Deno.test("care teams link every patient to a dietitian's PractitionerRole over a period", async () => {
  const roles = new Set(
    (await lines(MAIN, "PractitionerRole")).map((l) => `PractitionerRole/${JSON.parse(l).id}`),
  );
  const patients = new Set((await lines(MAIN, "Patient")).map((l) => `Patient/${JSON.parse(l).id}`));
  const teams = (await lines(MAIN, "CareTeam")).map((l) => JSON.parse(l));
  assert.deepEqual(new Set(teams.map((t) => t.subject.reference)), patients);
  for (const t of teams) {
    for (const p of t.participant) {
      assert.ok(roles.has(p.member.reference));
      assert.ok(p.period.start);
    }
    if (t.participant.length > 1) assert.equal(t.participant[0].period.end, t.participant[1].period.start);
  }
  const orders = (await lines(MAIN, "NutritionOrder")).map((l) => JSON.parse(l));
  for (const o of orders) {
    const kcal = o.oralDiet.nutrient[0].amount.value;
    assert.ok(kcal >= 1200 && kcal <= 3600 && kcal % 100 === 0, String(kcal));
  }
});

Deno.test("identifiers.txt lists every identifying string of the patients, which appear nowhere else", async () => {
  const listed = new Set(
    (await Deno.readTextFile(`${MAIN}/${IDENTIFIERS_FILE}`)).split("\n").filter(Boolean),
  );
  assert.equal(listed.size > 0, true);
  const patients = (await lines(MAIN, "Patient")).map((l) => JSON.parse(l));
  for (const p of patients) {
    const strings: string[] = [
      ...p.identifier.map((i: R) => i.value),
      ...p.name.flatMap((n: R) => [n.family, ...n.given, `${n.given.join(" ")} ${n.family}`]),
      ...p.address.flatMap((a: R) => a.line),
      ...p.telecom.map((t: R) => t.value),
      p.birthDate,
    ];
    for (const s of strings) assert.ok(listed.has(s), `identifiers.txt lacks a string of Patient/${p.id}`);
  }
  // Outside Patient.ndjson none of them occurs, so leak scans of derived data have no false positives.
  for (const t of GENERATED_RESOURCE_TYPES.filter((t) => t !== "Patient")) {
    const text = await Deno.readTextFile(`${MAIN}/${t}.ndjson`);
    for (const s of listed) assert.ok(!text.includes(s), `an identifying string occurs in ${t}.ndjson`);
  }
});

Deno.test("streaming: 200 patients × 30 days quickly, with bounded memory; throughput", async () => {
  const baseline = Deno.memoryUsage().heapUsed;
  let peak = baseline;
  const s = await generate({
    patients: 200,
    days: 30,
    seed: "throughput",
    outDir: `${root}/big`,
    onProgress: () => {
      peak = Math.max(peak, Deno.memoryUsage().heapUsed);
    },
  });
  const mb = s.bytes / 1e6;
  console.log(
    `generated ${mb.toFixed(1)} MB (${s.lines.Observation} Observation lines) in ${
      s.seconds.toFixed(2)
    } s: ` +
      `${(mb / s.seconds).toFixed(0)} MB/s; heap growth peak ${((peak - baseline) / 1e6).toFixed(1)} MB`,
  );
  assert.ok(mb > 30, "a sizeable data set");
  assert.ok(s.seconds < 30, "quick");
  assert.ok(peak - baseline < mb * 1e6, "does not hold the output in memory");
  const stat = await Deno.stat(`${root}/big/Observation.ndjson`);
  assert.ok(stat.size > 0.9 * s.bytes);
});

Deno.test("generator rejects bad options", async () => {
  await assert.rejects(() => generate({ patients: 0, days: 1, seed: 1, outDir: `${root}/x` }), /patients/);
  await assert.rejects(() => generate({ patients: 1, days: 1.5, seed: 1, outDir: `${root}/x` }), /days/);
  await assert.rejects(
    () => generate({ patients: 1, days: 1, seed: 1, outDir: `${root}/x`, startDate: "06/01/2025" }),
    /startDate/,
  );
  await assert.rejects(
    () => generate({ patients: 1, days: 1, seed: 1, outDir: `${root}/x`, reuploadRate: 2 }),
    /reuploadRate/,
  );
});

Deno.test("cli: generate writes the files and prints a summary; usage errors exit 2", async () => {
  const out: string[] = [];
  const log = console.log, error = console.error;
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  console.error = (...a: unknown[]) => out.push(a.join(" "));
  try {
    const dir = `${root}/cli`;
    assert.equal(
      await main(["generate", "--patients", "3", "--days", "2", "--seed", "cli", "--out", dir]),
      0,
    );
    assert.match(
      out.join("\n"),
      /generated 3 patients × 2 days .*Patient 3, CareTeam 3, NutritionOrder 3, Observation \d+/,
    );
    assert.equal((await lines(dir, "Patient")).length, 3);
    assert.equal(await main(["generate", "--patients", "0", "--days", "2", "--seed", "s", "--out", dir]), 2);
    assert.equal(await main(["generate", "--patients", "3", "--days", "2", "--out", dir]), 2);
    assert.equal(await main(["generate", "--patients", "3", "--days", "2", "--seed", "s"]), 2);
    assert.equal(
      await main(["generate", "--patients", "3", "--days", "2", "--seed", "s", "--out", dir, "--bogus"]),
      2,
    );
    assert.equal(
      await main([
        "generate",
        "--patients",
        "3",
        "--days",
        "2",
        "--seed",
        "s",
        "--out",
        dir,
        "--start",
        "2025-13-01",
      ]),
      2,
    );
  } finally {
    console.log = log;
    console.error = error;
  }
});
