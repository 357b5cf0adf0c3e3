/**
 * The FHIRPath code generator: an expression's AST → the source of one straight-line JavaScript
 * function, built once with `new Function`. It computes exactly what the closure tree of `compile.ts`
 * computes (same values, same errors), only faster: navigation is inlined as property reads with
 * constant keys (monomorphic inline caches), `where`/`exists`/`all`/`select` become loops without
 * per-item context switches, `and`/`or`/`=`/`!=` work on three-valued booleans without building
 * collections, and single items stay unboxed where the semantics allow.
 *
 * Everything else falls back to the closure compiler for that sub-tree: functions without a
 * generated form are called as their compiled {@link Step} on the generated input, and node kinds
 * without one (indexers, unary minus, `is`/`as`, fused `ofType`) run as closures. Before such a call
 * the generated code puts the current `$this`/`$index` into the context, and the function restores the
 * caller's context on exit, as the closures do.
 *
 * Values while generating (all held in variables or literals, so each is evaluated once):
 * - `coll`: an expression of a collection (a JavaScript array, read-only);
 * - `item`: one non-null item (the collection `[item]`), e.g. `$this` in a lambda, a literal;
 * - `json`: what navigation gives — `undefined` (empty), an array (a collection, nulls removed), or one
 *   non-null item — so that single-valued elements are never boxed;
 * - `bool`: `true`, `false` or `undefined` (the empty collection) — the result of logic.
 *
 * Safety: the only text taken from the expression into the source is names and string literals, and
 * both are emitted with `JSON.stringify` (a valid, inert JavaScript string literal). Other constants are
 * passed in an array, never as source.
 *
 * @module
 */

import type { CallNode, ExprNode } from "./ast.ts";
import type { Compiler } from "./compile.ts";
import { numberLiteral, temporalLiteral } from "./compile.ts";
import type { EvalContext, Expr, Step } from "./context.ts";
import { FhirPathEvaluationError } from "./errors.ts";
import { choiceValues, isTypeName, navigate, withoutNulls } from "./navigation.ts";
import {
  arithmetic,
  compare,
  equals,
  equivalent,
  implies,
  itemEquals,
  membership,
  notEquals,
  notEquivalent,
  toBoolean,
  union,
  xor,
} from "./operators.ts";
import { type Collection, EMPTY, FALSE, FpValue, isNode, TRUE } from "./values.ts";

type Val =
  | { k: "coll"; e: string }
  | { k: "item"; e: string }
  | { k: "json"; e: string }
  | { k: "bool"; e: string };

interface Scope {
  /** `$this`. */
  self: Val;
  /** Expression of `$index`. */
  index: string;
}

/** Helpers the generated code calls (all shared with the closure evaluator). */
const RUNTIME = {
  FpValue,
  EMPTY,
  TRUE,
  FALSE,
  isNode,
  navigate,
  choiceValues,
  withoutNulls,
  toBoolean,
  itemEquals,
  equals,
  notEquals,
  equivalent,
  notEquivalent,
  compare,
  arithmetic,
  union,
  membership,
  xor,
  implies,
  FhirPathEvaluationError,
};

const PRELUDE = `const {${Object.keys(RUNTIME).join(", ")}} = rt;`;

/** Functions whose upper-case name argument is a type name, not a path. */
const TYPE_ARGUMENT_FUNCTIONS: ReadonlySet<string> = new Set(["getReferenceKey", "ofType"]);

/** Whether the argument `node` of `fn()` can be evaluated without the current `$this`. */
function readsNoContext(node: ExprNode, fn: string): boolean {
  switch (node.kind) {
    case "string":
    case "number":
    case "boolean":
    case "datetime":
    case "empty":
      return true;
    case "member":
      return TYPE_ARGUMENT_FUNCTIONS.has(fn) && /^[A-Z]/.test(node.name);
    default:
      return false;
  }
}

/**
 * `isNode(x)` written out at each site: every site then has its own type feedback, where one shared
 * function sees every shape of every resource (megamorphic) and costs ~20 ns a call.
 */
