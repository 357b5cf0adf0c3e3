/**
 * The ViewDefinition runner. {@link compileView} validates a view and compiles it once: every FHIRPath
 * expression becomes a closure tree (`fhir/fhirpath`), and every selection structure becomes a
 * row-producing procedure. Running the compiled view on a resource parses nothing.
 *
 * Row production follows the specification's Process(S, N) algorithm: for each focus of a select
 * (`forEach`, `forEachOrNull`, `repeat`, or the node itself), its columns, each nested select and its
 * `unionAll` give sets of partial rows whose Cartesian product is emitted. Implementation: all columns
 * of the view have a fixed slot in one row buffer; a select writes its own slots and calls a
 * continuation for the next part of its parent, so the Cartesian product is a nested iteration and no
 * partial rows are built. The row buffer is copied only when a complete row is emitted.
 *
 * `%rowIndex` is the 0-based index of the focus in its iteration (0 at the top level; a select
 * without an iterator inherits it). A `forEachOrNull` without items emits one row whose columns (of
 * that select and its descendants) are null, except columns whose path is `%rowIndex`, which are 0.
 *
 * Errors: {@link ViewDefinitionError} when compiling (invalid structure, FHIRPath syntax, unknown
 * function, undefined constant); {@link ViewEvaluationError} when running (several values for a
 * non-collection column, a `where` path that is not boolean, a FHIRPath evaluation error). Messages
 * name the view element and never contain resource values.
 *
 * @module
 */

import { type CompiledFhirPath, compileFhirPath, RESERVED_VARIABLES } from "../fhirpath/compile.ts";
import type { EvalContext, Expr } from "../fhirpath/context.ts";
import { FhirPathError, FhirPathEvaluationError } from "../fhirpath/errors.ts";
import { type Collection, describeType, FpTemporal, isNode, toPlain } from "../fhirpath/values.ts";
import {
  columnType,
  selectColumns,
  validateViewDefinition,
  type ViewColumn,
  viewColumns,
  type ViewConstant,
  type ViewDefinition,
  ViewDefinitionError,
  type ViewSelect,
} from "./view_definition.ts";

/** A running view failed on a resource. `location` is the view element, e.g. `select[0].column[1]`. */
export class ViewEvaluationError extends Error {
  /** The view element being evaluated. */
  readonly location: string;
  /** What went wrong, without the location. */
  readonly what: string;

  constructor(location: string, what: string, options?: ErrorOptions) {
    super(`view ${location}: ${what}`, options);
    this.name = "ViewEvaluationError";
    this.location = location;
    this.what = what;
  }
}

/** An output column. */
export interface ViewColumnInfo {
  /** Column name (unique in the view). */
  readonly name: string;
  /** FHIR type as declared (prefix `http://hl7.org/fhir/StructureDefinition/` removed), if any. */
  readonly type?: string;
  /** Whether the value is an array. */
  readonly collection: boolean;
  /** The FHIRPath expression. */
  readonly path: string;
  /** Where it is declared, e.g. `select[0].column[1]`. */
  readonly location: string;
}

/** An output row: column name → value (null when empty; an array for collection columns). */
export type Row = Record<string, unknown>;

/** Options of {@link compileView}. */
export interface CompileViewOptions {
  /**
   * Extra `%name` constants (runtime parameters), added to the view's own and overriding them. A value
   * is one item (string, number, boolean, `FpTemporal`, ...); an array is a collection.
   */
  constants?: Readonly<Record<string, unknown>>;
  /**
   * FHIRPath engine (see `compileFhirPath`): `"js"` (default) runs generated JavaScript, `"closures"`
   * the closure trees. Both give identical rows and errors.
   */
  engine?: "js" | "closures";
}

/**
 * A compiled view. It holds one reusable evaluation context and row buffer, so it is not reentrant:
 * do not run it from inside its own `emit` sink (compile the view twice for two interleaved streams).
 */
export interface CompiledView {
  /** The validated ViewDefinition. */
  readonly view: ViewDefinition;
  /** The resource type it applies to. */
  readonly resource: string;
  /** Output columns, in output order. */
  readonly columns: readonly ViewColumnInfo[];
  /** Rows of one resource as objects keyed by column name ([] for another resource type or a filtered one). */
  rows(resource: unknown): Row[];
  /** Rows of one resource as arrays in {@link columns} order. */
  rowArrays(resource: unknown): unknown[][];
  /** Calls `sink` for each row of the resource with a reused buffer in column order (copy it to keep it). */
  emit(resource: unknown, sink: (values: readonly unknown[]) => void): void;
}

