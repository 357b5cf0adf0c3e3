/**
 * FHIRPath parser: tokens → AST ({@link ExprNode}), by precedence climbing with the FHIRPath
 * operator precedence (tightest first): `.`/`[]`, unary `+ -`, `* / div mod`, `+ - &`, `is as`, `|`,
 * `< > <= >=`, `= ~ != !~`, `in contains`, `and`, `or xor`, `implies`. All binary operators are
 * left-associative. Quantity literals (`5 'mg'`, `3 days`) are outside the supported subset and are
 * rejected with a clear message.
 *
 * @module
 */

import type { CallNode, ExprNode, MemberNode, TypeSpecifier } from "./ast.ts";
import { FhirPathSyntaxError } from "./errors.ts";
import { type Token, tokenize } from "./lexer.ts";

/** Binding power of each infix operator (higher binds tighter). */
const INFIX: Record<string, number> = {
  "implies": 1,
  "or": 2,
  "xor": 2,
  "and": 3,
  "in": 4,
  "contains": 4,
  "=": 5,
  "~": 5,
  "!=": 5,
  "!~": 5,
  "<": 6,
  ">": 6,
  "<=": 6,
  ">=": 6,
  "|": 7,
  "is": 8,
  "as": 8,
  "+": 9,
  "-": 9,
  "&": 9,
  "*": 10,
  "/": 10,
  "div": 10,
  "mod": 10,
};

const UNARY_POWER = 11;

const WORD_OPERATORS = new Set(["implies", "or", "xor", "and", "in", "contains", "is", "as", "div", "mod"]);

const DURATION_UNITS = new Set([
  "year",
  "years",
  "month",
  "months",
  "week",
  "weeks",
  "day",
  "days",
  "hour",
  "hours",
  "minute",
  "minutes",
  "second",
  "seconds",
  "millisecond",
  "milliseconds",
]);

class Parser {
  private i = 0;

  constructor(private readonly text: string, private readonly tokens: Token[]) {}

  private peek(offset = 0): Token {
    return this.tokens[Math.min(this.i + offset, this.tokens.length - 1)];
  }

  private next(): Token {
    const t = this.tokens[this.i];
    if (this.i < this.tokens.length - 1) this.i++;
    return t;
  }

  private fail(what: string, token: Token): never {
    throw new FhirPathSyntaxError(what, this.text, token.pos);
  }

  private describe(t: Token): string {
    if (t.kind === "eof") return "end of expression";
    if (t.kind === "string") return "string literal";
    return JSON.stringify(this.text.slice(t.pos, Math.max(t.pos + t.value.length, t.pos + 1)));
  }

  private expectOp(op: string): Token {
    const t = this.peek();
    if (t.kind !== "op" || t.value !== op) this.fail(`expected "${op}" but found ${this.describe(t)}`, t);
    return this.next();
  }

  /** Parses the whole text; everything must be consumed. */
  parseAll(): ExprNode {
    if (this.peek().kind === "eof") this.fail("empty expression", this.peek());
    const e = this.parseExpr(0);
    const t = this.peek();
    if (t.kind !== "eof") this.fail(`unexpected ${this.describe(t)}`, t);
    return e;
  }

  /** Infix operator at the current position, if any. */
  private infixOp(): string | undefined {
    const t = this.peek();
    if (t.kind === "op" && t.value in INFIX) return t.value;
    if (t.kind === "ident" && WORD_OPERATORS.has(t.value)) return t.value;
    return undefined;
  }

  parseExpr(minPower: number): ExprNode {
    let left = this.parseUnary();
    for (;;) {
      const op = this.infixOp();
      if (op === undefined) break;
      const power = INFIX[op];
      if (power <= minPower) break;
      const opTok = this.next();
      if (op === "is" || op === "as") {
        const type = this.parseTypeSpecifier();
        left = { kind: "typeop", op, left, type, pos: opTok.pos };
        continue;
      }
      const right = this.parseExpr(power);
      left = { kind: "binary", op, left, right, pos: opTok.pos };
    }
    return left;
  }

  private parseUnary(): ExprNode {
    const t = this.peek();
    if (t.kind === "op" && (t.value === "+" || t.value === "-")) {
      this.next();
      const operand = this.parseExpr(UNARY_POWER - 1);
      return { kind: "unary", op: t.value, operand, pos: t.pos };
    }
    return this.parsePostfix(this.parseTerm());
  }

