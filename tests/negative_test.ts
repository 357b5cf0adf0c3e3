/**
 * Negative tests of the PME engine: tampered, truncated, foreign and mis-keyed files, and invalid
 * options, must always fail with a typed {@link PmeError} (never wrong data, never an untyped crash),
 * and the error must say where: file, row group, column, page and module.
 *
 * - Exhaustive single-byte flips: small uniformly encrypted files (every byte is then magic,
 *   FileCryptoMetaData, a GCM module, the signature or the footer length) are flipped at every byte
 *   (xor 0xff; xor 0x01 on a sample) and decrypted in memory. With AES_GCM_V1 (encrypted or signed
 *   footer) and with AES_GCM_CTR_V1 plus page CRCs every flip must be caught. With AES_GCM_CTR_V1
 *   and no CRCs, flips in page payloads (nonce and ciphertext) are NOT detected — CTR pages are
 *   unauthenticated by the spec (Encryption.md §4.2.2) — while every other byte still is.
 * - Moved modules (swapped pages, swapped column chunks across row groups and within one) fail the
 *   AAD check, truncation fails the framing, wrong/missing keys and AAD prefixes fail with their
 *   own error classes, non-Parquet input and bad options are rejected.
 *
 * @module
 */
import assert, { AssertionError } from "node:assert";
import { join } from "node:path";
import * as arrow from "apache-arrow";
import * as pw from "parquet-wasm";
import {
  bytesSource,
  decodeStruct,
  type DecryptionOptions,
  type EncryptionOptions,
  type KeyRetriever,
  MemorySink,
  openParquetFile,
  ParquetReader,
  PmeAadPrefixError,
  PmeAuthError,
  PmeConfigError,
  PmeError,
  PmeFormatError,
  PmeKeyMissingError,
  type PmeLocation,
  transcode,
  transcodeFile,
  type TranscodeOptions,
  type TStruct,
} from "../pme/mod.ts";
import { CC, CMD, columnChunks, OI, PH, PL, rowGroups } from "../pme/metadata.ts";
import { sqlString, withDuckDB } from "./fixtures/duckdb.ts";
import { withTempDir } from "./fixtures/tmp.ts";

const te = new TextEncoder();
const td = new TextDecoder();

/** Deterministic key bytes. */
function testKey(seed: number, length = 16): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (seed * 37 + i * 11 + 1) & 0xff);
}

const KF = testKey(1);
const KC1 = testKey(2);
const KC2 = testKey(3, 32);
const WRONG = testKey(4);
const KEYS: Record<string, Uint8Array> = { kf: KF, kc1: KC1, kc2: KC2 };

/** Key retriever over {@link KEYS}: key metadata is the UTF-8 key id; unknown ids give no key. */
const retriever: KeyRetriever = (meta) => Promise.resolve(KEYS[td.decode(meta)] ?? null);

/** Uniform encryption with the footer key `kf` (stored as key metadata). */
const UNIFORM: EncryptionOptions = { footerKey: KF, footerKeyMetadata: te.encode("kf") };

// ---------------------------------------------------------------------------------------------------
// Inputs and in-memory transcoding

/**
 * A small parquet-wasm file (≈6 KB): 120 rows in 2 row groups; int, nullable dictionary-encoded
 * string, nullable double and a struct of two leaves; several data pages per chunk; page index.
 */
function wasmInput(): Uint8Array {
  const rows = 120;
  const idx = Array.from({ length: rows }, (_, i) => i);
  const point = new arrow.Struct([
    new arrow.Field("a", new arrow.Int32(), true),
    new arrow.Field("b", new arrow.Utf8(), true),
  ]);
  const table = new arrow.Table({
    id: arrow.vectorFromArray(idx, new arrow.Int32()),
    name: arrow.vectorFromArray(idx.map((i) => (i % 4 === 0 ? null : `n${i % 23}`)), new arrow.Utf8()),
    amount: arrow.vectorFromArray(idx.map((i) => (i % 5 === 0 ? null : i * 1.5)), new arrow.Float64()),
    point: arrow.vectorFromArray(idx.map((i) => ({ a: i % 7, b: `p${i % 3}` })), point),
  });
  const props = new pw.WriterPropertiesBuilder().setCompression(pw.Compression.UNCOMPRESSED)
    .setMaxRowGroupSize(60).setDataPageSizeLimit(128).setWriteBatchSize(50).setDictionaryEnabled(false)
    .setColumnDictionaryEnabled("name", true).setStatisticsEnabled(pw.EnabledStatistics.Page).build();
  return pw.writeParquet(pw.Table.fromIPCStream(arrow.tableToIPC(table, "stream")), props);
}

/** Writes `SELECT …` with DuckDB's COPY options and returns the file's bytes. */
async function duckdbFile(select: string, options: string): Promise<Uint8Array> {
  return await withTempDir(async (dir) => {
    const file = join(dir, "input.parquet");
    await withDuckDB((conn) =>
      conn.run(`COPY (${select}) TO ${sqlString(file)} (FORMAT parquet, ${options})`).then(() => {})
    );
    return await Deno.readFile(file);
  });
}

/** A small DuckDB file (≈1.5 KB): 2 row groups, dictionary pages, a nullable column, bloom filters. */
function duckdbBloomInput(): Promise<Uint8Array> {
  return duckdbFile(
    "SELECT 's' || (i % 17) AS s, CASE WHEN i % 3 = 0 THEN NULL ELSE (i % 5)::INTEGER END AS n " +
      "FROM range(4096) r(i)",
    "ROW_GROUP_SIZE 2048",
  );
}

/** Transcodes `bytes` in memory (decrypting with `decryption`) and returns the output bytes. */
async function transcodeBytes(
  bytes: Uint8Array,
  name: string,
  decryption: DecryptionOptions,
  options: TranscodeOptions = {},
): Promise<Uint8Array> {
  const reader = await ParquetReader.open(bytesSource(bytes, name), decryption);
  try {
    const sink = new MemorySink();
    await transcode(reader, sink, options);
    return sink.bytes();
  } finally {
    reader.close();
  }
}

