/**
 * Columnar buffers for view rows: values are converted to their column type (see `arrow.ts` for the
 * FHIR type → Arrow type table) as they are appended, straight into growable typed arrays, so building
 * an Arrow record batch later is a matter of wrapping buffers. No dependency on `apache-arrow`, so
 * conversion workers can use it; a finished {@link ColumnBatch} is made of typed arrays that own their
 * buffers and can be transferred between threads ({@link columnBatchTransferables}).
 *
 * Layout: every column has one validity byte per slot (1 = valid) and a null count; fixed-width values
 * are `Int32Array` / `BigInt64Array` / `Float64Array`, booleans one byte per slot (0/1), strings Arrow
 * style as `Int32Array` offsets (length + 1) into UTF-8 bytes, collections as list offsets into a leaf
 * child. Bytes (not bits) keep appends and range copies simple; `arrow.ts` packs bitmaps when it wraps
 * the buffers.
 *
 * Errors: a value that does not fit its column raises {@link ArrowConversionError} naming the column, the
 * row number in the buffer and the type found, never the value. After an error, `truncate` to the row
 * count before the failed row takes the partial row back.
 *
 * @module
 */

import { describeType } from "../fhirpath/values.ts";
import type { ViewColumnInfo } from "./runner.ts";

/** A value did not fit the Arrow type of its column. */
export class ArrowConversionError extends Error {
  constructor(readonly column: string, readonly row: number, what: string) {
    super(`column ${column}, row ${row}: ${what}`);
    this.name = "ArrowConversionError";
  }
}

/** How values of a column are converted. */
export type ColumnKind = "bool" | "int32" | "int64" | "float64" | "string" | "json";

const KINDS: Readonly<Record<string, ColumnKind>> = {
  boolean: "bool",
  integer: "int32",
  positiveInt: "int32",
  unsignedInt: "int32",
  integer64: "int64",
  decimal: "float64",
  string: "string",
  code: "string",
  id: "string",
  uri: "string",
  url: "string",
  canonical: "string",
  markdown: "string",
  oid: "string",
  uuid: "string",
  base64Binary: "string",
  xhtml: "string",
  date: "string",
  dateTime: "string",
  instant: "string",
  time: "string",
};

/** The conversion kind of a declared FHIR type (`json` for complex and undeclared types). */
export function columnKind(fhirType: string | undefined): ColumnKind {
  if (fhirType === undefined) return "json";
  return Object.hasOwn(KINDS, fhirType) ? KINDS[fhirType] : "json";
}

/** Values of a leaf column (or of the items of a collection column). */
export interface LeafColumn {
  readonly kind: ColumnKind;
  readonly length: number;
  readonly nulls: number;
  /** One byte per slot: 1 = valid, 0 = null. */
  readonly valid: Uint8Array;
  /** bool: 0/1 bytes; int32/int64/float64: the values (0 for null slots); strings: absent. */
  readonly values?: Uint8Array | Int32Array | BigInt64Array | Float64Array;
  /** Strings: `length + 1` offsets into {@link data}. */
  readonly offsets?: Int32Array;
  /** Strings: UTF-8 bytes. */
  readonly data?: Uint8Array;
}

/** A collection column: a list per slot (an empty collection is an empty list, not null). */
export interface ListColumn {
  readonly kind: "list";
  readonly length: number;
  readonly nulls: number;
  readonly valid: Uint8Array;
  /** `length + 1` offsets into the child. */
  readonly offsets: Int32Array;
  readonly child: LeafColumn;
}

/** One column of a {@link ColumnBatch}. */
export type ColumnData = LeafColumn | ListColumn;

/** Rows of a view in columnar form, columns in view order. */
export interface ColumnBatch {
  readonly length: number;
  readonly columns: readonly ColumnData[];
}

