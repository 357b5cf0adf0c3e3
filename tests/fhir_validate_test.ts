/**
 * fhir/validate.ts: accepts every generated Food Coach resource and rejects each kind of bad input with
 * the right issue code and element path.
 */

import assert from "node:assert/strict";
import { generatedResources } from "./fixtures/generated.ts";
import {
  httpStatusForIssues,
  type Issue,
  isValid,
  loadValidator,
  operationOutcome,
  validateResource,
} from "../fhir/validate.ts";
import { DEFAULT_ALLOWED_RESOURCE_TYPES, LOINC, SYSTEMS } from "../fhir/profile.ts";

type Obj = Record<string, unknown>;

const loadMs = loadValidator();
const generated = await generatedResources({
  patients: 12,
  days: 10,
  seed: "validate-test",
  enteredInErrorRate: 0.05,
});

function hasCode(r: Obj, code: string): boolean {
  return JSON.stringify(r.code).includes(`"${code}"`);
}
const FIXTURES = {
  patient: generated.Patient[0],
  practitioner: generated.Practitioner[0],
  role: generated.PractitionerRole[0],
  organization: generated.Organization[0],
  careTeam: generated.CareTeam[0],
  order: generated.NutritionOrder[0],
  food: generated.Observation.find((o) => hasCode(o, LOINC.energyIntake.code) && o.status === "final")!,
  weight: generated.Observation.find((o) => hasCode(o, LOINC.bodyWeight.code))!,
};

/** A deep copy of a fixture, changed by `edit`. */
function variant(name: keyof typeof FIXTURES, edit: (r: Obj) => void): Obj {
  const r = structuredClone(FIXTURES[name]);
  edit(r);
  return r;
}

function show(issues: Issue[]): string {
  return issues.map((i) => `  ${i.severity}/${i.code} ${JSON.stringify(i.expression)} ${i.diagnostics}`).join(
    "\n",
  );
}

/** Asserts that an error (or the given severity) with `code` at `expression` is among the issues. */
function expectIssue(
  issues: Issue[],
  code: string,
  expression: string | undefined,
  severity: Issue["severity"] = "error",
): void {
  const ok = issues.some((i) =>
    i.severity === severity && i.code === code &&
    (expression === undefined ? !i.expression : (i.expression ?? []).includes(expression))
  );
  assert.ok(ok, `expected ${severity}/${code} at ${expression}, got:\n${show(issues)}`);
}

function componentIndex(r: Obj, code: string): number {
  return (r.component as Obj[]).findIndex((c) => JSON.stringify(c.code).includes(`"${code}"`));
}

Deno.test("loading the R4 definitions is quick enough", () => {
  console.log(
    `R4 definitions (medplum index + element index + value sets) loaded in ${loadMs.toFixed(0)} ms`,
  );
  assert.ok(loadMs < 20_000);
});

Deno.test("accepts every generated resource without any issue, and measures the rate", () => {
  let n = 0;
  const t0 = performance.now();
  for (const [type, resources] of Object.entries(generated)) {
    assert.ok(resources.length > 0, type);
    for (const r of resources) {
      const issues = validateResource(r, { requireMeta: true });
      assert.deepEqual(issues, [], `${type}/${r.id}:\n${show(issues)}`);
      n++;
    }
  }
  const s = (performance.now() - t0) / 1000;
  console.log(`validated ${n} generated resources in ${s.toFixed(2)} s (${(n / s).toFixed(0)} resources/s)`);
});

Deno.test("rejects input that is not a resource object", () => {
  for (const x of [null, [], "Patient", 42, true]) {
    const issues = validateResource(x);
    expectIssue(issues, "structure", undefined);
    assert.equal(httpStatusForIssues(issues), 400);
  }
});

Deno.test("rejects a missing, non-string or unknown resourceType", () => {
  expectIssue(validateResource({ id: "x" }), "structure", "resourceType");
  expectIssue(validateResource({ resourceType: 7 }), "structure", "resourceType");
  expectIssue(validateResource({ resourceType: "" }), "structure", "resourceType");
  const unknown = validateResource({ resourceType: "FoodEntry" });
  expectIssue(unknown, "structure", "resourceType");
  assert.match(unknown[0].diagnostics, /Unknown resource type "FoodEntry"/);
  // Abstract types and Medplum's own types are not R4 resource types either.
  expectIssue(validateResource({ resourceType: "DomainResource" }), "structure", "resourceType");
  expectIssue(validateResource({ resourceType: "Bot" }), "structure", "resourceType");
});

