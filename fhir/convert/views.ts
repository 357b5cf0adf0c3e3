/**
 * Project views: the SQL-on-FHIR ViewDefinitions in `views/*.json`, compiled, with the sensitivity
 * class of every column and the column that partitions the lake by date.
 *
 * Each column carries a standard column `tag` `{name: "sensitivity", value: <class>}`; the class later
 * selects the column's master key. Exactly one column carries `{name: "partition", value: "date"}`: its
 * value (YYYY-MM-DD) names the `date=` directory of a row.
 *
 * @module
 */

import { join } from "node:path";
import { type CompiledView, compileView } from "../views/runner.ts";
import { viewColumns } from "../views/view_definition.ts";
import { ProjectViewError } from "./errors.ts";

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

/** Compiles one ViewDefinition (already parsed) and reads its tags. `file` is used in errors. */
export function projectView(view: unknown, file: string): ProjectView {
  let compiled: CompiledView;
  try {
    compiled = compileView(view);
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
  return { name, file, compiled, sensitivity, partitionColumn: partition[0] };
}

/**
 * Loads every `*.json` ViewDefinition of `dir` (sorted by file name), validates and compiles it, and
 * reads the sensitivity classes. Throws {@link ProjectViewError} for an invalid view, a column without a
 * (valid) sensitivity class, a missing partition column, or two views with the same name.
 */
export async function loadProjectViews(dir: string): Promise<ProjectView[]> {
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
    const v = projectView(json, path);
    if (names.has(v.name)) throw new ProjectViewError(path, `a second view named ${v.name}`);
    names.add(v.name);
    views.push(v);
  }
  return views;
}