/** The buffers of `batch`, for `postMessage(..., transfer)` (each must own its whole ArrayBuffer). */
export function columnBatchTransferables(batch: ColumnBatch): ArrayBuffer[] {
  const out: ArrayBuffer[] = [];
  const leaf = (c: LeafColumn) => {
    out.push(c.valid.buffer as ArrayBuffer);
    if (c.values) out.push(c.values.buffer as ArrayBuffer);
    if (c.offsets) out.push(c.offsets.buffer as ArrayBuffer);
    if (c.data) out.push(c.data.buffer as ArrayBuffer);
  };
  for (const c of batch.columns) {
    if (c.kind === "list") {
      out.push(c.valid.buffer as ArrayBuffer, c.offsets.buffer as ArrayBuffer);
      leaf(c.child);
    } else leaf(c);
  }
  return [...new Set(out)];
}

/** Zeroes elements `[from, to)` of a typed array (any element type, bigint ones included). */
function zero(
  a: { buffer: ArrayBufferLike; byteOffset: number; BYTES_PER_ELEMENT: number; length: number },
  from = 0,
  to = a.length,
): void {
  const w = a.BYTES_PER_ELEMENT;
  new Uint8Array(a.buffer, a.byteOffset + from * w, (to - from) * w).fill(0);
}

/** Zeroes every buffer of `batch` (its values may be PHI). */
export function wipeColumnBatch(batch: ColumnBatch): void {
  const leaf = (c: LeafColumn) => {
    c.valid.fill(0);
    if (c.values) zero(c.values);
    c.offsets?.fill(0);
    c.data?.fill(0);
  };
  for (const c of batch.columns) {
    if (c.kind === "list") {
      c.valid.fill(0);
      c.offsets.fill(0);
      leaf(c.child);
    } else leaf(c);
  }
}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;
const INT64_TEXT = /^-?\d{1,19}$/;
const encoder = new TextEncoder();

function grow<T extends Uint8Array | Int32Array | BigInt64Array | Float64Array>(a: T, need: number): T {
  if (need <= a.length) return a;
  let n = Math.max(16, a.length * 2);
  while (n < need) n *= 2;
  const b = new (a.constructor as new (n: number) => T)(n);
  b.set(a as never);
  return b;
}

/** Appends converted values of one kind. */
class LeafBuilder {
  length = 0;
  nulls = 0;
  valid: Uint8Array;
  values: Uint8Array | Int32Array | BigInt64Array | Float64Array | undefined;
  offsets: Int32Array | undefined;
  data: Uint8Array | undefined;
  /** Bytes used in `data`. */
  pos = 0;

  constructor(readonly kind: ColumnKind, readonly name: string, capacity = 64) {
    this.valid = new Uint8Array(capacity);
    switch (kind) {
      case "bool":
        this.values = new Uint8Array(capacity);
        break;
      case "int32":
        this.values = new Int32Array(capacity);
        break;
      case "int64":
        this.values = new BigInt64Array(capacity);
        break;
      case "float64":
        this.values = new Float64Array(capacity);
        break;
      default:
        this.offsets = new Int32Array(capacity + 1);
        this.data = new Uint8Array(capacity * 16);
    }
  }

