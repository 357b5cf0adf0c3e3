/**
 * Arrow IPC stream bytes of a record batch, as parquet-wasm (arrow-rs) accepts them.
 *
 * apache-arrow 21's IPC writer stores an all-null Boolean column with an empty values buffer ("fastest
 * path"), which the Arrow format allows but arrow-rs refuses ("Need at least 1 bytes for bitmap in
 * buffers[0] in array of type Boolean"), so a conversion of, say, patients that all lack `active` would
 * fail. The writer's Boolean visitor is wrapped once so that such a column gets its (all-zero) packed
 * values buffer, as for any other Boolean column; the field node, null count and validity bitmap are
 * written by the writer as before. Remove when apache-arrow writes the buffer itself.
 *
 * @module
 */

import * as arrow from "apache-arrow";
import { VectorAssembler } from "apache-arrow/visitor/vectorassembler";

type BoolVisitor = (this: unknown, data: arrow.Data<arrow.Bool>) => unknown;
const proto = VectorAssembler.prototype as unknown as { visitBool: BoolVisitor };
const original = proto.visitBool;
proto.visitBool = function (data: arrow.Data<arrow.Bool>) {
  if (data.length > 0 && data.nullCount >= data.length) {
    // The values buffer decision only: a view of the data whose null count is below its length.
    return original.call(this, Object.create(data, { nullCount: { value: 0 } }));
  }
  return original.call(this, data);
};

/** IPC stream bytes of `batch`. */
export function batchToIpcStream(batch: arrow.RecordBatch): Uint8Array<ArrayBuffer> {
  return arrow.tableToIPC(new arrow.Table(batch), "stream") as Uint8Array<ArrayBuffer>;
}
