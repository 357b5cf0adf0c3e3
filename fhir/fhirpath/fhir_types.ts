/**
 * FHIR type names known to the evaluator, used to resolve choice elements (`value[x]`) without a full
 * FHIR model.
 *
 * Choice resolution rule: navigating `name` on an object that has no key `name` looks for keys
 * `name<Suffix>` where `<Suffix>` is a FHIR type name with its first letter upper-cased (`valueQuantity`,
 * `deceasedBoolean`, `effectiveDateTime`). This is exact for every real choice element; its only
 * imprecision is that a path naming an element that does not exist, such as `birth`, can match a real
 * element that happens to be spelled name + type (`birthDate`). Paths valid for the resource's FHIR
 * version are unaffected.
 *
 * @module
 */

/** FHIR primitive types (R4 + R5) and the FHIRPath System type each maps to. */
export const PRIMITIVE_TYPES: Readonly<Record<string, string>> = {
  boolean: "Boolean",
  integer: "Integer",
  integer64: "Long",
  unsignedInt: "Integer",
  positiveInt: "Integer",
  decimal: "Decimal",
  string: "String",
  code: "String",
  id: "String",
  markdown: "String",
  uri: "String",
  url: "String",
  canonical: "String",
  oid: "String",
  uuid: "String",
  base64Binary: "String",
  xhtml: "String",
  date: "Date",
  dateTime: "DateTime",
  instant: "DateTime",
  time: "Time",
};

/** FHIR complex data types that can appear as the type of a choice element (R4 + R5). */
export const COMPLEX_TYPES: readonly string[] = [
  "Address",
  "Age",
  "Annotation",
  "Attachment",
  "Availability",
  "CodeableConcept",
  "CodeableReference",
  "Coding",
  "ContactDetail",
  "ContactPoint",
  "Contributor",
  "Count",
  "DataRequirement",
  "Distance",
  "Dosage",
  "Duration",
  "Expression",
  "ExtendedContactDetail",
  "Extension",
  "HumanName",
  "Identifier",
  "Meta",
  "Money",
  "MoneyQuantity",
  "ParameterDefinition",
  "Period",
  "Quantity",
  "Range",
  "Ratio",
  "RatioRange",
  "Reference",
  "RelatedArtifact",
  "SampledData",
  "Signature",
  "SimpleQuantity",
  "Timing",
  "TriggerDefinition",
  "UsageContext",
  "VirtualServiceDetail",
];

/** Upper-cases the first letter: `dateTime` → `DateTime`. */
export function upperFirst(s: string): string {
  return s.length === 0 ? s : s[0].toUpperCase() + s.slice(1);
}

/** Choice key suffix (`DateTime`, `Quantity`) → FHIR type name (`dateTime`, `Quantity`). */
export const CHOICE_SUFFIXES: ReadonlyMap<string, string> = new Map<string, string>([
  ...Object.keys(PRIMITIVE_TYPES).map((t): [string, string] => [upperFirst(t), t]),
  ...COMPLEX_TYPES.map((t): [string, string] => [t, t]),
]);

/** True if `name` is a FHIR primitive type name. */
export function isPrimitiveType(name: string): boolean {
  return Object.hasOwn(PRIMITIVE_TYPES, name);
}