  #reserve(n: number): void {
    const need = this.length + n;
    if (need <= this.valid.length) return;
    this.valid = grow(this.valid, need);
    const cap = this.valid.length;
    if (this.values) this.values = grow(this.values, cap);
    if (this.offsets) this.offsets = grow(this.offsets, cap + 1);
  }

  appendNull(): void {
    this.#reserve(1);
    const i = this.length++;
    this.nulls++;
    if (this.offsets) this.offsets[i + 1] = this.pos;
  }

  /** Appends a non-null value (`row` names the row in errors). */
  append(v: unknown, row: number): void {
    this.#reserve(1);
    const i = this.length;
    switch (this.kind) {
      case "bool":
        if (typeof v !== "boolean") this.#bad(v, row, "a boolean");
        this.values![i] = v ? 1 : 0;
        break;
      case "int32":
        if (typeof v !== "number" || !Number.isInteger(v)) this.#bad(v, row, "an integer");
        if ((v as number) < INT32_MIN || (v as number) > INT32_MAX) {
          throw new ArrowConversionError(
            this.name,
            row,
            "integer out of the 32-bit range; declare integer64",
          );
        }
        this.values![i] = v as number;
        break;
      case "int64": {
        let b: bigint;
        if (typeof v === "number" && Number.isSafeInteger(v)) b = BigInt(v);
        else if (typeof v === "string" && INT64_TEXT.test(v)) b = BigInt(v);
        else if (typeof v === "bigint") b = v;
        else return this.#bad(v, row, "a 64-bit integer");
        this.values![i] = b;
        break;
      }
      case "float64":
        if (typeof v !== "number") this.#bad(v, row, "a number");
        this.values![i] = v as number;
        break;
      case "string":
        if (typeof v === "string") this.#utf8(v);
        else if (typeof v === "number" || typeof v === "boolean") this.#utf8(String(v));
        else this.#bad(v, row, "a string");
        break;
      case "json":
        if (typeof v === "string") this.#utf8(v);
        else if (typeof v === "number" || typeof v === "boolean") this.#utf8(String(v));
        else this.#utf8(JSON.stringify(v));
        break;
    }
    this.valid[i] = 1;
    this.length = i + 1;
  }

  #bad(v: unknown, row: number, want: string): never {
    throw new ArrowConversionError(this.name, row, `expected ${want}, got ${describeType(v)}`);
  }

  #utf8(s: string): void {
    const n = s.length;
    let data = this.data!;
    let pos = this.pos;
    if (data.length - pos < n * 3) data = this.data = grow(data, pos + n * 3);
    let j = 0;
    if (n <= 64) {
      for (; j < n; j++) {
        const c = s.charCodeAt(j);
        if (c >= 0x80) break;
        data[pos + j] = c;
      }
    }
    if (j === n) pos += n;
    else pos += encoder.encodeInto(s, data.subarray(pos)).written;
    this.pos = pos;
    this.offsets![this.length + 1] = pos;
  }

  /** Appends slots `[from, to)` of `src` (same kind). */
  appendRange(src: LeafColumn, from: number, to: number): void {
    const n = to - from;
    if (n <= 0) return;
    this.#reserve(n);
    const at = this.length;
    this.valid.set(src.valid.subarray(from, to), at);
    for (let i = from; i < to; i++) if (src.valid[i] === 0) this.nulls++;
    if (this.values) {
      (this.values as Uint8Array).set((src.values as Uint8Array).subarray(from, to), at);
    } else {
      const so = src.offsets!;
      const start = so[from];
      const bytes = so[to] - start;
      this.data = grow(this.data!, this.pos + bytes);
      this.data.set(src.data!.subarray(start, so[to]), this.pos);
      const shift = this.pos - start;
      const o = this.offsets!;
      for (let i = 1; i <= n; i++) o[at + i] = so[from + i] + shift;
      this.pos += bytes;
    }
    this.length = at + n;
  }

  /** Appends the slots `rows[from … to)` of `src` (same kind), in that order. */
  appendGather(src: LeafColumn, rows: Int32Array, from: number, to: number): void {
    const n = to - from;
    if (n <= 0) return;
    this.#reserve(n);
    const at = this.length;
    const valid = this.valid;
    const sv = src.valid;
    let nulls = 0;
    for (let k = 0; k < n; k++) {
      const v = sv[rows[from + k]];
      valid[at + k] = v;
      if (v === 0) nulls++;
    }
    this.nulls += nulls;
    if (this.values) {
      const dst = this.values as Float64Array;
      const sval = src.values as Float64Array;
      for (let k = 0; k < n; k++) dst[at + k] = sval[rows[from + k]];
    } else {
      const so = src.offsets!;
      const sd = src.data!;
      let bytes = 0;
      for (let k = 0; k < n; k++) {
        const r = rows[from + k];
        bytes += so[r + 1] - so[r];
      }
      const data = this.data = grow(this.data!, this.pos + bytes);
      const o = this.offsets!;
      let pos = this.pos;
      for (let k = 0; k < n; k++) {
        const r = rows[from + k];
        const a = so[r];
        const b = so[r + 1];
        if (b - a <= 32) { for (let i = a; i < b; i++) data[pos++] = sd[i]; }
        else {
          data.set(sd.subarray(a, b), pos);
          pos += b - a;
        }
        o[at + k + 1] = pos;
      }
      this.pos = pos;
    }
    this.length = at + n;
  }

  /** The column, as views on the builder's buffers (valid until the next append). */
  view(): LeafColumn {
    const n = this.length;
    return {
      kind: this.kind,
      length: n,
      nulls: this.nulls,
      valid: this.valid.subarray(0, n),
      ...(this.values ? { values: this.values.subarray(0, n) } : {}),
      ...(this.offsets
        ? { offsets: this.offsets.subarray(0, n + 1), data: this.data!.subarray(0, this.pos) }
        : {}),
    };
  }

  /** Drops the slots from `n` on (zeroing them). */
  truncate(n: number): void {
    const len = this.length;
    if (n >= len) return;
    for (let i = n; i < len; i++) if (this.valid[i] === 0) this.nulls--;
    this.valid.fill(0, n, len);
    if (this.values) zero(this.values, n, len);
    if (this.offsets) {
      const pos = this.offsets[n];
      this.data!.fill(0, pos, this.pos);
      this.offsets.fill(0, n + 1, len + 1);
      this.pos = pos;
    }
    this.length = n;
  }

  /** Zeroes the buffers (values may be PHI) and empties the builder. */
  wipe(): void {
    this.valid.fill(0);
    if (this.values) zero(this.values);
    this.offsets?.fill(0);
    this.data?.fill(0);
    this.length = this.nulls = this.pos = 0;
  }

  /** The column in buffers of exactly its size, owned by the result (transferable). */
  finish(): LeafColumn {
    const n = this.length;
    return {
      kind: this.kind,
      length: n,
      nulls: this.nulls,
      valid: this.valid.slice(0, n),
      ...(this.values ? { values: this.values.slice(0, n) } : {}),
      ...(this.offsets ? { offsets: this.offsets.slice(0, n + 1), data: this.data!.slice(0, this.pos) } : {}),
    };
  }
}