function nodeCheck(x: string): string {
  return `(typeof ${x} === "object" && ${x} !== null && !Array.isArray(${x}) && !(${x} instanceof FpValue))`;
}

class Generator {
  private readonly lines: string[] = [];
  private n = 0;
  /** Constants the code reads as `K[i]`. */
  readonly K: unknown[] = [];
  /** Fallback steps, `S[i]`. */
  readonly S: Step[] = [];
  /** Fallback closures, `E[i]`. */
  readonly E: Expr[] = [];
  /** Whether the code writes `ctx.self` / `ctx.index` (then they are restored on exit). */
  touchesContext = false;

  constructor(private readonly closures: Compiler, private readonly constants: Map<string, Collection>) {}

  private tmp(prefix = "t"): string {
    return `${prefix}${this.n++}`;
  }

  private emit(line: string): void {
    this.lines.push(line);
  }

  private konst(v: unknown): string {
    this.K.push(v);
    return `K[${this.K.length - 1}]`;
  }

  /** A variable holding `expr`. */
  private let(expr: string): string {
    const t = this.tmp();
    this.emit(`const ${t} = ${expr};`);
    return t;
  }

  /** The value as a collection expression. */
  coll(v: Val): string {
    switch (v.k) {
      case "coll":
        return v.e;
      case "item":
        return `[${v.e}]`;
      case "json":
        return `(${v.e} === undefined ? EMPTY : Array.isArray(${v.e}) ? ${v.e} : [${v.e}])`;
      case "bool":
        return `(${v.e} === undefined ? EMPTY : ${v.e} ? TRUE : FALSE)`;
    }
  }

  /** The value as a three-valued boolean expression (FHIRPath singleton evaluation). */
  private bool(v: Val, what: string): string {
    const w = JSON.stringify(what);
    switch (v.k) {
      case "bool":
        return v.e;
      case "item":
        return `(typeof ${v.e} === "boolean" ? ${v.e} : true)`;
      case "json":
        return `(${v.e} === undefined ? undefined : Array.isArray(${v.e}) ? toBoolean(${v.e}, ${w}) : ` +
          `typeof ${v.e} === "boolean" ? ${v.e} : true)`;
      case "coll":
        return `toBoolean(${v.e}, ${w})`;
    }
  }

  /** Makes the closures see the current scope (for fallbacks that evaluate sub-expressions). */
  private setContext(scope: Scope): void {
    this.touchesContext = true;
    this.emit(`ctx.self = ${this.coll(scope.self)}; ctx.index = ${scope.index};`);
  }

  /** Runs `node` as a closure in the current scope. */
  private fallback(node: ExprNode, scope: Scope): Val {
    this.E.push(this.closures.compile(node));
    this.setContext(scope);
    return { k: "coll", e: this.let(`E[${this.E.length - 1}](ctx)`) };
  }

  /**
   * `.name` on the item in variable `x`, assigning a json value to `out`. `whole` is the collection
   * the item came from, returned as it is when the item is selected by its resource type.
   */
  private navItem(x: string, name: string, typeName: boolean, out: string, whole?: string): string {
    const key = JSON.stringify(name);
    const self = typeName ? `if (${x}.resourceType === ${key}) ${out} = ${whole ?? x}; else ` : "";
    return `if (${nodeCheck(x)}) { ${self}{ const v = ${x}[${key}]; ${out} = v === undefined ? ` +
      `choiceValues(${x}, ${key}) : Array.isArray(v) ? (v.indexOf(null) < 0 ? v : withoutNulls(v)) : v === null ? undefined : v; } } ` +
      `else ${out} = undefined;`;
  }

