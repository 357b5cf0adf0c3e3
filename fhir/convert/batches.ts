/**
 * Line batches: consecutive NDJSON lines of one input, the unit of work of both conversion passes (in
 * process or in a worker).
 *
 * A batch travels as one UTF-8 buffer ({@link EncodedBatch}) that can be transferred to a worker
 * without a copy. Inputs that are bytes already (landing segments, files) are cut into batches at line
 * feeds without ever becoming strings on the reading thread ({@link byteBatches}); inputs of line
 * strings are encoded into the buffer ({@link lineBatches}), far cheaper than joining the strings. The
 * work decodes the buffer line by line ({@link lineSource}) or into one flat string ({@link LineBatch}),
 * which is fast to scan and to slice. A batch of strings with a line that is not well-formed UTF-16 (a
 * lone surrogate, which UTF-8 cannot carry) keeps the joined text instead, so the lines are always
 * exactly the lines read. Bytes that are not UTF-8 fail the line that holds them (`ConvertInputError`).
 *
 * @module
 */

import { ConvertInputError } from "./errors.ts";

/** Consecutive lines of one input, as the work sees them. */
export interface LineBatch {
  /** Index of the input in `ConvertOptions.inputs`. */
  readonly input: number;
  /** 1-based line number of the first line. */
  readonly firstLine: number;
  /** The lines joined by `\n`. */
  readonly text: string;
  /** End offset in {@link text} of every line (line i starts at `ends[i - 1] + 1`, line 0 at 0). */
  readonly ends: Int32Array;
}

/** Consecutive lines of one input, as read: UTF-8 bytes (or text, see the module notes). */
export interface EncodedBatch {
  readonly input: number;
  readonly firstLine: number;
  /** Number of lines. */
  readonly count: number;
  /**
   * End offset of every line in the decoded text (UTF-16 code units); absent for batches cut from bytes
   * ({@link byteBatches}), where the decoded text is split at its line feeds.
   */
  readonly ends?: Int32Array;
  /** The lines joined by `\n`, UTF-8; owns its buffer. */
  readonly bytes?: Uint8Array<ArrayBuffer>;
  /** With {@link bytes}: end offset of every line in the bytes. */
  readonly byteEnds?: Int32Array;
  /** The lines joined by `\n`, when a line is not well-formed UTF-16. */
  readonly text?: string;
}

/** Default size of a batch: about 4 MiB of UTF-8 (the last line may overshoot). */
export const DEFAULT_BATCH_BYTES = 4 << 20;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const LF = new Uint8Array([10]);
/** Decodes the lines of byte batches: bytes that are not UTF-8 fail their line. */
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/** `buf` (its first `used` bytes), or a copy in a larger buffer with room for `need` more bytes. */
function roomFor(buf: Uint8Array<ArrayBuffer>, used: number, need: number): Uint8Array<ArrayBuffer> {
  if (buf.length - used >= need) return buf;
  const bigger = new Uint8Array(Math.max(buf.length * 2, used + need));
  bigger.set(buf.subarray(0, used));
  return bigger;
}

/** `a`, or a copy twice as large when its `used` entries fill it. */
function roomForOne(a: Int32Array<ArrayBuffer>, used: number): Int32Array<ArrayBuffer> {
  if (used < a.length) return a;
  const bigger = new Int32Array(Math.max(16, used * 2));
  bigger.set(a);
  return bigger;
}

/**
 * Groups `lines` of input `input` into batches of about `maxBytes` bytes. Line numbers count every
 * line, blank ones included.
 */
