/**
 * The FHIRPath function library of the supported subset. Each entry compiles a call into a
 * {@link Step} once; nothing is looked up by name at evaluation time.
 *
 * Supported: existence (`empty exists all allTrue anyTrue allFalse anyFalse count distinct isDistinct
 * hasValue`), filtering and projection (`where select repeat ofType`), subsetting (`first last tail
 * skip take single`), combining (`union combine intersect exclude`), boolean (`not iif`), strings (`join
 * split length startsWith endsWith contains indexOf substring lower upper trim replace matches
 * toString`), conversion (`toInteger toDecimal`), math (`abs ceiling floor round truncate`), tree
 * (`children descendants`), FHIR (`extension`), boundaries (`lowBoundary highBoundary`), and the SQL on
 * FHIR functions `getResourceKey()` and `getReferenceKey([type])`.
 *
 * Argument kinds: *lambda* arguments (`where`, `select`, `exists`, `all`, `repeat`) are evaluated per
 * input item with `$this` = the item and `$index` = its position; other arguments are evaluated once
 * against the `$this` of the enclosing scope.
 *
 * @module
 */

import type { CallNode, ExprNode, TypeSpecifier } from "./ast.ts";
import type { EvalContext, Expr, Step } from "./context.ts";
import { decimalBoundary } from "./decimal.ts";
import { FhirPathEvaluationError } from "./errors.ts";
import { addDistinct, itemEquals, toBoolean } from "./operators.ts";
import { parseDateTime, parseTime, partsOf, temporalBoundary } from "./temporal.ts";
import { matchesType, type ResolvedType, resolveType } from "./types.ts";
import {
  bool,
  type Collection,
  describeType,
  EMPTY,
  FpDecimal,
  FpTemporal,
  isNode,
  isNumeric,
  numberOf,
  type TemporalType,
} from "./values.ts";

/** What a function builder may ask of the compiler. */
export interface FunctionCompiler {
  /** Compiles an argument expression. */
  compile(node: ExprNode): Expr;
  /** Reads an argument that must be a type name (`Quantity`, `FHIR.string`). */
  typeArg(node: ExprNode, fn: string): ResolvedType;
  /** Throws a compile error at `pos`. */
  fail(what: string, pos: number): never;
}

/** A function of the library. */
export interface FunctionSpec {
  /** Minimum and maximum number of arguments. */
  min: number;
  max: number;
  /** Compiles a call with its argument nodes into a step. */
  build(args: ExprNode[], c: FunctionCompiler, call: CallNode): Step;
}

/** Evaluates `expr` with `$this` = [item] and `$index` = i. */
function lambda(expr: Expr, item: unknown, i: number, ctx: EvalContext): Collection {
  const self = ctx.self;
  const index = ctx.index;
  ctx.self = [item];
  ctx.index = i;
  const r = expr(ctx);
  ctx.self = self;
  ctx.index = index;
  return r;
}

/** Evaluates an optional argument once against the enclosing `$this`. */
function argValue(expr: Expr | undefined, ctx: EvalContext): Collection | undefined {
  return expr === undefined ? undefined : expr(ctx);
}

function singleInput(input: Collection, fn: string): unknown {
  if (input.length > 1) {
    throw new FhirPathEvaluationError(`${fn}() needs a single input item, got ${input.length}`);
  }
  return input[0];
}

function stringInput(input: Collection, fn: string): string | undefined {
  const v = singleInput(input, fn);
  if (v === undefined) return undefined;
  if (typeof v === "string") return v;
  if (v instanceof FpTemporal) return v.text;
  throw new FhirPathEvaluationError(`${fn}() needs a string input, got ${describeType(v)}`);
}

function stringArg(c: Collection | undefined, fn: string): string | undefined {
  if (c === undefined || c.length === 0) return undefined;
  if (c.length > 1 || typeof c[0] !== "string") {
    throw new FhirPathEvaluationError(`${fn}() needs a single string argument`);
  }
  return c[0];
}

