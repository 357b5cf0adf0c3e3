/**
 * FHIRPath lexer: turns expression text into tokens with their character offsets.
 *
 * Token kinds: identifiers (plain or `` `delimited` ``), `$this`/`$index`/`$total`, `%name` and
 * `` %`name` `` / `%'name'` environment variables, string literals (`'...'` with FHIRPath escapes),
 * numbers (integer or decimal), date/time literals (`@2020-01-02`, `@2020-01-02T10:00:00Z`, `@T10:30`),
 * operators and punctuation. Keywords (`and`, `div`, `true`, ...) are identifiers; the parser decides.
 *
 * @module
 */

import { FhirPathSyntaxError } from "./errors.ts";

/** Kind of a token. */
export type TokenKind =
  | "ident"
  | "delimited"
  | "special"
  | "env"
  | "string"
  | "number"
  | "datetime"
  | "op"
  | "eof";

/** One token: its kind, its value (unescaped for strings and delimited identifiers) and its offset. */
export interface Token {
  kind: TokenKind;
  value: string;
  /** 0-based offset of the first character. */
  pos: number;
}

/** Operators and punctuation, longest first so that `<=` wins over `<`. */
const OPERATORS = [
  "<=",
  ">=",
  "!=",
  "!~",
  "=",
  "~",
  "<",
  ">",
  "+",
  "-",
  "*",
  "/",
  "&",
  "|",
  "(",
  ")",
  "[",
  "]",
  "{",
  "}",
  ".",
  ",",
];

const DATETIME_RE =
  /^@(?:(\d{4}(?:-\d{2}(?:-\d{2})?)?)(T(?:\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)?(?:Z|[+-]\d{2}:\d{2})?)?|T\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)/;

function isIdentStart(c: string): boolean {
  return (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || c === "_";
}

function isIdentPart(c: string): boolean {
  return isIdentStart(c) || (c >= "0" && c <= "9");
}

function isDigit(c: string): boolean {
  return c >= "0" && c <= "9";
}

/** Reads a quoted string or delimited identifier starting at `start` (the quote); returns value and end. */
function readQuoted(text: string, start: number, quote: string): { value: string; end: number } {
  let i = start + 1;
  let out = "";
  while (i < text.length) {
    const c = text[i];
    if (c === quote) return { value: out, end: i + 1 };
    if (c === "\\") {
      const n = text[i + 1];
      if (n === undefined) break;
      switch (n) {
        case "'":
        case '"':
        case "`":
        case "\\":
        case "/":
          out += n;
          i += 2;
          continue;
        case "n":
          out += "\n";
          i += 2;
          continue;
        case "r":
          out += "\r";
          i += 2;
          continue;
        case "t":
          out += "\t";
          i += 2;
          continue;
        case "f":
          out += "\f";
          i += 2;
          continue;
        case "u": {
          const hex = text.slice(i + 2, i + 6);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) {
            throw new FhirPathSyntaxError("invalid \\u escape in a string", text, i);
          }
          out += String.fromCharCode(parseInt(hex, 16));
          i += 6;
          continue;
        }
        default:
          throw new FhirPathSyntaxError(`invalid escape \\${n} in a string`, text, i);
      }
    }
    out += c;
    i++;
  }
  throw new FhirPathSyntaxError(
    quote === "`" ? "unterminated delimited identifier" : "unterminated string literal",
    text,
    start,
  );
}

/** Splits `text` into tokens; the last token is always `eof`. Throws FhirPathSyntaxError. */
export function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    // Whitespace and comments.
    if (c === " " || c === "\t" || c === "\n" || c === "\r") {
      i++;
      continue;
    }
    if (c === "/" && text[i + 1] === "/") {
      while (i < text.length && text[i] !== "\n") i++;
      continue;
    }
    if (c === "/" && text[i + 1] === "*") {
      const end = text.indexOf("*/", i + 2);
      if (end < 0) throw new FhirPathSyntaxError("unterminated comment", text, i);
      i = end + 2;
      continue;
    }
    const start = i;
    if (isIdentStart(c)) {
      while (i < text.length && isIdentPart(text[i])) i++;
      tokens.push({ kind: "ident", value: text.slice(start, i), pos: start });
      continue;
    }
    if (c === "`") {
      const { value, end } = readQuoted(text, i, "`");
      tokens.push({ kind: "delimited", value, pos: start });
      i = end;
      continue;
    }
    if (c === "'") {
      const { value, end } = readQuoted(text, i, "'");
      tokens.push({ kind: "string", value, pos: start });
      i = end;
      continue;
    }
    if (c === "$") {
      i++;
      while (i < text.length && isIdentPart(text[i])) i++;
      const name = text.slice(start, i);
      if (name !== "$this" && name !== "$index" && name !== "$total") {
        throw new FhirPathSyntaxError(`unknown special variable ${JSON.stringify(name)}`, text, start);
      }
      tokens.push({ kind: "special", value: name, pos: start });
      continue;
    }
    if (c === "%") {
      const n = text[i + 1];
      if (n === "`" || n === "'") {
        const { value, end } = readQuoted(text, i + 1, n);
        tokens.push({ kind: "env", value, pos: start });
        i = end;
        continue;
      }
      if (n !== undefined && isIdentStart(n)) {
        i++;
        while (i < text.length && isIdentPart(text[i])) i++;
        tokens.push({ kind: "env", value: text.slice(start + 1, i), pos: start });
        continue;
      }
      throw new FhirPathSyntaxError("expected a variable name after %", text, start);
    }
    if (isDigit(c)) {
      while (i < text.length && isDigit(text[i])) i++;
      if (text[i] === "." && isDigit(text[i + 1] ?? "")) {
        i++;
        while (i < text.length && isDigit(text[i])) i++;
      }
      tokens.push({ kind: "number", value: text.slice(start, i), pos: start });
      continue;
    }
    if (c === "@") {
      const m = DATETIME_RE.exec(text.slice(i));
      if (!m || m[0].length === 1) {
        throw new FhirPathSyntaxError("invalid date/time literal", text, start);
      }
      tokens.push({ kind: "datetime", value: m[0].slice(1), pos: start });
      i += m[0].length;
      continue;
    }
    const op = OPERATORS.find((o) => text.startsWith(o, i));
    if (op) {
      tokens.push({ kind: "op", value: op, pos: start });
      i += op.length;
      continue;
    }
    throw new FhirPathSyntaxError(`unexpected character ${JSON.stringify(c)}`, text, start);
  }
  tokens.push({ kind: "eof", value: "", pos: text.length });
  return tokens;
}