/** Encrypts plaintext Parquet bytes. */
function encrypt(plain: Uint8Array, encryption: EncryptionOptions, options: TranscodeOptions = {}) {
  return transcodeBytes(plain, "input", {}, { ...options, encryption });
}

/** Decrypts the whole file to plaintext Parquet. */
function decrypt(bytes: Uint8Array, name: string, decryption: DecryptionOptions, options?: TranscodeOptions) {
  return transcodeBytes(bytes, name, decryption, options);
}

type ErrorClass<T extends PmeError> = new (...args: never[]) => T;

/**
 * Awaits `p`, which must reject with an instance of `cls` (a {@link PmeError}) with a non-empty
 * message and the given location facts; returns the error.
 */
async function rejectsWith<T extends PmeError>(
  p: Promise<unknown>,
  cls: ErrorClass<T>,
  location: PmeLocation = {},
): Promise<T> {
  let error: unknown;
  try {
    await p;
  } catch (e) {
    error = e;
  }
  if (error === undefined) throw new AssertionError({ message: `expected ${cls.name}, but it succeeded` });
  if (!(error instanceof cls)) {
    throw new AssertionError({
      message: `expected ${cls.name}, got ${error instanceof Error ? error.stack : String(error)}`,
    });
  }
  assert(error.message.length > 0, "empty error message");
  for (const [k, v] of Object.entries(location)) {
    assert.strictEqual(
      error.location[k as keyof PmeLocation],
      v,
      `location.${k} of "${error.message}"`,
    );
  }
  return error;
}

// ---------------------------------------------------------------------------------------------------
// Byte layout of an encrypted file

/** A byte range of a file and what it holds. */
interface Region {
  start: number;
  end: number;
  /** Module name as the engine reports it ("data page", "footer", …) or "magic", "footer length". */
  kind: string;
  rowGroup?: number;
  column?: string;
  /** Data-page ordinal (data pages and their headers only). */
  page?: number;
}

const u32 = (b: Uint8Array, at: number) => new DataView(b.buffer, b.byteOffset).getUint32(at, true);

/**
 * Maps every byte of a uniformly encrypted file to the module holding it, through the reader's own
 * view (chunk ranges, decrypted page headers, offset indexes, index and bloom-filter offsets), and
 * checks that the regions tile the file exactly.
 */
async function layout(bytes: Uint8Array, decryption: DecryptionOptions): Promise<Region[]> {
  const reader = await ParquetReader.open(bytesSource(bytes, "layout"), decryption);
  const regions: Region[] = [{ start: 0, end: 4, kind: "magic" }];
  const push = (start: number, size: number, kind: string, where: Omit<Region, "start" | "end" | "kind">) =>
    regions.push({ start, end: start + size, kind, ...where });
  for (let rg = 0; rg < reader.numRowGroups; rg++) {
    for (const c of reader.columns) {
      const where = { rowGroup: rg, column: c.dotted };
      const { start, length } = await reader.chunkRange(rg, c.index);
      const oi = await reader.offsetIndex(rg, c.index);
      const locations = (oi?.list(OI.pageLocations)?.items ?? []) as TStruct[];
      let pos = start;
      for await (const page of reader.pages(rg, c.index)) {
        const headerSize = 4 + u32(bytes, pos);
        const bodySize = page.header.reqInt(PH.compressedPageSize, "compressed_page_size");
        if (page.ordinal < 0) {
          push(pos, headerSize, "dictionary page header", where);
          push(pos + headerSize, bodySize, "dictionary page", where);
        } else {
          push(pos, headerSize, "data page header", { ...where, page: page.ordinal });
          push(pos + headerSize, bodySize, "data page", { ...where, page: page.ordinal });
          if (oi) {
            const loc = locations[page.ordinal];
            assert.strictEqual(loc.int(PL.offset), pos, "offset index page offset");
            assert.strictEqual(
              loc.int(PL.compressedPageSize),
              headerSize + bodySize,
              "offset index page size",
            );
          }
        }
        pos += headerSize + bodySize;
      }
      assert.strictEqual(pos, start + length, "pages fill the column chunk");
      const chunk = columnChunks(rowGroups(reader.metadata)[rg])[c.index];
      for (
        const [kind, off, len] of [
          ["column index", CC.columnIndexOffset, CC.columnIndexLength],
          ["offset index", CC.offsetIndexOffset, CC.offsetIndexLength],
        ] as const
      ) {
        const offset = chunk.int(off);
        if (offset !== undefined) push(offset, chunk.reqInt(len, kind), kind, where);
      }
      const cmd = await reader.columnMetaData(rg, c.index);
      const bloom = cmd.int(CMD.bloomFilterOffset);
      if (bloom !== undefined) {
        const headerSize = 4 + u32(bytes, bloom);
        push(bloom, headerSize, "bloom filter header", where);
        push(
          bloom + headerSize,
          cmd.reqInt(CMD.bloomFilterLength, "") - headerSize,
          "bloom filter bitset",
          where,
        );
      }
    }
  }
  const size = bytes.length;
  const footerStart = size - 8 - u32(bytes, size - 8);
  if (reader.mode === "encrypted") {
    const fcm = decodeStruct(bytes.subarray(footerStart, size - 8), 0).length;
    push(footerStart, fcm, "crypto metadata", {});
    push(footerStart + fcm, size - 8 - footerStart - fcm, "footer", {});
  } else {
    push(footerStart, size - 36 - footerStart, "footer", {});
    push(size - 36, 28, "footer signature", {});
  }
  push(size - 8, 4, "footer length", {});
  push(size - 4, 4, "magic", {});
  reader.close();
  regions.sort((a, b) => a.start - b.start);
  let at = 0;
  for (const r of regions) {
    assert.strictEqual(r.start, at, `region ${r.kind} starts at ${r.start}, expected ${at}`);
    assert(r.end > r.start, `empty region ${r.kind}`);
    at = r.end;
  }
  assert.strictEqual(at, size, "regions cover the file");
  return regions;
}

