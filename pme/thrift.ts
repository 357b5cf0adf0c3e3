/**
 * Thrift compact protocol codec for Parquet metadata.
 *
 * The codec is generic: it decodes any struct into a tree of {@link TField}s, keeping every field
 * (known or not), its order and the encoding choices a writer made (long field headers, long list
 * sizes, the byte used for booleans inside lists). Re-serialising an unmodified tree therefore
 * reproduces the input bytes exactly, so footers written by other implementations survive a
 * parse/serialise round trip with their unknown fields intact. Typed accessors for the Parquet
 * structures live in `metadata.ts`.
 *
 * @module
 */

import { PmeFormatError } from "./errors.ts";

/** Compact-protocol type ids. */
export enum CT {
  STOP = 0,
  TRUE = 1,
  FALSE = 2,
  BYTE = 3,
  I16 = 4,
  I32 = 5,
  I64 = 6,
  DOUBLE = 7,
  BINARY = 8,
  LIST = 9,
  SET = 10,
  MAP = 11,
  STRUCT = 12,
}

/** A decoded value. i64 values are bigints; i8/i16/i32/double are numbers. */
export type TValue = boolean | number | bigint | Uint8Array | TList | TMap | TStruct;

/** A list or set. `boolBytes` keeps the raw bytes of boolean elements (writers differ: 0/1/2). */
export interface TList {
  kind: "list";
  elemType: CT;
  items: TValue[];
  /** The element type nibble as written (booleans may be announced as 1 or 2). */
  rawElemType?: number;
  /** True when the size was written in the long form although it fits the short one. */
  longSize?: boolean;
  /** Raw bytes of boolean elements, parallel to `items`. */
  boolBytes?: number[];
  /** LIST or SET as written. */
  setType?: boolean;
}

/** A map. */
export interface TMap {
  kind: "map";
  keyType: CT;
  valType: CT;
  entries: [TValue, TValue][];
}

/** One field of a struct. */
export interface TField {
  id: number;
  type: CT;
  value: TValue;
  /** True when written with an explicit field id although a delta header would have fitted. */
  longHeader?: boolean;
}

/** A decoded struct: its fields in the order they were read or set. */
export class TStruct {
  /** Fields in wire order. */
  fields: TField[];

  constructor(fields: TField[] = []) {
    this.fields = fields;
  }

  /** Returns the field with this id, if present. */
  field(id: number): TField | undefined {
    return this.fields.find((f) => f.id === id);
  }

  /** True when the field is present. */
  has(id: number): boolean {
    return this.fields.some((f) => f.id === id);
  }

  /** Returns the raw value of a field. */
  get(id: number): TValue | undefined {
    return this.field(id)?.value;
  }

  /** Sets a field, replacing its value in place or inserting it in field-id order. */
  set(id: number, type: CT, value: TValue): this {
    const existing = this.field(id);
    if (existing) {
      existing.type = type;
      existing.value = value;
      return this;
    }
    const at = this.fields.findIndex((f) => f.id > id);
    const field: TField = { id, type, value };
    if (at < 0) this.fields.push(field);
    else this.fields.splice(at, 0, field);
    return this;
  }

  /** Removes a field; returns whether it was present. */
  delete(id: number): boolean {
    const at = this.fields.findIndex((f) => f.id === id);
    if (at < 0) return false;
    this.fields.splice(at, 1);
    return true;
  }

