/**
 * Rows of a compiled view → an Apache Arrow `RecordBatch` with typed columns.
 *
 * FHIR type → Arrow type (the column's declared `type`):
 *
 * | FHIR type | Arrow |
 * |---|---|
 * | boolean | Bool |
 * | integer, positiveInt, unsignedInt | Int32 |
 * | integer64 | Int64 (JSON numbers or digit strings, as in R5 JSON) |
 * | decimal | Float64 |
 * | string, code, id, uri, url, canonical, markdown, oid, uuid, base64Binary, xhtml | Utf8 |
 * | date, dateTime, instant, time | Utf8, the ISO 8601 text as written |
 * | any other type (complex types, element paths such as `Observation.referenceRange`) | Utf8, JSON text |
 * | no type declared | Utf8 (strings as they are, numbers/booleans as text, objects as JSON) |
 *
 * A `collection: true` column is `List<item type>`; an empty collection is an empty list, never null.
 *
 * Choices, documented:
 * - **decimal → Float64.** FHIR decimals carry their written precision (`1.50`) and up to 18
 *   significant digits; an IEEE double keeps 15–17 digits and not the trailing zeros. Nutrition and
 *   vital-sign values fit comfortably; a view that needs the exact text can declare the column `string`
 *   and use `toString()`. Arrow `Decimal128` would need one scale per column, which FHIR data does not
 *   have.
 * - **date/time types → Utf8.** FHIR allows partial dates (`1970`, `1970-06`) and dateTimes without a
 *   time zone; Arrow `Date32`/`Timestamp` cannot represent them without inventing the missing parts.
 *   The text sorts correctly within one precision and time zone.
 *
 * Every field carries metadata `fhir.type` (the declared type, "" when none) and `fhir.collection`; the
 * schema carries `fhir.resource` and, when the view has one, `fhir.view`.
 *
 * Errors: a value that does not fit its declared type (say a string in an integer column) raises
 * {@link ArrowConversionError} naming the column, the row number and the type found, never the value.
 *
 * @module
 */

import {
  Bool,
  type Data,
  type DataType,
  Field,
  Float64,
  Int32,
  Int64,
  List,
  makeData,
  RecordBatch,
  Schema,
  Struct,
  Utf8,
} from "apache-arrow";
import { describeType } from "../fhirpath/values.ts";
import type { CompiledView, Row, ViewColumnInfo } from "./runner.ts";

/** A value did not fit the Arrow type of its column. */
export class ArrowConversionError extends Error {
  constructor(readonly column: string, readonly row: number, what: string) {
    super(`column ${column}, row ${row}: ${what}`);
    this.name = "ArrowConversionError";
  }
}

/** How values of a column are converted. */
type Kind = "bool" | "int32" | "int64" | "float64" | "string" | "json";

