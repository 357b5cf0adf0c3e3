/**
 * The conversion core: landed NDJSON → dedupe → project views → Arrow → Parquet (parquet-wasm, zstd)
 * → Parquet Modular Encryption with column master keys chosen by sensitivity class → files under
 * `lake/<view>/date=YYYY-MM-DD/part-<runId>-<n>.parquet` and the manifest `lake/_manifest.json`.
 *
 * Per resource type that some view reads, the inputs of that type are read twice (see `dedupe.ts`):
 * pass 1 indexes the winning line of every id, pass 2 parses the winners and runs every view of that
 * type over them. Rows are buffered per (view, date partition); a buffer of `maxRowsPerFile` rows is
 * written as one file, and when all buffers together exceed `maxBufferedRows` the largest one is
 * written. A file is built in memory (Arrow → Parquet bytes), encrypted from memory by the `pme/`
 * transcoder into a hidden temporary file in its partition directory, fsync'd and renamed into place.
 * Plaintext Parquet never touches the disk, and the plaintext buffer is zeroed after use.
 *
 * Memory bound: the dedupe index of one resource type (O(distinct ids), small metadata) + at most
 * `maxBufferedRows` view rows + one file being encoded (its Arrow, IPC, parquet-wasm and Parquet
 * copies: a few times `maxRowsPerFile` rows) + the `pme` transcoder's column chunk. It does not grow
 * with the number of lines beyond the id index.
 *
 * The manifest is rewritten atomically once, at the end of a successful run, adding this run's files:
 * readers should list files from the manifest (a failed run can leave complete but unlisted files,
 * never partial ones). One writer at a time per lake.
 *
 * @module
 */

import * as arrow from "apache-arrow";
import { join } from "node:path";
import * as pw from "parquet-wasm";
import type { KmsConnectionConfig } from "../../kms/client.ts";
import type { CryptoFactory, EncryptionConfiguration } from "../../kms/crypto_factory.ts";
import { writeFileAtomic } from "../../kms/atomic_file.ts";
import { encryptFileWithKms } from "../../kms/files.ts";
import { bytesSource } from "../../pme/mod.ts";
import type { PmeAlgorithm } from "../../pme/mod.ts";
import { toRecordBatch } from "../views/arrow.ts";
import { DedupeIndex, type DedupeStats, logEntryIdentifier } from "./dedupe.ts";
import { ConvertConfigError, ConvertInputError } from "./errors.ts";
import { readLines } from "./lines.ts";
import { type ProjectView, SENSITIVITY_CLASSES, type SensitivityClass } from "./views.ts";

/** One NDJSON input of one resource type. It is read twice, so it must be re-readable. */
export type ConvertInput =
  | { type: string; path: string }
  | { type: string; lines: () => AsyncIterable<string> };

/** Options of {@link convert}. */
export interface ConvertOptions {
  /** NDJSON inputs (segments), each of one resource type. Inputs of types no view reads are skipped. */
  inputs: readonly ConvertInput[];
  /** Compiled project views (`loadProjectViews("views")`). */
  views: readonly ProjectView[];
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
}

/** A column of a written file. */
export interface ManifestColumn {
  name: string;
  sensitivity: SensitivityClass;
  /** Master key of the column key, or null for a plaintext column. */
  masterKeyId: string | null;
}

/** A written file, as listed in the manifest. */
export interface ManifestFile {
  /** Path relative to the lake directory, with `/`. */
  path: string;
  view: string;
  /** Partition date, YYYY-MM-DD, or `__HIVE_DEFAULT_PARTITION__` for rows without one. */
  date: string;
  rows: number;
  rowGroups: number;
  bytes: number;
  runId: string;
  footerMasterKey: string;
  columns: ManifestColumn[];
}

/** One run, as listed in the manifest. */
export interface ManifestRun {
  runId: string;
  started: string;
  finished: string;
  /** Rows written per view. */
  rows: Record<string, number>;
  /** Dedupe counters per resource type. */
  dedupe: Record<string, DedupeStats>;
}

/** `lake/_manifest.json`. */
export interface Manifest {
  format: "fhir-pme-lake-manifest";
  version: 1;
  updated: string;
  runs: ManifestRun[];
  files: ManifestFile[];
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
}

/** Name of the manifest in the lake directory. */
export const MANIFEST_FILE = "_manifest.json";
/** Partition value for rows whose date column is empty or not YYYY-MM-DD. */
export const NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__";

