/**
 * Why some bytes are not a JSON text, said without quoting them (a line may carry PHI): whether they are
 * not UTF-8 or not JSON, what is wrong, and the 0-based byte offset where it goes wrong. Only called on
 * the error path, after `JSON.parse` failed (whose messages quote the input and sometimes lack a
 * position).
 *
 * @module
 */

/** Offset of the first byte that does not belong to a well-formed UTF-8 sequence; -1 when all do. */
export function invalidUtf8Offset(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    let n: number;
    let min: number;
    if (c >= 0xc2 && c <= 0xdf) [n, min] = [1, 0x80];
    else if (c >= 0xe0 && c <= 0xef) [n, min] = [2, 0x800];
    else if (c >= 0xf0 && c <= 0xf4) [n, min] = [3, 0x10000];
    else return i;
    let cp = c & (0x3f >> n);
    for (let k = 1; k <= n; k++) {
      const d = b[i + k];
      if (d === undefined || (d & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += n + 1;
  }
  return -1;
}

/** A JSON syntax error: what, at which UTF-16 index of the text. */
interface SyntaxProblem {
  reason: string;
  index: number;
}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);

/** The first syntax error of `text` as RFC 8259 JSON; null when it is valid. */
export function jsonSyntaxProblem(text: string): SyntaxProblem | null {
  let i = 0;
  const fail = (reason: string, at = i): never => {
    throw { reason: i >= text.length && at >= text.length ? "unexpected end of input" : reason, index: at };
  };
  const ws = () => {
    while (i < text.length && WS.has(text.charCodeAt(i))) i++;
  };
  const literal = (word: string) => {
    for (let k = 0; k < word.length; k++, i++) {
      if (text[i] !== word[k]) fail("unexpected character");
    }
  };
  const digits = () => {
    const s = i;
    while (i < text.length && text.charCodeAt(i) >= 0x30 && text.charCodeAt(i) <= 0x39) i++;
    if (i === s) fail("malformed number");
  };
  const number = () => {
    if (text[i] === "-") i++;
    if (text[i] === "0") i++;
    else digits();
    if (text[i] === ".") {
      i++;
      digits();
    }
    if (text[i] === "e" || text[i] === "E") {
      i++;
      if (text[i] === "+" || text[i] === "-") i++;
      digits();
    }
  };
  const string = () => {
    i++; // opening quote
    for (;;) {
      if (i >= text.length) fail("unterminated string");
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return;
      }
      if (c < 0x20) fail("control character in a string");
      if (c === 0x5c) {
        const e = text[i + 1];
        if (e === "u") {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) fail("malformed \\u escape");
          i += 6;
        } else if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2;
        else fail("malformed escape");
      } else i++;
    }
  };
  const value = (depth: number): void => {
    if (depth > 10_000) fail("nested too deeply");
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      ws();
      if (text[i] === "}") {
        i++;
        return;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail("expected a property name in double quotes");
        string();
        ws();
        if (text[i] !== ":") fail("expected ':' after a property name");
        i++;
        value(depth + 1);
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          return;
        }
        fail("expected ',' or '}' after a property value");
      }
    }
    if (c === "[") {
      i++;
      ws();
      if (text[i] === "]") {
        i++;
        return;
      }
      for (;;) {
        value(depth + 1);
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") {
          i++;
          return;
        }
        fail("expected ',' or ']' after an array element");
      }
    }
    if (c === '"') return string();
    if (c === "t") return literal("true");
    if (c === "f") return literal("false");
    if (c === "n") return literal("null");
    if (c === "-" || (c !== undefined && c >= "0" && c <= "9")) return number();
    fail("unexpected character");
  };
  try {
    value(0);
    ws();
    if (i < text.length) fail("unexpected data after the JSON value");
    return null;
  } catch (e) {
    if (e && typeof e === "object" && "reason" in e) return e as SyntaxProblem;
    throw e;
  }
}

/**
 * Why `bytes` (which `JSON.parse` refused) are not a UTF-8 JSON text: `not valid UTF-8 (byte N)` or
 * `not valid JSON: <reason> (byte N)`. Never quotes the input.
 */
export function describeJsonError(bytes: Uint8Array): string {
  const bad = invalidUtf8Offset(bytes);
  if (bad >= 0) return `not valid UTF-8 (byte ${bad})`;
  // Callers decode with a BOM-stripping decoder; so do we, and count the BOM's bytes.
  const bom = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes.subarray(bom));
  const p = jsonSyntaxProblem(text);
  if (!p) return "not valid JSON";
  const byte = bom + new TextEncoder().encode(text.slice(0, p.index)).length;
  return `not valid JSON: ${p.reason} (byte ${byte})`;
}