Deno.test("rejects resource types outside the allow-list with not-supported (HTTP 422); the list is configurable", () => {
  const med = { resourceType: "Medication", id: "m1", status: "active" };
  const issues = validateResource(med);
  assert.equal(issues.length, 1);
  expectIssue(issues, "not-supported", "resourceType");
  assert.match(issues[0].diagnostics, /Medication is not accepted here/);
  assert.equal(httpStatusForIssues(issues), 422);
  assert.deepEqual(validateResource(med, { allowedResourceTypes: ["Medication"] }), []);
  expectIssue(
    validateResource(FIXTURES.patient, { allowedResourceTypes: new Set(["Observation"]) }),
    "not-supported",
    "resourceType",
  );
});

Deno.test("rejects missing required elements of the base specification", () => {
  expectIssue(validateResource(variant("food", (r) => delete r.code)), "structure", "Observation.code");
  expectIssue(validateResource(variant("food", (r) => delete r.status)), "structure", "Observation.status");
  expectIssue(
    validateResource(variant("order", (r) => delete r.intent)),
    "structure",
    "NutritionOrder.intent",
  );
  const noPatient = validateResource(variant("order", (r) => delete r.patient));
  expectIssue(noPatient, "structure", "NutritionOrder.patient");
  assert.equal(httpStatusForIssues(noPatient), 400);
});

Deno.test("rejects missing elements our profiles require", () => {
  const cases: [keyof typeof FIXTURES, (r: Obj) => void, string][] = [
    ["food", (r) => delete r.identifier, "Observation.identifier"],
    ["food", (r) => delete r.subject, "Observation.subject"],
    ["food", (r) => delete r.effectiveDateTime, "Observation.effectiveDateTime"],
    ["food", (r) => delete r.valueQuantity, "Observation.valueQuantity"],
    ["food", (r) => (r.category as Obj[]).splice(1, 1), "Observation.category"],
    ["food", (r) => (r.component as Obj[]).splice(componentIndex(r, "meal"), 1), "Observation.component"],
    [
      "food",
      (r) => (r.component as Obj[]).splice(componentIndex(r, LOINC.fatIntake.code), 1),
      "Observation.component",
    ],
    ["food", (r) => delete (r.valueQuantity as Obj).unit, "Observation.valueQuantity.unit"],
    ["weight", (r) => delete r.category, "Observation.category"],
    ["patient", (r) => delete r.birthDate, "Patient.birthDate"],
    ["patient", (r) => delete r.gender, "Patient.gender"],
    ["patient", (r) => delete r.identifier, "Patient.identifier"],
    ["patient", (r) => delete (r.name as Obj[])[0].family, "Patient.name[0].family"],
    ["practitioner", (r) => delete r.identifier, "Practitioner.identifier"],
    ["role", (r) => delete r.code, "PractitionerRole.code"],
    ["role", (r) => delete r.practitioner, "PractitionerRole.practitioner"],
    ["organization", (r) => delete r.name, "Organization.name"],
    ["careTeam", (r) => delete r.subject, "CareTeam.subject"],
    ["careTeam", (r) => delete r.status, "CareTeam.status"],
    ["careTeam", (r) => delete r.period, "CareTeam.period.start"],
    ["careTeam", (r) => delete (r.participant as Obj[])[0].period, "CareTeam.participant[0].period.start"],
    ["careTeam", (r) => delete (r.participant as Obj[])[0].member, "CareTeam.participant[0].member"],
    ["order", (r) => delete r.oralDiet, "NutritionOrder.oralDiet"],
    ["order", (r) => delete r.orderer, "NutritionOrder.orderer"],
    ["order", (r) => delete (r.oralDiet as Obj).nutrient, "NutritionOrder.oralDiet.nutrient"],
  ];
  for (const [fixture, edit, expression] of cases) {
    const issues = validateResource(variant(fixture, edit));
    expectIssue(issues, "required", expression);
    assert.equal(httpStatusForIssues(issues), 422, `${expression}:\n${show(issues)}`);
  }
});