const KINDS: Readonly<Record<string, Kind>> = {
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

function kindOf(fhirType: string | undefined): Kind {
  if (fhirType === undefined) return "json";
  return Object.hasOwn(KINDS, fhirType) ? KINDS[fhirType] : "json";
}

function arrowType(kind: Kind): DataType {
  switch (kind) {
    case "bool":
      return new Bool();
    case "int32":
      return new Int32();
    case "int64":
      return new Int64();
    case "float64":
      return new Float64();
    default:
      return new Utf8();
  }
}

/** The Arrow type of a view column (see the module table). */
export function arrowTypeOf(column: Pick<ViewColumnInfo, "type" | "collection">): DataType {
  const t = arrowType(kindOf(column.type));
  return column.collection ? new List(new Field("item", t, true)) : t;
}

/** The Arrow schema of a compiled view. */
export function arrowSchema(view: Pick<CompiledView, "columns" | "resource" | "view">): Schema {
  const fields = view.columns.map((c) =>
    new Field(
      c.name,
      arrowTypeOf(c),
      true,
      new Map([["fhir.type", c.type ?? ""], ["fhir.collection", String(c.collection)]]),
    )
  );
  const meta = new Map([["fhir.resource", view.resource]]);
  if (typeof view.view.name === "string") meta.set("fhir.view", view.view.name);
  return new Schema(fields, meta);
}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

/** Converts one non-null value for its kind, or throws. */
function convert(v: unknown, kind: Kind, column: string, row: number): unknown {
  const bad = (want: string): never => {
    throw new ArrowConversionError(column, row, `expected ${want}, got ${describeType(v)}`);
  };
  switch (kind) {
    case "bool":
      return typeof v === "boolean" ? v : bad("a boolean");
    case "int32":
      if (typeof v === "number" && Number.isInteger(v)) {
        if (v < INT32_MIN || v > INT32_MAX) {
          throw new ArrowConversionError(column, row, "integer out of the 32-bit range; declare integer64");
        }
        return v;
      }
      return bad("an integer");
    case "int64":
      if (typeof v === "number" && Number.isSafeInteger(v)) return BigInt(v);
      if (typeof v === "string" && /^-?\d{1,19}$/.test(v)) return BigInt(v);
      if (typeof v === "bigint") return v;
      return bad("a 64-bit integer");
    case "float64":
      return typeof v === "number" ? v : bad("a number");
    case "string":
      if (typeof v === "string") return v;
      if (typeof v === "number" || typeof v === "boolean") return String(v);
      return bad("a string");
    case "json":
      if (typeof v === "string") return v;
      if (typeof v === "number" || typeof v === "boolean") return String(v);
      return JSON.stringify(v);
  }
}

/** Validity bitmap builder (bit set = valid), as Arrow lays it out. */
class Validity {
  readonly bits: Uint8Array;
  nulls = 0;
  constructor(length: number) {
    this.bits = new Uint8Array(((length + 63) >> 6) << 3);
  }
  set(i: number, valid: boolean): void {
    if (valid) this.bits[i >> 3] |= 1 << (i & 7);
    else this.nulls++;
  }
}

const encoder = new TextEncoder();

/** Builds Arrow data of `kind` from converted values (null for null); one buffer pass per column. */
function leafData(kind: Kind, values: readonly unknown[]): Data {
  const n = values.length;
  const validity = new Validity(n);
  const type = arrowType(kind);
  switch (kind) {
    case "bool": {
      const data = new Uint8Array(validity.bits.length);
      for (let i = 0; i < n; i++) {
        const v = values[i];
        validity.set(i, v !== null);
        if (v === true) data[i >> 3] |= 1 << (i & 7);
      }
      return makeData({
        type: type as Bool,
        length: n,
        nullCount: validity.nulls,
        nullBitmap: validity.bits,
        data,
      });
    }
    case "int32":
    case "int64":
    case "float64": {
      const data = kind === "int32"
        ? new Int32Array(n)
        : kind === "int64"
        ? new BigInt64Array(n)
        : new Float64Array(n);
      for (let i = 0; i < n; i++) {
        const v = values[i];
        validity.set(i, v !== null);
        if (v !== null) data[i] = v as never;
      }
      return makeData({
        type: type as Int32,
        length: n,
        nullCount: validity.nulls,
        nullBitmap: validity.bits,
        data: data as Int32Array,
      });
    }
    default: {
      const offsets = new Int32Array(n + 1);
      let buf = new Uint8Array(Math.max(64, n * 16));
      let pos = 0;
      for (let i = 0; i < n; i++) {
        const v = values[i];
        validity.set(i, v !== null);
        if (v !== null) {
          const str = v as string;
          if (buf.length - pos < str.length * 3) {
            const bigger = new Uint8Array(Math.max(buf.length * 2, pos + str.length * 3));
            bigger.set(buf.subarray(0, pos));
            buf = bigger;
          }
          pos += encoder.encodeInto(str, buf.subarray(pos)).written;
        }
        offsets[i + 1] = pos;
      }
      return makeData({
        type: type as Utf8,
        length: n,
        nullCount: validity.nulls,
        nullBitmap: validity.bits,
        valueOffsets: offsets,
        data: buf.subarray(0, pos),
      });
    }
  }
}

/** Builds one column's Arrow data from the rows. */
function columnData(
  column: ViewColumnInfo,
  index: number,
  rows: readonly (Row | readonly unknown[])[],
): Data {
  const kind = kindOf(column.type);
  const name = column.name;
  const cell = (r: number): unknown => {
    const row = rows[r];
    return Array.isArray(row) ? row[index] : (row as Row)[name];
  };
  if (!column.collection) {
    const values = new Array<unknown>(rows.length);
    for (let r = 0; r < rows.length; r++) {
      const v = cell(r);
      values[r] = v === null || v === undefined ? null : convert(v, kind, name, r);
    }
    return leafData(kind, values);
  }
  const validity = new Validity(rows.length);
  const offsets = new Int32Array(rows.length + 1);
  const items: unknown[] = [];
  for (let r = 0; r < rows.length; r++) {
    const v = cell(r);
    validity.set(r, v !== null && v !== undefined);
    if (v !== null && v !== undefined) {
      if (!Array.isArray(v)) {
        throw new ArrowConversionError(name, r, "expected an array for a collection column");
      }
      for (const x of v) items.push(x === null || x === undefined ? null : convert(x, kind, name, r));
    }
    offsets[r + 1] = items.length;
  }
  const type = arrowTypeOf(column) as List;
  return makeData({
    type,
    length: rows.length,
    nullCount: validity.nulls,
    nullBitmap: validity.bits,
    valueOffsets: offsets,
    child: leafData(kind, items),
  });
}

/**
 * Builds a RecordBatch from rows of `view`: row objects (from `rows()`) or arrays in column order
 * (from `rowArrays()`). Throws {@link ArrowConversionError} for a value that does not fit its column.
 */
export function toRecordBatch(
  view: Pick<CompiledView, "columns" | "resource" | "view">,
  rows: readonly (Row | readonly unknown[])[],
): RecordBatch {
  const schema = arrowSchema(view);
  const children = view.columns.map((c, i) => columnData(c, i, rows));
  const data = makeData({ type: new Struct(schema.fields), length: rows.length, nullCount: 0, children });
  return new RecordBatch(schema, data);
}