  /** `.name` applied to a value; the result is a json value. */
  private nav(input: Val, name: string, atRoot: boolean): Val {
    if (name.startsWith("_")) return { k: "coll", e: "EMPTY" };
    const typeName = isTypeName(name, atRoot);
    const key = JSON.stringify(name);
    const out = this.tmp();
    this.emit(`let ${out};`);
    if (input.k === "item") {
      this.emit(this.navItem(input.e, name, typeName, out));
      return { k: "json", e: out };
    }
    const x = this.tmp("x");
    const arrayCase = (c: string) =>
      `if (${c}.length === 1) { const ${x} = ${c}[0]; ${this.navItem(x, name, typeName, out, c)} } ` +
      `else ${out} = navigate(${c}, ${key}, ${typeName});`;
    if (input.k === "json") {
      const r = input.e;
      this.emit(
        `if (${r} === undefined) ${out} = undefined; else if (Array.isArray(${r})) { ${arrayCase(r)} } ` +
          `else { ${this.navItem(r, name, typeName, out)} }`,
      );
    } else {
      this.emit(arrayCase(input.k === "coll" ? input.e : this.let(this.coll(input))));
    }
    return { k: "json", e: out };
  }

  /**
   * A loop over the items of a value with a lambda scope (`$this` = the item, `$index` = its position);
   * `body` generates the per-item code and may `break` the returned label. No collection is built for
   * a single item.
   */
  private loop(input: Val, body: (inner: Scope, brk: string) => void): void {
    const i = this.tmp("i");
    const x = this.tmp("x");
    const label = this.tmp("L");
    let count: string;
    let item: string;
    if (input.k === "json") {
      const a = this.let(`Array.isArray(${input.e})`);
      count = this.let(`${input.e} === undefined ? 0 : ${a} ? ${input.e}.length : 1`);
      item = `${a} ? ${input.e}[${i}] : ${input.e}`;
    } else if (input.k === "item") {
      count = "1";
      item = input.e;
    } else {
      const c = input.k === "coll" ? input.e : this.let(this.coll(input));
      count = `${c}.length`;
      item = `${c}[${i}]`;
    }
    this.emit(`${label}: for (let ${i} = 0; ${i} < ${count}; ${i}++) { const ${x} = ${item};`);
    body({ self: { k: "item", e: x }, index: i }, label);
    this.emit(`}`);
  }

  /** Number of items of a value (an expression). */
  private count(v: Val): string {
    switch (v.k) {
      case "item":
        return "1";
      case "json":
        return `(${v.e} === undefined ? 0 : Array.isArray(${v.e}) ? ${v.e}.length : 1)`;
      default:
        return `${this.coll(v)}.length`;
    }
  }

  /** `input.name(args)`. */
  private call(input: Val, node: CallNode, scope: Scope): Val {
    const fn = node.name;
    const arg = node.args[0];
    switch (fn) {
      case "where": {
        const out = this.tmp();
        this.emit(`let ${out} = EMPTY;`);
        const started = this.tmp();
        this.emit(`let ${started} = false;`);
        this.loop(input, (inner) => {
          // The closures return EMPTY for an empty input and a new array otherwise.
          this.emit(`if (!${started}) { ${started} = true; ${out} = []; }`);
          const r = this.gen(arg, inner);
          this.emit(`if (${this.bool(r, `${fn}() criteria`)} === true) ${out}.push(${inner.self.e});`);
        });
        return { k: "coll", e: out };
      }
      case "exists":
      case "all": {
        if (node.args.length === 0) return { k: "bool", e: this.let(`${this.count(input)} > 0`) };
        const out = this.tmp();
        const all = fn === "all";
        this.emit(`let ${out} = ${all};`);
        this.loop(input, (inner, brk) => {
          const r = this.gen(arg, inner);
          this.emit(
            `if (${this.bool(r, `${fn}() criteria`)} ${all ? "!==" : "==="} true) { ${out} = ${!all}; ` +
              `break ${brk}; }`,
          );
        });
        return { k: "bool", e: out };
      }
      case "select": {
        const out = this.tmp();
        this.emit(`const ${out} = [];`);
        this.loop(input, (inner) => {
          const r = this.gen(arg, inner);
          if (r.k === "item") this.emit(`${out}.push(${r.e});`);
          else {
            const rc = this.let(this.coll(r));
            this.emit(`for (let j = 0; j < ${rc}.length; j++) ${out}.push(${rc}[j]);`);
          }
        });
        return { k: "coll", e: out };
      }
      case "first":
      case "last": {
        if (input.k === "item") return input;
        // A json value: undefined (empty), or the one item.
        if (input.k === "json") {
          const r = input.e;
          const at = fn === "first" ? "0" : `${r}.length - 1`;
          return { k: "json", e: this.let(`Array.isArray(${r}) ? ${r}[${at}] : ${r}`) };
        }
        const c = this.let(this.coll(input));
        const at = fn === "first" ? "0" : `${c}.length - 1`;
        return { k: "json", e: this.let(`${c}[${at}]`) };
      }
      case "count":
        return { k: "item", e: this.let(this.count(input)) };
      case "empty":
        return { k: "bool", e: this.let(`${this.count(input)} === 0`) };
      case "not": {
        const b = this.let(this.bool(input, "not()"));
        return { k: "bool", e: this.let(`${b} === undefined ? undefined : !${b}`) };
      }
    }
    // Any other function: its compiled step on the generated input.
    this.S.push(this.closures.call(node));
    const inputColl = this.let(this.coll(input));
    if (!node.args.every((a) => readsNoContext(a, fn))) this.setContext(scope);
    return { k: "coll", e: this.let(`S[${this.S.length - 1}](${inputColl}, ctx)`) };
  }

