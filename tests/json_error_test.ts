/**
 * fhir/server/json_error.ts: why bytes are not UTF-8 JSON, with the byte offset and without quoting
 * them; checked against the platform's own UTF-8 decoder and JSON.parse.
 */

import assert from "node:assert/strict";
import { describeJsonError, invalidUtf8Offset, jsonSyntaxProblem } from "../fhir/server/json_error.ts";

const te = new TextEncoder();

Deno.test("describeJsonError: truncated and malformed lines say 'not valid JSON' with the byte", () => {
  const cases: [string, string][] = [
    ['{"resourceType":"Observation","status":"fin', "not valid JSON: unexpected end of input (byte 43)"],
    ['{"resourceType":"Patient",', "not valid JSON: unexpected end of input (byte 26)"],
    ['{"a":1', "not valid JSON: unexpected end of input (byte 6)"],
    ["abc", "not valid JSON: unexpected character (byte 0)"],
    ['{"a":tru}', "not valid JSON: unexpected character (byte 8)"],
    ['{"a":1}x', "not valid JSON: unexpected data after the JSON value (byte 7)"],
    ['{"a":"b\u0001"}', "not valid JSON: control character in a string (byte 7)"],
    ['{"a" 1}', "not valid JSON: expected ':' after a property name (byte 5)"],
    ["[1,]", "not valid JSON: unexpected character (byte 3)"],
    ['{"a":1,}', "not valid JSON: expected a property name in double quotes (byte 7)"],
    ['{"a":-}', "not valid JSON: malformed number (byte 6)"],
    ['{"a":"\\q"}', "not valid JSON: malformed escape (byte 6)"],
    ['{"a":"\\u12G4"}', "not valid JSON: malformed \\u escape (byte 6)"],
    // Multi-byte characters before the error: the offset counts bytes, not characters.
    ['{"é":"ü",x}', "not valid JSON: expected a property name in double quotes (byte 11)"],
    ["\ufeff\ufeff{}", "not valid JSON: unexpected character (byte 3)"], // a BOM is skipped, a second is not
    ['\ufeff{"a":}', "not valid JSON: unexpected character (byte 8)"],
    ["[01]", "not valid JSON: expected ',' or ']' after an array element (byte 2)"],
  ];
  for (const [text, want] of cases) {
    const decoded = new TextDecoder().decode(te.encode(text)); // strips one BOM, as the server does
    assert.throws(() => JSON.parse(decoded), SyntaxError, `JSON.parse refuses ${JSON.stringify(text)}`);
    assert.equal(describeJsonError(te.encode(text)), want, JSON.stringify(text));
  }
});

Deno.test("describeJsonError: bytes that are not UTF-8 say so, with the first bad byte", () => {
  const cases: [number[], number][] = [
    [[0x7b, 0xff, 0x7d], 1],
    [[0x7b, 0x22, 0xc3], 2], // truncated 2-byte sequence at the end
    [[0x22, 0xc0, 0xaf, 0x22], 1], // overlong "/"
    [[0x22, 0xed, 0xa0, 0x80, 0x22], 1], // UTF-16 surrogate
    [[0x22, 0xf4, 0x90, 0x80, 0x80, 0x22], 1], // above U+10FFFF
    [[0x22, 0xe2, 0x82, 0xac, 0x80, 0x22], 4], // € then a stray continuation byte
  ];
  for (const [bytes, at] of cases) {
    const b = Uint8Array.from(bytes);
    assert.throws(() => new TextDecoder("utf-8", { fatal: true }).decode(b), TypeError);
    assert.equal(invalidUtf8Offset(b), at, JSON.stringify(bytes));
    assert.equal(describeJsonError(b), `not valid UTF-8 (byte ${at})`);
  }
});

Deno.test("invalidUtf8Offset and jsonSyntaxProblem agree with the platform on random inputs", () => {
  let seed = 12345;
  const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const samples = ['{"a":[1,2.5e-3,true,null,"x\\n\\u00e9"],"b":{"c":"ü€𝄞"}}', "[]", '"s"', "-0.1E+2"];
  for (let n = 0; n < 4000; n++) {
    const base = te.encode(samples[n % samples.length]);
    const b = base.slice();
    const edits = 1 + Math.floor(rnd() * 3);
    for (let k = 0; k < edits; k++) b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
    const cut = rnd() < 0.3 ? b.subarray(0, Math.floor(rnd() * b.length)) : b;
    let utf8ok = true;
    let text = "";
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(cut);
    } catch {
      utf8ok = false;
    }
    assert.equal(invalidUtf8Offset(cut) === -1, utf8ok, `utf-8 verdict for ${Array.from(cut)}`);
    if (!utf8ok) continue;
    let jsonOk = true;
    try {
      JSON.parse(text);
    } catch {
      jsonOk = false;
    }
    assert.equal(jsonSyntaxProblem(text) === null, jsonOk, `JSON verdict for ${JSON.stringify(text)}`);
  }
});