Deno.test("rejects wrong JSON types and cardinalities with the element path", () => {
  expectIssue(
    validateResource(variant("food", (r) => (r.valueQuantity as Obj).value = "212")),
    "structure",
    "Observation.valueQuantity.value",
  );
  const i = componentIndex(FIXTURES.food, LOINC.proteinIntake.code);
  expectIssue(
    validateResource(variant("food", (r) => ((r.component as Obj[])[i].valueQuantity as Obj).value = true)),
    "structure",
    `Observation.component[${i}].valueQuantity.value`,
  );
  expectIssue(validateResource(variant("patient", (r) => r.active = "true")), "structure", "Patient.active");
  expectIssue(
    validateResource(variant("patient", (r) => r.name = (r.name as Obj[])[0])),
    "structure",
    "Patient.name",
  );
  expectIssue(
    validateResource(variant("patient", (r) => r.gender = ["female"])),
    "structure",
    "Patient.gender",
  );
  expectIssue(
    validateResource(variant("patient", (r) => r.birthDate = "1970-13-45")),
    "structure",
    "Patient.birthDate",
  );
  expectIssue(
    validateResource(variant("patient", (r) => r.favouriteFood = "x")),
    "structure",
    "Patient.favouriteFood",
  );
  expectIssue(
    validateResource(variant("food", (r) => (r.meta as Obj).lastUpdated = "2025-01-01")),
    "structure",
    "Observation.meta.lastUpdated",
  );
});

Deno.test("rejects codes outside required bindings of the base specification", () => {
  expectIssue(
    validateResource(variant("food", (r) => r.status = "bogus")),
    "code-invalid",
    "Observation.status",
  );
  expectIssue(validateResource(variant("patient", (r) => r.gender = "f")), "code-invalid", "Patient.gender");
  expectIssue(
    validateResource(variant("careTeam", (r) => r.status = "open")),
    "code-invalid",
    "CareTeam.status",
  );
  expectIssue(
    validateResource(variant("order", (r) => r.intent = "wish")),
    "code-invalid",
    "NutritionOrder.intent",
  );
  expectIssue(
    validateResource(variant("patient", (r) => (r.telecom as Obj[])[0].system = "pager-ish")),
    "code-invalid",
    "Patient.telecom[0].system",
  );
  expectIssue(
    validateResource(variant("patient", (r) => (r.address as Obj[])[0].use = "holiday")),
    "code-invalid",
    "Patient.address[0].use",
  );
  expectIssue(
    validateResource(
      variant(
        "order",
        (r) => (((r.oralDiet as Obj).schedule as Obj[])[0].repeat as Obj).periodUnit = "fortnight",
      ),
    ),
    "code-invalid",
    "NutritionOrder.oralDiet.schedule[0].repeat.periodUnit",
  );
  // A code valid in the base spec but not in our profile.
  expectIssue(
    validateResource(variant("food", (r) => r.status = "preliminary")),
    "code-invalid",
    "Observation.status",
  );
});

Deno.test("rejects codes outside the bindings of our profiles", () => {
  const meal = componentIndex(FIXTURES.food, "meal");
  const food = componentIndex(FIXTURES.food, "food-item");
  const cases: [keyof typeof FIXTURES, (r: Obj) => void, string][] = [
    [
      "food",
      (r) => (((r.component as Obj[])[meal].valueCodeableConcept as Obj).coding as Obj[])[0].code = "brunch",
      `Observation.component[${meal}].valueCodeableConcept`,
    ],
    [
      "food",
      (r) =>
        (((r.component as Obj[])[food].valueCodeableConcept as Obj).coding as Obj[])[0].code =
          "unicorn-steak",
      `Observation.component[${food}].valueCodeableConcept.coding[0].code`,
    ],
    [
      "food",
      (r) => (r.component as Obj[]).push({ code: { coding: [{ system: SYSTEMS.loinc, code: "2339-0" }] } }),
      `Observation.component[6].code`,
    ],
    ["food", (r) => (r.valueQuantity as Obj).code = "cal", "Observation.valueQuantity.code"],
    [
      "food",
      (r) => (r.valueQuantity as Obj).system = "http://example.org/units",
      "Observation.valueQuantity.system",
    ],
    [
      "weight",
      (r) => Object.assign(r.valueQuantity as Obj, { code: "[lb_av]", unit: "[lb_av]" }),
      "Observation.valueQuantity.code",
    ],
    ["weight", (r) => ((r.code as Obj).coding as Obj[])[0].code = "8867-4", "Observation.code"],
    [
      "order",
      (r) => ((((r.oralDiet as Obj).type as Obj[])[0].coding as Obj[])[0].code = "cabbage-soup"),
      "NutritionOrder.oralDiet.type[0].coding[0].code",
    ],
    [
      "order",
      (r) =>
        ((r.oralDiet as Obj).nutrient as Obj[])[0].amount = {
          value: 1800,
          unit: "kJ",
          system: SYSTEMS.ucum,
          code: "kJ",
        },
      "NutritionOrder.oralDiet.nutrient[0].amount.code",
    ],
  ];
  for (const [fixture, edit, expression] of cases) {
    expectIssue(validateResource(variant(fixture, edit)), "code-invalid", expression);
  }
});

