/**
 * Columnar view rows (`fhir/views/columns.ts`) and their Arrow / Parquet form: rows appended straight
 * into typed buffers give the same record batch (schema, types, values) as `toRecordBatch`; range and
 * gather copies, truncation after a failed row, transfer between threads and zeroing; Parquet bytes
 * (`fhir/convert/parquet_encode.ts`) read back to the same values.
 *
 * @module
 */

import assert from "node:assert";
import * as arrow from "apache-arrow";
import * as pw from "parquet-wasm";
import { recordBatchFromColumns, toRecordBatch } from "../fhir/views/arrow.ts";
import {
  ArrowConversionError,
  type ColumnBatch,
  columnBatchTransferables,
  ColumnsBuilder,
  wipeColumnBatch,
} from "../fhir/views/columns.ts";
import { compileView } from "../fhir/views/runner.ts";
import { encodeParquet } from "../fhir/convert/parquet_encode.ts";

const view = compileView({
  resource: "Observation",
  name: "kinds",
  select: [{
    column: [
      { name: "id", path: "id", type: "id" },
      { name: "flag", path: "status = 'final'", type: "boolean" },
      { name: "n", path: "component.count()", type: "integer" },
      { name: "big", path: "%big", type: "integer64" },
      { name: "kcal", path: "valueQuantity.value", type: "decimal" },
      { name: "text", path: "code.text", type: "string" },
      { name: "quantity", path: "valueQuantity", type: "Quantity" },
      { name: "codes", path: "component.code.text", type: "string", collection: true },
      { name: "amounts", path: "component.valueQuantity.value", type: "decimal", collection: true },
      { name: "any", path: "status" },
    ],
  }],
}, { constants: { big: "9007199254740993" } });

const LONG = "Grüße, 🍎 " + "x".repeat(100);

/** Rows as `emit` gives them, in column order: every kind, nulls, non-ASCII and long strings. */
function sampleRows(n: number): unknown[][] {
  const rows: unknown[][] = [];
  for (let i = 0; i < n; i++) {
    rows.push([
      `o${i}`,
      i % 3 === 0 ? null : i % 2 === 0,
      i % 5 === 0 ? null : i * 7 - 20,
      i % 4 === 0 ? null : i % 2 ? "9007199254740993" : -i,
      i % 6 === 0 ? null : i / 3,
      i % 7 === 0 ? null : i % 2 ? `café ${i}` : LONG,
      i % 3 === 0 ? null : { value: i, unit: "kcal" },
      i % 8 === 0 ? null : i % 3 === 0 ? [] : ["fat", null, `p${i}`],
      i % 9 === 0 ? null : [i, 1.5],
      i % 10 === 0 ? null : i % 2 ? "final" : 12,
    ]);
  }
  return rows;
}

function build(rows: readonly unknown[][]): ColumnsBuilder {
  const b = new ColumnsBuilder(view.columns, 4);
  for (const r of rows) b.appendRow(r);
  return b;
}

function json(batch: arrow.RecordBatch): string {
  return JSON.stringify(batch.toArray(), (_k, v) => typeof v === "bigint" ? `${v}n` : v);
}

Deno.test("columns: appended rows give the same record batch as toRecordBatch", () => {
  const rows = sampleRows(300);
  const expected = toRecordBatch(view, rows);
  for (const batch of [build(rows).view(), build(rows).finish()]) {
    const got = recordBatchFromColumns(view, batch);
    assert.strictEqual(String(got.schema), String(expected.schema));
    assert.deepStrictEqual(
      got.schema.fields.map((f) => [f.name, String(f.type), [...f.metadata]]),
      expected.schema.fields.map((f) => [f.name, String(f.type), [...f.metadata]]),
    );
    assert.strictEqual(got.numRows, 300);
    assert.strictEqual(json(got), json(expected));
  }
  const got = recordBatchFromColumns(view, build(rows).finish());
  const col = (name: string) => got.getChild(name)!;
  assert.deepStrictEqual([col("flag").get(0), col("flag").get(1), col("flag").get(2)], [null, false, true]);
  assert.deepStrictEqual([col("big").get(1), col("big").get(2), col("big").get(4)], [
    9007199254740993n,
    -2n,
    null,
  ]);
  assert.strictEqual(col("text").get(2), LONG);
  assert.strictEqual(col("text").get(1), "café 1");
  assert.deepStrictEqual(col("codes").get(1)?.toArray(), ["fat", null, "p1"]);
  assert.deepStrictEqual(col("codes").get(3)?.toArray(), [], "an empty collection is an empty list");
  assert.strictEqual(col("codes").get(8), null);
  assert.deepStrictEqual(JSON.parse(col("quantity").get(1)), { value: 1, unit: "kcal" });
  assert.deepStrictEqual([col("any").get(1), col("any").get(2)], ["final", "12"]);
  assert.strictEqual(col("n").nullCount, 60);
});