  /** `left = 'literal'` and `left != 'literal'` without building collections. */
  private equalsString(left: Val, literal: string, negate: boolean): Val {
    const lit = JSON.stringify(literal);
    const eq = (x: string) => `(typeof ${x} === "string" ? ${x} === ${lit} : itemEquals(${x}, ${lit}))`;
    const one = (c: string) => `${c}.length === 0 ? undefined : ${c}.length !== 1 ? false : ${eq(`${c}[0]`)}`;
    let out: string;
    switch (left.k) {
      case "item":
        out = this.let(eq(left.e));
        break;
      case "json":
        out = this.let(
          `${left.e} === undefined ? undefined : Array.isArray(${left.e}) ? (${one(left.e)}) : ${eq(left.e)}`,
        );
        break;
      default:
        out = this.let(one(this.let(this.coll(left))));
    }
    if (!negate) return { k: "bool", e: out };
    return { k: "bool", e: this.let(`${out} === undefined ? undefined : !${out}`) };
  }

  private binary(node: ExprNode & { kind: "binary" }, scope: Scope): Val {
    const op = node.op;
    if (op === "and" || op === "or") {
      // Short circuit as the closures do: the right side is evaluated only when it can matter.
      const stop = op === "and" ? "false" : "true";
      const a = this.let(this.bool(this.gen(node.left, scope), op));
      const out = this.tmp();
      this.emit(`let ${out}; if (${a} === ${stop}) ${out} = ${stop}; else {`);
      const b = this.let(this.bool(this.gen(node.right, scope), op));
      this.emit(
        op === "and"
          ? `${out} = ${b} === false ? false : ${a} === true && ${b} === true ? true : undefined;`
          : `${out} = ${b} === true ? true : ${a} === false && ${b} === false ? false : undefined;`,
      );
      this.emit(`}`);
      return { k: "bool", e: out };
    }
    if ((op === "=" || op === "!=") && node.right.kind === "string") {
      return this.equalsString(this.gen(node.left, scope), node.right.value, op === "!=");
    }
    if (op === "xor" || op === "implies") {
      const a = this.let(this.bool(this.gen(node.left, scope), op));
      const b = this.let(this.bool(this.gen(node.right, scope), op));
      return { k: "coll", e: this.let(`${op}(${a}, ${b})`) };
    }
    const lv = this.let(this.coll(this.gen(node.left, scope)));
    const r = this.let(this.coll(this.gen(node.right, scope)));
    const call = (f: string) => ({ k: "coll" as const, e: this.let(`${f}(${lv}, ${r})`) });
    switch (op) {
      case "=":
        return call("equals");
      case "!=":
        return call("notEquals");
      case "~":
        return call("equivalent");
      case "!~":
        return call("notEquivalent");
      case "<":
      case "<=":
      case ">":
      case ">=":
        return { k: "coll", e: this.let(`compare(${JSON.stringify(op)}, ${lv}, ${r})`) };
      case "|":
        return call("union");
      case "in":
        return { k: "coll", e: this.let(`membership(${lv}, ${r}, "in")`) };
      case "contains":
        return { k: "coll", e: this.let(`membership(${r}, ${lv}, "contains")`) };
      default:
        // + - * / div mod &
        return { k: "coll", e: this.let(`arithmetic(${JSON.stringify(op)}, ${lv}, ${r})`) };
    }
  }