export async function* lineBatches(
  lines: AsyncIterable<string>,
  input: number,
  maxBytes = DEFAULT_BATCH_BYTES,
): AsyncGenerator<EncodedBatch> {
  let buf: Uint8Array<ArrayBuffer> = new Uint8Array(maxBytes + 4096);
  let pos = 0;
  let ends = new Int32Array(1024);
  let byteEnds = new Int32Array(1024);
  let count = 0;
  let chars = 0;
  let pending: string[] = [];
  let wellFormed = true;
  let next = 1;
  const make = (): EncodedBatch => {
    const common = { input, firstLine: next, count, ends: ends.slice(0, count) };
    const batch: EncodedBatch = wellFormed
      ? { ...common, bytes: buf.slice(0, pos - 1), byteEnds: byteEnds.slice(0, count) }
      : { ...common, text: pending.join("\n") };
    next += count;
    pos = count = chars = 0;
    pending = [];
    wellFormed = true;
    return batch;
  };
  for await (const line of lines) {
    ends = roomForOne(ends, count);
    byteEnds = roomForOne(byteEnds, count);
    if (wellFormed && !line.isWellFormed()) wellFormed = false;
    if (wellFormed) {
      buf = roomFor(buf, pos, line.length * 3 + 1);
      pos += encoder.encodeInto(line, buf.subarray(pos)).written;
      byteEnds[count] = pos;
      buf[pos++] = 10;
    }
    pending.push(line);
    chars += line.length + 1;
    ends[count++] = chars - 1;
    if (pos >= maxBytes || chars >= maxBytes) yield make();
  }
  if (count > 0) yield make();
}

/**
 * Groups UTF-8 NDJSON given as byte chunks (cut anywhere) into batches of about `maxBytes` bytes of
 * whole lines, without decoding: lines end at LF, a trailing line without LF counts, line numbers count
 * every line, blank ones included. Lines are kept byte for byte (a CR before the LF stays, as JSON
 * whitespace). Each batch owns its buffer (transferable); the chunks are not kept.
 */
export async function* byteBatches(
  chunks: AsyncIterable<Uint8Array>,
  input: number,
  maxBytes = DEFAULT_BATCH_BYTES,
): AsyncGenerator<EncodedBatch> {
  const capacity = maxBytes + 4096;
  let buf: Uint8Array<ArrayBuffer> = new Uint8Array(capacity);
  let pos = 0;
  /** Start in `buf` of the line not ended yet. */
  let started = 0;
  let byteEnds = new Int32Array(1024);
  let count = 0;
  let next = 1;
  const make = (): EncodedBatch => {
    // The batch takes the buffer up to its last complete line; a started line moves to a new buffer.
    const end = count === 0 ? 0 : byteEnds[count - 1];
    const batch: EncodedBatch = {
      input,
      firstLine: next,
      count,
      bytes: buf.subarray(0, end),
      byteEnds: byteEnds.slice(0, count),
    };
    const fresh = new Uint8Array(Math.max(capacity, (pos - started) * 2));
    fresh.set(buf.subarray(started, pos));
    buf = fresh;
    pos -= started;
    started = 0;
    next += count;
    count = 0;
    return batch;
  };
  /** Appends `bytes` to the buffer. */
  const put = (bytes: Uint8Array) => {
    buf = roomFor(buf, pos, bytes.length);
    buf.set(bytes, pos);
    pos += bytes.length;
  };
  for await (const chunk of chunks) {
    // Copy whole runs of lines at once; cut a batch at the first LF past `maxBytes`.
    let from = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, nl + 1)) {
      byteEnds = roomForOne(byteEnds, count);
      const end = pos + nl - from;
      byteEnds[count++] = end;
      started = end + 1;
      if (end >= maxBytes) {
        put(chunk.subarray(from, nl + 1));
        from = nl + 1;
        yield make();
      }
    }
    put(chunk.subarray(from));
  }
  if (pos > started) {
    // A last line without LF.
    byteEnds = roomForOne(byteEnds, count);
    byteEnds[count++] = pos;
    put(LF);
    started = pos;
  }
  if (count > 0) yield make();
}

/** Start offset of line `i` in the bytes of `b`. */
function byteStart(b: EncodedBatch, i: number): number {
  return i === 0 ? 0 : b.byteEnds![i - 1] + 1;
}

