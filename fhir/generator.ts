/**
 * Synthetic Food Coach data as FHIR R4 NDJSON (one file per resource type, `OUT/<Type>.ndjson`):
 * clinics, dietitians with their PractitionerRole, patients with names, birth dates, addresses and
 * identifiers, one CareTeam per patient linking them to a dietitian over a period (some change
 * dietitian), one NutritionOrder (energy target) per patient, 3–6 food-log Observations per day of real
 * foods with plausible nutrients and local timestamps, and roughly weekly body weights with a trend.
 * A small fraction of food entries later gets a second version with status `entered-in-error`, some
 * are re-uploaded (same app entry identifier, new server id) and some lines are delivered twice (the
 * same bytes), so dedupe can be tested. `OUT/identifiers.txt` lists every identifying string of the
 * patients (names, identifier values, address lines, birth dates, phone numbers, e-mails) for leak scans.
 *
 * Deterministic: the same options give byte-identical files. Streaming: only one patient's data is in
 * memory at a time; output goes through buffered writes.
 *
 * @module
 */

import type {
  CareTeam,
  CodeableConcept,
  NutritionOrder,
  Observation,
  Organization,
  Patient,
  Practitioner,
  PractitionerRole,
} from "@medplum/fhirtypes";
import { join } from "node:path";
import { GeneratorOptionsError } from "./errors.ts";
import { type Food, FOODS } from "./foods.ts";
import { Prng } from "./prng.ts";
import {
  DIET_LOG,
  DIET_PLAN_TYPES,
  IDENTIFIER_SYSTEMS,
  LOINC,
  MEAL_TYPES,
  type MealType,
  NUTRIENT_ENERGY,
  OBSERVATION_CATEGORY,
  PROFILES,
  SNOMED_DIETITIAN,
  SYSTEMS,
  UCUM,
} from "./profile.ts";

/** Options of generate(). */
export interface GenerateOptions {
  /** Number of patients (≥ 1). */
  patients: number;
  /** Days of food log per patient (≥ 1). */
  days: number;
  /** Seed: the same seed and options give identical output. */
  seed: string | number;
  /** Output directory (created if missing; existing output files are overwritten). */
  outDir: string;
  /** First logged day, YYYY-MM-DD (default 2025-01-06). */
  startDate?: string;
  /** Patients per dietitian (default 25). */
  patientsPerDietitian?: number;
  /** Fraction of food entries later marked entered-in-error (default 0.01). */
  enteredInErrorRate?: number;
  /** Fraction of food entries uploaded twice: same identifier and content, new server id (default 0.01). */
  reuploadRate?: number;
  /** Fraction of food entry lines delivered twice with identical bytes (default 0.005). */
  redeliveryRate?: number;
  /** Called after each patient. */
  onProgress?: (progress: GenerateProgress) => void;
}

/** Progress of a run. */
export interface GenerateProgress {
  patientsDone: number;
  patients: number;
  bytes: number;
}

/** What a run wrote. */
export interface GenerateSummary {
  /** NDJSON lines per resource type (including second versions and duplicate lines). */
  lines: Record<string, number>;
  /** Food-log entries as the app logged them (before versions and duplicates). */
  foodEntries: number;
  /** Body weight Observations. */
  bodyWeights: number;
  /** Food entries with a second, entered-in-error version. */
  enteredInError: number;
  /** Food entries re-uploaded under a new server id. */
  reuploads: number;
  /** Food entry lines written twice with identical bytes. */
  redelivered: number;
  /** Patients that changed dietitian during the period. */
  dietitianChanges: number;
  /** Lines written to identifiers.txt. */
  identifiers: number;
  /** Bytes written (NDJSON and identifiers.txt). */
  bytes: number;
  /** Wall-clock seconds. */
  seconds: number;
  /** Files written, relative to outDir. */
  files: string[];
}

/** The resource types generate() writes, in file order. */
export const GENERATED_RESOURCE_TYPES = [
  "Organization",
  "Practitioner",
  "PractitionerRole",
  "Patient",
  "CareTeam",
  "NutritionOrder",
  "Observation",
] as const;

/** Name of the identifier list in the output directory. */
export const IDENTIFIERS_FILE = "identifiers.txt";

// ---------------------------------------------------------------------------------------------------------
// Buffered line writer

const BUFFER_BYTES = 1 << 20;

/** Writes lines to a file through a 1 MiB buffer. */
class LineWriter {
  #file: Deno.FsFile;
  #buf = new Uint8Array(BUFFER_BYTES);
  #used = 0;
  #enc = new TextEncoder();
  lines = 0;
  bytes = 0;

  constructor(path: string) {
    this.#file = Deno.openSync(path, { write: true, create: true, truncate: true });
  }