  /** Integer field (i8/i16/i32/i64) as a JS number; i64 values beyond 2^53 throw. */
  int(id: number): number | undefined {
    const v = this.get(id);
    if (v === undefined) return undefined;
    if (typeof v === "bigint") {
      if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
        throw new PmeFormatError(`thrift field ${id} holds ${v}, beyond the safe integer range`);
      }
      return Number(v);
    }
    if (typeof v === "number") return v;
    throw new PmeFormatError(`thrift field ${id} is not an integer`);
  }

  /** Required integer field. */
  reqInt(id: number, what: string): number {
    const v = this.int(id);
    if (v === undefined) throw new PmeFormatError(`required field ${what} (id ${id}) is missing`);
    return v;
  }

  /** Boolean field. */
  bool(id: number): boolean | undefined {
    const v = this.get(id);
    return typeof v === "boolean" ? v : undefined;
  }

  /** Binary field. */
  bin(id: number): Uint8Array | undefined {
    const v = this.get(id);
    return v instanceof Uint8Array ? v : undefined;
  }

  /** String field (UTF-8 decoded binary). */
  str(id: number): string | undefined {
    const b = this.bin(id);
    return b ? utf8Decoder.decode(b) : undefined;
  }

  /** Struct field. */
  struct(id: number): TStruct | undefined {
    const v = this.get(id);
    return v instanceof TStruct ? v : undefined;
  }

  /** List field. */
  list(id: number): TList | undefined {
    const v = this.get(id);
    return v && typeof v === "object" && "kind" in v && v.kind === "list" ? v : undefined;
  }

  /** Sets an i32 field. */
  setI32(id: number, v: number): this {
    return this.set(id, CT.I32, v);
  }

  /** Sets an i64 field. */
  setI64(id: number, v: number | bigint): this {
    return this.set(id, CT.I64, BigInt(v));
  }

  /** Sets an i16 field. */
  setI16(id: number, v: number): this {
    return this.set(id, CT.I16, v);
  }

  /** Sets a binary field. */
  setBin(id: number, v: Uint8Array): this {
    return this.set(id, CT.BINARY, v);
  }

  /** Sets a boolean field. */
  setBool(id: number, v: boolean): this {
    return this.set(id, v ? CT.TRUE : CT.FALSE, v);
  }

  /** Sets a struct field. */
  setStruct(id: number, v: TStruct): this {
    return this.set(id, CT.STRUCT, v);
  }

  /** Deep copy. */
  clone(): TStruct {
    return cloneValue(this) as TStruct;
  }
}

/** Builds a list value of structs. */
export function structList(items: TStruct[]): TList {
  return { kind: "list", elemType: CT.STRUCT, items };
}

/** Builds a list value of strings. */
export function stringList(items: string[]): TList {
  return { kind: "list", elemType: CT.BINARY, items: items.map((s) => utf8Encoder.encode(s)) };
}

const utf8Decoder = new TextDecoder();
const utf8Encoder = new TextEncoder();

function cloneValue(v: TValue): TValue {
  if (v instanceof TStruct) {
    return new TStruct(v.fields.map((f) => ({ ...f, value: cloneValue(f.value) })));
  }
  if (v instanceof Uint8Array) return v.slice();
  if (typeof v === "object") {
    if (v.kind === "list") {
      return { ...v, items: v.items.map(cloneValue), boolBytes: v.boolBytes?.slice() };
    }
    return { ...v, entries: v.entries.map(([k, x]) => [cloneValue(k), cloneValue(x)]) };
  }
  return v;
}

const MAX_DEPTH = 64;

/** Result of decoding a struct from a buffer: the struct and the number of bytes it used. */
export interface Decoded {
  struct: TStruct;
  length: number;
}

/**
 * Decodes one struct starting at `offset`. Trailing bytes after the struct's STOP are ignored
 * (parquet-java pads encrypted Thrift plaintexts with zeros); `length` says where it ended.
 */
export function decodeStruct(buf: Uint8Array, offset = 0, what = "thrift struct"): Decoded {
  const r = new Reader(buf, offset, what);
  const struct = r.readStruct(0);
  return { struct, length: r.pos - offset };
}

class Reader {
  pos: number;
  constructor(readonly buf: Uint8Array, offset: number, readonly what: string) {
    this.pos = offset;
  }

  fail(msg: string): never {
    throw new PmeFormatError(`malformed ${this.what} at byte ${this.pos}: ${msg}`);
  }

  byte(): number {
    if (this.pos >= this.buf.length) this.fail("unexpected end of data");
    return this.buf[this.pos++];
  }

