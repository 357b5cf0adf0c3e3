/**
 * Interoperability with parquet-java (parquet-hadoop 1.18.1, low-level PME API with explicit keys and
 * key metadata = UTF-8 key id), through the peer in `tests/interop/java/` (build it with
 * `bash tests/interop/java/build.sh`; these tests fail with a message saying so when Java or the jar is
 * missing).
 *
 * The option grid has 16 points: algorithm (AES_GCM_V1, AES_GCM_CTR_V1) × footer (encrypted "PARE",
 * plaintext + signed "PAR1") × keys (uniform: every column with the footer key; column keys: two leaf
 * columns — one top-level, one nested where the input has nesting — with their own 24- and 32-byte
 * keys, the rest plaintext) × AAD prefix (stored in the file, or supplied by the reader only).
 * Core inputs: the DuckDB and parquet-wasm fixtures (flat and nested, lists, structs and maps, nulls,
 * multi-row-group, multi-page, page indexes, bloom filters, data page V1 and — parquet-wasm — V2 with
 * levels, several codecs). Extra inputs, when the pyarrow venv exists: pyarrow's fixtures (INT96,
 * FIXED_LEN_BYTE_ARRAY, decimals, page CRCs, BYTE_STREAM_SPLIT and delta encodings, an empty file),
 * one grid point each per direction.
 *
 * - Our engine → parquet-java: every grid point runs on two core inputs (so each sees four points, both
 *   algorithms among them), half of the cases with page CRCs. Our engine encrypts; parquet-java opens
 *   the file through a key retriever, decrypts every column index, offset index and bloom filter,
 *   verifies page CRCs, reads every record and writes them as plaintext Parquet; DuckDB compares that
 *   with the input. V2 inputs are written with the "levels-plaintext" framing, which parquet-java reads;
 *   the default "whole-body" framing (Arrow C++ / arrow-rs) is asserted to be unreadable by parquet-java
 *   (GCM: the tag check fails; CTR: the level/value bytes fail to decode) — pme-spec-notes §6.1, now
 *   confirmed by a run.
 * - parquet-java → our engine: every grid point runs with data page V1 and V2 (PARQUET_2_0) writers,
 *   spread over the core inputs. parquet-java writes 64 KiB row groups (so several row groups per file,
 *   which checks RowGroup.ordinal handling), 8 KiB pages, page CRCs and, on half of the cases, bloom
 *   filters; our engine checks the file's crypto layout, decrypts it to plaintext (page indexes and
 *   bloom filters included) and DuckDB compares that with the input.
 *
 * Column left out of the comparisons: `iv` (DuckDB INTERVAL, FIXED_LEN_BYTE_ARRAY(12) with the INTERVAL
 * converted type) of the DuckDB all-types input. parquet-java's writer gives its schema element an
 * UNKNOWN (NullType) logical type, which DuckDB then reads as an all-NULL INTEGER column: the bytes are
 * carried through, but DuckDB can no longer compare them. Everything else round-trips through
 * parquet-java's example Group model, INT96, maps and nested lists included.
 *
 * @module
 */

import assert from "node:assert";
import { Buffer } from "node:buffer";
import { basename, join } from "node:path";
import {
  type ColumnKey,
  type DecryptionOptions,
  type EncryptionOptions,
  openParquetFile,
  type ParquetReader,
  type PmeAlgorithm,
  transcodeFile,
} from "../pme/mod.ts";
import { PageType } from "../pme/metadata.ts";
import { assertSameRows } from "./fixtures/compare.ts";
import { duckdbInputs, type InputFile, parquetWasmInputs } from "./fixtures/inputs.ts";
import { hasPyarrow, pyarrowInputs } from "./fixtures/pyarrow.ts";
import { withTempDir } from "./fixtures/tmp.ts";
import { type JavaFileSummary, type JavaJobResult, javaPeerBatch, requireJavaPeer } from "./fixtures/java.ts";

const te = new TextEncoder();

// ---------------------------------------------------------------------------------------------------
// Keys, grid, inputs
// ---------------------------------------------------------------------------------------------------

interface TestKey {
  id: string;
  key: Uint8Array;
}

function testKey(id: string, bytes: number, seed: number): TestKey {
  return { id, key: Uint8Array.from({ length: bytes }, (_, i) => (seed + i * 37) & 0xff) };
}