Deno.test("rejects empty strings, arrays, objects and nulls anywhere, with their path", () => {
  const cases: [keyof typeof FIXTURES, (r: Obj) => void, string][] = [
    ["patient", (r) => (r.name as Obj[])[0].family = "", "Patient.name[0].family"],
    ["patient", (r) => ((r.name as Obj[])[0].given as string[])[0] = "", "Patient.name[0].given[0]"],
    ["patient", (r) => (r.address as Obj[])[0].line = [], "Patient.address[0].line"],
    ["patient", (r) => r.meta = {}, "Patient.meta"],
    ["patient", (r) => r.birthDate = "", "Patient.birthDate"],
    ["patient", (r) => r.id = "", "Patient.id"],
    ["patient", (r) => r.telecom = [], "Patient.telecom"],
    ["patient", (r) => r.managingOrganization = null, "Patient.managingOrganization"],
    ["food", (r) => r.valueQuantity = {}, "Observation.valueQuantity"],
    ["food", (r) => (r.identifier as Obj[])[0].value = "   ", "Observation.identifier[0].value"],
    [
      "food",
      (r) => ((r.component as Obj[])[0].valueCodeableConcept as Obj).text = "",
      "Observation.component[0].valueCodeableConcept.text",
    ],
    ["careTeam", (r) => (r.participant as Obj[])[0].role = [], "CareTeam.participant[0].role"],
  ];
  for (const [fixture, edit, expression] of cases) {
    const issues = validateResource(variant(fixture, edit));
    expectIssue(issues, "structure", expression);
    assert.ok(!isValid(issues));
  }
  // Nulls are allowed only to align a primitive array with its `_name` extensions.
  const aligned = variant("patient", (r) => {
    const name = (r.name as Obj[])[0];
    name.given = [(name.given as string[])[0], null];
    name._given = [null, { extension: [{ url: "http://example.org/ext/nickname", valueString: "x" }] }];
  });
  assert.deepEqual(validateResource(aligned), []);
});

Deno.test("rejects ids that are not [A-Za-z0-9-.]{1,64}", () => {
  for (const id of ["has space", "under_score", "slash/id", "x".repeat(65), "ümlaut"]) {
    expectIssue(validateResource(variant("patient", (r) => r.id = id)), "value", "Patient.id");
  }
  for (const id of ["a", "A-1.b", "x".repeat(64)]) {
    assert.deepEqual(validateResource(variant("patient", (r) => r.id = id)), [], id);
  }
  expectIssue(
    validateResource(variant("food", (r) => (r.meta as Obj).versionId = "v 2")),
    "structure",
    "Observation.meta.versionId",
  );
  expectIssue(
    validateResource(variant("food", (r) => r.contained = [{ resourceType: "Patient", id: "bad id" }])),
    "value",
    "Observation.contained[0].id",
  );
});

Deno.test("rejects a dateTime with a time but no timezone, and several choice variants", () => {
  expectIssue(
    validateResource(variant("food", (r) => r.effectiveDateTime = "2025-01-06T12:30:00")),
    "value",
    "Observation.effectiveDateTime",
  );
  expectIssue(
    validateResource(variant("food", (r) => r.effectiveDateTime = "2025-01-06")),
    "value",
    "Observation.effectiveDateTime",
  );
  const both = validateResource(variant("food", (r) => r.valueString = "about 200 kcal"));
  expectIssue(both, "structure", "Observation.valueString");
  assert.equal(httpStatusForIssues(both), 400);
  expectIssue(
    validateResource(variant("food", (r) => r.effectivePeriod = { start: "2025-01-06T12:00:00Z" })),
    "structure",
    "Observation.effectivePeriod",
  );
});