/** Line `i` of a byte batch, decoded; bytes that are not UTF-8 throw `ConvertInputError`. */
function decodeLine(b: EncodedBatch, i: number): string {
  const bytes = b.bytes!.subarray(byteStart(b, i), b.byteEnds![i]);
  const line = decoder.decode(bytes);
  // A fatal decoder is 4× slower in Deno: decode leniently, and check strictly only a line holding
  // U+FFFD (a replacement, or that character written in the input).
  if (line.includes("\uFFFD")) {
    try {
      strictDecoder.decode(bytes);
    } catch (e) {
      throw new ConvertInputError(b.input, b.firstLine + i, "not valid UTF-8 (fix or remove the line)", {
        cause: e,
      });
    }
  }
  return line;
}

/** The batch as text (decodes the UTF-8; bytes that are not UTF-8 throw `ConvertInputError`). */
export function decodeBatch(b: EncodedBatch): LineBatch {
  const { input, firstLine } = b;
  if (b.text !== undefined) return { input, firstLine, ends: b.ends!, text: b.text };
  if (b.ends) return { input, firstLine, ends: b.ends, text: decoder.decode(b.bytes!) };
  // Cut from bytes: decode line by line (a bad line is named), then split the text at its LFs.
  const lines = new Array<string>(b.count);
  for (let i = 0; i < b.count; i++) lines[i] = decodeLine(b, i);
  const text = lines.join("\n");
  const ends = new Int32Array(b.count);
  let at = 0;
  for (let i = 0; i < b.count; i++) ends[i] = at += lines[i].length + (i === 0 ? 0 : 1);
  return { input, firstLine, ends, text };
}

/**
 * The lines of a batch one by one, each decoded on its own: small strings that die young, instead of one
 * large string per batch (fresh memory every time).
 */
export interface LineSource {
  readonly input: number;
  readonly firstLine: number;
  /** Lines in the batch. */
  readonly count: number;
  /** Line `i` (0-based in the batch). */
  line(i: number): string;
  /** Whether line `i` is blank (`trim() === ""`, skipped by the conversion). */
  blank(i: number): boolean;
}

/** The lines of `b`. */
export function lineSource(b: EncodedBatch): LineSource {
  const { input, firstLine } = b;
  if (b.bytes) {
    const bytes = b.bytes;
    const ends = b.byteEnds!;
    const line = (i: number) => decodeLine(b, i);
    return {
      input,
      firstLine,
      count: b.count,
      line,
      blank: (i) => {
        const start = byteStart(b, i);
        if (start === ends[i]) return true;
        return bytes[start] !== 123 && line(i).trim() === "";
      },
    };
  }
  const batch = decodeBatch(b);
  return {
    input,
    firstLine,
    count: batch.ends.length,
    line: (i) => batch.text.slice(lineStart(batch, i), batch.ends[i]),
    blank: (i) => isBlankLine(batch.text, lineStart(batch, i), batch.ends[i]),
  };
}

/** Buffers of `b` to transfer to a worker (the batch is unusable afterwards). */
export function batchTransferables(b: EncodedBatch): ArrayBuffer[] {
  const out: ArrayBuffer[] = b.ends ? [b.ends.buffer as ArrayBuffer] : [];
  if (b.bytes) out.push(b.bytes.buffer, b.byteEnds!.buffer as ArrayBuffer);
  return out;
}

/** Start offset of line `i` of `batch`. */
export function lineStart(batch: LineBatch, i: number): number {
  return i === 0 ? 0 : batch.ends[i - 1] + 1;
}

/**
 * Whether line `[start, end)` of `text` is blank (`trim() === ""`, skipped by the conversion). Fast for
 * the usual line that starts with `{`.
 */
export function isBlankLine(text: string, start: number, end: number): boolean {
  if (start === end) return true;
  if (text.charCodeAt(start) === 123) return false;
  return text.slice(start, end).trim() === "";
}