  private parsePostfix(expr: ExprNode): ExprNode {
    for (;;) {
      const t = this.peek();
      if (t.kind === "op" && t.value === ".") {
        this.next();
        const step = this.parseInvocation(true);
        expr = { kind: "invoke", target: expr, step, pos: step.pos };
        continue;
      }
      if (t.kind === "op" && t.value === "[") {
        this.next();
        const index = this.parseExpr(0);
        this.expectOp("]");
        expr = { kind: "indexer", target: expr, index, pos: t.pos };
        continue;
      }
      return expr;
    }
  }

  /** An identifier or function call; after `.` keywords are allowed as names. */
  private parseInvocation(afterDot: boolean): MemberNode | CallNode {
    const t = this.peek();
    if (t.kind !== "ident" && t.kind !== "delimited") {
      this.fail(`expected a name${afterDot ? ' after "."' : ""} but found ${this.describe(t)}`, t);
    }
    this.next();
    const n = this.peek();
    if (n.kind === "op" && n.value === "(") {
      this.next();
      const args: ExprNode[] = [];
      const close = this.peek();
      if (!(close.kind === "op" && close.value === ")")) {
        for (;;) {
          args.push(this.parseExpr(0));
          const sep = this.peek();
          if (sep.kind === "op" && sep.value === ",") {
            this.next();
            continue;
          }
          break;
        }
      }
      this.expectOp(")");
      return { kind: "call", name: t.value, args, pos: t.pos };
    }
    return { kind: "member", name: t.value, pos: t.pos };
  }

  private parseTerm(): ExprNode {
    const t = this.peek();
    switch (t.kind) {
      case "string":
        this.next();
        return { kind: "string", value: t.value, pos: t.pos };
      case "number": {
        this.next();
        const n = this.peek();
        if (n.kind === "string" || (n.kind === "ident" && DURATION_UNITS.has(n.value))) {
          this.fail("quantity literals are not supported", t);
        }
        return { kind: "number", text: t.value, pos: t.pos };
      }
      case "datetime":
        this.next();
        return { kind: "datetime", text: t.value, pos: t.pos };
      case "special":
        this.next();
        return { kind: "special", name: t.value as "$this" | "$index" | "$total", pos: t.pos };
      case "env":
        this.next();
        return { kind: "env", name: t.value, pos: t.pos };
      case "op":
        if (t.value === "(") {
          this.next();
          const e = this.parseExpr(0);
          this.expectOp(")");
          return e;
        }
        if (t.value === "{") {
          this.next();
          this.expectOp("}");
          return { kind: "empty", pos: t.pos };
        }
        return this.fail(`unexpected ${this.describe(t)}`, t);
      case "ident": {
        const n = this.peek(1);
        const isCall = n.kind === "op" && n.value === "(";
        if (!isCall && (t.value === "true" || t.value === "false")) {
          this.next();
          return { kind: "boolean", value: t.value === "true", pos: t.pos };
        }
        if (!isCall && WORD_OPERATORS.has(t.value)) {
          return this.fail(`unexpected operator ${this.describe(t)}`, t);
        }
        return this.parseInvocation(false);
      }
      case "delimited":
        return this.parseInvocation(false);
      case "eof":
        return this.fail("unexpected end of expression", t);
    }
  }

  private parseTypeSpecifier(): TypeSpecifier {
    const t = this.peek();
    if (t.kind !== "ident" && t.kind !== "delimited") {
      this.fail(`expected a type name but found ${this.describe(t)}`, t);
    }
    this.next();
    const dot = this.peek();
    if (
      dot.kind === "op" && dot.value === "." &&
      (this.peek(1).kind === "ident" || this.peek(1).kind === "delimited")
    ) {
      this.next();
      const name = this.next();
      return { namespace: t.value, name: name.value, pos: t.pos };
    }
    return { name: t.value, pos: t.pos };
  }
}

/** Parses a FHIRPath expression into an AST. Throws {@link FhirPathSyntaxError} with the position. */
export function parseFhirPath(text: string): ExprNode {
  if (typeof text !== "string") {
    throw new FhirPathSyntaxError(`an expression must be a string, got ${typeof text}`, String(text), 0);
  }
  return new Parser(text, tokenize(text)).parseAll();
}
