/**
 * The Food Coach FHIR R4 profile as constants: code systems, codes, identifier systems, profile URLs
 * and the default resource-type allow-list. The generator, the validator and the views use these, so a
 * code is spelled in one place only. fhir/PROFILE.md describes the representation.
 *
 * @module
 */

/** Base URL of everything this project defines (code systems, identifier systems, profiles). */
export const FHIR_PME_BASE = "https://fhir-pme.example";

/** Code systems used by the Food Coach resources. */
export const SYSTEMS = {
  /** LOINC. */
  loinc: "http://loinc.org",
  /** UCUM units. */
  ucum: "http://unitsofmeasure.org",
  /** SNOMED CT. */
  snomed: "http://snomed.info/sct",
  /** HL7 observation categories (`survey`, `vital-signs`, ...). */
  observationCategory: "http://terminology.hl7.org/CodeSystem/observation-category",
  /** Ours: food-log category, component codes and method of a food-log entry. */
  dietLog: `${FHIR_PME_BASE}/CodeSystem/diet-log`,
  /** Ours: meal type (breakfast | lunch | dinner | snack). */
  meal: `${FHIR_PME_BASE}/CodeSystem/meal`,
  /** Ours: foods of the synthetic food table (fhir/foods.ts); the app's database may use another system. */
  food: `${FHIR_PME_BASE}/CodeSystem/food`,
  /** Ours: diet plan types of NutritionOrder.oralDiet.type. */
  dietPlan: `${FHIR_PME_BASE}/CodeSystem/diet-plan`,
  /** Ours: nutrients of NutritionOrder.oralDiet.nutrient.modifier (R4 has no standard "energy" code). */
  nutrient: `${FHIR_PME_BASE}/CodeSystem/nutrient`,
} as const;

/** Identifier systems (Identifier.system) of the Food Coach. */
export const IDENTIFIER_SYSTEMS = {
  /** The app's user number of a patient, e.g. `FC-10482913`. */
  patient: `${FHIR_PME_BASE}/identifier/patient`,
  /** Staff number of a dietitian, e.g. `D-0042`. */
  practitioner: `${FHIR_PME_BASE}/identifier/practitioner`,
  /** Clinic number, e.g. `C-01`. */
  organization: `${FHIR_PME_BASE}/identifier/organization`,
  /** The app's entry UUID of a logged item (food or weight): the idempotency key of uploads. */
  logEntry: `${FHIR_PME_BASE}/identifier/log-entry`,
  /** Diet plan number of a NutritionOrder. */
  dietPlan: `${FHIR_PME_BASE}/identifier/diet-plan`,
} as const;

/** Profile canonical URLs (meta.profile). */
export const PROFILES = {
  patient: `${FHIR_PME_BASE}/StructureDefinition/food-coach-patient`,
  dietitian: `${FHIR_PME_BASE}/StructureDefinition/dietitian`,
  dietitianRole: `${FHIR_PME_BASE}/StructureDefinition/dietitian-role`,
  clinic: `${FHIR_PME_BASE}/StructureDefinition/clinic`,
  careTeam: `${FHIR_PME_BASE}/StructureDefinition/dietitian-care-team`,
  foodLogEntry: `${FHIR_PME_BASE}/StructureDefinition/food-log-entry`,
  bodyWeight: `${FHIR_PME_BASE}/StructureDefinition/body-weight`,
  /** The R4 core body weight profile that our body weight profile also conforms to. */
  coreBodyWeight: "http://hl7.org/fhir/StructureDefinition/bodyweight",
  dietPlan: `${FHIR_PME_BASE}/StructureDefinition/diet-plan`,
} as const;

/** A code with its display text. */
export interface CodeDef {
  readonly code: string;
  readonly display: string;
}

/** LOINC codes of the Food Coach. Match on system + code; displays are informative. */
export const LOINC = {
  energyIntake: { code: "9052-2", display: "Calorie intake total" },
  proteinIntake: { code: "9079-5", display: "Protein intake Estimated" },
  carbohydrateIntake: { code: "9059-7", display: "Carbohydrate intake Estimated" },
  fatIntake: { code: "9066-2", display: "Fat intake Estimated" },
  bodyWeight: { code: "29463-7", display: "Body weight" },
} as const satisfies Record<string, CodeDef>;

