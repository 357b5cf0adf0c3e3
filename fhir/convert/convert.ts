/**
 * The conversion core: landed NDJSON → dedupe → project views → Arrow → Parquet (parquet-wasm, zstd)
 * → Parquet Modular Encryption with column master keys chosen by sensitivity class → files under
 * `lake/<view>/date=YYYY-MM-DD/part-<runId>-<n>.parquet` and the manifest `lake/_manifest.json`.
 *
 * Per resource type that some view reads, the inputs of that type are read in line batches
 * (`batches.ts`, about `batchBytes` each), in two passes:
 * - pass 1 indexes the winning line of every id (`dedupe.ts`). While the row cache has room
 *   (`rowCacheBytes`, `row_cache.ts`) it parses every line and runs the views over it speculatively,
 *   keeping the columnar rows tagged with their lines (`batch_work.ts`); otherwise it only computes the
 *   dedupe keys, without parsing the resources (`dedupe_key.ts`);
 * - pass 2 writes the rows of the winning lines: from the cache, dropping the losers' rows, or, for an
 *   input that did not fit, by reading it again and evaluating the winners only. Rows go into columnar
 *   buffers per (view, date partition), which `lake_writer.ts` writes as encrypted Parquet files.
 * An evaluation error raised speculatively counts only if its line wins, so the output and the errors
 * are those of evaluating the winners only.
 *
 * The CPU-heavy work can run in `workers` Deno Workers (`executor.ts`): the main thread reads the inputs
 * (decrypting landing segments), hands batches to the workers and consumes the results strictly in
 * input order, with at most 2 batches per worker in flight and as many read ahead; the workers also
 * encode the Parquet files. Pass 1 reads 2 inputs of a type at once (the dedupe index does not depend
 * on the order of the lines, and an error is the first in input order). The output is the same as with
 * `workers: 0` (everything in process): same rows, same files.
 *
 * Memory bound: the dedupe index of one resource type (O(distinct ids), small metadata, plus one bit per
 * line) + the row cache (at most `rowCacheBytes`) + the batches in flight (2 inputs × (2 per worker +
 * as many read ahead) × `batchBytes`, with their results) + at most `maxBufferedRows` buffered view
 * rows (checked after each batch, so plus one batch's rows) + the files being encoded and encrypted (at
 * most 8 files and `maxBufferedRows` rows, or one larger file, with their Parquet copies) + the `pme`
 * transcoder's column chunk. It does not grow with the number of lines beyond the id index.
 *
 * The manifest is rewritten atomically once, at the end of a successful run, after every file is in
 * place, adding this run's files: readers should list files from the manifest (a failed run can leave
 * complete but unlisted files, never partial ones). One writer at a time per lake.
 *
 * @module
 */

import type { KmsConnectionConfig } from "../../kms/client.ts";
import type { CryptoFactory } from "../../kms/crypto_factory.ts";
import type { PmeAlgorithm } from "../../pme/mod.ts";
import type { BatchResult } from "./batch_work.ts";
import { byteBatches, DEFAULT_BATCH_BYTES, type EncodedBatch, lineBatches } from "./batches.ts";
import { DedupeIndex, type DedupeStats } from "./dedupe.ts";
import { ConvertConfigError } from "./errors.ts";
import { type BatchExecutor, InProcessExecutor, WorkerExecutor } from "./executor.ts";
import { LakeWriter, type ViewState } from "./lake_writer.ts";
import { readLines } from "./lines.ts";
import { appendToManifest, type ManifestFile, type ManifestRun } from "./manifest.ts";
import { inIndexOrderOfFailure, ordered, readAhead } from "./pipeline.ts";
import { reviveError } from "./posted_error.ts";
import { DEFAULT_ROW_CACHE_BYTES, RowCache } from "./row_cache.ts";
import {
  type ProjectView,
  SENSITIVITY_CLASSES,
  type SensitivityClass,
  utcDate,
  withConversionDate,
} from "./views.ts";

export { NULL_PARTITION } from "./batch_work.ts";
export {
  type Manifest,
  MANIFEST_FILE,
  type ManifestColumn,
  type ManifestFile,
  type ManifestRun,
  readManifest,
} from "./manifest.ts";

