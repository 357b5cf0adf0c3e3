/**
 * Request bodies: a size-limited reader for JSON bodies and a bounded-memory NDJSON line splitter for
 * `$import` (a line longer than the limit is skipped, not buffered, and reported as too long).
 *
 * @module
 */

import { HttpError } from "./errors.ts";
import { describeJsonError } from "./json_error.ts";

/**
 * Reads the whole body, at most `maxBytes`: a larger Content-Length is refused before reading, and a
 * chunked body is cut off as soon as it passes the limit (HttpError 413 `too-long`).
 */
export async function readBodyLimited(req: Request, maxBytes: number): Promise<Uint8Array> {
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > maxBytes) {
    await req.body?.cancel().catch(() => {});
    throw tooLarge(maxBytes);
  }
  if (!req.body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = req.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) {
        await reader.cancel().catch(() => {});
        throw tooLarge(maxBytes);
      }
      chunks.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

function tooLarge(maxBytes: number): HttpError {
  return HttpError.of(413, "too-long", `The request body is larger than the limit of ${maxBytes} bytes`);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Parses a UTF-8 JSON body; HttpError 400 `structure` when it is not (the message quotes nothing). */
export function parseJsonBody(bytes: Uint8Array): unknown {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw HttpError.of(400, "structure", `The request body is ${describeJsonError(bytes)}`);
  }
  if (text.trim() === "") throw HttpError.of(400, "structure", "The request body is empty");
  try {
    return JSON.parse(text);
  } catch {
    // JSON.parse messages quote the input: never pass them on.
    throw HttpError.of(400, "structure", `The request body is ${describeJsonError(bytes)}`);
  }
}

/** One NDJSON line: its 1-based number and bytes (without CR/LF), or `tooLong` with its length. */
export type NdjsonLine =
  | { lineNo: number; bytes: Uint8Array; tooLong?: undefined }
  | { lineNo: number; bytes?: undefined; tooLong: number };

const LF = 10;
const CR = 13;

/**
 * Splits a byte stream into lines (LF or CR LF), holding at most `maxLineBytes` of one line in memory.
 * Longer lines are consumed and reported with `tooLong` (their byte count). Empty lines are yielded too
 * (with zero bytes) so line numbers stay right. A last line without a newline is yielded.
 */
export async function* splitLines(
  stream: ReadableStream<Uint8Array>,
  maxLineBytes: number,
): AsyncGenerator<NdjsonLine> {
  let buf = new Uint8Array(Math.min(maxLineBytes, 64 * 1024));
  let len = 0; // bytes of the current line in buf
  let overflow = 0; // > 0: the current line is too long; bytes seen so far
  let lineNo = 0;
  const finish = (): NdjsonLine => {
    lineNo++;
    if (overflow > 0) {
      const n = overflow;
      overflow = 0;
      len = 0;
      return { lineNo, tooLong: n };
    }
    let end = len;
    if (end > 0 && buf[end - 1] === CR) end--;
    if (end > maxLineBytes) {
      len = 0;
      return { lineNo, tooLong: end };
    }
    const bytes = buf.slice(0, end);
    len = 0;
    return { lineNo, bytes };
  };
  const add = (chunk: Uint8Array, from: number, to: number): void => {
    const n = to - from;
    if (n === 0) return;
    if (overflow > 0) {
      overflow += n;
      return;
    }
    // One extra byte allowed for a CR before LF.
    if (len + n > maxLineBytes + 1) {
      overflow = len + n;
      return;
    }
    if (len + n > buf.length) {
      const next = new Uint8Array(Math.min(maxLineBytes + 1, Math.max(buf.length * 2, len + n)));
      next.set(buf.subarray(0, len));
      buf = next;
    }
    buf.set(chunk.subarray(from, to), len);
    len += n;
  };
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      let start = 0;
      for (;;) {
        const nl = value.indexOf(LF, start);
        if (nl < 0) {
          add(value, start, value.length);
          break;
        }
        add(value, start, nl);
        yield finish();
        start = nl + 1;
      }
    }
    if (len > 0 || overflow > 0) yield finish();
  } finally {
    reader.releaseLock();
  }
}