const FOOTER = testKey("kf", 16, 11);
const COLUMN_KEYS = [testKey("kc1", 24, 101), testKey("kc2", 32, 201)];
const AAD_PREFIX = "fhir-pme/java-interop";

/** `ID=HEX` as both CLIs take it. */
function keyArg(k: TestKey): string {
  return `${k.id}=${Buffer.from(k.key).toString("hex")}`;
}

const ALGORITHMS: PmeAlgorithm[] = ["AES_GCM_V1", "AES_GCM_CTR_V1"];

/** One grid point; `index` bits: 0 algorithm, 1 footer, 2 keys, 3 AAD. */
interface Config {
  index: number;
  algorithm: PmeAlgorithm;
  plaintextFooter: boolean;
  columnKeys: boolean;
  aad: "stored" | "supplied";
}

const GRID: Config[] = Array.from({ length: 16 }, (_, index) => ({
  index,
  algorithm: ALGORITHMS[index & 1],
  plaintextFooter: (index & 2) !== 0,
  columnKeys: (index & 4) !== 0,
  aad: (index & 8) !== 0 ? "supplied" : "stored",
}));

function describe(c: Config): string {
  const alg = c.algorithm === "AES_GCM_V1" ? "gcm" : "ctr";
  return `${alg}/${c.plaintextFooter ? "signed" : "PARE"}/${
    c.columnKeys ? "column-keys" : "uniform"
  }/aad-${c.aad}`;
}

/** The two leaf columns that get column keys, per input (file name without extension). */
const KEYED_COLUMNS: Record<string, [string, string]> = {
  duckdb_types_v1_snappy: ["s", "ls.list.element.q.list.element"],
  duckdb_large_v2enc_zstd: ["hash", "tags.list.element"],
  duckdb_nested_gzip_plain: ["note", "items.list.element.v.list.element"],
  duckdb_bloom_uncompressed: ["code", "maybe"],
  wasm_v1_snappy_dict: ["label", "list.list.item"],
  wasm_v2_zstd_plain: ["text", "point.a"],
  wasm_v2_gzip_dict_fallback: ["label", "list.list.item"],
  wasm_v1_mixed_codecs: ["bin", "point.b"],
};

/** Top-level columns the comparison leaves out, per input (see the module documentation). */
const UNCOMPARABLE: Record<string, string[]> = { duckdb_types_v1_snappy: ["iv"] };

function inputName(input: InputFile): string {
  return basename(input.file).replace(/\.parquet$/, "");
}

/** The keyed columns of an input: pyarrow inputs all have INT96 `ts_int96`, and a map unless flat. */
function keyedColumns(input: InputFile): [string, string] {
  const name = inputName(input);
  if (name.startsWith("pyarrow_")) {
    return ["ts_int96", input.features.includes("flat") ? "str_opt" : "map_si.key_value.value"];
  }
  const keyed = KEYED_COLUMNS[name];
  assert.ok(keyed, `no keyed columns chosen for the input ${name}`);
  return keyed;
}

/**
 * The core inputs (DuckDB, parquet-wasm: 5 000 – 30 000 rows each) in a fixed order, and the extra ones
 * (pyarrow's, when the venv exists: INT96, page CRCs, BYTE_STREAM_SPLIT, small and empty files, …).
 */
async function generateInputs(dir: string): Promise<{ core: InputFile[]; extra: InputFile[] }> {
  await Deno.mkdir(join(dir, "duckdb"));
  await Deno.mkdir(join(dir, "wasm"));
  const core = [
    ...(await duckdbInputs(join(dir, "duckdb"))),
    ...(await parquetWasmInputs(join(dir, "wasm"))),
  ];
  const extra = hasPyarrow() ? await pyarrowInputs(dir) : [];
  for (const i of [...core, ...extra]) keyedColumns(i);
  return { core, extra };
}

/** Top-level columns to compare: all but the uncomparable ones, in file order. */
async function comparedColumns(input: InputFile): Promise<string[] | undefined> {
  const skip = UNCOMPARABLE[inputName(input)];
  if (!skip) return undefined;
  const reader = await openParquetFile(input.file);
  try {
    const top = [...new Set(reader.columns.map((c) => c.path[0]))];
    return top.filter((c) => !skip.includes(c));
  } finally {
    reader.close();
  }
}

/** What a plaintext input holds, as our reader sees it. */
interface InputFacts {
  rowGroups: number;
  columnIndexes: number;
  offsetIndexes: number;
  bloomFilters: number;
  hasV2: boolean;
}

