/**
 * Line batches: consecutive NDJSON lines of one input, the unit of work of both conversion passes (in
 * process or in a worker).
 *
 * The reader encodes the lines of a batch straight into one UTF-8 buffer ({@link EncodedBatch}): far
 * cheaper than joining the line strings, and the buffer can be transferred to a worker without a copy.
 * The work decodes it into one flat string ({@link LineBatch}), which is fast to scan and to slice.
 * A batch with a line that is not well-formed UTF-16 (a lone surrogate, which UTF-8 cannot carry) keeps
 * the joined text instead, so the lines are always exactly the lines read.
 *
 * @module
 */

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
  /** End offset of every line in the decoded text (UTF-16 code units). */
  readonly ends: Int32Array;
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

/**
 * Groups `lines` of input `input` into batches of about `maxBytes` bytes. Line numbers count every
 * line, blank ones included.
 */
export async function* lineBatches(
  lines: AsyncIterable<string>,
  input: number,
  maxBytes = DEFAULT_BATCH_BYTES,
): AsyncGenerator<EncodedBatch> {
  let buf = new Uint8Array(maxBytes + 4096);
  let pos = 0;
  let ends = new Int32Array(1024);
  let byteEnds = new Int32Array(1024);
  let count = 0;
  let chars = 0;
  let pending: string[] = [];
  let wellFormed = true;
  let next = 1;
  const make = (): EncodedBatch => {
    const common = { input, firstLine: next, ends: ends.slice(0, count) };
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
    if (count === ends.length) {
      const bigger = new Int32Array(count * 2);
      bigger.set(ends);
      ends = bigger;
      const biggerBytes = new Int32Array(count * 2);
      biggerBytes.set(byteEnds);
      byteEnds = biggerBytes;
    }
    if (wellFormed && !line.isWellFormed()) wellFormed = false;
    if (wellFormed) {
      const need = line.length * 3 + 1;
      if (buf.length - pos < need) {
        const bigger = new Uint8Array(Math.max(buf.length * 2, pos + need));
        bigger.set(buf.subarray(0, pos));
        buf = bigger;
      }
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

/** The batch as text (decodes the UTF-8). */
export function decodeBatch(b: EncodedBatch): LineBatch {
  return { input: b.input, firstLine: b.firstLine, ends: b.ends, text: b.text ?? decoder.decode(b.bytes!) };
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
    const line = (i: number) => decoder.decode(bytes.subarray(i === 0 ? 0 : ends[i - 1] + 1, ends[i]));
    return {
      input,
      firstLine,
      count: ends.length,
      line,
      blank: (i) => {
        const start = i === 0 ? 0 : ends[i - 1] + 1;
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
  const out = [b.ends.buffer as ArrayBuffer];
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
