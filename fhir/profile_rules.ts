/**
 * The Food Coach profile rules (fhir/PROFILE.md) as code: what a Patient, dietitian, CareTeam, food-log
 * entry, body weight or diet plan must contain beyond the base R4 specification. Rules read the resource
 * defensively (it may be structurally invalid too) and report through a sink; messages never contain
 * resource values.
 *
 * @module
 */

import { energyConsistent, FOODS_BY_CODE } from "./foods.ts";
import {
  DIET_LOG,
  DIET_PLAN_TYPES,
  ENTRY_ID_REGEX,
  IDENTIFIER_SYSTEMS,
  LIMITS,
  LOINC,
  MACRONUTRIENTS,
  MEAL_TYPES,
  NUTRIENT_ENERGY,
  OBSERVATION_CATEGORY,
  OBSERVATION_STATUSES,
  PROFILES,
  SNOMED_DIETITIAN,
  SYSTEMS,
  UCUM,
} from "./profile.ts";

/** Issue types the rules report (a subset of http://hl7.org/fhir/issue-type). */
export type RuleIssueCode = "required" | "value" | "code-invalid" | "business-rule" | "invariant";

/** Where the rules report problems. `expression` is the element path, e.g. `Observation.component[2].code`. */
export interface RuleSink {
  error(code: RuleIssueCode, diagnostics: string, expression: string): void;
  warning(code: RuleIssueCode, diagnostics: string, expression: string): void;
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function codings(cc: unknown): Obj[] {
  return isObj(cc) ? arr(cc.coding).filter(isObj) : [];
}

function hasCoding(cc: unknown, system: string, code: string): boolean {
  return codings(cc).some((c) => c.system === system && c.code === code);
}

function isNonEmptyString(v: unknown): v is string {
  return typeof v === "string" && v.trim() !== "";
}

const REF_ID = "[A-Za-z0-9\\-.]{1,64}";

/** Checks a Reference: relative `Type/id` to one of `types`. */
function checkReference(
  sink: RuleSink,
  value: unknown,
  path: string,
  types: readonly string[],
  required: boolean,
): void {
  if (value === undefined) {
    if (required) sink.error("required", `${path} is required (a reference to ${types.join(" or ")})`, path);
    return;
  }
  if (!isObj(value)) return; // structural problem, reported by the base validator
  const ref = value.reference;
  if (!isNonEmptyString(ref)) {
    sink.error(
      "required",
      `${path}.reference is required (relative ${types.join("|")}/id)`,
      `${path}.reference`,
    );
    return;
  }
  const m = new RegExp(`^([A-Za-z]+)/${REF_ID}$`).exec(ref);
  if (!m) {
    sink.error("value", `${path}.reference must be a relative reference Type/id`, `${path}.reference`);
  } else if (!types.includes(m[1])) {
    sink.error("value", `${path}.reference must point to ${types.join(" or ")}`, `${path}.reference`);
  }
}

/** Checks a UCUM Quantity with one of `codes` and a value within [min, max]. */
function checkQuantity(
  sink: RuleSink,
  q: unknown,
  path: string,
  codes: readonly string[],
  limits: { min: number; max: number },
): void {
  if (!isObj(q)) return;
  if (typeof q.value !== "number") sink.error("required", `${path}.value is required`, `${path}.value`);
  else if (q.value < limits.min || q.value > limits.max) {
    sink.error(
      "business-rule",
      `${path}.value is implausible (allowed ${limits.min}..${limits.max} ${codes.join("|")})`,
      `${path}.value`,
    );
  }
  if (q.system !== SYSTEMS.ucum) {
    sink.error("code-invalid", `${path}.system must be UCUM (${SYSTEMS.ucum})`, `${path}.system`);
  }
  if (typeof q.code !== "string" || !codes.includes(q.code)) {
    sink.error("code-invalid", `${path}.code must be the UCUM code ${codes.join(" or ")}`, `${path}.code`);
  }
  if (q.unit === undefined) sink.error("required", `${path}.unit is required`, `${path}.unit`);
  else if (q.unit !== q.code) {
    sink.error("value", `${path}.unit must be the UCUM code as written in ${path}.code`, `${path}.unit`);
  }
}

/** Requires exactly one identifier of `system` with a value (matching `pattern` when given). */
function checkIdentifier(
  sink: RuleSink,
  res: Obj,
  type: string,
  system: string,
  what: string,
  pattern?: RegExp,
): void {
  const ids = arr(res.identifier);
  const ours = ids.map((x, i) => [x, i] as const).filter(([x]) => isObj(x) && x.system === system);
  if (ours.length === 0) {
    sink.error(
      "required",
      `${type}.identifier: one identifier with system ${system} (${what}) is required`,
      `${type}.identifier`,
    );
    return;
  }
  if (ours.length > 1) {
    sink.error(
      "business-rule",
      `${type}.identifier: only one identifier with system ${system} is allowed`,
      `${type}.identifier`,
    );
  }
  for (const [x, i] of ours) {
    const value = (x as Obj).value;
    const p = `${type}.identifier[${i}].value`;
    if (!isNonEmptyString(value)) sink.error("required", `${p} is required (${what})`, p);
    else if (pattern && !pattern.test(value)) sink.error("value", `${p} must be ${what}`, p);
  }
}

function checkStatus(sink: RuleSink, res: Obj, type: string, allowed: readonly string[]): void {
  if (typeof res.status === "string" && !allowed.includes(res.status)) {
    sink.error(
      "code-invalid",
      `${type}.status must be one of ${allowed.join(", ")} in this profile`,
      `${type}.status`,
    );
  }
}

function checkPeriod(sink: RuleSink, period: unknown, path: string, startRequired: boolean): void {
  if (!isObj(period)) {
    if (startRequired) sink.error("required", `${path}.start is required`, `${path}.start`);
    return;
  }
  if (startRequired && !isNonEmptyString(period.start)) {
    sink.error("required", `${path}.start is required`, `${path}.start`);
  }
  if (typeof period.start === "string" && typeof period.end === "string") {
    const s = Date.parse(period.start);
    const e = Date.parse(period.end);
    if (Number.isFinite(s) && Number.isFinite(e) && e < s) {
      sink.error("invariant", `${path}: end must not be before start (per-1)`, path);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Per resource type

function patientRules(sink: RuleSink, res: Obj): void {
  checkIdentifier(sink, res, "Patient", IDENTIFIER_SYSTEMS.patient, "the app's user number");
  const names = arr(res.name);
  if (names.length === 0) sink.error("required", "Patient.name is required", "Patient.name");
  names.forEach((n, i) => {
    if (!isObj(n)) return;
    if (!isNonEmptyString(n.family)) {
      sink.error("required", `Patient.name[${i}].family is required`, `Patient.name[${i}].family`);
    }
    if (arr(n.given).length === 0) {
      sink.error("required", `Patient.name[${i}].given is required`, `Patient.name[${i}].given`);
    }
  });
  if (res.gender === undefined) sink.error("required", "Patient.gender is required", "Patient.gender");
  if (res.birthDate === undefined) {
    sink.error("required", "Patient.birthDate is required", "Patient.birthDate");
  } else if (isNonEmptyString(res.birthDate) && !/^\d{4}-\d{2}-\d{2}$/.test(res.birthDate)) {
    sink.error("value", "Patient.birthDate must be a full date (YYYY-MM-DD)", "Patient.birthDate");
  }
}

function practitionerRules(sink: RuleSink, res: Obj): void {
  checkIdentifier(sink, res, "Practitioner", IDENTIFIER_SYSTEMS.practitioner, "the staff number");
  const names = arr(res.name);
  if (names.length === 0) sink.error("required", "Practitioner.name is required", "Practitioner.name");
  names.forEach((n, i) => {
    if (isObj(n) && !isNonEmptyString(n.family)) {
      sink.error("required", `Practitioner.name[${i}].family is required`, `Practitioner.name[${i}].family`);
    }
  });
}

function practitionerRoleRules(sink: RuleSink, res: Obj): void {
  checkReference(sink, res.practitioner, "PractitionerRole.practitioner", ["Practitioner"], true);
  checkReference(sink, res.organization, "PractitionerRole.organization", ["Organization"], false);
  if (typeof res.active !== "boolean") {
    sink.error("required", "PractitionerRole.active is required", "PractitionerRole.active");
  }
  if (!arr(res.code).some((cc) => hasCoding(cc, SYSTEMS.snomed, SNOMED_DIETITIAN.code))) {
    sink.error(
      "required",
      `PractitionerRole.code must contain SNOMED CT ${SNOMED_DIETITIAN.code} (${SNOMED_DIETITIAN.display})`,
      "PractitionerRole.code",
    );
  }
  if (res.period !== undefined) checkPeriod(sink, res.period, "PractitionerRole.period", false);
}

function organizationRules(sink: RuleSink, res: Obj): void {
  if (!isNonEmptyString(res.name)) {
    sink.error("required", "Organization.name is required", "Organization.name");
  }
}

function careTeamRules(sink: RuleSink, res: Obj): void {
  if (res.status === undefined) sink.error("required", "CareTeam.status is required", "CareTeam.status");
  checkReference(sink, res.subject, "CareTeam.subject", ["Patient"], true);
  checkPeriod(sink, res.period, "CareTeam.period", true);
  const participants = arr(res.participant);
  if (participants.length === 0) {
    sink.error("required", "CareTeam.participant is required (the dietitian)", "CareTeam.participant");
  }
  let dietitians = 0;
  participants.forEach((p, i) => {
    if (!isObj(p)) return;
    const path = `CareTeam.participant[${i}]`;
    checkReference(sink, p.member, `${path}.member`, ["PractitionerRole", "Practitioner"], true);
    checkPeriod(sink, p.period, `${path}.period`, true);
    if (p.onBehalfOf !== undefined) {
      sink.error("business-rule", `${path}.onBehalfOf is not used in this profile`, `${path}.onBehalfOf`);
    }
    if (arr(p.role).some((cc) => hasCoding(cc, SYSTEMS.snomed, SNOMED_DIETITIAN.code))) dietitians++;
    else {
      sink.error(
        "required",
        `${path}.role must contain SNOMED CT ${SNOMED_DIETITIAN.code} (${SNOMED_DIETITIAN.display})`,
        `${path}.role`,
      );
    }
  });
  if (participants.length > 0 && dietitians === 0) {
    sink.error("required", "CareTeam needs at least one dietitian participant", "CareTeam.participant");
  }
}

function nutritionOrderRules(sink: RuleSink, res: Obj): void {
  checkReference(sink, res.patient, "NutritionOrder.patient", ["Patient"], true);
  checkReference(sink, res.orderer, "NutritionOrder.orderer", ["PractitionerRole", "Practitioner"], true);
  const diet = res.oralDiet;
  if (!isObj(diet)) {
    sink.error(
      "required",
      "NutritionOrder.oralDiet is required (the diet plan; nor-1)",
      "NutritionOrder.oralDiet",
    );
    return;
  }
  const planCodes = new Set<string>(DIET_PLAN_TYPES.map((t) => t.code));
  const types = arr(diet.type);
  let typed = false;
  types.forEach((cc, i) => {
    codings(cc).forEach((c, j) => {
      if (c.system !== SYSTEMS.dietPlan) return;
      if (typeof c.code === "string" && planCodes.has(c.code)) typed = true;
      else {
        const p = `NutritionOrder.oralDiet.type[${i}].coding[${j}].code`;
        sink.error("code-invalid", `${p} is not a code of ${SYSTEMS.dietPlan}`, p);
      }
    });
  });
  if (!typed) {
    sink.error(
      "required",
      `NutritionOrder.oralDiet.type needs a coding from ${SYSTEMS.dietPlan}`,
      "NutritionOrder.oralDiet.type",
    );
  }
  let energy = 0;
  arr(diet.nutrient).forEach((n, i) => {
    if (!isObj(n)) return;
    const path = `NutritionOrder.oralDiet.nutrient[${i}]`;
    codings(n.modifier).forEach((c, j) => {
      if (c.system === SYSTEMS.nutrient && c.code !== NUTRIENT_ENERGY.code) {
        const p = `${path}.modifier.coding[${j}].code`;
        sink.error("code-invalid", `${p} is not a code of ${SYSTEMS.nutrient}`, p);
      }
    });
    if (hasCoding(n.modifier, SYSTEMS.nutrient, NUTRIENT_ENERGY.code)) {
      energy++;
      if (n.amount === undefined) sink.error("required", `${path}.amount is required`, `${path}.amount`);
      checkQuantity(sink, n.amount, `${path}.amount`, [UCUM.kcal], LIMITS.energyTargetKcal);
    }
  });
  if (energy !== 1) {
    sink.error(
      energy === 0 ? "required" : "business-rule",
      `NutritionOrder.oralDiet.nutrient needs exactly one energy target (${SYSTEMS.nutrient}#${NUTRIENT_ENERGY.code}, kcal)`,
      "NutritionOrder.oralDiet.nutrient",
    );
  }
}

function observationCommon(
  sink: RuleSink,
  res: Obj,
  category: { system: string; code: string }[],
  valueCode: string,
  limits: { min: number; max: number },
): void {
  checkStatus(sink, res, "Observation", OBSERVATION_STATUSES);
  checkIdentifier(
    sink,
    res,
    "Observation",
    IDENTIFIER_SYSTEMS.logEntry,
    "the app's entry UUID",
    ENTRY_ID_REGEX,
  );
  for (const c of category) {
    if (!arr(res.category).some((cc) => hasCoding(cc, c.system, c.code))) {
      sink.error(
        "required",
        `Observation.category must contain ${c.system}#${c.code}`,
        "Observation.category",
      );
    }
  }
  checkReference(sink, res.subject, "Observation.subject", ["Patient"], true);
  for (const key of ["effectivePeriod", "effectiveTiming", "effectiveInstant"]) {
    if (res[key] !== undefined) {
      sink.error(
        "value",
        `Observation.${key} is not used in this profile: use effectiveDateTime`,
        `Observation.${key}`,
      );
    }
  }
  if (res.effectiveDateTime === undefined) {
    sink.error("required", "Observation.effectiveDateTime is required", "Observation.effectiveDateTime");
  }
  if (res.dataAbsentReason !== undefined) {
    sink.error(
      "business-rule",
      "Observation.dataAbsentReason is not used in this profile",
      "Observation.dataAbsentReason",
    );
  }
  const valueKeys = Object.keys(res).filter((k) => /^value[A-Z]/.test(k));
  if (res.valueQuantity === undefined) {
    sink.error(
      valueKeys.length ? "value" : "required",
      `Observation.valueQuantity is required (UCUM ${valueCode})`,
      valueKeys.length ? `Observation.${valueKeys[0]}` : "Observation.valueQuantity",
    );
  } else {
    checkQuantity(sink, res.valueQuantity, "Observation.valueQuantity", [valueCode], limits);
  }
  arr(res.performer).forEach((p, i) =>
    checkReference(sink, p, `Observation.performer[${i}]`, [
      "Patient",
      "RelatedPerson",
      "PractitionerRole",
      "Practitioner",
    ], false)
  );
}

function foodLogRules(sink: RuleSink, res: Obj): void {
  observationCommon(
    sink,
    res,
    [
      { system: SYSTEMS.observationCategory, code: OBSERVATION_CATEGORY.survey.code },
      { system: SYSTEMS.dietLog, code: DIET_LOG.foodLog.code },
    ],
    UCUM.kcal,
    LIMITS.entryKcal,
  );
  if (typeof res.effectiveDateTime === "string" && !res.effectiveDateTime.includes("T")) {
    sink.error(
      "value",
      "Observation.effectiveDateTime of a food-log entry needs a time and timezone",
      "Observation.effectiveDateTime",
    );
  }
  arr(res.basedOn).forEach((b, i) =>
    checkReference(sink, b, `Observation.basedOn[${i}]`, ["NutritionOrder"], false)
  );

  const macroByCode = new Map<string, string>(MACRONUTRIENTS.map((m) => [m.code, m.key]));
  const mealCodes = new Set<string>(MEAL_TYPES.map((m) => m.code));
  const seen = new Map<string, number>();
  const grams: Record<string, number> = {};
  arr(res.component).forEach((comp, i) => {
    if (!isObj(comp)) return;
    const path = `Observation.component[${i}]`;
    const cs = codings(comp.code);
    const loinc = cs.find((c) =>
      c.system === SYSTEMS.loinc && typeof c.code === "string" && macroByCode.has(c.code)
    );
    const local = cs.find((c) => c.system === SYSTEMS.dietLog);
    let slot: string | undefined;
    if (loinc) {
      slot = macroByCode.get(loinc.code as string)!;
      if (comp.valueQuantity === undefined) {
        sink.error("required", `${path}.valueQuantity is required (UCUM g)`, `${path}.valueQuantity`);
      } else {
        checkQuantity(sink, comp.valueQuantity, `${path}.valueQuantity`, [UCUM.gram], LIMITS.macroGrams);
        const v = (comp.valueQuantity as Obj).value;
        if (typeof v === "number") grams[slot] = v;
      }
    } else if (local && local.code === DIET_LOG.foodItem.code) {
      slot = "food-item";
      const cc = comp.valueCodeableConcept;
      if (!isObj(cc)) {
        sink.error(
          "required",
          `${path}.valueCodeableConcept is required (the food)`,
          `${path}.valueCodeableConcept`,
        );
      } else {
        if (!isNonEmptyString(cc.text)) {
          sink.error(
            "required",
            `${path}.valueCodeableConcept.text is required (the food's name)`,
            `${path}.valueCodeableConcept.text`,
          );
        }
        codings(cc).forEach((c, j) => {
          if (c.system === SYSTEMS.food && !(typeof c.code === "string" && FOODS_BY_CODE.has(c.code))) {
            const p = `${path}.valueCodeableConcept.coding[${j}].code`;
            sink.error("code-invalid", `${p} is not a code of ${SYSTEMS.food}`, p);
          }
        });
      }
    } else if (local && local.code === DIET_LOG.portion.code) {
      slot = "portion";
      if (comp.valueQuantity === undefined) {
        sink.error("required", `${path}.valueQuantity is required (UCUM g or mL)`, `${path}.valueQuantity`);
      } else {
        checkQuantity(
          sink,
          comp.valueQuantity,
          `${path}.valueQuantity`,
          [UCUM.gram, UCUM.milliliter],
          LIMITS.portion,
        );
      }
    } else if (local && local.code === DIET_LOG.meal.code) {
      slot = "meal";
      const mc = codings(comp.valueCodeableConcept).filter((c) => c.system === SYSTEMS.meal);
      if (mc.length !== 1) {
        sink.error(
          "required",
          `${path}.valueCodeableConcept needs exactly one coding from ${SYSTEMS.meal}`,
          `${path}.valueCodeableConcept`,
        );
      } else if (!(typeof mc[0].code === "string" && mealCodes.has(mc[0].code))) {
        sink.error(
          "code-invalid",
          `${path}.valueCodeableConcept: meal code must be one of ${[...mealCodes].join(", ")}`,
          `${path}.valueCodeableConcept`,
        );
      }
    } else {
      sink.error(
        "code-invalid",
        `${path}.code is not a food-log component (LOINC ${
          [...macroByCode.keys()].join("/")
        } or ${SYSTEMS.dietLog} food-item/portion/meal)`,
        `${path}.code`,
      );
    }
    if (slot) {
      if (seen.has(slot)) {
        sink.error("business-rule", `${path}: component ${slot} appears more than once`, `${path}.code`);
      }
      seen.set(slot, i);
    }
  });
  for (
    const [slot, what] of [
      ["food-item", `${SYSTEMS.dietLog}#${DIET_LOG.foodItem.code}`],
      ["meal", `${SYSTEMS.dietLog}#${DIET_LOG.meal.code}`],
      ...MACRONUTRIENTS.map((m) => [m.key, `LOINC ${m.code} (${m.key}, g)`]),
    ]
  ) {
    if (!seen.has(slot)) {
      sink.error("required", `Observation.component ${what} is required`, "Observation.component");
    }
  }
  const kcal = isObj(res.valueQuantity) ? res.valueQuantity.value : undefined;
  if (
    typeof kcal === "number" && grams.protein !== undefined && grams.carbohydrate !== undefined &&
    grams.fat !== undefined && !energyConsistent(kcal, grams.protein, grams.carbohydrate, grams.fat)
  ) {
    sink.warning(
      "business-rule",
      "Observation.valueQuantity: energy disagrees with the macronutrients (4/4/9 kcal per g)",
      "Observation.valueQuantity.value",
    );
  }
}

function bodyWeightRules(sink: RuleSink, res: Obj): void {
  observationCommon(
    sink,
    res,
    [{ system: SYSTEMS.observationCategory, code: OBSERVATION_CATEGORY.vitalSigns.code }],
    UCUM.kilogram,
    LIMITS.bodyWeightKg,
  );
  if (typeof res.effectiveDateTime === "string" && !/^\d{4}-\d{2}-\d{2}/.test(res.effectiveDateTime)) {
    sink.error(
      "value",
      "Observation.effectiveDateTime must be at least a full date (vs-1)",
      "Observation.effectiveDateTime",
    );
  }
  if (res.component !== undefined) {
    sink.error("business-rule", "Observation.component is not used for body weight", "Observation.component");
  }
}

function observationRules(sink: RuleSink, res: Obj): void {
  const isFood = hasCoding(res.code, SYSTEMS.loinc, LOINC.energyIntake.code);
  const isWeight = hasCoding(res.code, SYSTEMS.loinc, LOINC.bodyWeight.code);
  const claims = isObj(res.meta) ? arr(res.meta.profile) : [];
  if (claims.includes(PROFILES.foodLogEntry) && !isFood) {
    sink.error(
      "required",
      `Observation.code must be LOINC ${LOINC.energyIntake.code} (food-log entry profile)`,
      "Observation.code",
    );
  }
  if ((claims.includes(PROFILES.bodyWeight) || claims.includes(PROFILES.coreBodyWeight)) && !isWeight) {
    sink.error(
      "required",
      `Observation.code must be LOINC ${LOINC.bodyWeight.code} (body weight profile)`,
      "Observation.code",
    );
  }
  if (isFood && isWeight) {
    sink.error(
      "business-rule",
      "Observation.code cannot be both a food-log entry and a body weight",
      "Observation.code",
    );
  } else if (isFood) foodLogRules(sink, res);
  else if (isWeight) bodyWeightRules(sink, res);
  else if (res.code !== undefined) {
    sink.error(
      "code-invalid",
      `Observation.code must be LOINC ${LOINC.energyIntake.code} (food-log entry) or ${LOINC.bodyWeight.code} (body weight)`,
      "Observation.code",
    );
  }
}

const RULES: Record<string, (sink: RuleSink, res: Obj) => void> = {
  Patient: patientRules,
  Practitioner: practitionerRules,
  PractitionerRole: practitionerRoleRules,
  Organization: organizationRules,
  CareTeam: careTeamRules,
  NutritionOrder: nutritionOrderRules,
  Observation: observationRules,
};

/** Resource types that have Food Coach profile rules. */
export const PROFILED_RESOURCE_TYPES: readonly string[] = Object.freeze(Object.keys(RULES));

/** Applies the Food Coach profile rules of the resource's type (none for other types). */
export function applyProfileRules(resource: Record<string, unknown>, sink: RuleSink): void {
  const rules = RULES[String(resource.resourceType)];
  if (rules) rules(sink, resource);
}
