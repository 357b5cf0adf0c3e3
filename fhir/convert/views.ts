/**
 * Project views: the SQL-on-FHIR ViewDefinitions in `views/*.json`, compiled, with the sensitivity
 * class of every column and the column that partitions the lake by date.
 *
 * Each column carries a standard column `tag` `{name: "sensitivity", value: <class>}`; the class later
 * selects the column's master key. Exactly one column carries `{name: "partition", value: "date"}`: its
 * value (YYYY-MM-DD) names the `date=` directory of a row.
 *
 * Run constants: a view may declare the constant `conversion_date` (`valueDate`, conventionally the
 * placeholder `1970-01-01` so the file stays a valid standalone ViewDefinition) and partition by
 * `%conversion_date.toString()`. The conversion compiles such views with the UTC date of the run
 * ({@link ProjectViewOptions.conversionDate}), so a small dimension view lands in one partition per run
 * instead of one per day of its data. A view that uses `%conversion_date` without declaring it is an
 * error (undefined constant).
 *
 * @module
 */

import { join } from "node:path";
import { FpTemporal } from "../fhirpath/values.ts";
import { type CompiledView, compileView } from "../views/runner.ts";
import { viewColumns } from "../views/view_definition.ts";
import { ConvertConfigError, ProjectViewError } from "./errors.ts";

/** Name of the run constant that carries the conversion date (`%conversion_date`). */
export const CONVERSION_DATE_CONSTANT = "conversion_date";

/** Options of {@link projectView} and {@link loadProjectViews}. */
export interface ProjectViewOptions {
  /**
   * The conversion run's UTC date, YYYY-MM-DD: the value of `%conversion_date` in views that declare
   * that constant. Default: the view's own (placeholder) value.
   */
  conversionDate?: string;
}

/** Sensitivity classes, from most to least sensitive. */
export const SENSITIVITY_CLASSES = [
  "direct-identifier",
  "quasi-identifier",
  "clinical",
  "technical",
] as const;

/** A sensitivity class: selects the master key of a column. */
export type SensitivityClass = (typeof SENSITIVITY_CLASSES)[number];

/** A compiled project view. */
export interface ProjectView {
  /** View name (the ViewDefinition `name`, also the lake directory). */
  readonly name: string;
  /** The file it came from. */
  readonly file: string;
  /** The ViewDefinition as parsed JSON (to compile it again with other run constants). */
  readonly definition: unknown;
  /** The `%conversion_date` it was compiled with, when the view declares that constant. */
  readonly conversionDate?: string;
  /** The compiled view. */
  readonly compiled: CompiledView;
  /** Column name → sensitivity class, for every column. */
  readonly sensitivity: Readonly<Record<string, SensitivityClass>>;
  /** The partition column (tag `partition` = `date`). */
  readonly partitionColumn: string;
}

function isClass(v: unknown): v is SensitivityClass {
  return typeof v === "string" && (SENSITIVITY_CLASSES as readonly string[]).includes(v);
}

const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

/** Whether `s` is a real calendar date written YYYY-MM-DD. */
export function isIsoDate(s: string): boolean {
  const m = DATE.exec(s);
  if (!m) return false;
  const d = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])));
  return d.toISOString().slice(0, 10) === s;
}

function checkConversionDate(date: string): void {
  if (!isIsoDate(date)) {
    throw new ConvertConfigError(
      `conversion date ${JSON.stringify(date)} is not a calendar date YYYY-MM-DD (e.g. 2025-06-01)`,
    );
  }
}

/** The UTC date (YYYY-MM-DD) of `when` (default: now). */
export function utcDate(when: Date = new Date()): string {
  return when.toISOString().slice(0, 10);
}

/** How the view declares `%conversion_date`: absent, or its declared value type. */
function declaredConversionDate(view: unknown): "absent" | "date" | "other" {
  const constants = (view as { constant?: unknown } | null)?.constant;
  if (!Array.isArray(constants)) return "absent";
  const c = constants.find((x) => x?.name === CONVERSION_DATE_CONSTANT);
  if (c === undefined) return "absent";
  return Object.hasOwn(c, "valueDate") ? "date" : "other";
}