/**
 * One NDJSON input of one resource type: a file, UTF-8 byte chunks cut anywhere (the cheap form for bulk
 * input, e.g. `LandingZone.readChunks`), or line strings. It may be read twice, so it must be re-readable.
 */
export type ConvertInput =
  | { type: string; path: string }
  | { type: string; bytes: () => AsyncIterable<Uint8Array> }
  | { type: string; lines: () => AsyncIterable<string> };

/** Options of {@link convert}. */
export interface ConvertOptions {
  /** NDJSON inputs (segments), each of one resource type. Inputs of types no view reads are skipped. */
  inputs: readonly ConvertInput[];
  /**
   * Project views (`loadProjectViews("views")`). Views declaring `%conversion_date` are compiled again
   * for this run with {@link conversionDate}.
   */
  views: readonly ProjectView[];
  /**
   * The run's date, YYYY-MM-DD: `%conversion_date` of the views that declare it, i.e. the partition of
   * the dimension views (default: the UTC date of the run start).
   */
  conversionDate?: string;
  /** The lake directory (created if missing). */
  lakeDir: string;
  /** Key tools. */
  factory: CryptoFactory;
  /** KMS connection (token) of the writer. */
  connection: KmsConnectionConfig;
  /** Master key id per sensitivity class; `null` leaves that class's columns in plaintext. */
  masterKeys: Readonly<Record<SensitivityClass, string | null>>;
  /** Master key of the (encrypted) footer. */
  footerMasterKey: string;
  /** Rows per Parquet row group (default 50 000). */
  rowGroupRows?: number;
  /** Rows per file (default 2 × rowGroupRows). */
  maxRowsPerFile?: number;
  /** Rows buffered over all partitions before the largest buffer is written (default 200 000). */
  maxBufferedRows?: number;
  /** Run id in file names (default: UTC timestamp + random suffix). */
  runId?: string;
  /** PME algorithm (default AES_GCM_V1). */
  encryptionAlgorithm?: PmeAlgorithm;
  /** Double wrapping (default true). */
  doubleWrapping?: boolean;
  /** Key material inside the files (default true); false writes `_KEY_MATERIAL_FOR_<file>.json`. */
  internalKeyMaterial?: boolean;
  /** Fsync files before renaming them into place (default true). */
  durable?: boolean;
  /**
   * Deno Workers for parsing and view evaluation (default 0: everything in the calling thread). The
   * output does not depend on it.
   */
  workers?: number;
  /** Bytes of NDJSON per batch of work (default 4 MiB). */
  batchBytes?: number;
  /**
   * Bytes of speculatively evaluated rows kept from pass 1 for pass 2 (`row_cache.ts`; default 256 MiB;
   * 0: pass 1 only computes dedupe keys and every input is read twice). The output does not depend on it.
   */
  rowCacheBytes?: number;
}

/** What {@link convert} did. */
export interface ConvertResult {
  run: ManifestRun;
  /** Files written by this run. */
  files: ManifestFile[];
  /** Path of the manifest. */
  manifestPath: string;
  /** Wall-clock seconds. */
  seconds: number;
  /**
   * Wall-clock seconds by phase, over all resource types: pass 1 (read, dedupe keys, speculative
   * evaluation), pass 2 (rows of the winners into the partition buffers) and writing the last files
   * (encode, encrypt, write, until the last file is in place).
   */
  phases: { pass1: number; pass2: number; write: number };
}

function randomHex(n: number): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
}

function defaultRunId(): string {
  return `${new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z")}-${randomHex(3)}`;
}

function positiveInt(v: number | undefined, dflt: number, name: string): number {
  const n = v ?? dflt;
  if (!Number.isInteger(n) || n < 1) throw new ConvertConfigError(`${name} must be a positive integer`);
  return n;
}

/** Inputs of one type read at once in pass 1. */
const INPUTS_AT_ONCE = 2;