const DATE = /^\d{4}-\d{2}-\d{2}$/;

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

/** Reads the manifest of a lake, or an empty one. */
export async function readManifest(lakeDir: string): Promise<Manifest> {
  let text: string;
  try {
    text = await Deno.readTextFile(join(lakeDir, MANIFEST_FILE));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      return { format: "fhir-pme-lake-manifest", version: 1, updated: "", runs: [], files: [] };
    }
    throw e;
  }
  const m = JSON.parse(text) as Manifest;
  if (m.format !== "fhir-pme-lake-manifest" || m.version !== 1) {
    throw new ConvertConfigError(`${MANIFEST_FILE} is not a version 1 lake manifest`);
  }
  return m;
}

interface ViewState {
  view: ProjectView;
  config: EncryptionConfiguration;
  columns: ManifestColumn[];
  buffers: Map<string, unknown[][]>;
  rows: number;
  partitionIndex: number;
}

/**
 * Converts landed NDJSON into encrypted, date-partitioned Parquet under `lakeDir` and adds the files to
 * the manifest. Throws {@link ConvertConfigError} for bad options, {@link ConvertInputError} for an
 * unusable line, and KMS / `pme` / view evaluation errors as they come.
 */
export async function convert(options: ConvertOptions): Promise<ConvertResult> {
  const t0 = performance.now();
  const started = new Date().toISOString();
  const rowGroupRows = positiveInt(options.rowGroupRows, 50_000, "rowGroupRows");
  const maxRowsPerFile = positiveInt(options.maxRowsPerFile, 2 * rowGroupRows, "maxRowsPerFile");
  const maxBufferedRows = positiveInt(options.maxBufferedRows, 200_000, "maxBufferedRows");
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

  const states: ViewState[] = options.views.map((view) => {
    const columnKeys: Record<string, string[]> = {};
    const columns = view.compiled.columns.map((c): ManifestColumn => {
      const sensitivity = view.sensitivity[c.name];
      const masterKeyId = options.masterKeys[sensitivity];
      if (masterKeyId !== null) (columnKeys[masterKeyId] ??= []).push(c.name);
      return { name: c.name, sensitivity, masterKeyId };
    });
    if (Object.keys(columnKeys).length === 0) {
      throw new ConvertConfigError(`view ${view.name}: no column has a master key (the key tools need one)`);
    }
    const config: EncryptionConfiguration = {
      footerKey: options.footerMasterKey,
      columnKeys,
      encryptionAlgorithm: options.encryptionAlgorithm ?? "AES_GCM_V1",
      plaintextFooter: false,
      doubleWrapping: options.doubleWrapping ?? true,
      internalKeyMaterial: options.internalKeyMaterial ?? true,
    };
    const partitionIndex = view.compiled.columns.findIndex((c) => c.name === view.partitionColumn);
    return { view, config, columns, buffers: new Map(), rows: 0, partitionIndex };
  });

  await Deno.mkdir(options.lakeDir, { recursive: true });
  const written: ManifestFile[] = [];
  const dedupe: Record<string, DedupeStats> = {};
  let buffered = 0;
  let seq = 0;

  const writerProps = () =>
    new pw.WriterPropertiesBuilder()
      .setCompression(pw.Compression.ZSTD)
      .setWriterVersion(pw.WriterVersion.V1)
      .setDictionaryEnabled(true)
      .setMaxRowGroupSize(rowGroupRows)
      .setStatisticsEnabled(pw.EnabledStatistics.Chunk)
      .setCreatedBy("fhir-pme convert")
      .build();

  const flush = async (state: ViewState, date: string): Promise<void> => {
    const rows = state.buffers.get(date);
    state.buffers.delete(date);
    if (!rows || rows.length === 0) return;
    buffered -= rows.length;
    const name = `part-${runId}-${seq++}.parquet`;
    const rel = `${state.view.name}/date=${date}/${name}`;
    const dir = join(options.lakeDir, state.view.name, `date=${date}`);
    const path = join(dir, name);
    await Deno.mkdir(dir, { recursive: true });
    const batch = toRecordBatch(state.view.compiled, rows);
    const ipc = arrow.tableToIPC(new arrow.Table(batch), "stream");
    const bytes = pw.writeParquet(pw.Table.fromIPCStream(ipc), writerProps());
    ipc.fill(0);
    try {
      // The plaintext Parquet stays in memory; only the encrypted file is written (temp + rename).
      const result = await encryptFileWithKms(
        options.factory,
        options.connection,
        state.config,
        bytesSource(bytes, name),
        path,
        { durable: options.durable ?? true },
      );
      const size = (await Deno.stat(path)).size;
      written.push({
        path: rel,
        view: state.view.name,
        date,
        rows: result.rows,
        rowGroups: result.rowGroups,
        bytes: size,
        runId,
        footerMasterKey: options.footerMasterKey,
        columns: state.columns,
      });
      state.rows += result.rows;
    } finally {
      bytes.fill(0);
    }
  };

  const flushLargest = async (): Promise<void> => {
    let best: [ViewState, string, number] | undefined;
    for (const s of states) {
      for (const [d, rows] of s.buffers) if (!best || rows.length > best[2]) best = [s, d, rows.length];
    }
    if (best) await flush(best[0], best[1]);
  };

  const linesOf = (input: ConvertInput): AsyncIterable<string> =>
    "path" in input ? readLines(input.path) : input.lines();

  const types = [...new Set(states.map((s) => s.view.compiled.resource))];
  for (const type of types) {
    const typeStates = states.filter((s) => s.view.compiled.resource === type);
    const inputs = options.inputs.map((input, i) => ({ input, i })).filter((x) => x.input.type === type);
    // Pass 1: index the winners.
    const index = new DedupeIndex();
    for (const { input, i } of inputs) {
      let n = 0;
      for await (const line of linesOf(input)) {
        n++;
        if (line.trim() === "") continue;
        const r = parseLine(line, type, i, n);
        const meta = r.meta as Record<string, unknown> | undefined;
        const lu = typeof meta?.lastUpdated === "string" ? Date.parse(meta.lastUpdated) : NaN;
        if (Number.isNaN(lu)) throw new ConvertInputError(i, n, "meta.lastUpdated is missing or invalid");
        const versionId = typeof meta?.versionId === "string" ? meta.versionId : "";
        index.add(
          { id: r.id as string, lastUpdatedMs: lu, versionId, identifier: logEntryIdentifier(r) },
          i,
          n,
        );
      }
    }
    index.finish();
    dedupe[type] = index.stats;
    // Pass 2: rows of the winners.
    for (const { input, i } of inputs) {
      let n = 0;
      for await (const line of linesOf(input)) {
        n++;
        if (line.trim() === "") continue;
        const r = parseLine(line, type, i, n);
        if (!index.isWinner(r.id as string, i, n)) continue;
        for (const s of typeStates) {
          const p = s.partitionIndex;
          const out: unknown[][] = [];
          s.view.compiled.emit(r, (values) => out.push(values.slice()));
          for (const row of out) {
            const v = row[p];
            const date = typeof v === "string" && DATE.test(v) ? v : NULL_PARTITION;
            let buf = s.buffers.get(date);
            if (!buf) s.buffers.set(date, buf = []);
            buf.push(row);
            buffered++;
            if (buf.length >= maxRowsPerFile) await flush(s, date);
          }
        }
        while (buffered > maxBufferedRows) await flushLargest();
      }
    }
    for (const s of typeStates) for (const d of [...s.buffers.keys()].sort()) await flush(s, d);
  }

  const run: ManifestRun = {
    runId,
    started,
    finished: new Date().toISOString(),
    rows: Object.fromEntries(states.map((s) => [s.view.name, s.rows])),
    dedupe,
  };
  const manifest = await readManifest(options.lakeDir);
  manifest.runs.push(run);
  manifest.files.push(...written);
  manifest.updated = run.finished;
  const manifestPath = join(options.lakeDir, MANIFEST_FILE);
  await writeFileAtomic(manifestPath, new TextEncoder().encode(JSON.stringify(manifest, null, 2) + "\n"));
  return { run, files: written, manifestPath, seconds: (performance.now() - t0) / 1000 };
}

function parseLine(line: string, type: string, input: number, n: number): Record<string, unknown> {
  let r: unknown;
  try {
    r = JSON.parse(line);
  } catch {
    throw new ConvertInputError(input, n, "not JSON");
  }
  if (r === null || typeof r !== "object" || Array.isArray(r)) {
    throw new ConvertInputError(input, n, "not a JSON object");
  }
  const o = r as Record<string, unknown>;
  if (o.resourceType !== type) throw new ConvertInputError(input, n, `resourceType is not ${type}`);
  if (typeof o.id !== "string" || o.id === "") throw new ConvertInputError(input, n, "id is missing");
  return o;
}