async function inputFacts(file: string): Promise<InputFacts> {
  const reader = await openParquetFile(file);
  try {
    const facts = { rowGroups: reader.numRowGroups, columnIndexes: 0, offsetIndexes: 0, bloomFilters: 0 };
    for (let rg = 0; rg < reader.numRowGroups; rg++) {
      for (const col of reader.columns) {
        if (await reader.columnIndex(rg, col.index)) facts.columnIndexes++;
        if (await reader.offsetIndex(rg, col.index)) facts.offsetIndexes++;
        if (await reader.bloomFilter(rg, col.index)) facts.bloomFilters++;
      }
    }
    const hasV2 = reader.numRowGroups > 0 && (await pageTypes(reader, 0)).has(PageType.DataPageV2);
    return { ...facts, hasV2 };
  } finally {
    reader.close();
  }
}

/** Page types found in one row group. */
async function pageTypes(reader: ParquetReader, rg: number): Promise<Set<PageType>> {
  const types = new Set<PageType>();
  for (const col of reader.columns) {
    for await (const page of reader.pages(rg, col.index)) types.add(page.type);
  }
  return types;
}

function columnKeyMap(input: InputFile): Record<string, TestKey> {
  const [a, b] = keyedColumns(input);
  return { [a]: COLUMN_KEYS[0], [b]: COLUMN_KEYS[1] };
}

function failure(r: JavaJobResult): string {
  return r.ok ? "" : `${r.error}\n  causes: ${r.causes.join("\n          ")}`;
}

function assertJavaOk(r: JavaJobResult, what: string): JavaFileSummary {
  if (!r.ok) assert.fail(`parquet-java failed to ${what}: ${failure(r)}`);
  return r.result;
}

// ---------------------------------------------------------------------------------------------------
// Our engine → parquet-java
// ---------------------------------------------------------------------------------------------------

interface WriteCase {
  name: string;
  input: InputFile;
  config: Config;
  framing?: "whole-body" | "levels-plaintext";
  /** Write page CRCs (parquet-java verifies them: over the page bytes as stored). */
  crc: boolean;
  encrypted: string;
  javaOut: string;
}

function ourEncryption(c: WriteCase): EncryptionOptions {
  const columnKeys: Record<string, ColumnKey> = {};
  for (const [path, k] of Object.entries(columnKeyMap(c.input))) {
    columnKeys[path] = { key: k.key, keyMetadata: te.encode(k.id) };
  }
  return {
    footerKey: FOOTER.key,
    footerKeyMetadata: te.encode(FOOTER.id),
    columnKeys: c.config.columnKeys ? columnKeys : undefined,
    algorithm: c.config.algorithm,
    plaintextFooter: c.config.plaintextFooter,
    aadPrefix: te.encode(AAD_PREFIX),
    storeAadPrefix: c.config.aad === "stored",
    pageV2Framing: c.framing,
  };
}

function javaDecryptArgs(c: WriteCase): string[] {
  const keys = [FOOTER, ...COLUMN_KEYS].flatMap((k) => ["--key", keyArg(k)]);
  const aad = c.config.aad === "supplied" ? ["--aad-prefix", AAD_PREFIX] : [];
  return ["decrypt", c.encrypted, c.javaOut, ...keys, ...aad];
}