/** What the conversion of one resource type works with. */
interface TypeContext {
  type: string;
  /** The type's inputs, with their index in `ConvertOptions.inputs`. */
  inputs: { input: ConvertInput; i: number }[];
  /** Indexes (in the run's view list) of the views of the type. */
  viewIndexes: number[];
  states: ViewState[];
  writer: LakeWriter;
  exec: BatchExecutor;
  batchBytes: number;
  rowCacheBytes: number;
}

/** Line batches of an input, read ahead while the workers are busy. */
function readBatches(c: TypeContext, input: ConvertInput, i: number): AsyncIterable<EncodedBatch> {
  const batches = "bytes" in input
    ? byteBatches(input.bytes(), i, c.batchBytes)
    : lineBatches("path" in input ? readLines(input.path) : input.lines(), i, c.batchBytes);
  return readAhead(batches, c.exec.inFlight);
}

/** Both passes over the inputs of one resource type (see the module notes); its dedupe counters. */
async function convertType(c: TypeContext, phases: ConvertResult["phases"]): Promise<DedupeStats> {
  const { exec, writer, type, viewIndexes } = c;
  const cache = new RowCache(c.rowCacheBytes);
  /** Appends the rows of a result (of lines with `keep[line] === 1` when given). */
  const append = async (r: BatchResult, keep: Uint8Array | null): Promise<void> => {
    const failed = keep === null ? undefined : r.errors.find((e) => keep[e.line] === 1);
    if (failed) throw reviveError(failed.error);
    for (let j = 0; j < viewIndexes.length; j++) {
      await writer.append(c.states[viewIndexes[j]], r.views[j], keep);
    }
    await writer.relieve();
  };
  try {
    // Pass 1: index the winners (and evaluate speculatively while the cache has room).
    let t = performance.now();
    const index = new DedupeIndex();
    // Several inputs at once: their reading (file and decryption waits) overlaps. The index and the
    // cache do not depend on the order of the lines; an error is the first in input order.
    await inIndexOrderOfFailure(c.inputs.length, INPUTS_AT_ONCE, (k, stopped) => {
      const { input, i } = c.inputs[k];
      return ordered(
        readBatches(c, input, i),
        exec.inFlight,
        (b) =>
          cache.wants(i)
            ? exec.eval(type, viewIndexes, b, null).then((r) => ({
              keys: r.keys!,
              result: r as BatchResult | null,
            }))
            : exec.keys(type, b).then((keys) => ({ keys, result: null })),
        ({ keys, result }) => {
          for (let k = 0; k < keys.lines.length; k++) {
            const identifier = keys.identifiers[k] ?? undefined;
            index.addLine(
              keys.ids[k],
              keys.lastUpdatedMs[k],
              keys.versionIds[k],
              identifier,
              i,
              keys.lines[k],
            );
          }
          cache.add(i, result);
        },
        stopped,
      );
    });
    index.finish();
    phases.pass1 += (performance.now() - t) / 1000;

    // Pass 2: the rows of the winners, from the cache or by reading the input again.
    t = performance.now();
    for (const { input, i } of c.inputs) {
      if (cache.has(i)) {
        for (const r of cache.replay(i)) await append(r, index.winnerMask(i, r.firstLine, r.count));
        continue;
      }
      await ordered(readBatches(c, input, i), exec.inFlight, (b) => {
        const winners = index.winnerMask(i, b.firstLine, b.count);
        return winners.includes(1) ? exec.eval(type, viewIndexes, b, winners) : undefined;
      }, (r) => append(r, null));
    }
    phases.pass2 += (performance.now() - t) / 1000;
    return index.stats;
  } finally {
    cache.clear();
  }
}

/**
 * Converts landed NDJSON into encrypted, date-partitioned Parquet under `lakeDir` and adds the files to
 * the manifest. Throws {@link ConvertConfigError} for bad options, `ConvertInputError` for an
 * unusable line, and KMS / `pme` / view evaluation errors as they come.
 */