/** Appends collections: list offsets over a leaf child. */
class ListBuilder {
  length = 0;
  nulls = 0;
  valid = new Uint8Array(64);
  offsets = new Int32Array(65);
  readonly child: LeafBuilder;

  constructor(kind: ColumnKind, readonly name: string) {
    this.child = new LeafBuilder(kind, name);
  }

  #reserve(n: number): void {
    const need = this.length + n;
    if (need <= this.valid.length) return;
    this.valid = grow(this.valid, need);
    this.offsets = grow(this.offsets, this.valid.length + 1);
  }

  appendNull(): void {
    this.#reserve(1);
    this.nulls++;
    this.offsets[this.length + 1] = this.child.length;
    this.length++;
  }

  append(v: unknown, row: number): void {
    if (!Array.isArray(v)) {
      throw new ArrowConversionError(this.name, row, "expected an array for a collection column");
    }
    this.#reserve(1);
    const child = this.child;
    for (const x of v) {
      if (x === null || x === undefined) child.appendNull();
      else child.append(x, row);
    }
    this.valid[this.length] = 1;
    this.offsets[this.length + 1] = child.length;
    this.length++;
  }

  appendRange(src: ListColumn, from: number, to: number): void {
    const n = to - from;
    if (n <= 0) return;
    this.#reserve(n);
    const at = this.length;
    this.valid.set(src.valid.subarray(from, to), at);
    for (let i = from; i < to; i++) if (src.valid[i] === 0) this.nulls++;
    const so = src.offsets;
    const shift = this.child.length - so[from];
    this.child.appendRange(src.child, so[from], so[to]);
    for (let i = 1; i <= n; i++) this.offsets[at + i] = so[from + i] + shift;
    this.length = at + n;
  }

  appendGather(src: ListColumn, rows: Int32Array, from: number, to: number): void {
    const n = to - from;
    if (n <= 0) return;
    this.#reserve(n);
    const so = src.offsets;
    for (let k = 0; k < n; k++) {
      const r = rows[from + k];
      const i = this.length;
      this.valid[i] = src.valid[r];
      if (src.valid[r] === 0) this.nulls++;
      this.child.appendRange(src.child, so[r], so[r + 1]);
      this.offsets[i + 1] = this.child.length;
      this.length = i + 1;
    }
  }

  view(): ListColumn {
    const n = this.length;
    return {
      kind: "list",
      length: n,
      nulls: this.nulls,
      valid: this.valid.subarray(0, n),
      offsets: this.offsets.subarray(0, n + 1),
      child: this.child.view(),
    };
  }

  truncate(n: number): void {
    const len = this.length;
    if (n >= len) return;
    for (let i = n; i < len; i++) if (this.valid[i] === 0) this.nulls--;
    this.child.truncate(this.offsets[n]);
    this.valid.fill(0, n, len);
    this.offsets.fill(0, n + 1, len + 1);
    this.length = n;
  }

  wipe(): void {
    this.valid.fill(0);
    this.offsets.fill(0);
    this.child.wipe();
    this.length = this.nulls = 0;
  }

  finish(): ListColumn {
    const n = this.length;
    return {
      kind: "list",
      length: n,
      nulls: this.nulls,
      valid: this.valid.slice(0, n),
      offsets: this.offsets.slice(0, n + 1),
      child: this.child.finish(),
    };
  }
}