  varint(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 5; i++) {
      const b = this.byte();
      result += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return result;
      mul *= 128;
    }
    this.fail("varint too long");
  }

  varint64(): bigint {
    let result = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) {
      const b = this.byte();
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
    }
    this.fail("varint too long");
  }

  zigzag32(): number {
    const n = this.varint();
    // n < 2^32 here; undo zigzag without 32-bit overflow surprises.
    return n % 2 === 0 ? n / 2 : -(n + 1) / 2;
  }

  zigzag64(): bigint {
    const n = this.varint64();
    return (n >> 1n) ^ -(n & 1n);
  }

  readValue(type: CT, depth: number): TValue {
    switch (type) {
      case CT.TRUE:
        return true;
      case CT.FALSE:
        return false;
      case CT.BYTE: {
        const b = this.byte();
        return b > 127 ? b - 256 : b;
      }
      case CT.I16:
      case CT.I32:
        return this.zigzag32();
      case CT.I64:
        return this.zigzag64();
      case CT.DOUBLE: {
        if (this.pos + 8 > this.buf.length) this.fail("unexpected end of data in double");
        const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 8).getFloat64(0, true);
        this.pos += 8;
        return v;
      }
      case CT.BINARY: {
        const len = this.varint();
        if (this.pos + len > this.buf.length) this.fail(`binary of ${len} bytes runs past the end`);
        const v = this.buf.slice(this.pos, this.pos + len);
        this.pos += len;
        return v;
      }
      case CT.LIST:
      case CT.SET:
        return this.readList(type === CT.SET, depth);
      case CT.MAP:
        return this.readMap(depth);
      case CT.STRUCT:
        return this.readStruct(depth);
      default:
        this.fail(`unknown compact type ${type}`);
    }
  }

  readList(setType: boolean, depth: number): TList {
    const head = this.byte();
    const rawElemType = head & 0x0f;
    let size = head >> 4;
    let longSize = false;
    if (size === 15) {
      size = this.varint();
      longSize = size < 15;
    }
    const isBool = rawElemType === CT.TRUE || rawElemType === CT.FALSE;
    const elemType = isBool ? CT.TRUE : rawElemType as CT;
    if (size > this.buf.length - this.pos) {
      // Every element takes at least one byte: a larger size is corrupt, not a big list.
      this.fail(`list of ${size} elements cannot fit in the remaining bytes`);
    }
    const list: TList = { kind: "list", elemType, items: [] };
    if (rawElemType !== elemType) list.rawElemType = rawElemType;
    if (longSize) list.longSize = true;
    if (setType) list.setType = true;
    if (isBool) {
      list.boolBytes = [];
      for (let i = 0; i < size; i++) {
        const b = this.byte();
        list.boolBytes.push(b);
        list.items.push(b === CT.TRUE);
      }
    } else {
      for (let i = 0; i < size; i++) list.items.push(this.readValue(elemType, depth + 1));
    }
    return list;
  }

  readMap(depth: number): TMap {
    const size = this.varint();
    if (size === 0) return { kind: "map", keyType: CT.STOP, valType: CT.STOP, entries: [] };
    const kv = this.byte();
    const keyType = (kv >> 4) as CT;
    const valType = (kv & 0x0f) as CT;
    if (size > this.buf.length - this.pos) {
      // Every entry takes at least one byte (booleans in maps are written as one byte each).
      this.fail(`map of ${size} entries cannot fit in the remaining bytes`);
    }
    const entries: [TValue, TValue][] = [];
    for (let i = 0; i < size; i++) {
      entries.push([this.readElement(keyType, depth + 1), this.readElement(valType, depth + 1)]);
    }
    return { kind: "map", keyType, valType, entries };
  }

  /** A map key or value: like readValue, but booleans take a byte of their own. */
  readElement(type: CT, depth: number): TValue {
    return type === CT.TRUE || type === CT.FALSE ? this.byte() === CT.TRUE : this.readValue(type, depth);
  }

  readStruct(depth: number): TStruct {
    if (depth > MAX_DEPTH) this.fail("nesting too deep");
    const fields: TField[] = [];
    let lastId = 0;
    for (;;) {
      const head = this.byte();
      if (head === CT.STOP) break;
      const type = (head & 0x0f) as CT;
      const delta = head >> 4;
      let id: number;
      let longHeader = false;
      if (delta === 0) {
        id = this.zigzag32();
        longHeader = id > lastId && id - lastId <= 15;
      } else {
        id = lastId + delta;
      }
      const value = this.readValue(type, depth + 1);
      const field: TField = { id, type: type === CT.FALSE ? CT.FALSE : type, value };
      if (longHeader) field.longHeader = true;
      fields.push(field);
      lastId = id;
    }
    return new TStruct(fields);
  }
}