Deno.test("columns: range and gather copies equal building from the chosen rows", () => {
  const rows = sampleRows(200);
  const source = build(rows).finish();
  const ranged = new ColumnsBuilder(view.columns, 1);
  ranged.appendBatch(source, 0, 17);
  ranged.appendBatch(source, 17, 17);
  ranged.appendBatch(source, 150, 200);
  assert.strictEqual(ranged.length, 67);
  assert.strictEqual(
    json(recordBatchFromColumns(view, ranged.finish())),
    json(toRecordBatch(view, [...rows.slice(0, 17), ...rows.slice(150)])),
  );
  const pick = Int32Array.from([199, 3, 3, 42, 0, 150, 77, 8]);
  const gathered = new ColumnsBuilder(view.columns, 1);
  gathered.appendGather(source, pick, 0, 3);
  gathered.appendGather(source, pick, 3, pick.length);
  assert.strictEqual(
    json(recordBatchFromColumns(view, gathered.finish())),
    json(toRecordBatch(view, [...pick].map((r) => rows[r]))),
  );
});

Deno.test("columns: a value that does not fit raises a typed error; truncate takes the row back", () => {
  const rows = sampleRows(20);
  const b = build(rows);
  const bad = [...rows[1]];
  bad[4] = "lots"; // kcal: decimal
  assert.throws(() => b.appendRow(bad, 7), (e: unknown) => {
    assert.ok(e instanceof ArrowConversionError);
    assert.strictEqual(e.column, "kcal");
    assert.strictEqual(e.row, 7);
    assert.match(e.message, /^column kcal, row 7: expected a number, got string$/);
    assert.ok(!e.message.includes("lots"));
    return true;
  });
  const tooBig = [...rows[1]];
  tooBig[2] = 2 ** 31;
  assert.throws(() => b.appendRow(tooBig), /integer out of the 32-bit range; declare integer64/);
  const notList = [...rows[1]];
  notList[7] = "fat";
  assert.throws(() => b.appendRow(notList), /expected an array for a collection column/);
  b.truncate(20);
  b.appendRow(rows[2]);
  assert.strictEqual(b.length, 21);
  assert.strictEqual(
    json(recordBatchFromColumns(view, b.finish())),
    json(toRecordBatch(view, [...rows, rows[2]])),
  );
  b.truncate(5);
  assert.strictEqual(
    json(recordBatchFromColumns(view, b.view())),
    json(toRecordBatch(view, rows.slice(0, 5))),
  );
});

Deno.test("columns: a finished batch is transferable and can be wiped", () => {
  const rows = sampleRows(50);
  const batch = build(rows).finish();
  const buffers = columnBatchTransferables(batch);
  assert.ok(buffers.length >= 20);
  const copy = structuredClone(batch, { transfer: buffers }) as ColumnBatch;
  assert.strictEqual(batch.columns[0].valid.byteLength, 0, "the original is detached");
  assert.strictEqual(json(recordBatchFromColumns(view, copy)), json(toRecordBatch(view, rows)));
  wipeColumnBatch(copy);
  for (const c of copy.columns) {
    const leaf = c.kind === "list" ? c.child : c;
    assert.ok(leaf.valid.every((x) => x === 0));
    if (leaf.data) assert.ok(leaf.data.every((x) => x === 0));
  }
});

Deno.test("columns: Parquet bytes read back to the same values", () => {
  const rows = sampleRows(500);
  const bytes = encodeParquet(view, build(rows).finish(), 128);
  assert.deepStrictEqual([...bytes.subarray(0, 4)], [...new TextEncoder().encode("PAR1")]);
  const table = arrow.tableFromIPC(pw.readParquet(bytes).intoIPCStream());
  assert.strictEqual(table.numRows, 500);
  const want = toRecordBatch(view, rows);
  const norm = (rs: unknown[]) => JSON.stringify(rs, (_k, v) => typeof v === "bigint" ? `${v}n` : v);
  assert.strictEqual(norm(table.toArray()), norm(want.toArray()));
  assert.deepStrictEqual(
    table.schema.fields.map((f) => [f.name, String(f.type)]),
    want.schema.fields.map((f) => [f.name, String(f.type)]),
  );
});