export async function convert(options: ConvertOptions): Promise<ConvertResult> {
  const t0 = performance.now();
  const startedAt = new Date();
  const started = startedAt.toISOString();
  const rowGroupRows = positiveInt(options.rowGroupRows, 50_000, "rowGroupRows");
  const maxRowsPerFile = positiveInt(options.maxRowsPerFile, 2 * rowGroupRows, "maxRowsPerFile");
  const maxBufferedRows = positiveInt(options.maxBufferedRows, 200_000, "maxBufferedRows");
  const batchBytes = positiveInt(options.batchBytes, DEFAULT_BATCH_BYTES, "batchBytes");
  const rowCacheBytes = options.rowCacheBytes ?? DEFAULT_ROW_CACHE_BYTES;
  if (!Number.isSafeInteger(rowCacheBytes) || rowCacheBytes < 0) {
    throw new ConvertConfigError("rowCacheBytes must be 0 (no speculative evaluation) or a positive integer");
  }
  const workers = options.workers ?? 0;
  if (!Number.isInteger(workers) || workers < 0) {
    throw new ConvertConfigError("workers must be 0 (in process) or a positive integer");
  }
  const runId = options.runId ?? defaultRunId();
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(runId)) {
    throw new ConvertConfigError("runId must match [A-Za-z0-9_-]{1,64}");
  }
  for (const c of SENSITIVITY_CLASSES) {
    if (options.masterKeys[c] === undefined) {
      throw new ConvertConfigError(`masterKeys.${c} is missing (use null for plaintext)`);
    }
  }
  if (!options.footerMasterKey) throw new ConvertConfigError("footerMasterKey is required");
  const conversionDate = options.conversionDate ?? utcDate(startedAt);
  const views = options.views.map((v) => withConversionDate(v, conversionDate));

  // The writer checks the views' encryption configuration before any worker starts.
  const encoder: { exec?: BatchExecutor } = {};
  const writer = new LakeWriter({
    lakeDir: options.lakeDir,
    runId,
    factory: options.factory,
    connection: options.connection,
    masterKeys: options.masterKeys,
    footerMasterKey: options.footerMasterKey,
    encryptionAlgorithm: options.encryptionAlgorithm ?? "AES_GCM_V1",
    doubleWrapping: options.doubleWrapping ?? true,
    internalKeyMaterial: options.internalKeyMaterial ?? true,
    durable: options.durable ?? true,
    rowGroupRows,
    maxRowsPerFile,
    maxBufferedRows,
    maxWritesInFlight: 8,
    encode: (state, rows) => encoder.exec!.parquet(state.index, rows, rowGroupRows),
  });
  const states = views.map((v) => writer.addView(v));
  await Deno.mkdir(options.lakeDir, { recursive: true });
  const dedupe: Record<string, DedupeStats> = {};
  const phases = { pass1: 0, pass2: 0, write: 0 };
  const exec = encoder.exec = workers > 0 ? new WorkerExecutor(views, workers) : new InProcessExecutor(views);
  try {
    // Types with fewer inputs first: their files are written while the bigger types are still read.
    const inputCount = (t: string) => options.inputs.filter((x) => x.type === t).length;
    const types = [...new Set(views.map((v) => v.compiled.resource))];
    types.sort((a, b) => inputCount(a) - inputCount(b));
    for (const type of types) {
      const context: TypeContext = {
        type,
        inputs: options.inputs.map((input, i) => ({ input, i })).filter((x) => x.input.type === type),
        viewIndexes: views.flatMap((v, j) => v.compiled.resource === type ? [j] : []),
        states,
        writer,
        exec,
        batchBytes,
        rowCacheBytes,
      };
      dedupe[type] = await convertType(context, phases);
      const t = performance.now();
      for (const j of context.viewIndexes) await writer.flushView(states[j]);
      phases.write += (performance.now() - t) / 1000;
    }
    const t = performance.now();
    await writer.drain();
    phases.write += (performance.now() - t) / 1000;
  } catch (e) {
    await writer.settle();
    throw e;
  } finally {
    exec.close();
  }

  const run: ManifestRun = {
    runId,
    started,
    finished: new Date().toISOString(),
    conversionDate,
    rows: Object.fromEntries(states.map((s) => [s.view.name, s.rows])),
    dedupe,
  };
  const manifestPath = await appendToManifest(options.lakeDir, run, writer.written);
  return { run, files: writer.written, manifestPath, seconds: (performance.now() - t0) / 1000, phases };
}