function integerArg(c: Collection | undefined, fn: string): number | undefined {
  if (c === undefined || c.length === 0) return undefined;
  const v = c[0];
  if (c.length > 1 || !isNumeric(v) || !Number.isInteger(numberOf(v))) {
    throw new FhirPathEvaluationError(`${fn}() needs a single integer argument`);
  }
  return numberOf(v);
}

/** A function without arguments that maps the whole input collection. */
function collectionFn(f: (input: Collection) => Collection): FunctionSpec {
  return { min: 0, max: 0, build: () => (input) => f(input) };
}

/** A function whose single-item input is a string and whose arguments are values. */
function stringFn(
  min: number,
  max: number,
  f: (s: string, args: (Collection | undefined)[], fn: string) => Collection,
): FunctionSpec {
  return {
    min,
    max,
    build: (args, c, call) => {
      const exprs = args.map((a) => c.compile(a));
      return (input, ctx) => {
        const s = stringInput(input, call.name);
        if (s === undefined) return EMPTY;
        return f(s, exprs.map((e) => argValue(e, ctx)), call.name);
      };
    },
  };
}

/** A math function of a single numeric input. */
function mathFn(f: (x: number) => number): FunctionSpec {
  return {
    min: 0,
    max: 0,
    build: (_a, _c, call) => (input) => {
      const v = singleInput(input, call.name);
      if (v === undefined) return EMPTY;
      if (!isNumeric(v)) {
        throw new FhirPathEvaluationError(`${call.name}() needs a number, got ${describeType(v)}`);
      }
      return [f(numberOf(v))];
    },
  };
}

/** `where`, `exists(criteria)` and friends: keeps items for which the lambda is true. */
function filter(input: Collection, ctx: EvalContext, expr: Expr, fn: string): unknown[] {
  const out: unknown[] = [];
  for (let i = 0; i < input.length; i++) {
    const r = lambda(expr, input[i], i, ctx);
    if (toBoolean(r, `${fn}() criteria`) === true) out.push(input[i]);
  }
  return out;
}

function childrenOf(item: unknown, out: unknown[]): void {
  if (!isNode(item)) return;
  for (const k in item) {
    if (k.startsWith("_") || k === "resourceType") continue;
    const v = item[k];
    if (Array.isArray(v)) {
      for (const x of v) if (x !== null) out.push(x);
    } else if (v !== null && v !== undefined) out.push(v);
  }
}

function allBooleans(input: Collection, fn: string, want: boolean, every: boolean): Collection {
  for (const v of input) {
    if (typeof v !== "boolean") {
      throw new FhirPathEvaluationError(`${fn}() needs booleans, got ${describeType(v)}`);
    }
  }
  return bool(every ? input.every((v) => v === want) : input.some((v) => v === want));
}

const RESOURCE_TYPE = /^[A-Z][A-Za-z]+$/;
const RESOURCE_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const URN_UUID = /^urn:uuid:([0-9a-fA-F-]{36})$/;

/**
 * Parses a Reference's `reference` into [type, id]: relative `Type/id`, the same with `/_history/v`,
 * and absolute URLs ending in `Type/id`; `urn:uuid:` references take their type from `Reference.type`.
 * Contained (`#id`) and other references give undefined.
 */
function referenceParts(node: Record<string, unknown>): [string | undefined, string] | undefined {
  const ref = node.reference;
  if (typeof ref !== "string" || ref.length === 0 || ref.charCodeAt(0) === 35 /* # */) return undefined;
  let r = ref;
  const h = r.indexOf("/_history/");
  if (h >= 0) r = r.slice(0, h);
  const s2 = r.lastIndexOf("/");
  if (s2 > 0) {
    const s1 = r.lastIndexOf("/", s2 - 1);
    const type = r.slice(s1 + 1, s2);
    const id = r.slice(s2 + 1);
    if (RESOURCE_TYPE.test(type) && RESOURCE_ID.test(id)) return [type, id];
    return undefined;
  }
  const u = URN_UUID.exec(ref);
  if (u) return [typeof node.type === "string" ? node.type : undefined, u[1]];
  return undefined;
}