/** Kinds of regions whose errors must name row group and column. */
const CHUNK_KINDS = new Set([
  "data page header",
  "data page",
  "dictionary page header",
  "dictionary page",
  "column index",
  "offset index",
  "bloom filter header",
  "bloom filter bitset",
]);

/** Checks that an error's location agrees with the region of the flipped byte; returns a problem. */
function locationProblem(e: PmeError, region: Region, name: string): string | undefined {
  const loc = e.location;
  if (loc.file !== name) return `location.file is ${loc.file}`;
  if (CHUNK_KINDS.has(region.kind)) {
    if (loc.rowGroup !== region.rowGroup || loc.column !== region.column) {
      return `location names row group ${loc.rowGroup}, column ${loc.column}`;
    }
    if (region.page !== undefined && loc.page !== region.page) return `location names page ${loc.page}`;
    // A failed tag names the module exactly; a page CRC mismatch (checked before decryption) and
    // framing errors (bad length prefix) may leave the module out.
    if (e instanceof PmeAuthError && loc.module !== region.kind && (loc.module || !/CRC/.test(e.what))) {
      return `location names module ${loc.module}`;
    }
  } else if (
    region.kind === "crypto metadata" || region.kind === "footer" || region.kind === "footer signature"
  ) {
    if (loc.rowGroup !== undefined || loc.column !== undefined) {
      return `footer damage blamed on row group ${loc.rowGroup}, column ${loc.column}`;
    }
    if (loc.module !== "footer") return `location names module ${loc.module}`;
  }
  return undefined;
}

/** What a flip run saw. */
interface FlipReport {
  attempts: number;
  /** Error class name (or "undetected") → count. */
  counts: Record<string, number>;
  problems: string[];
}

/**
 * Flips (xor `mask`) each byte at `positions` of `bytes` in turn and decrypts the whole file. Every
 * attempt must throw a PmeError with a non-empty message whose location fits the flipped region,
 * except flips that `undetectable` accepts, which must decrypt to output different from `baseline`.
 */
async function flipRun(
  bytes: Uint8Array,
  name: string,
  decryption: DecryptionOptions,
  regions: Region[],
  mask: number,
  positions: Iterable<number>,
  undetectable: (region: Region, pos: number) => boolean = () => false,
  baseline?: Uint8Array,
): Promise<FlipReport> {
  const regionOf = new Int32Array(bytes.length);
  regions.forEach((r, k) => regionOf.fill(k, r.start, r.end));
  const report: FlipReport = { attempts: 0, counts: {}, problems: [] };
  for (const pos of positions) {
    const region = regions[regionOf[pos]];
    const what = `byte ${pos} ^ 0x${mask.toString(16)} (${region.kind}${
      region.rowGroup !== undefined ? ` rg ${region.rowGroup} ${region.column}` : ""
    }${region.page !== undefined ? ` page ${region.page}` : ""})`;
    const copy = bytes.slice();
    copy[pos] ^= mask;
    report.attempts++;
    let output: Uint8Array | undefined;
    try {
      output = await decrypt(copy, name, decryption);
    } catch (e) {
      if (!(e instanceof PmeError)) {
        report.problems.push(`${what}: untyped ${e instanceof Error ? e.stack : String(e)}`);
        continue;
      }
      report.counts[e.name] = (report.counts[e.name] ?? 0) + 1;
      if (!e.message) report.problems.push(`${what}: empty message`);
      if (undetectable(region, pos)) {
        report.problems.push(`${what}: expected to pass unnoticed, got ${e.message}`);
      }
      const p = locationProblem(e, region, name);
      if (p) report.problems.push(`${what}: ${p}: ${e.message}`);
      continue;
    }
    report.counts.undetected = (report.counts.undetected ?? 0) + 1;
    if (!undetectable(region, pos)) report.problems.push(`${what}: tampering NOT detected`);
    else if (baseline && output.length === baseline.length && output.every((x, i) => x === baseline[i])) {
      report.problems.push(`${what}: flip had no effect on the output`);
    }
  }
  return report;
}

/** Prints each run's counts per error class, then fails listing the problems of all runs. */
function assertClean(runs: [string, FlipReport][]) {
  const failures: string[] = [];
  for (const [label, report] of runs) {
    const counts = Object.entries(report.counts).sort().map(([k, v]) => `${k} ${v}`).join(", ");
    console.log(`  ${label}: ${report.attempts} flips → ${counts}`);
    if (!report.problems.length) continue;
    // Group problems that differ only in positions, ordinals and locations; one example each.
    const groups = new Map<string, { n: number; example: string }>();
    for (const p of report.problems) {
      const key = p.replace(/^byte \d+ \^ 0x\w+ \([^)]*\): /, "").replaceAll(/\[at [^\]]*\]/g, "")
        .replaceAll(/\d+/g, "N");
      const g = groups.get(key) ?? { n: 0, example: p };
      g.n++;
      groups.set(key, g);
    }
    const lines = [...groups.values()].slice(0, 12).map((g) => `${g.n} × e.g. ${g.example}`);
    failures.push(`${label}: ${report.problems.length} problem(s):\n  ${lines.join("\n  ")}`);
  }
  if (failures.length) throw new AssertionError({ message: failures.join("\n") });
}

const everyByte = (n: number) => Array.from({ length: n }, (_, i) => i);
/** xor 0x01 sample: every 5th byte, plus every byte of the footer area (where semantics live). */
function sample(regions: Region[], n: number): number[] {
  const footerStart = regions.find((r) => r.kind === "crypto metadata" || r.kind === "footer")!.start;
  return everyByte(n).filter((i) => i % 5 === 0 || i >= footerStart);
}

/** CTR pages carry no tag: their nonce and ciphertext (not the length prefix) are unauthenticated. */
const ctrPayload = (r: Region, pos: number) =>
  (r.kind === "data page" || r.kind === "dictionary page") && pos >= r.start + 4;