/** Continuation: completes the current row. */
type Cont = () => void;
/** A compiled selection structure. */
type Proc = (focus: unknown, ctx: EvalContext, row: unknown[], k: Cont) => void;

const CONSTANT_TEMPORALS: Readonly<Record<string, "date" | "dateTime" | "instant" | "time">> = {
  valueDate: "date",
  valueDateTime: "dateTime",
  valueInstant: "instant",
  valueTime: "time",
};

/** The typed FHIRPath value of a (validated) constant. */
function constantValue(c: ViewConstant): unknown {
  const key = Object.keys(c).find((k) => k.startsWith("value"))!;
  const v = (c as unknown as Record<string, unknown>)[key];
  const temporal = CONSTANT_TEMPORALS[key];
  if (temporal !== undefined) return new FpTemporal(temporal, v as string);
  if (key === "valueInteger64") return Number(v);
  return v;
}

class ViewCompiler {
  private readonly slots = new Map<string, number>();
  private readonly constants: Record<string, unknown>;

  constructor(
    private readonly view: ViewDefinition,
    extra: Readonly<Record<string, unknown>>,
    private readonly engine: "js" | "closures",
  ) {
    const constants: Record<string, unknown> = {};
    for (const c of view.constant ?? []) constants[c.name] = constantValue(c);
    for (const name of Object.keys(extra)) {
      if (RESERVED_VARIABLES.has(name)) {
        throw new ViewDefinitionError("options.constants", `%${name} is a built-in variable`);
      }
    }
    this.constants = { ...constants, ...extra };
    viewColumns(view).forEach((c, i) => this.slots.set(c.column.name, i));
  }

  /** Compiles a FHIRPath expression of the view; errors become ViewDefinitionError at `location`. */
  path(expression: string, location: string): Expr {
    let compiled: CompiledFhirPath;
    try {
      compiled = compileFhirPath(expression, { constants: this.constants, engine: this.engine });
    } catch (e) {
      if (e instanceof FhirPathError) throw new ViewDefinitionError(location, e.message, { cause: e });
      throw e;
    }
    const expr = compiled.expr;
    return (ctx) => {
      try {
        return expr(ctx);
      } catch (e) {
        if (e instanceof FhirPathEvaluationError) {
          throw new ViewEvaluationError(location, e.message, { cause: e });
        }
        throw e;
      }
    };
  }

  /** A procedure for a column: writes its slot. */
  private column(c: ViewColumn, location: string): (ctx: EvalContext, row: unknown[]) => void {
    const expr = this.path(c.path, `${location}.path`);
    const slot = this.slots.get(c.name)!;
    const name = c.name;
    if (c.collection === true) {
      return (ctx, row) => {
        const v = expr(ctx);
        row[slot] = v.map(toPlain);
      };
    }
    return (ctx, row) => {
      const v = expr(ctx);
      if (v.length === 0) row[slot] = null;
      else if (v.length === 1) row[slot] = toPlain(v[0]);
      else {
        throw new ViewEvaluationError(
          location,
          `column ${name}: the path gave ${v.length} values; set "collection": true to keep them all`,
        );
      }
    };
  }

  /** Compiles a selection structure. */
  select(s: ViewSelect, location: string): Proc {
    const at = (child: string) => location === "" ? child : `${location}.${child}`;
    const columns = (s.column ?? []).map((c, i) => this.column(c, at(`column[${i}]`)));
    const parts: Proc[] = (s.select ?? []).map((x, i) => this.select(x, at(`select[${i}]`)));
    if (s.unionAll !== undefined && s.unionAll.length > 0) {
      const branches = s.unionAll.map((x, i) => this.select(x, at(`unionAll[${i}]`)));
      parts.push((focus, ctx, row, k) => {
        const rowIndex = ctx.rowIndex;
        for (const b of branches) {
          ctx.rowIndex = rowIndex;
          b(focus, ctx, row, k);
        }
      });
    }
    const nParts = parts.length;

    /** Columns, then the Cartesian product of the parts, for one focus at `rowIndex`. */
    const body = (focus: unknown, rowIndex: number, ctx: EvalContext, row: unknown[], k: Cont): void => {
      ctx.rowIndex = rowIndex;
      ctx.self = [focus];
      for (const c of columns) c(ctx, row);
      if (nParts === 0) {
        k();
        return;
      }
      const run = (j: number): void => {
        if (j === nParts) {
          k();
          return;
        }
        ctx.rowIndex = rowIndex;
        parts[j](focus, ctx, row, () => run(j + 1));
      };
      run(0);
    };

    const iterate = (foci: Collection, ctx: EvalContext, row: unknown[], k: Cont): void => {
      for (let i = 0; i < foci.length; i++) body(foci[i], i, ctx, row, k);
    };

    if (s.forEach !== undefined) {
      const expr = this.path(s.forEach, `${location}.forEach`);
      return (focus, ctx, row, k) => {
        ctx.self = [focus];
        iterate(expr(ctx), ctx, row, k);
      };
    }
    if (s.forEachOrNull !== undefined) {
      const expr = this.path(s.forEachOrNull, `${location}.forEachOrNull`);
      const nulls = selectColumns(s).map((c) => ({
        slot: this.slots.get(c.name)!,
        value: c.path.trim() === "%rowIndex" ? 0 : null,
      }));
      return (focus, ctx, row, k) => {
        ctx.self = [focus];
        const foci = expr(ctx);
        if (foci.length > 0) {
          iterate(foci, ctx, row, k);
          return;
        }
        for (const n of nulls) row[n.slot] = n.value;
        k();
      };
    }
    if (s.repeat !== undefined) {
      const exprs = s.repeat.map((p, i) => this.path(p, `${location}.repeat[${i}]`));
      return (focus, ctx, row, k) => {
        const foci: unknown[] = [];
        const traverse = (node: unknown): void => {
          for (const e of exprs) {
            ctx.self = [node];
            for (const child of e(ctx)) {
              foci.push(child);
              if (isNode(child)) traverse(child);
            }
          }
        };
        traverse(focus);
        iterate(foci, ctx, row, k);
      };
    }
    return (focus, ctx, row, k) => body(focus, ctx.rowIndex, ctx, row, k);
  }