function referenceTypeArg(node: ExprNode, c: FunctionCompiler): string {
  if (node.kind === "member") return node.name;
  if (node.kind === "string") return node.value;
  return c.fail("getReferenceKey() takes a resource type name, e.g. getReferenceKey(Patient)", node.pos);
}

function boundary(high: boolean): FunctionSpec {
  return {
    min: 0,
    max: 1,
    build: (args, c, call) => {
      const precisionExpr = args[0] === undefined ? undefined : c.compile(args[0]);
      return (input, ctx) => {
        const v = singleInput(input, call.name);
        if (v === undefined) return EMPTY;
        const precision = integerArg(argValue(precisionExpr, ctx), call.name);
        if (isNumeric(v)) {
          const b = decimalBoundary(v, high, precision);
          return b === undefined ? EMPTY : [b];
        }
        let type: TemporalType;
        let parts;
        if (v instanceof FpTemporal) {
          type = v.type;
          parts = partsOf(v);
        } else if (typeof v === "string") {
          // A plain string: its format tells date, dateTime or time.
          if (/^\d{4}(-\d{2}(-\d{2})?)?$/.test(v)) type = "date";
          else if (/^\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?$/.test(v)) type = "time";
          else type = "dateTime";
          parts = type === "time" ? parseTime(v) : parseDateTime(v);
        } else {
          return EMPTY;
        }
        if (!parts) return EMPTY;
        const b = temporalBoundary(type, parts, high, precision);
        return b === undefined ? EMPTY : [b];
      };
    },
  };
}

function typeFilter(args: ExprNode[], c: FunctionCompiler, call: CallNode): Step {
  const t = c.typeArg(args[0], call.name);
  return (input) => {
    const out: unknown[] = [];
    for (const v of input) if (matchesType(v, t)) out.push(v);
    return out;
  };
}

function toStringValue(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  if (v instanceof FpDecimal || v instanceof FpTemporal) return v.text;
  return undefined;
}