interface FlipCase {
  label: string;
  encryption: EncryptionOptions;
  options?: TranscodeOptions;
  undetectable?: (r: Region, pos: number) => boolean;
}

const FLIP_CASES: FlipCase[] = [
  { label: "AES_GCM_V1, encrypted footer", encryption: UNIFORM },
  { label: "AES_GCM_V1, signed plaintext footer", encryption: { ...UNIFORM, plaintextFooter: true } },
  {
    label: "AES_GCM_CTR_V1 with page CRCs",
    encryption: { ...UNIFORM, algorithm: "AES_GCM_CTR_V1" },
    options: { pageChecksums: true },
  },
  {
    label: "AES_GCM_CTR_V1 without page CRCs (page payloads unauthenticated)",
    encryption: { ...UNIFORM, algorithm: "AES_GCM_CTR_V1" },
    undetectable: ctrPayload,
  },
];

Deno.test("negative: exhaustive single-byte flips of uniformly encrypted files", async (t) => {
  const inputs: [string, Uint8Array][] = [
    ["parquet-wasm (page index, multi-page)", wasmInput()],
    ["duckdb (bloom filters)", await duckdbBloomInput()],
  ];
  for (const c of FLIP_CASES) {
    await t.step(c.label, async (t) => {
      for (const [inputName, plain] of inputs) {
        await t.step(inputName, async () => {
          const enc = await encrypt(plain, c.encryption, c.options);
          const decryption: DecryptionOptions = { keyRetriever: retriever };
          const regions = await layout(enc, decryption);
          const kinds = new Set(regions.map((r) => r.kind));
          for (const k of ["data page", "dictionary page", "crypto metadata", "footer"]) {
            if (k === "crypto metadata" && c.encryption.plaintextFooter) continue;
            assert(kinds.has(k), `input has a ${k}`);
          }
          if (inputName.startsWith("parquet-wasm")) {
            assert(kinds.has("column index") && kinds.has("offset index"));
          } else assert(kinds.has("bloom filter bitset"));
          const baseline = await decrypt(enc, "intact.parquet", decryption);
          const name = "flipped.parquet";
          const label = `${c.label}, ${inputName}, ${enc.length} bytes`;
          const runs: [string, FlipReport][] = [
            [
              `${label}, xor 0xff`,
              await flipRun(
                enc,
                name,
                decryption,
                regions,
                0xff,
                everyByte(enc.length),
                c.undetectable,
                baseline,
              ),
            ],
            [
              `${label}, xor 0x01`,
              await flipRun(
                enc,
                name,
                decryption,
                regions,
                0x01,
                sample(regions, enc.length),
                c.undetectable,
                baseline,
              ),
            ],
          ];
          assertClean(runs);
        });
      }
    });
  }
});

// ---------------------------------------------------------------------------------------------------
// Where errors point

/** Returns a copy of `bytes` with byte `at` xor 0xff. */
function flipped(bytes: Uint8Array, at: number): Uint8Array {
  const copy = bytes.slice();
  copy[at] ^= 0xff;
  return copy;
}

/** Offset and size (header module + page module) of data page `page` of a chunk, from its offset index. */
async function pageLocation(reader: ParquetReader, rg: number, column: string, page: number) {
  const col = reader.columns.find((c) => c.dotted === column)!.index;
  const oi = await reader.offsetIndex(rg, col);
  assert(oi, `${column} has an offset index`);
  const loc = (oi.list(OI.pageLocations)!.items as TStruct[])[page];
  return { offset: loc.reqInt(PL.offset, "offset"), size: loc.reqInt(PL.compressedPageSize, "size") };
}

Deno.test("negative: errors name file, row group, column, page and module", async (t) => {
  const enc = await encrypt(wasmInput(), UNIFORM);
  const decryption: DecryptionOptions = { keyRetriever: retriever };
  const reader = await ParquetReader.open(bytesSource(enc), decryption);
  const name = "damaged.parquet";
  const { offset, size } = await pageLocation(reader, 1, "amount", 1);
  const headerSize = 4 + u32(enc, offset);
  assert(size > headerSize + 32, "page module follows its header");

  await t.step("data page payload", async () => {
    const e = await rejectsWith(
      decrypt(flipped(enc, offset + headerSize + 20), name, decryption),
      PmeAuthError,
      {
        file: name,
        rowGroup: 1,
        column: "amount",
        page: 1,
        module: "data page",
      },
    );
    for (const part of [name, "row group 1", "column amount", "page 1", "module data page"]) {
      assert(e.message.includes(part), `"${e.message}" mentions ${part}`);
    }
  });
  await t.step("data page header", async () => {
    await rejectsWith(decrypt(flipped(enc, offset + 20), name, decryption), PmeAuthError, {
      file: name,
      rowGroup: 1,
      column: "amount",
      page: 1,
      module: "data page header",
    });
  });
  await t.step("last byte of a page (GCM tag)", async () => {
    await rejectsWith(decrypt(flipped(enc, offset + size - 1), name, decryption), PmeAuthError, {
      rowGroup: 1,
      column: "amount",
      page: 1,
      module: "data page",
    });
  });
  await t.step("dictionary page", async () => {
    const col = reader.columns.find((c) => c.dotted === "name")!.index;
    const { start, hasDictionary } = await reader.chunkRange(0, col);
    assert(hasDictionary);
    const dictHeader = 4 + u32(enc, start);
    await rejectsWith(decrypt(flipped(enc, start + 5), name, decryption), PmeAuthError, {
      rowGroup: 0,
      column: "name",
      module: "dictionary page header",
    });
    await rejectsWith(decrypt(flipped(enc, start + dictHeader + 20), name, decryption), PmeAuthError, {
      rowGroup: 0,
      column: "name",
      module: "dictionary page",
    });
  });
  await t.step("column index and offset index", async () => {
    const chunk = columnChunks(rowGroups(reader.metadata)[1])[4];
    for (
      const [module, field] of [["column index", CC.columnIndexOffset], [
        "offset index",
        CC.offsetIndexOffset,
      ]] as const
    ) {
      await rejectsWith(
        decrypt(flipped(enc, chunk.reqInt(field, module) + 20), name, decryption),
        PmeAuthError,
        {
          file: name,
          rowGroup: 1,
          column: "point.b",
          module,
        },
      );
    }
  });
  await t.step("footer", async () => {
    const e = await rejectsWith(decrypt(flipped(enc, enc.length - 20), name, decryption), PmeAuthError, {
      file: name,
      module: "footer",
    });
    assert.strictEqual(e.location.rowGroup, undefined);
    assert.strictEqual(e.location.column, undefined);
  });
  await t.step("page CRC mismatch (AES_GCM_CTR_V1 with page CRCs) names the page", async () => {
    const ctr = await encrypt(wasmInput(), { ...UNIFORM, algorithm: "AES_GCM_CTR_V1" }, {
      pageChecksums: true,
    });
    const r = await ParquetReader.open(bytesSource(ctr), decryption);
    const at = await pageLocation(r, 1, "amount", 1);
    const e = await rejectsWith(
      decrypt(flipped(ctr, at.offset + 4 + u32(ctr, at.offset) + 20), name, decryption),
      PmeAuthError,
      { file: name, rowGroup: 1, column: "amount" },
    );
    assert.match(e.message, /CRC/);
    assert.strictEqual(e.location.page, 1, `page of "${e.message}"`);
  });
  await t.step("unknown algorithm in FileCryptoMetaData names the footer", async () => {
    // FileCryptoMetaData starts with field 1 (EncryptionAlgorithm), whose union member header is
    // 0x1C (field 1, AES_GCM_V1, struct); 0x3C makes it member 3, which does not exist.
    const footerStart = enc.length - 8 - u32(enc, enc.length - 8);
    assert.deepStrictEqual([...enc.subarray(footerStart, footerStart + 2)], [0x1c, 0x1c]);
    const bad = enc.slice();
    bad[footerStart + 1] = 0x3c;
    const e = await rejectsWith(decrypt(bad, name, decryption), PmeError, { file: name });
    assert.strictEqual(e.location.module, "footer", `module of ${e.name}: "${e.message}"`);
  });
  reader.close();
});

