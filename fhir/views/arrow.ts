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
 * Building: values are converted into columnar buffers (`columns.ts`: typed arrays, UTF-8 offsets and
 * bytes) and the batch wraps those buffers with `makeData`; {@link recordBatchFromColumns} does the
 * wrapping for buffers filled elsewhere (the conversion appends view rows straight into them).
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
import type { CompiledView, Row, ViewColumnInfo } from "./runner.ts";
import {
  ArrowConversionError,
  type ColumnBatch,
  type ColumnData,
  type ColumnKind,
  columnKind,
  ColumnsBuilder,
  type LeafColumn,
} from "./columns.ts";

export { ArrowConversionError };

function arrowType(kind: ColumnKind): DataType {
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
  const t = arrowType(columnKind(column.type));
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

/** Packs one byte per slot (0/1) into an Arrow bitmap (64-bit padded). */
function packBits(bytes: Uint8Array, n: number): Uint8Array {
  const bits = new Uint8Array(((n + 63) >> 6) << 3);
  const whole = n & ~7;
  let i = 0;
  for (; i < whole; i += 8) {
    bits[i >> 3] = bytes[i] | (bytes[i + 1] << 1) | (bytes[i + 2] << 2) | (bytes[i + 3] << 3) |
      (bytes[i + 4] << 4) | (bytes[i + 5] << 5) | (bytes[i + 6] << 6) | (bytes[i + 7] << 7);
  }
  for (; i < n; i++) if (bytes[i]) bits[i >> 3] |= 1 << (i & 7);
  return bits;
}

function leafData(c: LeafColumn): Data {
  const n = c.length;
  const nullBitmap = c.nulls > 0 ? packBits(c.valid, n) : undefined;
  const type = arrowType(c.kind);
  switch (c.kind) {
    case "bool":
      return makeData({
        type: type as Bool,
        length: n,
        nullCount: c.nulls,
        nullBitmap,
        data: packBits(c.values as Uint8Array, n),
      });
    case "int32":
    case "int64":
    case "float64":
      return makeData({
        type: type as Int32,
        length: n,
        nullCount: c.nulls,
        nullBitmap,
        data: c.values as Int32Array,
      });
    default:
      return makeData({
        type: type as Utf8,
        length: n,
        nullCount: c.nulls,
        nullBitmap,
        valueOffsets: c.offsets!,
        data: c.data!,
      });
  }
}

function columnData(column: ViewColumnInfo, c: ColumnData): Data {
  if (c.kind !== "list") return leafData(c);
  return makeData({
    type: arrowTypeOf(column) as List,
    length: c.length,
    nullCount: c.nulls,
    nullBitmap: c.nulls > 0 ? packBits(c.valid, c.length) : undefined,
    valueOffsets: c.offsets,
    child: leafData(c.child),
  });
}

/**
 * Wraps columnar rows of `view` (a {@link ColumnBatch} from `ColumnsBuilder`, columns in view order) as
 * a RecordBatch. The batch shares the buffers (bitmaps are packed into new ones).
 */
export function recordBatchFromColumns(
  view: Pick<CompiledView, "columns" | "resource" | "view">,
  batch: ColumnBatch,
): RecordBatch {
  const schema = arrowSchema(view);
  const children = view.columns.map((c, i) => columnData(c, batch.columns[i]));
  const data = makeData({ type: new Struct(schema.fields), length: batch.length, nullCount: 0, children });
  return new RecordBatch(schema, data);
}

/**
 * Builds a RecordBatch from rows of `view`: row objects (from `rows()`) or arrays in column order
 * (from `rowArrays()`). Throws {@link ArrowConversionError} for a value that does not fit its column.
 */
export function toRecordBatch(
  view: Pick<CompiledView, "columns" | "resource" | "view">,
  rows: readonly (Row | readonly unknown[])[],
): RecordBatch {
  const builder = new ColumnsBuilder(view.columns);
  const names = view.columns.map((c) => c.name);
  const values: unknown[] = new Array(names.length);
  for (const row of rows) {
    if (Array.isArray(row)) builder.appendRow(row);
    else {
      for (let i = 0; i < names.length; i++) values[i] = (row as Row)[names[i]];
      builder.appendRow(values);
    }
  }
  return recordBatchFromColumns(view, builder.view());
}