/** The function table. */
export const FUNCTIONS: Readonly<Record<string, FunctionSpec>> = {
  // Existence
  empty: collectionFn((input) => bool(input.length === 0)),
  exists: {
    min: 0,
    max: 1,
    build: (args, c, call) => {
      if (args.length === 0) return (input) => bool(input.length > 0);
      const crit = c.compile(args[0]);
      return (input, ctx) => {
        for (let i = 0; i < input.length; i++) {
          if (toBoolean(lambda(crit, input[i], i, ctx), `${call.name}() criteria`) === true) {
            return bool(true);
          }
        }
        return bool(false);
      };
    },
  },
  all: {
    min: 1,
    max: 1,
    build: (args, c, call) => {
      const crit = c.compile(args[0]);
      return (input, ctx) => {
        for (let i = 0; i < input.length; i++) {
          if (toBoolean(lambda(crit, input[i], i, ctx), `${call.name}() criteria`) !== true) {
            return bool(false);
          }
        }
        return bool(true);
      };
    },
  },
  allTrue: collectionFn((input) => allBooleans(input, "allTrue", true, true)),
  anyTrue: collectionFn((input) => allBooleans(input, "anyTrue", true, false)),
  allFalse: collectionFn((input) => allBooleans(input, "allFalse", false, true)),
  anyFalse: collectionFn((input) => allBooleans(input, "anyFalse", false, false)),
  count: collectionFn((input) => [input.length]),
  distinct: collectionFn((input) => {
    const out: unknown[] = [];
    addDistinct(out, input);
    return out;
  }),
  isDistinct: collectionFn((input) => {
    const out: unknown[] = [];
    addDistinct(out, input);
    return bool(out.length === input.length);
  }),
  hasValue: collectionFn((input) =>
    bool(input.length === 1 && (!isNode(input[0]) || "value" in (input[0] as Record<string, unknown>)))
  ),

  // Filtering and projection
  where: {
    min: 1,
    max: 1,
    build: (args, c, call) => {
      const crit = c.compile(args[0]);
      return (input, ctx) => input.length === 0 ? EMPTY : filter(input, ctx, crit, call.name);
    },
  },
  select: {
    min: 1,
    max: 1,
    build: (args, c) => {
      const proj = c.compile(args[0]);
      return (input, ctx) => {
        const out: unknown[] = [];
        for (let i = 0; i < input.length; i++) {
          for (const x of lambda(proj, input[i], i, ctx)) out.push(x);
        }
        return out;
      };
    },
  },
  repeat: {
    min: 1,
    max: 1,
    build: (args, c) => {
      const proj = c.compile(args[0]);
      return (input, ctx) => {
        const out: unknown[] = [];
        let queue = input;
        while (queue.length > 0) {
          const next: unknown[] = [];
          for (let i = 0; i < queue.length; i++) {
            for (const x of lambda(proj, queue[i], i, ctx)) {
              if (!out.some((y) => itemEquals(x, y) === true)) {
                out.push(x);
                next.push(x);
              }
            }
          }
          queue = next;
        }
        return out;
      };
    },
  },
  ofType: { min: 1, max: 1, build: typeFilter },

  // Subsetting
  first: collectionFn((input) => input.length <= 1 ? input : [input[0]]),
  last: collectionFn((input) => input.length <= 1 ? input : [input[input.length - 1]]),
  tail: collectionFn((input) => input.length <= 1 ? EMPTY : input.slice(1)),
  single: collectionFn((input) => {
    if (input.length > 1) throw new FhirPathEvaluationError(`single() got ${input.length} items`);
    return input;
  }),
  skip: {
    min: 1,
    max: 1,
    build: (args, c, call) => {
      const n = c.compile(args[0]);
      return (input, ctx) => {
        const k = integerArg(argValue(n, ctx), call.name);
        if (k === undefined) return EMPTY;
        return k <= 0 ? input : input.slice(k);
      };
    },
  },
  take: {
    min: 1,
    max: 1,
    build: (args, c, call) => {
      const n = c.compile(args[0]);
      return (input, ctx) => {
        const k = integerArg(argValue(n, ctx), call.name);
        if (k === undefined || k <= 0) return EMPTY;
        return input.slice(0, k);
      };
    },
  },

  // Combining
  union: {
    min: 1,
    max: 1,
    build: (args, c) => {
      const other = c.compile(args[0]);
      return (input, ctx) => {
        const out: unknown[] = [];
        addDistinct(out, input);
        addDistinct(out, argValue(other, ctx)!);
        return out;
      };
    },
  },
  combine: {
    min: 1,
    max: 1,
    build: (args, c) => {
      const other = c.compile(args[0]);
      return (input, ctx) => [...input, ...argValue(other, ctx)!];
    },
  },
  intersect: {
    min: 1,
    max: 1,
    build: (args, c) => {
      const other = c.compile(args[0]);
      return (input, ctx) => {
        const o = argValue(other, ctx)!;
        const out: unknown[] = [];
        addDistinct(out, input.filter((x) => o.some((y) => itemEquals(x, y) === true)));
        return out;
      };
    },
  },
  exclude: {
    min: 1,
    max: 1,
    build: (args, c) => {
      const other = c.compile(args[0]);
      return (input, ctx) => {
        const o = argValue(other, ctx)!;
        return input.filter((x) => !o.some((y) => itemEquals(x, y) === true));
      };
    },
  },

  // Boolean
  not: collectionFn((input) => {
    const b = toBoolean(input, "not()");
    return b === undefined ? EMPTY : bool(!b);
  }),
  iif: {
    min: 2,
    max: 3,
    build: (args, c, call) => {
      const [cond, yes, no] = args.map((a) => c.compile(a));
      return (input, ctx) => {
        if (input.length > 1) throw new FhirPathEvaluationError(`iif() needs at most one input item`);
        const self = ctx.self;
        if (input.length === 1) ctx.self = input;
        const b = toBoolean(cond(ctx), `${call.name}() criterion`);
        const r = b === true ? yes(ctx) : no ? no(ctx) : EMPTY;
        ctx.self = self;
        return r;
      };
    },
  },

  // Strings
  join: {
    min: 0,
    max: 1,
    build: (args, c, call) => {
      const sep = args[0] === undefined ? undefined : c.compile(args[0]);
      return (input, ctx) => {
        const s = stringArg(argValue(sep, ctx), call.name) ?? "";
        const parts: string[] = [];
        for (const v of input) {
          const t = toStringValue(v);
          if (t === undefined) {
            throw new FhirPathEvaluationError(`join() needs strings, got ${describeType(v)}`);
          }
          parts.push(t);
        }
        return [parts.join(s)];
      };
    },
  },
  split: stringFn(1, 1, (s, [sep], fn) => {
    const d = stringArg(sep, fn);
    return d === undefined ? EMPTY : s.split(d);
  }),
  length: stringFn(0, 0, (s) => [s.length]),
  startsWith: stringFn(1, 1, (s, [p], fn) => {
    const x = stringArg(p, fn);
    return x === undefined ? EMPTY : bool(s.startsWith(x));
  }),
  endsWith: stringFn(1, 1, (s, [p], fn) => {
    const x = stringArg(p, fn);
    return x === undefined ? EMPTY : bool(s.endsWith(x));
  }),
  contains: stringFn(1, 1, (s, [p], fn) => {
    const x = stringArg(p, fn);
    return x === undefined ? EMPTY : bool(s.includes(x));
  }),
  indexOf: stringFn(1, 1, (s, [p], fn) => {
    const x = stringArg(p, fn);
    return x === undefined ? EMPTY : [s.indexOf(x)];
  }),
  substring: stringFn(1, 2, (s, [start, len], fn) => {
    const a = integerArg(start, fn);
    if (a === undefined || a < 0 || a >= s.length) return EMPTY;
    const n = integerArg(len, fn);
    return [n === undefined ? s.slice(a) : s.slice(a, a + Math.max(0, n))];
  }),
  lower: stringFn(0, 0, (s) => [s.toLowerCase()]),
  upper: stringFn(0, 0, (s) => [s.toUpperCase()]),
  trim: stringFn(0, 0, (s) => [s.trim()]),
  replace: stringFn(2, 2, (s, [p, r], fn) => {
    const a = stringArg(p, fn);
    const b = stringArg(r, fn);
    return a === undefined || b === undefined ? EMPTY : [s.split(a).join(b)];
  }),
  matches: stringFn(1, 1, (s, [p], fn) => {
    const re = stringArg(p, fn);
    return re === undefined ? EMPTY : bool(new RegExp(re, "su").test(s));
  }),
  toString: collectionFn((input) => {
    const v = singleInput(input, "toString");
    if (v === undefined) return EMPTY;
    const s = toStringValue(v);
    return s === undefined ? EMPTY : [s];
  }),

  // Conversion
  toInteger: collectionFn((input) => {
    const v = singleInput(input, "toInteger");
    if (typeof v === "number") return Number.isInteger(v) ? [v] : EMPTY;
    if (typeof v === "boolean") return [v ? 1 : 0];
    if (typeof v === "string" && /^[+-]?\d+$/.test(v)) return [Number(v)];
    return EMPTY;
  }),
  toDecimal: collectionFn((input) => {
    const v = singleInput(input, "toDecimal");
    if (isNumeric(v)) return [v];
    if (typeof v === "boolean") return [v ? 1 : 0];
    if (typeof v === "string" && /^[+-]?\d+(\.\d+)?$/.test(v)) {
      const n = Number(v);
      return [String(n) === v ? n : new FpDecimal(n, v)];
    }
    return EMPTY;
  }),

  // Math
  abs: mathFn(Math.abs),
  ceiling: mathFn(Math.ceil),
  floor: mathFn(Math.floor),
  truncate: mathFn(Math.trunc),
  round: {
    min: 0,
    max: 1,
    build: (args, c, call) => {
      const p = args[0] === undefined ? undefined : c.compile(args[0]);
      return (input, ctx) => {
        const v = singleInput(input, call.name);
        if (v === undefined) return EMPTY;
        if (!isNumeric(v)) {
          throw new FhirPathEvaluationError(`round() needs a number, got ${describeType(v)}`);
        }
        const places = integerArg(argValue(p, ctx), call.name) ?? 0;
        const f = 10 ** places;
        return [Math.round(numberOf(v) * f) / f];
      };
    },
  },

  // Tree navigation
  children: collectionFn((input) => {
    const out: unknown[] = [];
    for (const v of input) childrenOf(v, out);
    return out;
  }),
  descendants: collectionFn((input) => {
    const out: unknown[] = [];
    let level: unknown[] = [...input];
    while (level.length > 0) {
      const next: unknown[] = [];
      for (const v of level) childrenOf(v, next);
      for (const x of next) out.push(x);
      level = next;
    }
    return out;
  }),

  // FHIR
  extension: {
    min: 1,
    max: 1,
    build: (args, c, call) => {
      const urlExpr = c.compile(args[0]);
      return (input, ctx) => {
        const url = stringArg(argValue(urlExpr, ctx), call.name);
        if (url === undefined) return EMPTY;
        const out: unknown[] = [];
        for (const v of input) {
          if (!isNode(v) || !Array.isArray(v.extension)) continue;
          for (const e of v.extension) if (isNode(e) && e.url === url) out.push(e);
        }
        return out;
      };
    },
  },
  lowBoundary: boundary(false),
  highBoundary: boundary(true),

  // SQL on FHIR
  getResourceKey: collectionFn((input) => {
    const out: unknown[] = [];
    for (const v of input) {
      if (isNode(v) && typeof v.resourceType === "string" && typeof v.id === "string") out.push(v.id);
    }
    return out;
  }),
  getReferenceKey: {
    min: 0,
    max: 1,
    build: (args, c) => {
      const want = args[0] === undefined ? undefined : referenceTypeArg(args[0], c);
      return (input) => {
        const out: unknown[] = [];
        for (const v of input) {
          if (!isNode(v)) continue;
          const parts = referenceParts(v);
          if (parts === undefined) continue;
          if (want !== undefined && parts[0] !== want) continue;
          out.push(parts[1]);
        }
        return out;
      };
    },
  },
};

/** `as` / `is` operands and `ofType` argument: extracts a type specifier from an argument node. */
export function typeSpecifierOf(node: ExprNode): TypeSpecifier | undefined {
  if (node.kind === "member") return { name: node.name, pos: node.pos };
  if (
    node.kind === "invoke" && node.target.kind === "member" && node.step.kind === "member"
  ) {
    return { namespace: node.target.name, name: node.step.name, pos: node.target.pos };
  }
  return undefined;
}

/** Resolves a type specifier or fails at its position. */
export function resolveTypeOrFail(spec: TypeSpecifier, c: FunctionCompiler, what: string): ResolvedType {
  const t = resolveType(spec);
  if (t === undefined) {
    c.fail(`${what}: unknown type ${spec.namespace ? `${spec.namespace}.` : ""}${spec.name}`, spec.pos);
  }
  return t;
}
