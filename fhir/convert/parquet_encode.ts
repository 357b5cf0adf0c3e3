/**
 * Plaintext Parquet bytes (parquet-wasm, zstd, dictionary encoding, chunk statistics) of columnar view
 * rows, in memory: Arrow record batch → IPC stream → parquet-wasm. The IPC copy is zeroed; the caller
 * zeroes the Parquet bytes once it has encrypted them. Runs in process or in a conversion worker.
 *
 * @module
 */

import * as pw from "parquet-wasm";
import { recordBatchFromColumns } from "../views/arrow.ts";
import { batchToIpcStream } from "./arrow_ipc.ts";
import type { ColumnBatch } from "../views/columns.ts";
import type { CompiledView } from "../views/runner.ts";

/** Parquet bytes of `rows` of `view`, with row groups of at most `rowGroupRows` rows. */
export function encodeParquet(
  view: Pick<CompiledView, "columns" | "resource" | "view">,
  rows: ColumnBatch,
  rowGroupRows: number,
): Uint8Array<ArrayBuffer> {
  const batch = recordBatchFromColumns(view, rows);
  const ipc = batchToIpcStream(batch);
  try {
    const props = new pw.WriterPropertiesBuilder()
      .setCompression(pw.Compression.ZSTD)
      .setWriterVersion(pw.WriterVersion.V1)
      .setDictionaryEnabled(true)
      .setMaxRowGroupSize(rowGroupRows)
      .setStatisticsEnabled(pw.EnabledStatistics.Chunk)
      .setCreatedBy("fhir-pme convert")
      .build();
    return pw.writeParquet(pw.Table.fromIPCStream(ipc), props) as Uint8Array<ArrayBuffer>;
  } finally {
    ipc.fill(0);
  }
}
