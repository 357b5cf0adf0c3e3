/**
 * The evaluation context and the shapes of compiled code.
 *
 * A compiled expression is a closure tree: an {@link Expr} evaluates against `ctx.self` (the `$this`
 * collection of its scope); a {@link Step} is one `.name` or `.fn()` applied to an input collection.
 * The context is one mutable object reused across evaluations (lambda functions such as `where` set
 * `self`/`index` per item), so no allocation happens per scope.
 *
 * @module
 */

import type { Collection } from "./values.ts";

/** Mutable evaluation state. */
export interface EvalContext {
  /** `$this`: the focus of the current scope. */
  self: Collection;
  /** `%resource` / `%rootResource` / `%context`: the resource being evaluated. */
  resource: unknown;
  /** `%rowIndex` (SQL on FHIR): 0-based index of the current `forEach`/`repeat` item. */
  rowIndex: number;
  /** `$index` inside lambda functions. */
  index: number;
  /** `$total` inside `aggregate`. */
  total: Collection;
}

/** A compiled expression: evaluates against `ctx.self`. */
export type Expr = (ctx: EvalContext) => Collection;

/** A compiled invocation step: `.name` or `.fn(...)` applied to `input`. */
export type Step = (input: Collection, ctx: EvalContext) => Collection;

/** A fresh context whose focus is `focus`. */
export function newContext(focus: Collection, resource: unknown, rowIndex = 0): EvalContext {
  return { self: focus, resource, rowIndex, index: 0, total: [] };
}