  writeLine(line: string): void {
    this.lines++;
    let rest = line + "\n";
    for (;;) {
      const { read, written } = this.#enc.encodeInto(rest, this.#buf.subarray(this.#used));
      this.#used += written;
      this.bytes += written;
      if (read === rest.length) return;
      rest = rest.slice(read);
      this.#flush();
    }
  }

  #flush(): void {
    let off = 0;
    while (off < this.#used) off += this.#file.writeSync(this.#buf.subarray(off, this.#used));
    this.#used = 0;
  }

  close(): void {
    this.#flush();
    this.#file.close();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Reference data (fictional people; real cities)

const FEMALE_GIVEN = [
  "Amelia",
  "Beatrice",
  "Camila",
  "Daniela",
  "Eleanor",
  "Fatima",
  "Gabriela",
  "Hannah",
  "Isabel",
  "Johanna",
  "Katarina",
  "Leila",
  "Margot",
  "Nadia",
  "Olivia",
  "Priya",
  "Rosalind",
  "Sofia",
  "Theresa",
  "Valentina",
  "Wilhelmina",
  "Yasmin",
];
const MALE_GIVEN = [
  "Alejandro",
  "Benedict",
  "Cedric",
  "Dmitri",
  "Emmanuel",
  "Frederik",
  "Gustavo",
  "Harold",
  "Ibrahim",
  "Joaquin",
  "Kenneth",
  "Leopold",
  "Matthias",
  "Nikolai",
  "Oswald",
  "Patrick",
  "Raphael",
  "Sebastian",
  "Tobias",
  "Vincent",
  "Winston",
  "Xavier",
];
const FAMILY = [
  "Abernathy",
  "Bergstrom",
  "Castellano",
  "Delacroix",
  "Eriksson",
  "Fitzgerald",
  "Gallagher",
  "Hoffmann",
  "Ivanova",
  "Jablonski",
  "Kowalczyk",
  "Lindqvist",
  "Marchetti",
  "Nakamura",
  "Okonkwo",
  "Petrovic",
  "Quintero",
  "Rasmussen",
  "Schneider",
  "Takahashi",
  "Underwood",
  "Vasquez",
  "Whitfield",
  "Yamamoto",
  "Zielinski",
  "Brennan",
  "Carvalho",
  "Donnelly",
  "Esposito",
  "Fairbanks",
  "Grimaldi",
  "Hartmann",
  "Iglesias",
  "Kaminski",
  "Lundgren",
  "Moreau",
  "Novak",
  "Oyelaran",
  "Pellegrini",
  "Rutherford",
];
/** Dietitians' names come from separate lists so that they never match a patient's. */
const DIETITIAN_GIVEN = [
  "Agnes",
  "Bernard",
  "Clarissa",
  "Desmond",
  "Evelyn",
  "Florian",
  "Georgina",
  "Horatio",
  "Imogen",
  "Jasper",
];
const DIETITIAN_FAMILY = [
  "Ashworth",
  "Blackwood",
  "Cranfield",
  "Dunmore",
  "Ellsworth",
  "Featherstone",
  "Goodfellow",
  "Holloway",
  "Ingleby",
  "Kingsley",
  "Lockhart",
  "Merriweather",
];
const STREETS = [
  "Maple",
  "Oak",
  "Cedar",
  "Birch",
  "Willow",
  "Elm",
  "Hickory",
  "Juniper",
  "Magnolia",
  "Sycamore",
  "Hawthorn",
  "Linden",
  "Aspen",
  "Poplar",
  "Alder",
  "Spruce",
];
const STREET_TYPES = ["Street", "Avenue", "Road", "Lane", "Drive", "Court", "Boulevard", "Way"];
/** City, state, ZIP, UTC offset in minutes (standard time). */
const CITIES: readonly [string, string, string, number][] = [
  ["Springfield", "IL", "62701", -360],
  ["Portland", "OR", "97201", -480],
  ["Columbus", "OH", "43215", -300],
  ["Madison", "WI", "53703", -360],
  ["Austin", "TX", "78701", -360],
  ["Denver", "CO", "80202", -420],
  ["Raleigh", "NC", "27601", -300],
  ["Sacramento", "CA", "95814", -480],
  ["Albany", "NY", "12207", -300],
  ["Boise", "ID", "83702", -420],
];
const AREA_CODES = ["217", "503", "614", "608", "512", "303", "919", "916", "518", "208"];
const CLINICS = [
  "Riverside Nutrition Clinic",
  "Lakeside Dietetics Center",
  "Hillcrest Wellness Nutrition",
  "Harbor View Diet Clinic",
  "Meadowbrook Nutrition Services",
  "Summit Dietitian Practice",
];

/** Local time windows of meals, minutes after midnight [from, to). */
const MEAL_WINDOWS: Record<MealType, [number, number]> = {
  breakfast: [6 * 60 + 30, 9 * 60 + 30],
  lunch: [11 * 60 + 30, 14 * 60],
  dinner: [17 * 60 + 30, 20 * 60 + 30],
  snack: [15 * 60, 16 * 60 + 30],
};
const SNACK_WINDOWS: [number, number][] = [
  [10 * 60, 10 * 60 + 45],
  [15 * 60, 16 * 60 + 30],
  [21 * 60, 22 * 60],
];
/** Share of the day's energy by meal (snack: each snack). */
const MEAL_WEIGHT: Record<MealType, number> = { breakfast: 25, lunch: 35, dinner: 40, snack: 10 };
/** Servings of a drink. */
const DRINK_SERVINGS = [1, 1, 1, 1, 1.5, 2];
/** At most this many kcal in one logged item. */
const MAX_ITEM_KCAL = 1200;
const FOODS_BY_MEAL: Record<MealType, readonly Food[]> = {
  breakfast: FOODS.filter((f) => f.meals.includes("breakfast")),
  lunch: FOODS.filter((f) => f.meals.includes("lunch")),
  dinner: FOODS.filter((f) => f.meals.includes("dinner")),
  snack: FOODS.filter((f) => f.meals.includes("snack")),
};
/** The first item of a main meal is a dish, not a drink or a garnish. */
const DISHES_BY_MEAL: Record<MealType, readonly Food[]> = {
  breakfast: FOODS_BY_MEAL.breakfast.filter((f) => f.unit === "g" && f.kcal >= 60),
  lunch: FOODS_BY_MEAL.lunch.filter((f) => f.unit === "g" && f.kcal >= 150),
  dinner: FOODS_BY_MEAL.dinner.filter((f) => f.unit === "g" && f.kcal >= 150),
  snack: FOODS_BY_MEAL.snack,
};

// ---------------------------------------------------------------------------------------------------------
// Formatting

const DAY_MS = 86_400_000;

function offsetString(min: number): string {
  const sign = min < 0 ? "-" : "+";
  const a = Math.abs(min);
  return `${sign}${String(Math.floor(a / 60)).padStart(2, "0")}:${String(a % 60).padStart(2, "0")}`;
}

/** dateTime in the patient's local time with offset, seconds precision. */
function localDateTime(utcMs: number, offsetMin: number): string {
  return new Date(utcMs + offsetMin * 60_000).toISOString().slice(0, 19) + offsetString(offsetMin);
}

/** instant in UTC with milliseconds. */
function instant(utcMs: number): string {
  return new Date(utcMs).toISOString();
}

function dateOnly(utcMs: number): string {
  return new Date(utcMs).toISOString().slice(0, 10);
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

function coding(system: string, code: string, display?: string): CodeableConcept {
  return { coding: [display ? { system, code, display } : { system, code }] };
}

// ---------------------------------------------------------------------------------------------------------
// The run

interface Dietitian {
  practitionerId: string;
  roleId: string;
  organizationId: string;
}

interface Context {
  opts: Required<Omit<GenerateOptions, "onProgress">>;
  startMs: number;
  out: Record<(typeof GENERATED_RESOURCE_TYPES)[number], LineWriter>;
  ids: LineWriter;
  listed: Set<string>;
  dietitians: Dietitian[];
  /** Offset of the affine map index → user number (unique below 10^8 patients). */
  userNumberOffset: number;
  summary: GenerateSummary;
}

function checkOptions(o: GenerateOptions): Context["opts"] {
  const int = (v: number, name: string, min: number, max: number): number => {
    if (!Number.isInteger(v) || v < min || v > max) {
      throw new GeneratorOptionsError(`${name} must be an integer from ${min} to ${max}`);
    }
    return v;
  };
  const rate = (v: number | undefined, name: string, dflt: number): number => {
    const x = v ?? dflt;
    if (!(x >= 0 && x <= 1)) throw new GeneratorOptionsError(`${name} must be between 0 and 1`);
    return x;
  };
  const startDate = o.startDate ?? "2025-01-06";
  if (!/^\d{4}-\d{2}-\d{2}$/.test(startDate) || !Number.isFinite(Date.parse(startDate))) {
    throw new GeneratorOptionsError("startDate must be a date YYYY-MM-DD");
  }
  if (typeof o.outDir !== "string" || o.outDir === "") throw new GeneratorOptionsError("outDir is required");
  return {
    patients: int(o.patients, "patients", 1, 100_000_000),
    days: int(o.days, "days", 1, 36_500),
    seed: o.seed,
    outDir: o.outDir,
    startDate,
    patientsPerDietitian: int(o.patientsPerDietitian ?? 25, "patientsPerDietitian", 1, 1_000_000),
    enteredInErrorRate: rate(o.enteredInErrorRate, "enteredInErrorRate", 0.01),
    reuploadRate: rate(o.reuploadRate, "reuploadRate", 0.01),
    redeliveryRate: rate(o.redeliveryRate, "redeliveryRate", 0.005),
  };
}

/**
 * Generates the data set into `outDir`. Throws GeneratorOptionsError for bad options and Deno file
 * errors for I/O problems.
 */
export async function generate(options: GenerateOptions): Promise<GenerateSummary> {
  const opts = checkOptions(options);
  const t0 = performance.now();
  await Deno.mkdir(opts.outDir, { recursive: true });
  const files = [...GENERATED_RESOURCE_TYPES.map((t) => `${t}.ndjson`), IDENTIFIERS_FILE];
  const out = Object.fromEntries(
    GENERATED_RESOURCE_TYPES.map((t) => [t, new LineWriter(join(opts.outDir, `${t}.ndjson`))]),
  ) as Context["out"];
  const ctx: Context = {
    opts,
    startMs: Date.parse(`${opts.startDate}T00:00:00Z`),
    out,
    ids: new LineWriter(join(opts.outDir, IDENTIFIERS_FILE)),
    listed: new Set(),
    dietitians: [],
    userNumberOffset: new Prng(opts.seed, 2).uint32() % 100_000_000,
    summary: {
      lines: {},
      foodEntries: 0,
      bodyWeights: 0,
      enteredInError: 0,
      reuploads: 0,
      redelivered: 0,
      dietitianChanges: 0,
      identifiers: 0,
      bytes: 0,
      seconds: 0,
      files,
    },
  };
  try {
    writeStaff(ctx);
    for (let i = 0; i < opts.patients; i++) {
      writePatient(ctx, i);
      if (options.onProgress && (i % 16 === 15 || i === opts.patients - 1)) {
        options.onProgress({ patientsDone: i + 1, patients: opts.patients, bytes: totalBytes(ctx) });
        await Promise.resolve();
      }
    }
  } finally {
    for (const w of Object.values(out)) w.close();
    ctx.ids.close();
  }
  for (const t of GENERATED_RESOURCE_TYPES) ctx.summary.lines[t] = out[t].lines;
  ctx.summary.identifiers = ctx.ids.lines;
  ctx.summary.bytes = totalBytes(ctx);
  ctx.summary.seconds = (performance.now() - t0) / 1000;
  return ctx.summary;
}

function totalBytes(ctx: Context): number {
  return Object.values(ctx.out).reduce((s, w) => s + w.bytes, 0) + ctx.ids.bytes;
}

function write(ctx: Context, type: (typeof GENERATED_RESOURCE_TYPES)[number], resource: object): string {
  const line = JSON.stringify(resource);
  ctx.out[type].writeLine(line);
  return line;
}

function listIdentifying(ctx: Context, value: string, fromSmallList: boolean): void {
  if (fromSmallList) {
    if (ctx.listed.has(value)) return;
    ctx.listed.add(value);
  }
  ctx.ids.writeLine(value);
}

function meta(versionId: string, lastUpdatedMs: number, profile: string[]) {
  return { versionId, lastUpdated: instant(lastUpdatedMs), profile };
}

/** Clinics, dietitians (Practitioner) and their PractitionerRoles. */
function writeStaff(ctx: Context): void {
  const { opts } = ctx;
  const rng = new Prng(opts.seed, 0);
  const nDietitians = Math.max(1, Math.ceil(opts.patients / opts.patientsPerDietitian));
  const nClinics = Math.max(1, Math.ceil(nDietitians / 4));
  const setupMs = ctx.startMs - 400 * DAY_MS;
  const clinicIds: string[] = [];
  for (let c = 0; c < nClinics; c++) {
    const id = rng.uuid();
    clinicIds.push(id);
    const base = CLINICS[c % CLINICS.length];
    const org: Organization = {
      resourceType: "Organization",
      id,
      meta: meta("1", setupMs + rng.int(0, DAY_MS), [PROFILES.clinic]),
      identifier: [{ system: IDENTIFIER_SYSTEMS.organization, value: `C-${String(c + 1).padStart(3, "0")}` }],
      active: true,
      name: c < CLINICS.length ? base : `${base} ${Math.floor(c / CLINICS.length) + 1}`,
    };
    write(ctx, "Organization", org);
  }
  for (let d = 0; d < nDietitians; d++) {
    const practitionerId = rng.uuid();
    const roleId = rng.uuid();
    const organizationId = clinicIds[d % nClinics];
    const since = setupMs + rng.int(0, 300) * DAY_MS;
    const family = rng.pick(DIETITIAN_FAMILY);
    const given = rng.pick(DIETITIAN_GIVEN);
    const practitioner: Practitioner = {
      resourceType: "Practitioner",
      id: practitionerId,
      meta: meta("1", since + rng.int(0, DAY_MS), [PROFILES.dietitian]),
      identifier: [{ system: IDENTIFIER_SYSTEMS.practitioner, value: `D-${String(d + 1).padStart(4, "0")}` }],
      active: true,
      name: [{ use: "official", family, given: [given], suffix: ["RD"] }],
      qualification: [{ code: { text: "Registered Dietitian" } }],
    };
    write(ctx, "Practitioner", practitioner);
    const role: PractitionerRole = {
      resourceType: "PractitionerRole",
      id: roleId,
      meta: meta("1", since + rng.int(DAY_MS, 2 * DAY_MS), [PROFILES.dietitianRole]),
      active: true,
      period: { start: dateOnly(since) },
      practitioner: { reference: `Practitioner/${practitionerId}` },
      organization: { reference: `Organization/${organizationId}` },
      code: [coding(SYSTEMS.snomed, SNOMED_DIETITIAN.code, SNOMED_DIETITIAN.display)],
    };
    write(ctx, "PractitionerRole", role);
    ctx.dietitians.push({ practitionerId, roleId, organizationId });
  }
}

/** One patient and everything about them. */
function writePatient(ctx: Context, index: number): void {
  const { opts } = ctx;
  const rng = new Prng(opts.seed, 1, index);
  const female = rng.chance(0.55);
  const gender = female ? "female" : "male";
  const given = [rng.pick(female ? FEMALE_GIVEN : MALE_GIVEN)];
  if (rng.chance(0.3)) {
    const second = rng.pick(female ? FEMALE_GIVEN : MALE_GIVEN);
    if (second !== given[0]) given.push(second);
  }
  const family = rng.pick(FAMILY);
  const birthMs = Date.parse("1940-01-01T00:00:00Z") + rng.int(0, 65 * 365) * DAY_MS;
  const birthDate = dateOnly(birthMs);
  const cityIdx = rng.int(0, CITIES.length - 1);
  const [city, state, zip, offsetMin] = CITIES[cityIdx];
  const line = `${rng.int(10, 9899)} ${rng.pick(STREETS)} ${rng.pick(STREET_TYPES)}`;
  const phone = `+1 ${AREA_CODES[cityIdx]} 555 01${String(rng.int(0, 99)).padStart(2, "0")}`;
  const email = `${given[0]}.${family}${rng.int(1, 99)}@example.com`.toLowerCase();
  const userNumber = `FC-${String((index * 7919 + ctx.userNumberOffset) % 100_000_000).padStart(8, "0")}`;
  const patientId = rng.uuid();
  const enrolledMs = ctx.startMs - rng.int(0, 120) * DAY_MS; // UTC midnight of the enrollment date
  const dietitianIdx = rng.int(0, ctx.dietitians.length - 1);
  const dietitian = ctx.dietitians[dietitianIdx];

  const patient: Patient = {
    resourceType: "Patient",
    id: patientId,
    meta: meta("1", enrolledMs + rng.int(8 * 3600_000, 18 * 3600_000), [PROFILES.patient]),
    identifier: [{ use: "usual", system: IDENTIFIER_SYSTEMS.patient, value: userNumber }],
    active: true,
    name: [{ use: "official", family, given }],
    telecom: [{ system: "phone", value: phone, use: "mobile" }, { system: "email", value: email }],
    gender,
    birthDate,
    address: [{ use: "home", line: [line], city, state, postalCode: zip, country: "US" }],
    managingOrganization: { reference: `Organization/${dietitian.organizationId}` },
  };
  write(ctx, "Patient", patient);
  listIdentifying(ctx, userNumber, false);
  for (const g of given) listIdentifying(ctx, g, true);
  listIdentifying(ctx, family, true);
  listIdentifying(ctx, `${given.join(" ")} ${family}`, false);
  listIdentifying(ctx, line, false);
  listIdentifying(ctx, birthDate, false);
  listIdentifying(ctx, phone, false);
  listIdentifying(ctx, email, false);

  // Care team: the dietitian from enrollment; some patients change dietitian during the period.
  const enrolled = dateOnly(enrolledMs);
  const dietitianRole = {
    coding: [{ system: SYSTEMS.snomed, code: SNOMED_DIETITIAN.code, display: SNOMED_DIETITIAN.display }],
  };
  const participant: NonNullable<CareTeam["participant"]> = [{
    role: [dietitianRole],
    member: { reference: `PractitionerRole/${dietitian.roleId}` },
    period: { start: enrolled },
  }];
  if (ctx.dietitians.length > 1 && opts.days >= 14 && rng.chance(0.05)) {
    const changeMs = ctx.startMs + rng.int(7, opts.days - 1) * DAY_MS;
    const other =
      ctx.dietitians[(dietitianIdx + rng.int(1, ctx.dietitians.length - 1)) % ctx.dietitians.length];
    participant[0].period!.end = dateOnly(changeMs);
    participant.push({
      role: [dietitianRole],
      member: { reference: `PractitionerRole/${other.roleId}` },
      period: { start: dateOnly(changeMs) },
    });
    ctx.summary.dietitianChanges++;
  }
  const careTeam: CareTeam = {
    resourceType: "CareTeam",
    id: rng.uuid(),
    meta: meta(participant.length > 1 ? "2" : "1", enrolledMs + 20 * 3600_000, [PROFILES.careTeam]),
    status: "active",
    name: "Dietitian care team",
    subject: { reference: `Patient/${patientId}` },
    period: { start: enrolled },
    participant,
    managingOrganization: [{ reference: `Organization/${dietitian.organizationId}` }],
  };
  if (participant.length > 1) {
    careTeam.meta!.lastUpdated = instant(Date.parse(participant[1].period!.start!) + 9 * 3600_000);
  }
  write(ctx, "CareTeam", careTeam);

  // Diet plan: an energy target from sex, a starting weight and the plan type.
  const startWeight = Math.min(160, Math.max(45, rng.normal(female ? 74 : 88, female ? 13 : 15)));
  const plan = rng.pick(DIET_PLAN_TYPES);
  const base = (female ? 1700 : 2200) + (startWeight - (female ? 70 : 85)) * 10;
  const target = Math.min(
    3600,
    Math.max(1200, Math.round((base - (plan.code === "energy-restricted" ? 400 : 0)) / 100) * 100),
  );
  const orderId = rng.uuid();
  const orderedMs = enrolledMs + rng.int(9 * 60, 17 * 60) * 60_000 - offsetMin * 60_000;
  const order: NutritionOrder = {
    resourceType: "NutritionOrder",
    id: orderId,
    meta: meta("1", orderedMs + rng.int(1000, 60_000), [PROFILES.dietPlan]),
    identifier: [{ system: IDENTIFIER_SYSTEMS.dietPlan, value: `DP-${String(index + 1).padStart(8, "0")}` }],
    status: "active",
    intent: "order",
    patient: { reference: `Patient/${patientId}` },
    dateTime: localDateTime(orderedMs, offsetMin),
    orderer: { reference: `PractitionerRole/${dietitian.roleId}` },
    oralDiet: {
      type: [{ ...coding(SYSTEMS.dietPlan, plan.code, plan.display), text: plan.display }],
      schedule: [{ repeat: { boundsPeriod: { start: enrolled }, frequency: 1, period: 1, periodUnit: "d" } }],
      nutrient: [{
        modifier: {
          ...coding(SYSTEMS.nutrient, NUTRIENT_ENERGY.code, NUTRIENT_ENERGY.display),
          text: "Energy",
        },
        amount: { value: target, unit: UCUM.kcal, system: SYSTEMS.ucum, code: UCUM.kcal },
      }],
      instruction: `About ${target} kcal per day.`,
    },
  };
  write(ctx, "NutritionOrder", order);

  // Daily food log and weekly-ish weights.
  // How closely the patient eats to plan (logged intake is usually a little below target).
  const adherence = Math.min(1.3, Math.max(0.7, rng.normal(0.95, 0.1)));
  const trendPerDay = plan.code === "energy-restricted" ? rng.range(-0.12, -0.02) : rng.range(-0.05, 0.03);
  const pending: { dueMs: number; line: string }[] = [];
  let nextWeighDay = 0;
  for (let day = 0; day < opts.days; day++) {
    const midnightUtc = ctx.startMs + day * DAY_MS - offsetMin * 60_000; // local midnight
    if (day === nextWeighDay) {
      writeBodyWeight(ctx, rng, patientId, midnightUtc, offsetMin, startWeight + trendPerDay * day);
      nextWeighDay = day + rng.int(6, 8);
    }
    writeFoodDay(ctx, rng, {
      patientId,
      orderId,
      offsetMin,
      dailyKcal: target * adherence,
      midnightUtc,
      pending,
    });
    // Later versions become due after their time has passed (keeps NDJSON roughly in time order).
    flushPending(ctx, pending, midnightUtc + DAY_MS);
  }
  flushPending(ctx, pending, Infinity);
}

function flushPending(ctx: Context, pending: { dueMs: number; line: string }[], beforeMs: number): void {
  if (pending.length === 0) return;
  pending.sort((a, b) => a.dueMs - b.dueMs);
  let n = 0;
  while (n < pending.length && pending[n].dueMs < beforeMs) ctx.out.Observation.writeLine(pending[n++].line);
  pending.splice(0, n);
}

function writeBodyWeight(
  ctx: Context,
  rng: Prng,
  patientId: string,
  midnightUtc: number,
  offsetMin: number,
  trendKg: number,
): void {
  const atMs = midnightUtc + rng.int(6 * 60 + 15, 8 * 60 + 45) * 60_000 + rng.int(0, 59) * 1000;
  const issuedMs = atMs + rng.int(5, 600) * 1000;
  const kg = round1(Math.min(200, Math.max(40, trendKg + rng.normal(0, 0.4))));
  const obs: Observation = {
    resourceType: "Observation",
    id: rng.uuid(),
    meta: meta("1", issuedMs + rng.int(150, 3000), [PROFILES.bodyWeight, PROFILES.coreBodyWeight]),
    identifier: [{ system: IDENTIFIER_SYSTEMS.logEntry, value: rng.uuid() }],
    status: "final",
    category: [
      coding(
        SYSTEMS.observationCategory,
        OBSERVATION_CATEGORY.vitalSigns.code,
        OBSERVATION_CATEGORY.vitalSigns.display,
      ),
    ],
    code: { ...coding(SYSTEMS.loinc, LOINC.bodyWeight.code, LOINC.bodyWeight.display), text: "Body weight" },
    subject: { reference: `Patient/${patientId}` },
    effectiveDateTime: localDateTime(atMs, offsetMin),
    issued: instant(issuedMs),
    performer: [{ reference: `Patient/${patientId}` }],
    valueQuantity: { value: kg, unit: UCUM.kilogram, system: SYSTEMS.ucum, code: UCUM.kilogram },
  };
  write(ctx, "Observation", obs);
  ctx.summary.bodyWeights++;
}

interface DayContext {
  patientId: string;
  orderId: string;
  offsetMin: number;
  /** The patient's usual daily intake, kcal. */
  dailyKcal: number;
  midnightUtc: number;
  pending: { dueMs: number; line: string }[];
}

function writeFoodDay(ctx: Context, rng: Prng, d: DayContext): void {
  // 3–6 entries: one per main meal, the rest spread over meals and snacks.
  const n = rng.int(3, 6);
  const meals: MealType[] = ["breakfast", "lunch", "dinner"];
  for (let i = 3; i < n; i++) {
    meals.push(rng.pick(["breakfast", "lunch", "dinner", "snack", "snack"] as const));
  }
  const mealStart = new Map<string, number>();
  const entries: { meal: MealType; atMin: number; dish: boolean }[] = [];
  let snackSlot = rng.int(0, SNACK_WINDOWS.length - 1);
  for (const meal of meals) {
    let at: number;
    const dish = meal !== "snack" && !mealStart.has(meal);
    if (meal === "snack") {
      const [a, b] = SNACK_WINDOWS[snackSlot++ % SNACK_WINDOWS.length];
      at = rng.int(a, b);
    } else if (mealStart.has(meal)) at = mealStart.get(meal)! + rng.int(0, 12);
    else {
      const [a, b] = MEAL_WINDOWS[meal];
      at = rng.int(a, b);
      mealStart.set(meal, at);
    }
    entries.push({ meal, atMin: at, dish });
  }
  entries.sort((a, b) => a.atMin - b.atMin);
  // Portions follow the day's energy: meal shares of it, the dish of a meal most of the meal's share.
  const budget = d.dailyKcal * Math.min(1.5, Math.max(0.6, rng.normal(1, 0.15)));
  const weightSum = meals.reduce((s, m) => s + (m === "snack" ? MEAL_WEIGHT.snack : 0), 0) +
    MEAL_WEIGHT.breakfast + MEAL_WEIGHT.lunch + MEAL_WEIGHT.dinner;
  const itemsIn = (meal: MealType) => meals.filter((m) => m === meal).length;
  for (const e of entries) {
    const food = rng.pick((e.dish ? DISHES_BY_MEAL : FOODS_BY_MEAL)[e.meal]);
    const k = e.meal === "snack" ? 1 : itemsIn(e.meal);
    const share = k === 1 ? 1 : e.dish ? 0.7 : 0.3 / (k - 1);
    const want = (budget * MEAL_WEIGHT[e.meal]) / weightSum * share;
    const servings = food.unit === "mL"
      ? rng.pick(DRINK_SERVINGS)
      : Math.min(3, MAX_ITEM_KCAL / food.kcal, Math.max(0.5, Math.round((want / food.kcal) * 4) / 4));
    writeFoodEntry(
      ctx,
      rng,
      d,
      e.meal,
      food,
      servings,
      d.midnightUtc + e.atMin * 60_000 + rng.int(0, 59) * 1000,
    );
  }
}

function writeFoodEntry(
  ctx: Context,
  rng: Prng,
  d: DayContext,
  meal: MealType,
  food: Food,
  servings: number,
  eatenMs: number,
): void {
  const { opts } = ctx;
  const mult = Math.floor(servings * 4) / 4;
  const kcal = Math.round(food.kcal * mult);
  const portion = Math.round(food.serving * mult);
  const issuedMs = eatenMs + rng.int(1, 180) * 60_000 + rng.int(0, 59_999);
  const lastUpdatedMs = issuedMs + rng.int(120, 2500);
  const entryId = rng.uuid();
  const q = (value: number, code: string) => ({ value, unit: code, system: SYSTEMS.ucum, code });
  const obs: Observation = {
    resourceType: "Observation",
    id: rng.uuid(),
    meta: meta("1", lastUpdatedMs, [PROFILES.foodLogEntry]),
    identifier: [{ system: IDENTIFIER_SYSTEMS.logEntry, value: entryId }],
    basedOn: [{ reference: `NutritionOrder/${d.orderId}` }],
    status: "final",
    category: [
      coding(
        SYSTEMS.observationCategory,
        OBSERVATION_CATEGORY.survey.code,
        OBSERVATION_CATEGORY.survey.display,
      ),
      coding(SYSTEMS.dietLog, DIET_LOG.foodLog.code, DIET_LOG.foodLog.display),
    ],
    code: coding(SYSTEMS.loinc, LOINC.energyIntake.code, LOINC.energyIntake.display),
    subject: { reference: `Patient/${d.patientId}` },
    effectiveDateTime: localDateTime(eatenMs, d.offsetMin),
    issued: instant(issuedMs),
    performer: [{ reference: `Patient/${d.patientId}` }],
    valueQuantity: q(kcal, UCUM.kcal),
    method: coding(SYSTEMS.dietLog, DIET_LOG.calculated.code, DIET_LOG.calculated.display),
    component: [
      {
        code: coding(SYSTEMS.dietLog, DIET_LOG.foodItem.code, DIET_LOG.foodItem.display),
        valueCodeableConcept: {
          coding: [{ system: SYSTEMS.food, code: food.code, display: food.name }],
          text: food.name,
        },
      },
      {
        code: coding(SYSTEMS.dietLog, DIET_LOG.portion.code, DIET_LOG.portion.display),
        valueQuantity: q(portion, food.unit),
      },
      {
        code: coding(SYSTEMS.dietLog, DIET_LOG.meal.code, DIET_LOG.meal.display),
        valueCodeableConcept: coding(SYSTEMS.meal, meal, MEAL_TYPES.find((m) => m.code === meal)!.display),
      },
      {
        code: coding(SYSTEMS.loinc, LOINC.proteinIntake.code, LOINC.proteinIntake.display),
        valueQuantity: q(round1(food.protein * mult), UCUM.gram),
      },
      {
        code: coding(SYSTEMS.loinc, LOINC.carbohydrateIntake.code, LOINC.carbohydrateIntake.display),
        valueQuantity: q(round1(food.carbohydrate * mult), UCUM.gram),
      },
      {
        code: coding(SYSTEMS.loinc, LOINC.fatIntake.code, LOINC.fatIntake.display),
        valueQuantity: q(round1(food.fat * mult), UCUM.gram),
      },
    ],
  };
  const line = write(ctx, "Observation", obs);
  ctx.summary.foodEntries++;

  if (rng.chance(opts.redeliveryRate)) {
    ctx.out.Observation.writeLine(line); // the same bytes again (at-least-once delivery)
    ctx.summary.redelivered++;
  }
  if (rng.chance(opts.reuploadRate)) {
    // The app sent the entry again without conditional create: new server id, same app identifier.
    const againMs = lastUpdatedMs + rng.int(30, 6 * 3600) * 1000;
    const copy: Observation = { ...obs, id: rng.uuid(), meta: meta("1", againMs, [PROFILES.foodLogEntry]) };
    d.pending.push({ dueMs: againMs, line: JSON.stringify(copy) });
    ctx.summary.reuploads++;
  }
  if (rng.chance(opts.enteredInErrorRate)) {
    // The user deleted the entry later: version 2 of the same resource.
    const deletedMs = lastUpdatedMs + rng.int(10 * 60, 72 * 3600) * 1000;
    const v2: Observation = {
      ...obs,
      meta: meta("2", deletedMs, [PROFILES.foodLogEntry]),
      status: "entered-in-error",
    };
    d.pending.push({ dueMs: deletedMs, line: JSON.stringify(v2) });
    ctx.summary.enteredInError++;
  }
}