  /** The view-level `where` filter. */
  where(): (resource: unknown, ctx: EvalContext) => boolean {
    const exprs = (this.view.where ?? []).map((w, i) => ({
      expr: this.path(w.path, `where[${i}].path`),
      location: `where[${i}].path`,
    }));
    if (exprs.length === 0) return () => true;
    return (resource, ctx) => {
      for (const { expr, location } of exprs) {
        ctx.self = [resource];
        ctx.rowIndex = 0;
        const r = expr(ctx);
        if (r.length === 0) return false;
        if (r.length > 1) {
          throw new ViewEvaluationError(location, `the path gave ${r.length} values, not one boolean`);
        }
        if (typeof r[0] !== "boolean") {
          throw new ViewEvaluationError(location, `the path must give a boolean, got ${describeType(r[0])}`);
        }
        if (!r[0]) return false;
      }
      return true;
    };
  }
}

/** Builds `(values) => ({col1: values[0], ...})` for fast row objects with a stable shape. */
function rowFactory(names: readonly string[]): (values: readonly unknown[]) => Row {
  // Names are validated sql-names (^[A-Za-z][A-Za-z0-9_]*$) and are JSON-quoted anyway.
  const body = `return {${names.map((n, i) => `${JSON.stringify(n)}: v[${i}]`).join(", ")}};`;
  return new Function("v", body) as (values: readonly unknown[]) => Row;
}

/**
 * Validates and compiles a ViewDefinition. Throws {@link ViewDefinitionError} for an invalid view
 * (including FHIRPath syntax errors, with their position, and undefined constants).
 */
export function compileView(view: unknown, options: CompileViewOptions = {}): CompiledView {
  const v = validateViewDefinition(view);
  const located = viewColumns(v);
  const columns: ViewColumnInfo[] = located.map(({ column, location }) => ({
    name: column.name,
    type: columnType(column),
    collection: column.collection === true,
    path: column.path,
    location,
  }));
  const compiler = new ViewCompiler(v, options.constants ?? {}, options.engine ?? "js");
  const root = compiler.select({ select: v.select }, "");
  const where = compiler.where();
  const resourceType = v.resource;
  const width = columns.length;
  const ctx: EvalContext = { self: [], resource: undefined, rowIndex: 0, index: 0, total: [] };
  const row: unknown[] = new Array(width).fill(null);

  const emit = (resource: unknown, sink: (values: readonly unknown[]) => void): void => {
    if (!isNode(resource) || resource.resourceType !== resourceType) return;
    ctx.resource = resource;
    ctx.rowIndex = 0;
    ctx.index = 0;
    if (!where(resource, ctx)) return;
    row.fill(null);
    root(resource, ctx, row, () => sink(row));
  };
  const makeRow = rowFactory(columns.map((c) => c.name));

  return {
    view: v,
    resource: resourceType,
    columns,
    emit,
    rows(resource: unknown): Row[] {
      const out: Row[] = [];
      emit(resource, (values) => out.push(makeRow(values)));
      return out;
    },
    rowArrays(resource: unknown): unknown[][] {
      const out: unknown[][] = [];
      emit(resource, (values) => out.push(values.slice()));
      return out;
    },
  };
}