// ---------------------------------------------------------------------------------------------------
// Moved modules

/** Swaps the byte ranges [a, a+la) and [b, b+lb) (a + la <= b) of a copy of `bytes`. */
function swapRanges(bytes: Uint8Array, a: number, la: number, b: number, lb: number): Uint8Array {
  assert(a + la <= b);
  const out = new Uint8Array(bytes.length);
  out.set(bytes.subarray(0, a));
  out.set(bytes.subarray(b, b + lb), a);
  out.set(bytes.subarray(a + la, b), a + lb);
  out.set(bytes.subarray(a, a + la), b + lb - la);
  out.set(bytes.subarray(b + lb), b + lb);
  return out;
}

Deno.test("negative: moved pages and column chunks fail the AAD check", async (t) => {
  const decryption: DecryptionOptions = { keyRetriever: retriever };
  const name = "moved.parquet";
  const enc = await encrypt(wasmInput(), UNIFORM);
  const reader = await ParquetReader.open(bytesSource(enc), decryption);

  await t.step("two pages of one column chunk swapped (equal sizes)", async () => {
    const p0 = await pageLocation(reader, 0, "amount", 0);
    const p1 = await pageLocation(reader, 0, "amount", 1);
    assert.strictEqual(p0.size, p1.size, "precondition: equal page sizes");
    await rejectsWith(
      decrypt(swapRanges(enc, p0.offset, p0.size, p1.offset, p1.size), name, decryption),
      PmeAuthError,
      {
        file: name,
        rowGroup: 0,
        column: "amount",
        page: 0,
        module: "data page header",
      },
    );
  });
  await t.step("two pages of one column chunk swapped (different sizes)", async () => {
    const p1 = await pageLocation(reader, 1, "point.b", 1);
    const p2 = await pageLocation(reader, 1, "point.b", 2);
    assert.notStrictEqual(p1.size, p2.size, "precondition: different page sizes");
    await rejectsWith(
      decrypt(swapRanges(enc, p1.offset, p1.size, p2.offset, p2.size), name, decryption),
      PmeAuthError,
      {
        rowGroup: 1,
        column: "point.b",
        page: 1,
        module: "data page header",
      },
    );
  });
  await t.step("page payloads swapped, headers in place", async () => {
    const p0 = await pageLocation(reader, 0, "amount", 0);
    const p1 = await pageLocation(reader, 0, "amount", 1);
    const h0 = 4 + u32(enc, p0.offset);
    const h1 = 4 + u32(enc, p1.offset);
    assert.strictEqual(p0.size - h0, p1.size - h1, "precondition: equal payload sizes");
    const moved = swapRanges(enc, p0.offset + h0, p0.size - h0, p1.offset + h1, p1.size - h1);
    await rejectsWith(decrypt(moved, name, decryption), PmeAuthError, {
      rowGroup: 0,
      column: "amount",
      page: 0,
      module: "data page",
    });
  });
  await t.step("AES_GCM_CTR_V1: swapped page payloads are caught by page CRCs only", async () => {
    for (const pageChecksums of [true, false]) {
      const ctr = await encrypt(wasmInput(), { ...UNIFORM, algorithm: "AES_GCM_CTR_V1" }, { pageChecksums });
      const r = await ParquetReader.open(bytesSource(ctr), decryption);
      const p0 = await pageLocation(r, 0, "amount", 0);
      const p1 = await pageLocation(r, 0, "amount", 1);
      const h0 = 4 + u32(ctr, p0.offset);
      const h1 = 4 + u32(ctr, p1.offset);
      assert.strictEqual(p0.size - h0, p1.size - h1, "precondition: equal payload sizes");
      const moved = swapRanges(ctr, p0.offset + h0, p0.size - h0, p1.offset + h1, p1.size - h1);
      if (pageChecksums) {
        await rejectsWith(decrypt(moved, name, decryption), PmeAuthError, { rowGroup: 0, column: "amount" });
      } else {
        // CTR page modules carry no tag and no AAD (Encryption.md §4.2.2): the swap is not detectable.
        const out = await decrypt(moved, name, decryption);
        assert.notDeepStrictEqual(out, await decrypt(ctr, name, decryption));
      }
    }
  });
  reader.close();

  const plain = await duckdbFile(
    "SELECT range::BIGINT AS a, (range * 3)::BIGINT AS b FROM range(4096)",
    "ROW_GROUP_SIZE 2048, COMPRESSION uncompressed, DICTIONARY_SIZE_LIMIT 0",
  );
  const flat = await encrypt(plain, UNIFORM);
  const r = await ParquetReader.open(bytesSource(flat), decryption);
  assert.strictEqual(r.numRowGroups, 2, "precondition: two row groups");
  const a0 = await r.chunkRange(0, 0);
  const a1 = await r.chunkRange(1, 0);
  const b0 = await r.chunkRange(0, 1);
  r.close();

  await t.step("one column's chunks swapped between row groups", async () => {
    assert.strictEqual(a0.length, a1.length, "precondition: equal encrypted chunk sizes");
    const e = await rejectsWith(
      decrypt(swapRanges(flat, a0.start, a0.length, a1.start, a1.length), name, decryption),
      PmeAuthError,
      { file: name, rowGroup: 0, column: "a", page: 0 },
    );
    assert.match(e.message, /row group 0/);
  });
  await t.step("two column chunks of one row group swapped", async () => {
    assert.strictEqual(a0.length, b0.length, "precondition: equal encrypted chunk sizes");
    await rejectsWith(
      decrypt(swapRanges(flat, a0.start, a0.length, b0.start, b0.length), name, decryption),
      PmeAuthError,
      { file: name, rowGroup: 0, column: "a", page: 0 },
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// Truncation

Deno.test("negative: truncated files fail with a PmeError naming the file", async (t) => {
  const plain = wasmInput();
  const files: [string, Uint8Array][] = [
    ["plaintext", plain],
    ["encrypted footer", await encrypt(plain, UNIFORM)],
    ["signed plaintext footer", await encrypt(plain, { ...UNIFORM, plaintextFooter: true })],
  ];
  for (const [label, bytes] of files) {
    await t.step(label, async () => {
      const n = bytes.length;
      const lengths = new Set([
        0,
        1,
        3,
        4,
        7,
        8,
        11,
        12,
        13,
        64,
        n >> 1,
        n - 1,
        n - 4,
        n - 5,
        n - 8,
        n - 9,
        n - 12,
      ]);
      for (let k = 1; k < 40; k++) lengths.add(Math.floor((n * k) / 40));
      const counts: Record<string, number> = {};
      for (const len of [...lengths].sort((a, b) => a - b)) {
        const name = `truncated-${len}.parquet`;
        const e = await rejectsWith(
          decrypt(bytes.slice(0, len), name, { keyRetriever: retriever }),
          PmeError,
          {
            file: name,
          },
        );
        assert(e.message.includes(name), e.message);
        if (len < 12) assert(e instanceof PmeFormatError, `${len} bytes: ${e.name}`);
        counts[e.name] = (counts[e.name] ?? 0) + 1;
      }
      console.log(`  ${label}: ${lengths.size} lengths → ${JSON.stringify(counts)}`);
    });
  }
  await t.step("on disk, through transcodeFile: no output is left behind", async () => {
    await withTempDir(async (dir) => {
      const input = join(dir, "cut.parquet");
      const enc = files[1][1];
      await Deno.writeFile(input, enc.slice(0, enc.length - 8));
      const output = join(dir, "out", "plain.parquet");
      await Deno.mkdir(join(dir, "out"));
      await rejectsWith(
        transcodeFile(input, output, { keyRetriever: retriever }, { durable: false }),
        PmeFormatError,
        { file: input },
      );
      assert.deepStrictEqual([...Deno.readDirSync(join(dir, "out"))], []);
    });
  });
});

// ---------------------------------------------------------------------------------------------------
// Keys and AAD prefixes

Deno.test("negative: wrong or missing keys and AAD prefixes", async (t) => {
  const plain = wasmInput();
  const name = "keys.parquet";
  const uniform = await encrypt(plain, UNIFORM);
  const signed = await encrypt(plain, { ...UNIFORM, plaintextFooter: true });
  const columnKeys: EncryptionOptions = {
    ...UNIFORM,
    columnKeys: {
      name: { key: KC1, keyMetadata: te.encode("kc1") },
      point: { key: KC2, keyMetadata: te.encode("kc2") },
    },
  };
  const perColumn = await encrypt(plain, columnKeys);
  const perColumnSigned = await encrypt(plain, { ...columnKeys, plaintextFooter: true });

  await t.step("wrong footer key → PmeAuthError at the footer", async () => {
    await rejectsWith(decrypt(uniform, name, { footerKey: WRONG }), PmeAuthError, {
      file: name,
      module: "footer",
    });
    await rejectsWith(decrypt(signed, name, { footerKey: WRONG }), PmeAuthError, {
      file: name,
      module: "footer",
    });
    await rejectsWith(
      decrypt(perColumn, name, { keyRetriever: () => Promise.resolve(WRONG) }),
      PmeAuthError,
      {
        module: "footer",
      },
    );
  });
  await t.step("wrong column key → PmeAuthError naming the column", async () => {
    for (
      const [label, bytes] of [["encrypted footer", perColumn], ["signed footer", perColumnSigned]] as const
    ) {
      const e = await rejectsWith(
        decrypt(bytes, name, { footerKey: KF, columnKeys: { name: WRONG, "point.a": KC2, "point.b": KC2 } }),
        PmeAuthError,
        { file: name, column: "name", module: "column metadata" },
      );
      assert(e.message.includes("column name"), `${label}: ${e.message}`);
      await rejectsWith(
        decrypt(bytes, name, { footerKey: KF, columnKeys: { name: KC1, "point.a": KC2, "point.b": WRONG } }),
        PmeAuthError,
        { column: "point.b" },
      );
    }
    // Through the retriever: kc2 resolves to the wrong key.
    const keys: Record<string, Uint8Array> = { ...KEYS, kc2: testKey(5, 32) };
    await rejectsWith(
      decrypt(perColumn, name, { keyRetriever: (m) => Promise.resolve(keys[td.decode(m)] ?? null) }),
      PmeAuthError,
      { column: "point.a" },
    );
  });
  await t.step("missing footer key → PmeKeyMissingError", async () => {
    await rejectsWith(decrypt(uniform, name, {}), PmeKeyMissingError, { file: name, module: "footer" });
    await rejectsWith(decrypt(signed, name, {}), PmeKeyMissingError, { file: name, module: "footer" });
    await rejectsWith(
      decrypt(uniform, name, { keyRetriever: () => Promise.resolve(null) }),
      PmeKeyMissingError,
    );
  });
  await t.step("missing column key → skipped, or PmeKeyMissingError naming it when selected", async () => {
    const reader = await ParquetReader.open(bytesSource(perColumn, name), { footerKey: KF });
    const result = await transcode(reader, new MemorySink());
    assert.deepStrictEqual(result.skippedColumns, ["name", "point.a", "point.b"]);
    await rejectsWith(
      decrypt(perColumn, name, { footerKey: KF }, { columns: ["id", "name"] }),
      PmeKeyMissingError,
      {
        file: name,
        column: "name",
      },
    );
  });
  const hidden = await encrypt(plain, {
    ...UNIFORM,
    aadPrefix: te.encode("tenant-7"),
    storeAadPrefix: false,
  });
  await t.step("AAD prefix not stored and not supplied → PmeAadPrefixError", async () => {
    await rejectsWith(decrypt(hidden, name, { keyRetriever: retriever }), PmeAadPrefixError, {
      file: name,
      module: "footer",
    });
    await decrypt(hidden, name, { keyRetriever: retriever, aadPrefix: te.encode("tenant-7") });
  });
  await t.step("wrong supplied AAD prefix → PmeAuthError", async () => {
    await rejectsWith(
      decrypt(hidden, name, { keyRetriever: retriever, aadPrefix: te.encode("tenant-8") }),
      PmeAuthError,
      { file: name, module: "footer" },
    );
    const signedHidden = await encrypt(plain, {
      ...UNIFORM,
      plaintextFooter: true,
      aadPrefix: te.encode("tenant-7"),
      storeAadPrefix: false,
    });
    await rejectsWith(
      decrypt(signedHidden, name, { keyRetriever: retriever, aadPrefix: te.encode("tenant-8") }),
      PmeAuthError,
      { module: "footer" },
    );
    await decrypt(signedHidden, name, { keyRetriever: retriever, aadPrefix: te.encode("tenant-7") });
  });
  await t.step("AAD prefix supplied for a file without one → PmeAadPrefixError", async () => {
    await rejectsWith(
      decrypt(uniform, name, { keyRetriever: retriever, aadPrefix: te.encode("tenant-7") }),
      PmeAadPrefixError,
      { file: name },
    );
    await rejectsWith(
      decrypt(signed, name, { keyRetriever: retriever, aadPrefix: te.encode("tenant-7") }),
      PmeAadPrefixError,
    );
  });
  await t.step("stored AAD prefix contradicted → PmeAadPrefixError", async () => {
    const stored = await encrypt(plain, { ...UNIFORM, aadPrefix: te.encode("tenant-7") });
    await rejectsWith(
      decrypt(stored, name, { keyRetriever: retriever, aadPrefix: te.encode("tenant-8") }),
      PmeAadPrefixError,
      { file: name },
    );
    await decrypt(stored, name, { keyRetriever: retriever, aadPrefix: te.encode("tenant-7") });
    await decrypt(stored, name, { keyRetriever: retriever });
  });
});

// ---------------------------------------------------------------------------------------------------
// Not Parquet

Deno.test("negative: input that is not Parquet → PmeFormatError", async (t) => {
  await withTempDir(async (dir) => {
    let seed = 12345;
    const random = Uint8Array.from({ length: 4096 }, () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24);
    const plain = wasmInput();
    const cases: [string, Uint8Array][] = [
      ["random bytes", random],
      [
        "a JSON file",
        te.encode(JSON.stringify({ resourceType: "Patient", id: "p1", active: true }, null, 2)),
      ],
      ["an empty file", new Uint8Array(0)],
      ["magic only", te.encode("PAR1PAR1")],
      [
        "PAR1 at the start, PARE at the end",
        (() => {
          const b = plain.slice();
          b.set(te.encode("PARE"), b.length - 4);
          return b;
        })(),
      ],
    ];
    const setFooterLength = (n: number) => {
      const b = plain.slice();
      new DataView(b.buffer).setUint32(b.length - 8, n, true);
      return b;
    };
    cases.push(
      ["plaintext file, footer length = file size", setFooterLength(plain.length)],
      ["plaintext file, footer length 1 past the first magic", setFooterLength(plain.length - 11)],
      ["plaintext file, footer length 0xffffffff", setFooterLength(0xffffffff)],
    );
    for (const [label, bytes] of cases) {
      await t.step(label, async () => {
        const file = join(dir, `${label.replaceAll(/\W+/g, "_")}.parquet`);
        await Deno.writeFile(file, bytes);
        const e = await rejectsWith(openParquetFile(file), PmeFormatError, { file });
        assert(e.message.includes(file));
        await rejectsWith(decrypt(bytes, "mem", {}), PmeFormatError, { file: "mem" });
      });
    }
    await t.step("plaintext file, footer length pointing inside the data", async () => {
      await rejectsWith(decrypt(setFooterLength(plain.length - 12), "mem", {}), PmeFormatError, {
        file: "mem",
      });
      await rejectsWith(decrypt(setFooterLength(100), "mem", {}), PmeFormatError, { file: "mem" });
    });
  });
});

Deno.test("negative: malformed Thrift is rejected before it can exhaust memory", async (t) => {
  // A compact-protocol map header (size, key/value types) followed by nothing: each bool entry
  // takes one byte on the wire, so 1000 bool→bool entries cannot fit in the remaining bytes.
  // (With a size of 2^31 the same header makes a decoder that reads bools as zero-byte values
  // allocate until the process runs out of memory.)
  const mapField = [0x0b, 0x90, 0x03, 0xe8, 0x07, 0x11]; // field 200: map, 1000 entries, bool → bool
  await t.step("decodeStruct", () => {
    assert.throws(() => decodeStruct(Uint8Array.of(...mapField, 0x00), 0, "test struct"), PmeFormatError);
  });
  await t.step("in the footer of a plaintext file", async () => {
    const plain = wasmInput();
    const footerLen = u32(plain, plain.length - 8);
    const footer = plain.subarray(plain.length - 8 - footerLen, plain.length - 8);
    assert.strictEqual(footer[footer.length - 1], 0x00, "footer ends with STOP");
    const evil = Uint8Array.of(...footer.subarray(0, footer.length - 1), ...mapField, 0x00);
    const bytes = new Uint8Array(plain.length - footerLen + evil.length);
    bytes.set(plain.subarray(0, plain.length - 8 - footerLen));
    bytes.set(evil, plain.length - 8 - footerLen);
    new DataView(bytes.buffer).setUint32(bytes.length - 8, evil.length, true);
    bytes.set(te.encode("PAR1"), bytes.length - 4);
    await rejectsWith(decrypt(bytes, "evil.parquet", {}), PmeFormatError, {
      file: "evil.parquet",
      module: "footer",
    });
  });
});

// ---------------------------------------------------------------------------------------------------
// Bad options

Deno.test("negative: invalid options → PmeConfigError", async (t) => {
  const plain = wasmInput();
  const k15 = testKey(6, 15);
  await t.step("15-byte footer key (encryption)", async () => {
    await rejectsWith(encrypt(plain, { footerKey: k15 }), PmeConfigError);
  });
  await t.step("15-byte column key (encryption)", async () => {
    await rejectsWith(encrypt(plain, { footerKey: KF, columnKeys: { id: { key: k15 } } }), PmeConfigError);
  });
  await t.step("15-byte footer and column keys (decryption)", async () => {
    const enc = await encrypt(plain, { ...UNIFORM, columnKeys: { name: { key: KC1 } } });
    await rejectsWith(decrypt(enc, "k.parquet", { footerKey: k15 }), PmeConfigError, { file: "k.parquet" });
    const e = await rejectsWith(
      decrypt(enc, "k.parquet", { footerKey: KF, columnKeys: { name: k15 } }),
      PmeConfigError,
    );
    assert.match(e.message, /column name/);
    await rejectsWith(
      decrypt(enc, "k.parquet", { keyRetriever: () => Promise.resolve(k15) }),
      PmeConfigError,
    );
  });
  await t.step("unknown column in columnKeys", async () => {
    const e = await rejectsWith(
      encrypt(plain, { footerKey: KF, columnKeys: { nosuch: { key: KC1 } } }),
      PmeConfigError,
    );
    assert.match(e.message, /nosuch/);
  });
  await t.step("overlapping column keys (parent and leaf)", async () => {
    const e = await rejectsWith(
      encrypt(plain, { footerKey: KF, columnKeys: { point: { key: KC1 }, "point.a": { key: KC2 } } }),
      PmeConfigError,
    );
    assert.match(e.message, /point\.a/);
  });
  await t.step("unknown column in the selection", async () => {
    await rejectsWith(transcodeBytes(plain, "p.parquet", {}, { columns: ["id", "nosuch"] }), PmeConfigError);
  });
  await t.step("empty column selection", async () => {
    const e = await rejectsWith(transcodeBytes(plain, "p.parquet", {}, { columns: [] }), PmeError);
    assert(e instanceof PmeConfigError, `${e.name}: ${e.message}`);
  });
  await t.step("AAD prefix not stored but none given", async () => {
    await rejectsWith(encrypt(plain, { footerKey: KF, storeAadPrefix: false }), PmeConfigError);
  });
  await t.step("unknown algorithm", async () => {
    await rejectsWith(
      encrypt(plain, { footerKey: KF, algorithm: "AES_CBC" as EncryptionOptions["algorithm"] }),
      PmeConfigError,
    );
  });
});

Deno.test("an algorithm downgrade in the unauthenticated FileCryptoMetaData is refused with requireAlgorithm", async () => {
  const plain = wasmInput();
  const key = testKey(7);
  const enc = await encrypt(plain, { footerKey: key });
  // Relabel AES_GCM_V1 as AES_GCM_CTR_V1: the union member header right after FileCryptoMetaData's
  // first field header (0x1c: struct, member 1 → 0x2c: struct, member 2).
  const footerLen = new DataView(enc.buffer, enc.byteOffset + enc.length - 8, 4).getUint32(0, true);
  const at = enc.length - 8 - footerLen + 1;
  assert.strictEqual(enc[at], 0x1c);
  const relabelled = enc.slice();
  relabelled[at] = 0x2c;
  const reader = await ParquetReader.open(bytesSource(relabelled, "relabelled"), { footerKey: key });
  assert.strictEqual(reader.algorithm?.algorithm, "AES_GCM_CTR_V1"); // the format cannot tell
  reader.close();
  await rejectsWith(
    ParquetReader.open(bytesSource(relabelled, "relabelled"), {
      footerKey: key,
      requireAlgorithm: "AES_GCM_V1",
    }),
    PmeAuthError,
    { file: "relabelled", module: "footer" },
  );
  // The genuine file passes the same requirement.
  const out = await decrypt(enc, "genuine", { footerKey: key, requireAlgorithm: "AES_GCM_V1" });
  assert.ok(out.length > 0);
});
