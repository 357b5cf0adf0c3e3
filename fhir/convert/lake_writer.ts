/**
 * Writing view rows into the lake: columnar buffers per (view, date partition), each written as one
 * encrypted Parquet file when it reaches `maxRowsPerFile` rows, when all buffers together exceed
 * `maxBufferedRows` (the largest first), or at the end of a resource type.
 *
 * A file is built in memory (Arrow → Parquet bytes via parquet-wasm, zstd: `parquet_encode.ts`, in process
 * or in a worker), encrypted from memory by the `pme/` transcoder (column keys by sensitivity class, encrypted footer) into a hidden temporary file in
 * its partition directory, fsync'd and renamed into place. Plaintext Parquet never touches the disk; the
 * plaintext buffers are zeroed after use.
 *
 * @module
 */

import { join } from "node:path";
import type { KmsConnectionConfig } from "../../kms/client.ts";
import type { CryptoFactory, EncryptionConfiguration } from "../../kms/crypto_factory.ts";
import { encryptFileWithKms } from "../../kms/files.ts";
import { bytesSource } from "../../pme/mod.ts";
import type { PmeAlgorithm } from "../../pme/mod.ts";
import { type ColumnBatch, ColumnsBuilder } from "../views/columns.ts";
import type { ViewRows } from "./batch_work.ts";
import { ConvertConfigError } from "./errors.ts";
import type { ManifestColumn, ManifestFile } from "./manifest.ts";
import type { ProjectView, SensitivityClass } from "./views.ts";

/** Options of a {@link LakeWriter}. */
export interface LakeWriterOptions {
  lakeDir: string;
  runId: string;
  factory: CryptoFactory;
  connection: KmsConnectionConfig;
  /** Master key id per sensitivity class; `null` leaves that class's columns in plaintext. */
  masterKeys: Readonly<Record<SensitivityClass, string | null>>;
  footerMasterKey: string;
  encryptionAlgorithm: PmeAlgorithm;
  doubleWrapping: boolean;
  internalKeyMaterial: boolean;
  durable: boolean;
  rowGroupRows: number;
  maxRowsPerFile: number;
  maxBufferedRows: number;
  /**
   * Files encoded, encrypted and written concurrently (their rows wait in memory meanwhile, at most
   * `maxBufferedRows` of them unless a single file is larger).
   */
  maxWritesInFlight: number;
  /**
   * Plaintext Parquet bytes of rows of a view (`parquet_encode.ts`, in process or in a worker). It owns
   * `rows` (and should zero them); the writer zeroes the bytes after encryption.
   */
  encode(state: ViewState, rows: ColumnBatch): Promise<Uint8Array>;
}

/** A view being written: its encryption configuration and its buffered rows per date partition. */
export interface ViewState {
  /** Position of the view in the order of {@link LakeWriter.addView} calls. */
  readonly index: number;
  readonly view: ProjectView;
  readonly config: EncryptionConfiguration;
  readonly columns: ManifestColumn[];
  readonly buffers: Map<string, ColumnsBuilder>;
  /** Rows written so far. */
  rows: number;
}

/** Writes buffered view rows as encrypted Parquet files; see the module notes. */
export class LakeWriter {
  readonly #o: LakeWriterOptions;
  /** Files started, in order; undefined until written. */
  readonly #files: (ManifestFile | undefined)[] = [];
  readonly #inFlight = new Set<Promise<void>>();
  #rowsInFlight = 0;
  #error: unknown;
  #buffered = 0;
  #seq = 0;
  readonly #dirs = new Set<string>();
  readonly #states: ViewState[] = [];

  constructor(options: LakeWriterOptions) {
    this.#o = options;
  }

  /** Registers a view: its columns' master keys by sensitivity class. */
  addView(view: ProjectView): ViewState {
    const o = this.#o;
    const columnKeys: Record<string, string[]> = {};
    const columns = view.compiled.columns.map((c): ManifestColumn => {
      const sensitivity = view.sensitivity[c.name];
      const masterKeyId = o.masterKeys[sensitivity];
      if (masterKeyId !== null) (columnKeys[masterKeyId] ??= []).push(c.name);
      return { name: c.name, sensitivity, masterKeyId };
    });
    if (Object.keys(columnKeys).length === 0) {
      throw new ConvertConfigError(`view ${view.name}: no column has a master key (the key tools need one)`);
    }
    const config: EncryptionConfiguration = {
      footerKey: o.footerMasterKey,
      columnKeys,
      encryptionAlgorithm: o.encryptionAlgorithm,
      plaintextFooter: false,
      doubleWrapping: o.doubleWrapping,
      internalKeyMaterial: o.internalKeyMaterial,
    };
    const state: ViewState = {
      index: this.#states.length,
      view,
      config,
      columns,
      buffers: new Map(),
      rows: 0,
    };
    this.#states.push(state);
    return state;
  }

  /** Rows buffered over all views and partitions. */
  get buffered(): number {
    return this.#buffered;
  }

