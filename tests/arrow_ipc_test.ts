/**
 * The Arrow IPC bytes handed to parquet-wasm: an all-null Boolean column (which apache-arrow writes
 * without a values buffer and arrow-rs refuses) converts, and Boolean values round-trip.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as arrow from "apache-arrow";
import * as pw from "parquet-wasm";
import { batchToIpcStream } from "../fhir/convert/arrow_ipc.ts";

function boolBatch(values: (boolean | null)[]): arrow.RecordBatch {
  const n = values.length;
  const bytes = Math.max(8, Math.ceil(n / 8));
  const valid = new Uint8Array(bytes);
  const data = new Uint8Array(bytes);
  values.forEach((v, i) => {
    if (v !== null) valid[i >> 3] |= 1 << (i & 7);
    if (v === true) data[i >> 3] |= 1 << (i & 7);
  });
  const nulls = values.filter((v) => v === null).length;
  const field = new arrow.Field("active", new arrow.Bool(), true);
  const child = arrow.makeData({
    type: new arrow.Bool(),
    length: n,
    nullCount: nulls,
    nullBitmap: valid,
    data,
  });
  return new arrow.RecordBatch(
    new arrow.Schema([field]),
    arrow.makeData({ type: new arrow.Struct([field]), length: n, nullCount: 0, children: [child] }),
  );
}

function roundTrip(values: (boolean | null)[]): (boolean | null)[] {
  const parquet = pw.writeParquet(pw.Table.fromIPCStream(batchToIpcStream(boolBatch(values))));
  const table = arrow.tableFromIPC(pw.readParquet(parquet).intoIPCStream());
  return [...table.getChild("active")!].map((v) => v as boolean | null);
}

Deno.test("Boolean columns reach Parquet: all null, mixed, none null", () => {
  for (const n of [1, 7, 8, 9, 100]) {
    assert.deepEqual(roundTrip(Array(n).fill(null)), Array(n).fill(null), `${n} nulls`);
  }
  const mixed = [true, null, false, true, null, null, false, true, true];
  assert.deepEqual(roundTrip(mixed), mixed);
  assert.deepEqual(roundTrip([false, true, false]), [false, true, false]);
});