/**
 * Compiles one ViewDefinition (already parsed) and reads its tags. `file` is used in errors. A view
 * declaring `%conversion_date` gets `options.conversionDate` as its value (see the module notes).
 * Throws {@link ConvertConfigError} for a conversion date that is not YYYY-MM-DD.
 */
export function projectView(view: unknown, file: string, options: ProjectViewOptions = {}): ProjectView {
  const date = options.conversionDate;
  if (date !== undefined) checkConversionDate(date);
  const declared = declaredConversionDate(view);
  if (declared === "other") {
    throw new ProjectViewError(file, `constant ${CONVERSION_DATE_CONSTANT} must be a valueDate`);
  }
  const useDate = declared === "date" && date !== undefined ? date : undefined;
  let compiled: CompiledView;
  try {
    compiled = compileView(
      view,
      useDate === undefined
        ? {}
        : { constants: { [CONVERSION_DATE_CONSTANT]: new FpTemporal("date", useDate) } },
    );
  } catch (e) {
    throw new ProjectViewError(file, e instanceof Error ? e.message : "invalid view", { cause: e });
  }
  const name = compiled.view.name;
  if (typeof name !== "string" || !/^[a-z][a-z0-9_]*$/.test(name)) {
    throw new ProjectViewError(file, "the view needs a name of lowercase letters, digits and _");
  }
  const sensitivity: Record<string, SensitivityClass> = {};
  const partition: string[] = [];
  for (const { column, location } of viewColumns(compiled.view)) {
    const tags = column.tag ?? [];
    const s = tags.filter((t) => t.name === "sensitivity");
    if (s.length !== 1) {
      throw new ProjectViewError(file, `${location} (${column.name}) needs exactly one sensitivity tag`);
    }
    if (!isClass(s[0].value)) {
      throw new ProjectViewError(
        file,
        `${location} (${column.name}): sensitivity must be one of ${SENSITIVITY_CLASSES.join(", ")}`,
      );
    }
    sensitivity[column.name] = s[0].value;
    if (tags.some((t) => t.name === "partition" && t.value === "date")) partition.push(column.name);
  }
  if (partition.length !== 1) {
    throw new ProjectViewError(file, "exactly one column must carry the tag partition=date");
  }
  return {
    name,
    file,
    definition: view,
    ...(useDate === undefined ? {} : { conversionDate: useDate }),
    compiled,
    sensitivity,
    partitionColumn: partition[0],
  };
}

/** `view` compiled again for a run dated `conversionDate` (itself when that changes nothing). */
export function withConversionDate(view: ProjectView, conversionDate: string): ProjectView {
  checkConversionDate(conversionDate);
  if (declaredConversionDate(view.definition) !== "date" || view.conversionDate === conversionDate) {
    return view;
  }
  return projectView(view.definition, view.file, { conversionDate });
}

/**
 * Loads every `*.json` ViewDefinition of `dir` (sorted by file name), validates and compiles it (with
 * `options.conversionDate` for `%conversion_date`), and reads the sensitivity classes. Throws
 * {@link ProjectViewError} for an invalid view, a column without a (valid) sensitivity class, a missing
 * partition column, or two views with the same name.
 */
export async function loadProjectViews(
  dir: string,
  options: ProjectViewOptions = {},
): Promise<ProjectView[]> {
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.isFile && e.name.endsWith(".json")) files.push(e.name);
  files.sort();
  const views: ProjectView[] = [];
  const names = new Set<string>();
  for (const f of files) {
    const path = join(dir, f);
    let json: unknown;
    try {
      json = JSON.parse(await Deno.readTextFile(path));
    } catch (e) {
      throw new ProjectViewError(path, "not valid JSON", { cause: e });
    }
    const v = projectView(json, path, options);
    if (names.has(v.name)) throw new ProjectViewError(path, `a second view named ${v.name}`);
    names.add(v.name);
    views.push(v);
  }
  return views;
}