/** Serialises a struct with the compact protocol. */
export function encodeStruct(s: TStruct): Uint8Array {
  const w = new Writer();
  w.writeStruct(s);
  return w.finish();
}

class Writer {
  buf = new Uint8Array(256);
  pos = 0;

  ensure(n: number) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }

  byte(b: number) {
    this.ensure(1);
    this.buf[this.pos++] = b & 0xff;
  }

  varint(n: number) {
    this.ensure(5);
    while (n >= 0x80) {
      this.buf[this.pos++] = (n & 0x7f) | 0x80;
      n = Math.floor(n / 128);
    }
    this.buf[this.pos++] = n;
  }

  varint64(n: bigint) {
    this.ensure(10);
    while (n >= 0x80n) {
      this.buf[this.pos++] = Number(n & 0x7fn) | 0x80;
      n >>= 7n;
    }
    this.buf[this.pos++] = Number(n);
  }

  zigzag32(n: number) {
    this.varint(n >= 0 ? n * 2 : -n * 2 - 1);
  }

  zigzag64(n: bigint) {
    this.varint64(BigInt.asUintN(64, (n << 1n) ^ (n >> 63n)));
  }

  writeValue(type: CT, v: TValue) {
    switch (type) {
      case CT.TRUE:
      case CT.FALSE:
        return; // encoded in the field header
      case CT.BYTE:
        return this.byte(v as number);
      case CT.I16:
      case CT.I32:
        return this.zigzag32(v as number);
      case CT.I64:
        return this.zigzag64(typeof v === "bigint" ? v : BigInt(v as number));
      case CT.DOUBLE: {
        this.ensure(8);
        new DataView(this.buf.buffer, this.pos, 8).setFloat64(0, v as number, true);
        this.pos += 8;
        return;
      }
      case CT.BINARY: {
        const b = v as Uint8Array;
        this.varint(b.length);
        this.ensure(b.length);
        this.buf.set(b, this.pos);
        this.pos += b.length;
        return;
      }
      case CT.LIST:
      case CT.SET:
        return this.writeList(v as TList);
      case CT.MAP:
        return this.writeMap(v as TMap);
      case CT.STRUCT:
        return this.writeStruct(v as TStruct);
      default:
        throw new PmeFormatError(`cannot encode thrift type ${type}`);
    }
  }

  writeList(l: TList) {
    const size = l.items.length;
    const isBool = l.elemType === CT.TRUE || l.elemType === CT.FALSE;
    const elemNibble = l.rawElemType ?? (isBool ? CT.TRUE : l.elemType);
    if (size < 15 && !l.longSize) this.byte((size << 4) | elemNibble);
    else {
      this.byte(0xf0 | elemNibble);
      this.varint(size);
    }
    if (isBool) {
      l.items.forEach((item, i) => {
        const raw = l.boolBytes?.[i];
        this.byte(raw !== undefined && (raw === CT.TRUE) === item ? raw : item ? CT.TRUE : CT.FALSE);
      });
      return;
    }
    for (const item of l.items) this.writeValue(l.elemType, item);
  }

  writeMap(m: TMap) {
    this.varint(m.entries.length);
    if (m.entries.length === 0) return;
    this.byte((m.keyType << 4) | m.valType);
    for (const [k, v] of m.entries) {
      this.writeElement(m.keyType, k);
      this.writeElement(m.valType, v);
    }
  }

  /** A map key or value: booleans take a byte of their own. */
  writeElement(type: CT, v: TValue) {
    if (type === CT.TRUE || type === CT.FALSE) this.byte(v ? CT.TRUE : CT.FALSE);
    else this.writeValue(type, v);
  }

  writeStruct(s: TStruct) {
    let lastId = 0;
    for (const f of s.fields) {
      let type = f.type;
      if (type === CT.TRUE || type === CT.FALSE) type = f.value ? CT.TRUE : CT.FALSE;
      const delta = f.id - lastId;
      if (delta > 0 && delta <= 15 && !f.longHeader) this.byte((delta << 4) | type);
      else {
        this.byte(type);
        this.zigzag32(f.id);
      }
      this.writeValue(type, f.value);
      lastId = f.id;
    }
    this.byte(CT.STOP);
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}