Deno.test("parquet-java reads every value of files our engine encrypted", async (t) => {
  await requireJavaPeer();
  await withTempDir(async (dir) => {
    const { core: inputs, extra } = await generateInputs(dir);
    const facts = new Map<string, InputFacts>();
    for (const i of [...inputs, ...extra]) facts.set(i.file, await inputFacts(i.file));

    const cases: WriteCase[] = [];
    const add = (input: InputFile, config: Config, framing?: WriteCase["framing"]) => {
      // Every input gets CRCs on some of its cases: those whose footer and AAD bits agree.
      const crc = ((config.index >> 1) & 1) === ((config.index >> 3) & 1);
      const name = `${inputName(input)} ${describe(config)}${framing ? ` v2:${framing}` : ""}${
        crc ? " crc" : ""
      }`;
      const stem = join(dir, `a${cases.length}`);
      cases.push({
        name,
        input,
        config,
        framing,
        crc,
        encrypted: `${stem}.enc.parquet`,
        javaOut: `${stem}.java.parquet`,
      });
    };
    for (const config of GRID) {
      const pair = [inputs[config.index % inputs.length], inputs[(config.index + 3) % inputs.length]];
      for (const input of pair) {
        if (facts.get(input.file)!.hasV2) {
          add(input, config, "levels-plaintext");
          add(input, config, "whole-body");
        } else add(input, config);
      }
    }
    for (const [j, input] of extra.entries()) {
      const config = GRID[(7 * j + 1) % GRID.length];
      add(input, config, facts.get(input.file)!.hasV2 ? "levels-plaintext" : undefined);
    }
    for (const c of cases) {
      await transcodeFile(c.input.file, c.encrypted, {}, {
        encryption: ourEncryption(c),
        pageChecksums: c.crc,
        durable: false,
      });
    }
    const results = await javaPeerBatch(dir, cases.map(javaDecryptArgs));

    for (const [k, c] of cases.entries()) {
      await t.step(c.name, async () => {
        const r = results[k];
        if (c.framing === "whole-body") {
          // parquet-java expects the levels of a V2 page in plaintext before the encrypted values.
          if (c.config.algorithm === "AES_GCM_V1") {
            assert.ok(!r.ok, "parquet-java read whole-body V2 pages; it is expected to reject them (§6.1)");
            assert.ok(
              r.causes.some((m) => m.includes("TagVerificationException")),
              `expected a GCM tag failure, got: ${failure(r)}`,
            );
          } else if (r.ok) {
            // CTR has no tag: a success can only mean garbage values.
            await assert.rejects(assertSameRows(c.input.file, c.javaOut, await comparedColumns(c.input)));
          }
          return;
        }
        const s = assertJavaOk(r, `read ${c.encrypted}`);
        const f = facts.get(c.input.file)!;
        assert.equal(s.footer, c.config.plaintextFooter ? "PLAINTEXT_FOOTER" : "ENCRYPTED_FOOTER");
        assert.equal(s.rows, c.input.rows);
        assert.equal(s.records, c.input.rows);
        assert.equal(s.rowGroups, f.rowGroups);
        assert.deepEqual(s.rowGroupOrdinals, Array.from({ length: f.rowGroups }, (_, i) => i));
        assert.deepEqual(
          { columnIndexes: s.columnIndexes, offsetIndexes: s.offsetIndexes, bloomFilters: s.bloomFilters },
          { columnIndexes: f.columnIndexes, offsetIndexes: f.offsetIndexes, bloomFilters: f.bloomFilters },
          "parquet-java decrypted a different number of page indexes / bloom filters than the input has",
        );
        await assertSameRows(c.input.file, c.javaOut, await comparedColumns(c.input));
      });
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// parquet-java → our engine
// ---------------------------------------------------------------------------------------------------

interface ReadCase {
  name: string;
  input: InputFile;
  config: Config;
  v2: boolean;
  bloom: boolean;
  encrypted: string;
  decrypted: string;
}

function javaEncryptArgs(c: ReadCase): string[] {
  const args = ["encrypt", c.input.file, c.encrypted, "--footer-key", keyArg(FOOTER)];
  args.push("--algorithm", c.config.algorithm, "--aad-prefix", AAD_PREFIX);
  if (c.config.aad === "supplied") args.push("--no-store-aad-prefix");
  if (c.config.plaintextFooter) args.push("--plaintext-footer");
  if (c.config.columnKeys) {
    for (const [path, k] of Object.entries(columnKeyMap(c.input))) {
      args.push("--column-key", `${path}:${keyArg(k)}`);
    }
  }
  if (c.v2) args.push("--page-v2");
  if (c.bloom) args.push("--bloom");
  return args;
}

/** Our reader's options: keys found through the key metadata parquet-java stored (UTF-8 ids). */
function ourDecryption(c: ReadCase): DecryptionOptions {
  const byId = new Map([FOOTER, ...COLUMN_KEYS].map((k) => [k.id, k.key]));
  const td = new TextDecoder();
  return {
    keyRetriever: (meta) => Promise.resolve(byId.get(td.decode(meta))),
    aadPrefix: c.config.aad === "supplied" ? te.encode(AAD_PREFIX) : undefined,
  };
}

/** Checks what parquet-java wrote, as our reader sees it. */
async function checkJavaLayout(c: ReadCase, s: JavaFileSummary): Promise<void> {
  const reader = await openParquetFile(c.encrypted, ourDecryption(c));
  try {
    assert.equal(reader.mode, c.config.plaintextFooter ? "signed" : "encrypted");
    if (c.config.plaintextFooter) assert.equal(reader.signatureVerified, true);
    assert.equal(reader.algorithm?.algorithm, c.config.algorithm);
    assert.equal(reader.algorithm?.supplyAadPrefix, c.config.aad === "supplied");
    assert.equal(
      reader.algorithm?.aadPrefix ? new TextDecoder().decode(reader.algorithm.aadPrefix) : undefined,
      c.config.aad === "stored" ? AAD_PREFIX : undefined,
    );
    assert.equal(reader.numRowGroups, s.rowGroups);
    if (c.input.rows >= 1000) {
      assert.ok(
        reader.numRowGroups >= 2,
        `parquet-java wrote ${reader.numRowGroups} row group(s), expected ≥ 2`,
      );
    }
    // Column protection is declared per column chunk, so a file without row groups declares none.
    if (reader.numRowGroups === 0) return;
    const keyed = columnKeyMap(c.input);
    for (const col of reader.columns) {
      const expected = !c.config.columnKeys ? "footer-key" : keyed[col.dotted] ? "column-key" : "none";
      assert.equal(col.encryption, expected, `column ${col.dotted}`);
      if (expected === "column-key") {
        assert.equal(
          new TextDecoder().decode(col.keyMetadata),
          keyed[col.dotted].id,
          `key metadata of ${col.dotted}`,
        );
      }
    }
    const types = await pageTypes(reader, reader.numRowGroups - 1);
    assert.equal(types.has(PageType.DataPageV2), c.v2, `data page V2 present: ${[...types]}`);
    assert.equal(types.has(PageType.DataPage), !c.v2, `data page V1 present: ${[...types]}`);
  } finally {
    reader.close();
  }
}

Deno.test("our engine decrypts every value of files parquet-java encrypted", async (t) => {
  await requireJavaPeer();
  await withTempDir(async (dir) => {
    const { core: inputs, extra } = await generateInputs(dir);
    const cases: ReadCase[] = [];
    const add = (input: InputFile, config: Config, v2: boolean, bloom: boolean) => {
      const page = v2 ? "page-v2" : "page-v1";
      const name = `${inputName(input)} ${describe(config)} ${page}${bloom ? " bloom" : ""}`;
      const stem = join(dir, `b${cases.length}`);
      cases.push({
        name,
        input,
        config,
        v2,
        bloom,
        encrypted: `${stem}.java.parquet`,
        decrypted: `${stem}.dec.parquet`,
      });
    };
    for (const config of GRID) {
      for (const v2 of [false, true]) {
        const input = inputs[(config.index + (v2 ? 3 : 0)) % inputs.length];
        add(input, config, v2, ((config.index >> 1) & 1) !== (v2 ? 1 : 0));
      }
    }
    for (const [j, input] of extra.entries()) {
      add(input, GRID[(7 * j + 4) % GRID.length], j % 2 === 1, j % 3 === 0);
    }
    const results = await javaPeerBatch(dir, cases.map(javaEncryptArgs));

    for (const [k, c] of cases.entries()) {
      await t.step(c.name, async () => {
        const s = assertJavaOk(results[k], `encrypt ${c.input.file}`);
        assert.equal(s.records, c.input.rows);
        assert.deepEqual(s.rowGroupOrdinals, Array.from({ length: s.rowGroups }, (_, i) => i));
        if (c.bloom && c.input.rows > 0) assert.ok(s.bloomFilters > 0, "parquet-java wrote no bloom filter");
        await checkJavaLayout(c, s);
        const result = await transcodeFile(c.encrypted, c.decrypted, ourDecryption(c), { durable: false });
        assert.deepEqual(result.skippedColumns, []);
        assert.equal(result.rows, c.input.rows);
        assert.equal(result.rowGroups, s.rowGroups);
        // Our engine decrypted and re-framed every page index and bloom filter parquet-java wrote.
        const out = await inputFacts(c.decrypted);
        assert.deepEqual(
          {
            columnIndexes: out.columnIndexes,
            offsetIndexes: out.offsetIndexes,
            bloomFilters: out.bloomFilters,
          },
          { columnIndexes: s.columnIndexes, offsetIndexes: s.offsetIndexes, bloomFilters: s.bloomFilters },
        );
        await assertSameRows(c.input.file, c.decrypted, await comparedColumns(c.input));
      });
    }
  });
});