  /**
   * Appends the rows of `result` (one batch of one view) to their partitions of `state`, in order, only
   * those of lines with `keep[line] === 1` when `keep` is given, writing a file each time a partition
   * reaches `maxRowsPerFile` rows.
   */
  async append(state: ViewState, result: ViewRows, keep: Uint8Array | null): Promise<void> {
    const { rows, dates, partitions, lines } = result;
    if (keep === null && dates.length === 1) {
      await this.#append(state, dates[0], rows, null, rows.length);
      return;
    }
    // Row numbers per partition (counting sort, stable), the dropped rows left out.
    const start = new Int32Array(dates.length + 1);
    for (let r = 0; r < partitions.length; r++) {
      if (keep === null || keep[lines[r]] === 1) start[partitions[r] + 1]++;
    }
    for (let k = 0; k < dates.length; k++) start[k + 1] += start[k];
    const order = new Int32Array(start[dates.length]);
    const fill = start.slice(0, dates.length);
    for (let r = 0; r < partitions.length; r++) {
      if (keep === null || keep[lines[r]] === 1) order[fill[partitions[r]]++] = r;
    }
    for (let k = 0; k < dates.length; k++) {
      const n = start[k + 1] - start[k];
      if (n > 0) await this.#append(state, dates[k], rows, order.subarray(start[k], start[k + 1]), n);
    }
  }

  /** Appends `n` rows of `rows` (all, or those listed in `which`) to partition `date`. */
  async #append(
    state: ViewState,
    date: string,
    rows: ColumnBatch,
    which: Int32Array | null,
    n: number,
  ): Promise<void> {
    const max = this.#o.maxRowsPerFile;
    let from = 0;
    while (from < n) {
      let buf = state.buffers.get(date);
      if (!buf) state.buffers.set(date, buf = new ColumnsBuilder(state.view.compiled.columns));
      const take = Math.min(n - from, max - buf.length);
      if (which) buf.appendGather(rows, which, from, from + take);
      else buf.appendBatch(rows, from, from + take);
      this.#buffered += take;
      from += take;
      if (buf.length >= max) await this.flush(state, date);
    }
  }

  /** Writes the largest buffers while more than `maxBufferedRows` rows are buffered. */
  async relieve(): Promise<void> {
    while (this.#buffered > this.#o.maxBufferedRows) {
      let best: [ViewState, string, number] | undefined;
      for (const s of this.#states) {
        for (const [d, b] of s.buffers) if (!best || b.length > best[2]) best = [s, d, b.length];
      }
      if (!best) return;
      await this.flush(best[0], best[1]);
    }
  }

  /** Writes every buffered partition of `state`, in date order. */
  async flushView(state: ViewState): Promise<void> {
    for (const d of [...state.buffers.keys()].sort()) await this.flush(state, d);
  }

  /**
   * Writes partition `date` of `state` as one file (nothing if it is empty). The buffered rows are handed
   * to `encode` (Parquet bytes, maybe in a worker); encryption and the file write follow in the
   * background, at most `maxWritesInFlight` files and `maxBufferedRows` rows at a time (one file of any
   * size may always start; see {@link drain}). A background failure is thrown by the next call of
   * `flush` or `drain`.
   */
  async flush(state: ViewState, date: string): Promise<void> {
    this.#check();
    const o = this.#o;
    const buf = state.buffers.get(date);
    state.buffers.delete(date);
    if (!buf || buf.length === 0) return;
    this.#buffered -= buf.length;
    const name = `part-${o.runId}-${this.#seq++}.parquet`;
    const dir = join(o.lakeDir, state.view.name, `date=${date}`);
    if (!this.#dirs.has(dir)) {
      await Deno.mkdir(dir, { recursive: true });
      this.#dirs.add(dir);
    }
    const rows = buf.finish();
    buf.wipe();
    const slot = this.#files.length;
    this.#files.push(undefined);
    this.#rowsInFlight += rows.length;
    const write = this.#write(state, date, dir, name, rows).then(
      (file) => {
        this.#files[slot] = file;
      },
      (e) => {
        this.#error ??= e;
      },
    );
    this.#inFlight.add(write);
    write.finally(() => {
      this.#inFlight.delete(write);
      this.#rowsInFlight -= rows.length;
    });
    while (
      this.#inFlight.size >= o.maxWritesInFlight ||
      (this.#inFlight.size > 0 && this.#rowsInFlight > o.maxBufferedRows)
    ) await Promise.race(this.#inFlight);
    this.#check();
  }

  /** Waits for every file write started so far; throws the first failure. */
  async drain(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.race(this.#inFlight);
    this.#check();
  }

  /** Waits for every file write started so far, ignoring failures (cleanup after an error). */
  async settle(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.race(this.#inFlight);
  }

  /** Files written, in the order they were started (call after {@link drain}). */
  get written(): ManifestFile[] {
    if (this.#inFlight.size > 0) throw new Error("LakeWriter.written read before drain()");
    return this.#files.filter((f): f is ManifestFile => f !== undefined);
  }

  #check(): void {
    if (this.#error !== undefined) throw this.#error;
  }

  /** Encodes `rows` as Parquet, encrypts it into `dir/name` (temporary file + rename), zeroes the bytes. */
  async #write(
    state: ViewState,
    date: string,
    dir: string,
    name: string,
    rows: ColumnBatch,
  ): Promise<ManifestFile> {
    const o = this.#o;
    const bytes = await o.encode(state, rows);
    try {
      // The plaintext Parquet stays in memory; only the encrypted file is written (temp + rename).
      const result = await encryptFileWithKms(
        o.factory,
        o.connection,
        state.config,
        bytesSource(bytes, name),
        join(dir, name),
        { durable: o.durable },
      );
      state.rows += result.rows;
      return {
        path: `${state.view.name}/date=${date}/${name}`,
        view: state.view.name,
        date,
        rows: result.rows,
        rowGroups: result.rowGroups,
        bytes: result.bytesWritten,
        runId: o.runId,
        footerMasterKey: o.footerMasterKey,
        columns: state.columns,
      };
    } finally {
      bytes.fill(0);
    }
  }
}