/**
 * Columnar rows of one view: {@link appendRow} converts a row (values in column order, as `emit` gives
 * them) into the column buffers; {@link appendBatch} copies rows of a finished {@link ColumnBatch}.
 */
export class ColumnsBuilder {
  readonly #columns: (LeafBuilder | ListBuilder)[];
  #length = 0;

  /** `capacity`: rows to make room for at first (the buffers grow as needed). */
  constructor(columns: readonly Pick<ViewColumnInfo, "name" | "type" | "collection">[], capacity = 64) {
    this.#columns = columns.map((c) =>
      c.collection
        ? new ListBuilder(columnKind(c.type), c.name)
        : new LeafBuilder(columnKind(c.type), c.name, Math.max(1, capacity))
    );
  }

  /** Rows so far. */
  get length(): number {
    return this.#length;
  }

  /**
   * Appends one row: `values[i]` is column i's value (null/undefined for null). `errorRow` is the row
   * number an {@link ArrowConversionError} names (default: the row's index in the builder).
   */
  appendRow(values: readonly unknown[], errorRow: number = this.#length): void {
    const cols = this.#columns;
    for (let i = 0; i < cols.length; i++) {
      const v = values[i];
      if (v === null || v === undefined) cols[i].appendNull();
      else cols[i].append(v, errorRow);
    }
    this.#length++;
  }

  /** Appends rows `[from, to)` of `batch` (built for the same columns). */
  appendBatch(batch: ColumnBatch, from = 0, to = batch.length): void {
    const cols = this.#columns;
    for (let i = 0; i < cols.length; i++) {
      const c = cols[i];
      const src = batch.columns[i];
      if (c instanceof ListBuilder) c.appendRange(src as ListColumn, from, to);
      else c.appendRange(src as LeafColumn, from, to);
    }
    this.#length += Math.max(0, to - from);
  }

  /** Appends the rows `rows[from … to)` of `batch` (built for the same columns), in that order. */
  appendGather(batch: ColumnBatch, rows: Int32Array, from = 0, to = rows.length): void {
    const cols = this.#columns;
    for (let i = 0; i < cols.length; i++) {
      const c = cols[i];
      const src = batch.columns[i];
      if (c instanceof ListBuilder) c.appendGather(src as ListColumn, rows, from, to);
      else c.appendGather(src as LeafColumn, rows, from, to);
    }
    this.#length += Math.max(0, to - from);
  }

  /** The rows as views on the builder's buffers (valid until the next append). */
  view(): ColumnBatch {
    return { length: this.#length, columns: this.#columns.map((c) => c.view()) };
  }

  /**
   * Drops the rows from `n` on, including a row whose {@link appendRow} threw half way (so a failed row
   * can be taken back).
   */
  truncate(n: number): void {
    for (const c of this.#columns) c.truncate(n);
    this.#length = Math.min(this.#length, n);
  }

  /** Zeroes every buffer (the values may be PHI) and empties the builder. */
  wipe(): void {
    for (const c of this.#columns) c.wipe();
    this.#length = 0;
  }

  /** The rows in buffers owned by the result (transferable). */
  finish(): ColumnBatch {
    return { length: this.#length, columns: this.#columns.map((c) => c.finish()) };
  }
}