Deno.test("reports invariants, references to the wrong type and implausible values", () => {
  expectIssue(
    validateResource(variant("food", (r) => r.dataAbsentReason = { text: "unknown" })),
    "invariant",
    "Observation",
  );
  expectIssue(
    validateResource(variant("food", (r) => (r.subject as Obj).reference = "Group/g1")),
    "value",
    "Observation.subject.reference",
  );
  expectIssue(
    validateResource(
      variant("food", (r) => (r.subject as Obj).reference = "https://elsewhere.example/Patient/1"),
    ),
    "value",
    "Observation.subject.reference",
  );
  expectIssue(
    validateResource(variant("food", (r) => (r.identifier as Obj[])[0].value = "entry-7")),
    "value",
    "Observation.identifier[0].value",
  );
  expectIssue(
    validateResource(variant("food", (r) => (r.valueQuantity as Obj).value = 9000)),
    "business-rule",
    "Observation.valueQuantity.value",
  );
  expectIssue(
    validateResource(variant("weight", (r) => (r.valueQuantity as Obj).value = 0)),
    "business-rule",
    "Observation.valueQuantity.value",
  );
  expectIssue(
    validateResource(variant("careTeam", (r) => (r.period as Obj).end = "2000-01-01")),
    "invariant",
    "CareTeam.period",
  );
  // Energy that disagrees with the macronutrients is only a warning.
  const odd = validateResource(
    variant(
      "food",
      (r) => (r.valueQuantity as Obj).value = 1 + 3 * ((r.valueQuantity as Obj).value as number) + 100,
    ),
  );
  expectIssue(odd, "business-rule", "Observation.valueQuantity.value", "warning");
  assert.ok(isValid(odd));
});

Deno.test("profile rules can be switched off; requireMeta asks for versionId and lastUpdated", () => {
  const heartRate = {
    resourceType: "Observation",
    status: "final",
    code: { coding: [{ system: SYSTEMS.loinc, code: "8867-4" }] },
    subject: { reference: "Patient/p1" },
    valueQuantity: { value: 60, unit: "/min", system: SYSTEMS.ucum, code: "/min" },
  };
  assert.deepEqual(validateResource(heartRate, { profiles: false }), []);
  expectIssue(validateResource(heartRate), "code-invalid", "Observation.code");
  const noMeta = variant("patient", (r) => delete r.meta);
  assert.deepEqual(validateResource(noMeta), []);
  const issues = validateResource(noMeta, { requireMeta: true });
  expectIssue(issues, "required", "Patient.meta.versionId");
  expectIssue(issues, "required", "Patient.meta.lastUpdated");
});

Deno.test("diagnostics never quote values of the resource", () => {
  const secret = "Zqxjkvbwmf";
  const r = variant("patient", (p) => {
    p.gender = secret;
    p.id = `${secret} id`;
    (p.name as Obj[])[0].family = 17;
    (p.telecom as Obj[])[0].system = secret;
    (p.identifier as Obj[])[0].value = "";
    p.birthDate = secret;
  });
  const issues = validateResource(r);
  assert.ok(issues.length >= 5, show(issues));
  for (const i of issues) assert.ok(!JSON.stringify(i).includes(secret), JSON.stringify(i));
});

Deno.test("operationOutcome builds a valid OperationOutcome", () => {
  const issues = validateResource(variant("food", (r) => {
    delete r.code;
    r.status = "bogus";
  }));
  const oo = operationOutcome(issues);
  assert.equal(oo.resourceType, "OperationOutcome");
  assert.equal(oo.issue.length, issues.length);
  assert.deepEqual(oo.issue[0].expression, issues[0].expression);
  assert.equal(oo.issue[0].details?.text, issues[0].diagnostics);
  assert.deepEqual(validateResource(oo, { allowedResourceTypes: ["OperationOutcome"] }), []);
  const ok = operationOutcome([]);
  assert.equal(ok.issue[0].severity, "information");
  assert.deepEqual(validateResource(ok, { allowedResourceTypes: ["OperationOutcome"] }), []);
  const rejected = operationOutcome(validateResource({ resourceType: "Bundle", type: "batch" }));
  assert.equal(rejected.issue[0].code, "not-supported");
});

Deno.test("every JSON example in fhir/PROFILE.md is valid", async () => {
  const md = await Deno.readTextFile(new URL("../fhir/PROFILE.md", import.meta.url));
  const blocks = [...md.matchAll(/```json\n([\s\S]*?)\n```/g)].map((m) => JSON.parse(m[1]));
  assert.ok(blocks.length >= 9, `found ${blocks.length} examples`);
  const types = new Set<string>();
  for (const r of blocks) {
    types.add(r.resourceType);
    const issues = validateResource(r, {
      allowedResourceTypes: [...DEFAULT_ALLOWED_RESOURCE_TYPES, "OperationOutcome"],
    });
    assert.deepEqual(issues, [], `${r.resourceType}/${r.id}:\n${show(issues)}`);
  }
  for (const t of DEFAULT_ALLOWED_RESOURCE_TYPES) {
    assert.ok(types.has(t), `PROFILE.md has an example of ${t}`);
  }
});