  /** Generates `node` in `scope`. */
  gen(node: ExprNode, scope: Scope): Val {
    switch (node.kind) {
      case "string":
        return { k: "item", e: JSON.stringify(node.value) };
      case "number":
        return { k: "item", e: this.konst(numberLiteral(node.text)) };
      case "boolean":
        return { k: "bool", e: String(node.value) };
      case "datetime":
        return { k: "item", e: this.konst(temporalLiteral(node.text)) };
      case "empty":
        return { k: "coll", e: "EMPTY" };
      case "member":
        return this.nav(scope.self, node.name, true);
      case "call":
        return this.call(scope.self, node, scope);
      case "invoke": {
        const step = node.step;
        if (step.kind === "call" && step.name === "ofType") return this.fallback(node, scope);
        const target = this.gen(node.target, scope);
        return step.kind === "member" ? this.nav(target, step.name, false) : this.call(target, step, scope);
      }
      case "special":
        if (node.name === "$this") return scope.self;
        if (node.name === "$index") return { k: "item", e: scope.index };
        return this.fallback(node, scope);
      case "env": {
        const c = this.constants.get(node.name);
        if (c !== undefined) return { k: "coll", e: this.konst(c) };
        if (node.name === "rowIndex") return { k: "item", e: this.let("ctx.rowIndex") };
        if (node.name === "resource" || node.name === "rootResource" || node.name === "context") {
          return { k: "coll", e: this.let("ctx.resource === undefined ? EMPTY : [ctx.resource]") };
        }
        return this.fallback(node, scope);
      }
      case "binary":
        return this.binary(node, scope);
      default:
        // indexer, unary, typeop
        return this.fallback(node, scope);
    }
  }

  /** The function source. */
  source(result: Val): string {
    const body = [...this.lines, `return ${this.coll(result)};`];
    if (!this.touchesContext) return body.join("\n");
    return [
      "const savedSelf = ctx.self, savedIndex = ctx.index;",
      "try {",
      ...body,
      "} finally { ctx.self = savedSelf; ctx.index = savedIndex; }",
    ].join("\n");
  }
}

/**
 * Generates the JavaScript function of an expression whose AST `ast` was already compiled (and so
 * validated) by `closures`, the closure compiler of the same text and constants. The result is an
 * {@link Expr} that evaluates against `ctx.self` exactly like the closure tree.
 */
export function generateFhirPath(
  ast: ExprNode,
  closures: Compiler,
  constants: Map<string, Collection>,
): { expr: Expr; source: string } {
  const g = new Generator(closures, constants);
  const result = g.gen(ast, { self: { k: "coll", e: "self0" }, index: "index0" });
  const source = `const self0 = ctx.self, index0 = ctx.index;\n${g.source(result)}`;
  const factory = new Function(
    "rt",
    "K",
    "S",
    "E",
    `${PRELUDE}\nreturn function fhirpath(ctx) {\n${source}\n};`,
  );
  const expr = factory(RUNTIME, g.K, g.S, g.E) as (ctx: EvalContext) => Collection;
  return { expr, source };
}