/** The macronutrient components of a food-log entry: LOINC code → key used in rows. All in UCUM `g`. */
export const MACRONUTRIENTS = [
  { key: "protein", ...LOINC.proteinIntake },
  { key: "carbohydrate", ...LOINC.carbohydrateIntake },
  { key: "fat", ...LOINC.fatIntake },
] as const;

/** HL7 observation-category codes we use. */
export const OBSERVATION_CATEGORY = {
  survey: { code: "survey", display: "Survey" },
  vitalSigns: { code: "vital-signs", display: "Vital Signs" },
} as const satisfies Record<string, CodeDef>;

/** SNOMED CT 159033005 "Dietitian (occupation)": PractitionerRole.code and CareTeam participant role. */
export const SNOMED_DIETITIAN: CodeDef = { code: "159033005", display: "Dietitian (occupation)" };

/** Codes of the diet-log code system (SYSTEMS.dietLog). */
export const DIET_LOG = {
  /** Observation.category of a food-log entry. */
  foodLog: { code: "food-log", display: "Food log entry" },
  /** Component: the food eaten (valueCodeableConcept, text required). */
  foodItem: { code: "food-item", display: "Food item" },
  /** Component: portion eaten (valueQuantity in g or mL). */
  portion: { code: "portion", display: "Portion size" },
  /** Component: meal type (valueCodeableConcept from SYSTEMS.meal). */
  meal: { code: "meal", display: "Meal" },
  /** Observation.method: computed from a food database. */
  calculated: { code: "calculated", display: "Calculated from food database" },
} as const satisfies Record<string, CodeDef>;

/** Meal types (SYSTEMS.meal). */
export const MEAL_TYPES = [
  { code: "breakfast", display: "Breakfast" },
  { code: "lunch", display: "Lunch" },
  { code: "dinner", display: "Dinner" },
  { code: "snack", display: "Snack" },
] as const satisfies readonly CodeDef[];

/** A meal type code. */
export type MealType = (typeof MEAL_TYPES)[number]["code"];

/** Diet plan types (SYSTEMS.dietPlan) for NutritionOrder.oralDiet.type. */
export const DIET_PLAN_TYPES = [
  { code: "energy-restricted", display: "Energy-restricted diet" },
  { code: "balanced", display: "Balanced diet" },
  { code: "high-protein", display: "High-protein diet" },
  { code: "low-carbohydrate", display: "Low-carbohydrate diet" },
  { code: "mediterranean", display: "Mediterranean diet" },
] as const satisfies readonly CodeDef[];

/** Nutrient codes (SYSTEMS.nutrient) for NutritionOrder.oralDiet.nutrient.modifier. */
export const NUTRIENT_ENERGY: CodeDef = { code: "energy", display: "Energy" };

/** UCUM unit codes. */
export const UCUM = { kcal: "kcal", gram: "g", kilogram: "kg", milliliter: "mL" } as const;

/** Statuses a food-log entry or body weight may have (a subset of observation-status). */
export const OBSERVATION_STATUSES = ["final", "amended", "corrected", "entered-in-error"] as const;

/** Plausibility bounds the validator enforces (errors outside them). */
export const LIMITS = {
  /** kcal of one logged food entry. */
  entryKcal: { min: 0, max: 5000 },
  /** grams of one macronutrient in one entry. */
  macroGrams: { min: 0, max: 1000 },
  /** portion of one entry, g or mL. */
  portion: { min: 0, max: 5000 },
  /** body weight, kg. */
  bodyWeightKg: { min: 0.5, max: 500 },
  /** NutritionOrder daily energy target, kcal. */
  energyTargetKcal: { min: 500, max: 6000 },
} as const;

/**
 * Resource types accepted by default at ingestion. Others get a 422 with an OperationOutcome
 * (`not-supported`); the list is configurable per call (ValidateOptions.allowedResourceTypes).
 */
export const DEFAULT_ALLOWED_RESOURCE_TYPES: readonly string[] = Object.freeze([
  "Patient",
  "Practitioner",
  "PractitionerRole",
  "Organization",
  "CareTeam",
  "Observation",
  "NutritionOrder",
]);

/** Regex of a FHIR logical id (R4 `id` type). */
export const FHIR_ID_REGEX = /^[A-Za-z0-9\-.]{1,64}$/;

/** The app's log-entry ids are lowercase UUIDs. */
export const ENTRY_ID_REGEX = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
