/**
 * Encryption round trips over the option grid: algorithm (AES_GCM_V1, AES_GCM_CTR_V1) × footer mode
 * (encrypted "PARE", plaintext+signed "PAR1") × key size (128/192/256) × AAD prefix (none, stored,
 * supplied-only) × column keys (uniform, every column its own key — leaf and parent paths —, partly
 * plaintext). The full grid (108 configurations) runs on two rich inputs (a pyarrow multi-row-group,
 * multi-page file with page index and page CRCs, and a DuckDB nested file with bloom filters); every
 * other generated input gets 6 configurations, spread so that the other inputs together cover the whole
 * grid once more.
 *
 * Every case encrypts a plaintext input, checks that the output really is encrypted (keyless readers
 * fail or see only what the footer mode shows, the magic, the column chunk metadata layout of
 * pme-spec-notes §5, no statistics of encrypted columns in a plaintext footer, no plaintext string
 * values in uniformly encrypted files), checks the AAD-prefix rules (§2.4) and wrong-key failures,
 * decrypts with explicit keys or a key retriever over the stored key metadata, and compares the rows
 * with the original through DuckDB. Partly plaintext files are also decrypted with the footer key only
 * (the keyed columns are skipped and reported), and some cases decrypt a column selection that names a
 * nested parent.
 *
 * Decryption is deterministic, so the plaintext outputs of one input are byte-identical across
 * configurations: a decrypted file whose SHA-256 equals that of a file DuckDB already found equal to
 * the input (over the same columns) is accepted without running DuckDB again. This keeps the ~560
 * comparisons to ~60 DuckDB runs and the file well under 90 s; any output that differs in a single
 * byte is still compared row by row.
 *
 * @module
 */

import assert from "node:assert";
import { join } from "node:path";
import {
  type ColumnKey,
  type DecryptionOptions,
  type EncryptionOptions,
  type KeyRequest,
  openParquetFile,
  type ParquetReader,
  PmeAadPrefixError,
  type PmeAlgorithm,
  PmeAuthError,
  PmeKeyMissingError,
  transcodeFile,
} from "../pme/mod.ts";
import { CC, CCM, CMD, columnChunks, EWCK, OI, PL, rowGroups } from "../pme/metadata.ts";
import { encodeStruct, TStruct } from "../pme/thrift.ts";
import { assertSameRows } from "./fixtures/compare.ts";
import { queryRows, sqlIdent, sqlString, withDuckDB } from "./fixtures/duckdb.ts";
import { allInputs, type InputFile } from "./fixtures/inputs.ts";
import { withTempDir } from "./fixtures/tmp.ts";

const te = new TextEncoder();
const td = new TextDecoder();

// ---------------------------------------------------------------------------------------------------
// The option grid
// ---------------------------------------------------------------------------------------------------

const ALGORITHMS: PmeAlgorithm[] = ["AES_GCM_V1", "AES_GCM_CTR_V1"];
const FOOTERS = ["encrypted", "signed"] as const;
const KEY_BITS = [128, 192, 256] as const;
const AADS = ["none", "stored", "supplied"] as const;
const KEYINGS = ["uniform", "per-column", "partial"] as const;

/** One point of the grid, plus how the decrypting reader gets its keys. */
interface Config {
  index: number;
  algorithm: PmeAlgorithm;
  footer: typeof FOOTERS[number];
  bits: typeof KEY_BITS[number];
  aad: typeof AADS[number];
  keying: typeof KEYINGS[number];
  /** explicit keys; a key retriever over the key metadata; explicit footer key + retriever for columns. */
  keysVia: "explicit" | "retriever" | "mixed";
}

/** The 108 configurations in mixed-radix order (the key source alternates with the index's parity). */
const GRID: Config[] = [];
for (const algorithm of ALGORITHMS) {
  for (const footer of FOOTERS) {
    for (const bits of KEY_BITS) {
      for (const aad of AADS) {
        for (const keying of KEYINGS) {
          const index = GRID.length;
          const keysVia = index % 2 === 0 ? "explicit" : index % 4 === 1 ? "retriever" : "mixed";
          GRID.push({ index, algorithm, footer, bits, aad, keying, keysVia });
        }
      }
    }
  }
}

function label(c: Config): string {
  return `#${c.index} ${c.algorithm} ${c.footer} ${c.bits} aad=${c.aad} ${c.keying} keys=${c.keysVia}`;
}

/** Inputs that run the whole grid. */
const RICH_INPUTS = [
  "pyarrow_v1_snappy_mixeddict_multirg_multipage_pageindex_checksum.parquet",
  "duckdb_types_v1_snappy.parquet",
];
/** Configurations per other input. */
const PER_INPUT = 6;
/** Stride through the grid for the other inputs (coprime with 108, so 108 consecutive cases are distinct). */
const STRIDE = 37;

// ---------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------

function randomKey(bits: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(bits / 8));
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** True when `needle` (non-empty) occurs in `haystack`. */
function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  const last = haystack.length - needle.length;
  for (let i = haystack.indexOf(needle[0]); i >= 0 && i <= last; i = haystack.indexOf(needle[0], i + 1)) {
    let k = 1;
    while (k < needle.length && haystack[i + k] === needle[k]) k++;
    if (k === needle.length) return true;
  }
  return false;
}

async function sha256(file: string): Promise<string> {
  return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", await Deno.readFile(file))));
}

/** A field's encoding (hex), or undefined when absent. */
function fieldBytes(s: TStruct | undefined, id: number): string | undefined {
  const f = s?.field(id);
  return f && hex(encodeStruct(new TStruct([f])));
}

/** A top-level column and its leaves. */
interface Top {
  name: string;
  leaves: string[];
  nested: boolean;
}

/** What the tests need to know about one input. */
interface Subject {
  input: InputFile;
  name: string;
  leaves: string[];
  leafPaths: Map<string, string[]>;
  tops: Top[];
  /** Original column metadata by row group and column. */
  cmds: (TStruct | undefined)[][];
  /** Strings that occur in the input's bytes (values of string columns, leaf names). */
  valueNeedles: string[];
  nameNeedles: string[];
  /** SHA-256 of decrypted outputs already shown (by DuckDB) to hold the input's rows, per column list. */
  verified: Map<string, Set<string>>;
}

async function describe(input: InputFile): Promise<Subject> {
  const r = await openParquetFile(input.file);
  try {
    const leaves = r.columns.map((c) => c.dotted);
    const tops: Top[] = [];
    for (const c of r.columns) {
      const last = tops.at(-1);
      if (last && last.name === c.path[0]) last.leaves.push(c.dotted);
      else tops.push({ name: c.path[0], leaves: [c.dotted], nested: c.path.length > 1 });
    }
    const cmds = rowGroups(r.metadata).map((g) => columnChunks(g).map((ch) => ch.struct(CC.metaData)));
    const bytes = await Deno.readFile(input.file);
    const valueNeedles = (await stringValues(input.file)).filter((s) => contains(bytes, te.encode(s)))
      .sort((a, b) => te.encode(b).length - te.encode(a).length).slice(0, 8);
    const nameNeedles = r.columns.map((c) => c.path.at(-1)!).filter((n) => n.length >= 5)
      .filter((n) => contains(bytes, te.encode(n)));
    return {
      input,
      name: input.file.split("/").slice(-2).join("/"),
      leaves,
      leafPaths: new Map(r.columns.map((c) => [c.dotted, c.path])),
      tops,
      cmds,
      valueNeedles,
      nameNeedles,
      verified: new Map(),
    };
  } finally {
    r.close();
  }
}

/** Distinctive (long, distinct) values of the input's top-level string columns, read by DuckDB. */
async function stringValues(file: string): Promise<string[]> {
  return await withDuckDB(async (conn) => {
    const src = `read_parquet(${sqlString(file)})`;
    const cols = (await queryRows(conn, `DESCRIBE SELECT * FROM ${src}`))
      .filter((r) => r.column_type === "VARCHAR").map((r) => String(r.column_name));
    const out: string[] = [];
    for (const c of cols) {
      const rows = await queryRows(
        conn,
        `SELECT DISTINCT ${sqlIdent(c)} AS v FROM ${src} WHERE length(${sqlIdent(c)}) BETWEEN 6 AND 200
         ORDER BY v LIMIT 500`,
      );
      out.push(...rows.map((r) => String(r.v)));
    }
    return out;
  });
}

/**
 * Asserts that `actual` holds `subject`'s rows (over `columns`, default all). A decrypted output
 * byte-identical to one already compared by DuckDB is accepted without running DuckDB again.
 */
async function assertRows(subject: Subject, actual: string, columns?: string[]): Promise<void> {
  const id = columns?.join(",") ?? "*";
  const hash = await sha256(actual);
  const seen = subject.verified.get(id) ?? new Set();
  if (seen.has(hash)) return;
  await assertSameRows(subject.input.file, actual, columns);
  seen.add(hash);
  subject.verified.set(id, seen);
}

// ---------------------------------------------------------------------------------------------------
// Keys of one case
// ---------------------------------------------------------------------------------------------------

interface LeafKey {
  key: Uint8Array;
  keyMetadata: Uint8Array;
  selector: string;
}

interface Keys {
  footerKey: Uint8Array;
  footerKeyMetadata: Uint8Array;
  /** Writer column keys (undefined: uniform encryption). */
  columnKeys?: Record<string, ColumnKey>;
  /** Key of every keyed leaf. */
  leafKeys: Map<string, LeafKey>;
  /** Key material by hex key metadata, for the retriever. */
  byMetadata: Map<string, Uint8Array>;
  keyedTops: string[];
  plainTops: string[];
  aadPrefix?: Uint8Array;
}

/**
 * Per-column: every top-level column gets its own key — nested ones at even positions through their
 * parent path, the others through one key per leaf path. Partial: every third top-level column (from
 * the second) is keyed, the others stay plaintext.
 */
function makeKeys(s: Subject, c: Config): Keys {
  const footerKey = randomKey(c.bits);
  const footerKeyMetadata = te.encode(`footer-key:${c.index}`);
  const byMetadata = new Map([[hex(footerKeyMetadata), footerKey]]);
  const leafKeys = new Map<string, LeafKey>();
  const keyedTops: string[] = [];
  const plainTops: string[] = [];
  let columnKeys: Record<string, ColumnKey> | undefined;
  const addKey = (selector: string, leaves: string[]) => {
    const key = randomKey(c.bits);
    const keyMetadata = te.encode(`column-key:${selector}`);
    columnKeys![selector] = { key, keyMetadata };
    byMetadata.set(hex(keyMetadata), key);
    for (const leaf of leaves) leafKeys.set(leaf, { key, keyMetadata, selector });
  };
  if (c.keying === "uniform") keyedTops.push(...s.tops.map((t) => t.name));
  else {
    columnKeys = {};
    s.tops.forEach((top, k) => {
      const keyed = c.keying === "per-column" || k % 3 === 1;
      if (!keyed) plainTops.push(top.name);
      else {
        keyedTops.push(top.name);
        if (top.nested && k % 2 === 0) addKey(top.name, top.leaves);
        else for (const leaf of top.leaves) addKey(leaf, [leaf]);
      }
    });
  }
  const aadPrefix = c.aad === "none" ? undefined : te.encode(`fhir-pme/roundtrip/${c.index}`);
  return { footerKey, footerKeyMetadata, columnKeys, leafKeys, byMetadata, keyedTops, plainTops, aadPrefix };
}

function encryptionOptions(c: Config, k: Keys): EncryptionOptions {
  return {
    footerKey: k.footerKey,
    footerKeyMetadata: k.footerKeyMetadata,
    columnKeys: k.columnKeys,
    algorithm: c.algorithm,
    plaintextFooter: c.footer === "signed",
    aadPrefix: k.aadPrefix,
    storeAadPrefix: c.aad === "supplied" ? false : undefined,
  };
}

/** The AAD prefix a reader must supply (supplied-only), or may supply (stored; explicit readers do). */
function readerPrefix(c: Config, k: Keys): Uint8Array | undefined {
  if (c.aad === "supplied") return k.aadPrefix;
  if (c.aad === "stored" && c.keysVia === "explicit") return k.aadPrefix;
  return undefined;
}

/** Decryption options with every key; `requests` records the retriever's calls. */
function decryptionOptions(c: Config, k: Keys, requests: KeyRequest[]): DecryptionOptions {
  const keyRetriever = (meta: Uint8Array, req: KeyRequest) => {
    requests.push(req);
    return Promise.resolve(k.byMetadata.get(hex(meta)));
  };
  const aadPrefix = readerPrefix(c, k);
  const columnKeys = Object.fromEntries([...k.leafKeys].map(([leaf, lk]) => [leaf, lk.key]));
  switch (c.keysVia) {
    case "explicit":
      return { footerKey: k.footerKey, columnKeys, aadPrefix };
    case "retriever":
      return { keyRetriever, aadPrefix };
    case "mixed":
      return { footerKey: k.footerKey, keyRetriever, aadPrefix };
  }
}

// ---------------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------------

type Protection = "none" | "footer-key" | "column-key";

function protection(c: Config, k: Keys, leaf: string): Protection {
  if (c.keying === "uniform") return "footer-key";
  return k.leafKeys.has(leaf) ? "column-key" : "none";
}

/** The reader lists every column with its protection and key metadata. */
function checkColumns(s: Subject, c: Config, k: Keys, r: ParquetReader): void {
  assert.deepStrictEqual(r.columns.map((col) => col.dotted), s.leaves);
  for (const col of r.columns) {
    assert.strictEqual(col.encryption, protection(c, k, col.dotted), `protection of ${col.dotted}`);
    const meta = k.leafKeys.get(col.dotted)?.keyMetadata;
    assert.deepStrictEqual(col.keyMetadata, meta, `key metadata of ${col.dotted}`);
  }
}

/** Algorithm, AAD-prefix storage and footer key metadata as the file declares them. */
function checkAlgorithm(c: Config, k: Keys, r: ParquetReader): void {
  assert.strictEqual(r.mode, c.footer);
  assert(r.algorithm);
  assert.strictEqual(r.algorithm.algorithm, c.algorithm);
  assert.deepStrictEqual(r.algorithm.aadPrefix, c.aad === "stored" ? k.aadPrefix : undefined);
  assert.strictEqual(r.algorithm.supplyAadPrefix, c.aad === "supplied");
  assert.strictEqual(r.algorithm.aadFileUnique.length, 8);
  assert.deepStrictEqual(r.footerKeyMetadata, k.footerKeyMetadata);
}

/**
 * Column chunk metadata layout (pme-spec-notes §5) as stored in the footer: in a plaintext footer the
 * encrypted columns show a redacted ColumnMetaData (no statistics, encoding stats, size statistics)
 * and carry the full one encrypted; plaintext columns keep theirs. In an encrypted footer, column-key
 * columns show no ColumnMetaData at all.
 */
function checkChunkLayout(s: Subject, c: Config, k: Keys, r: ParquetReader): void {
  const groups = rowGroups(r.metadata);
  assert.strictEqual(groups.length, s.cmds.length);
  let plainWithStats = 0;
  groups.forEach((g, rg) => {
    const chunks = columnChunks(g);
    assert.strictEqual(chunks.length, s.leaves.length);
    chunks.forEach((chunk, col) => {
      const leaf = s.leaves[col];
      const where = `row group ${rg} column ${leaf}`;
      const p = protection(c, k, leaf);
      const meta = chunk.struct(CC.metaData);
      const ccm = chunk.struct(CC.cryptoMetadata);
      const encrypted = chunk.bin(CC.encryptedColumnMetadata);
      const orig = s.cmds[rg][col];
      if (p === "none") {
        assert(meta && !ccm && !encrypted, `${where}: plaintext column layout`);
        for (const id of [CMD.statistics, CMD.encodingStats, CMD.sizeStatistics]) {
          assert.strictEqual(fieldBytes(meta, id), fieldBytes(orig, id), `${where}: field ${id} kept`);
        }
        if (meta.has(CMD.statistics)) plainWithStats++;
        return;
      }
      assert(ccm, `${where}: crypto_metadata`);
      const ewck = ccm.struct(CCM.withColumnKey);
      if (p === "footer-key") assert(ccm.has(CCM.withFooterKey) && !ewck, `${where}: footer-key member`);
      else {
        assert(ewck && !ccm.has(CCM.withFooterKey), `${where}: column-key member`);
        const path = ewck.list(EWCK.pathInSchema)?.items.map((b) => td.decode(b as Uint8Array));
        assert.deepStrictEqual(path, s.leafPaths.get(leaf), `${where}: path_in_schema`);
        assert.deepStrictEqual(ewck.bin(EWCK.keyMetadata), k.leafKeys.get(leaf)!.keyMetadata);
      }
      if (c.footer === "signed") {
        assert(meta && encrypted, `${where}: redacted meta_data and encrypted copy`);
        for (const id of [CMD.statistics, CMD.encodingStats, CMD.sizeStatistics, CMD.geospatialStatistics]) {
          assert(!meta.has(id), `${where}: ColumnMetaData field ${id} visible in the plaintext footer`);
        }
      } else if (p === "footer-key") {
        assert(meta && !encrypted, `${where}: footer-key column in encrypted footer keeps meta_data`);
        assert.strictEqual(fieldBytes(meta, CMD.statistics), fieldBytes(orig, CMD.statistics));
      } else {
        assert(!meta && encrypted, `${where}: column-key column hides meta_data`);
      }
    });
  });
  const origStats = s.cmds.flat().some((m) => m?.has(CMD.statistics));
  if (c.keying === "partial" && origStats) assert(plainWithStats > 0, "no plaintext column kept statistics");
}

/** With the keys, encrypted columns' decrypted ColumnMetaData carries the original statistics. */
async function checkDecryptedStats(s: Subject, r: ParquetReader): Promise<void> {
  for (let rg = 0; rg < r.numRowGroups; rg++) {
    for (let col = 0; col < s.leaves.length; col++) {
      const cmd = await r.columnMetaData(rg, col);
      for (const id of [CMD.statistics, CMD.encodingStats, CMD.sizeStatistics]) {
        assert.strictEqual(
          fieldBytes(cmd, id),
          fieldBytes(s.cmds[rg][col], id),
          `row group ${rg} column ${s.leaves[col]}: decrypted field ${id}`,
        );
      }
    }
  }
}

/**
 * Every (decrypted) offset index tiles its chunk's data pages: the first page starts at
 * data_page_offset, each where the previous ends, the last ends at the end of the chunk.
 */
async function checkOffsetIndexes(r: ParquetReader): Promise<void> {
  for (let rg = 0; rg < r.numRowGroups; rg++) {
    for (let col = 0; col < r.columns.length; col++) {
      const oi = await r.offsetIndex(rg, col);
      if (!oi) continue;
      const where = `row group ${rg} column ${r.columns[col].dotted}: offset index`;
      const locs = (oi.list(OI.pageLocations)?.items ?? []) as TStruct[];
      const { start, length } = await r.chunkRange(rg, col);
      let at = (await r.columnMetaData(rg, col)).int(CMD.dataPageOffset)!;
      for (const [i, pl] of locs.entries()) {
        assert.strictEqual(pl.int(PL.offset), at, `${where}: page ${i} offset`);
        at += pl.int(PL.compressedPageSize)!;
      }
      if (locs.length) assert.strictEqual(at, start + length, `${where}: pages end at the chunk end`);
    }
  }
}

async function magic(file: string): Promise<{ head: string; tail: string; bytes: Uint8Array }> {
  const bytes = await Deno.readFile(file);
  return { head: td.decode(bytes.subarray(0, 4)), tail: td.decode(bytes.subarray(bytes.length - 4)), bytes };
}

async function opens(file: string, options: DecryptionOptions): Promise<void> {
  (await openParquetFile(file, options)).close();
}

// ---------------------------------------------------------------------------------------------------
// One case
// ---------------------------------------------------------------------------------------------------

interface CaseOptions {
  /** Also decrypt a column selection naming a nested parent. */
  selection: boolean;
}

async function runCase(s: Subject, c: Config, dir: string, opts: CaseOptions): Promise<void> {
  const k = makeKeys(s, c);
  const enc = join(dir, `case-${c.index}.enc.parquet`);
  const dec = join(dir, `case-${c.index}.dec.parquet`);
  const part = join(dir, `case-${c.index}.part.parquet`);
  const sel = join(dir, `case-${c.index}.sel.parquet`);
  try {
    // Encrypt.
    const written = await transcodeFile(s.input.file, enc, {}, {
      encryption: encryptionOptions(c, k),
      durable: false,
    });
    assert.deepStrictEqual(written.columns, s.leaves);
    assert.deepStrictEqual(written.skippedColumns, []);
    assert.strictEqual(written.rows, s.input.rows);

    // It is encrypted: magic, keyless readers.
    const { head, tail, bytes } = await magic(enc);
    const expectedMagic = c.footer === "encrypted" ? "PARE" : "PAR1";
    assert.strictEqual(tail, expectedMagic);
    assert.strictEqual(head, expectedMagic);
    const prefix = c.aad === "supplied" ? k.aadPrefix : undefined;
    await assert.rejects(openParquetFile(enc, { aadPrefix: prefix }), PmeKeyMissingError);
    if (c.footer === "signed") {
      const keyless = await openParquetFile(enc, { aadPrefix: prefix, checkFooterIntegrity: false });
      try {
        checkAlgorithm(c, k, keyless);
        assert.strictEqual(keyless.signatureVerified, undefined);
        assert.strictEqual(keyless.hasFooterKey, false);
        checkColumns(s, c, k, keyless);
        checkChunkLayout(s, c, k, keyless);
        for (const col of keyless.columns) {
          assert.strictEqual(await keyless.canRead(col.index), col.encryption === "none", col.dotted);
        }
      } finally {
        keyless.close();
      }
    }

    // Leak check: no string value of the input (and, with an encrypted footer, no column name).
    if (c.keying === "uniform") {
      for (const v of s.valueNeedles) {
        assert(!contains(bytes, te.encode(v)), `value ${JSON.stringify(v)} leaks`);
      }
      if (c.footer === "encrypted") {
        for (const n of s.nameNeedles) assert(!contains(bytes, te.encode(n)), `column name ${n} leaks`);
      }
    }

    // AAD prefix rules and wrong keys.
    const footerOnly = { footerKey: k.footerKey, aadPrefix: prefix };
    const wrongPrefix = te.encode("some other prefix");
    if (c.aad === "supplied") {
      await assert.rejects(opens(enc, { footerKey: k.footerKey }), PmeAadPrefixError);
      await assert.rejects(opens(enc, { footerKey: k.footerKey, aadPrefix: wrongPrefix }), PmeAuthError);
    } else {
      await assert.rejects(opens(enc, { footerKey: k.footerKey, aadPrefix: wrongPrefix }), PmeAadPrefixError);
    }
    await assert.rejects(opens(enc, { footerKey: randomKey(c.bits), aadPrefix: prefix }), PmeAuthError);

    // The keyed reader sees the declared layout and, with a plaintext footer, the original statistics.
    const requests: KeyRequest[] = [];
    const options = decryptionOptions(c, k, requests);
    const keyed = await openParquetFile(enc, options);
    try {
      checkAlgorithm(c, k, keyed);
      assert.strictEqual(keyed.signatureVerified, c.footer === "signed" ? true : undefined);
      checkColumns(s, c, k, keyed);
      if (c.footer === "encrypted") checkChunkLayout(s, c, k, keyed);
      else await checkDecryptedStats(s, keyed);
      await checkOffsetIndexes(keyed);
    } finally {
      keyed.close();
    }

    // Decrypt everything and compare rows.
    requests.length = 0;
    const plain = await transcodeFile(enc, dec, options, { durable: false });
    assert.deepStrictEqual(plain.columns, s.leaves);
    assert.deepStrictEqual(plain.skippedColumns, []);
    const { tail: decTail } = await magic(dec);
    assert.strictEqual(decTail, "PAR1");
    const decReader = await openParquetFile(dec);
    assert.strictEqual(decReader.mode, "plaintext");
    decReader.close();
    await assertRows(s, dec);
    if (c.keysVia !== "explicit") {
      // The retriever was asked for the footer key (retriever mode) and for every column key, by path.
      const footerRequests = requests.filter((r) => r.kind === "footer").length;
      assert.strictEqual(footerRequests, c.keysVia === "retriever" ? 1 : 0);
      const asked = new Set(requests.filter((r) => r.kind === "column").map((r) => r.column));
      assert.deepStrictEqual([...asked].sort(), [...k.leafKeys.keys()].sort());
    }

    // Partly plaintext: the footer key alone gives exactly the plaintext columns.
    if (c.keying === "partial") {
      const plainLeaves = s.leaves.filter((l) => !k.leafKeys.has(l));
      const got = await transcodeFile(enc, part, footerOnly, { durable: false });
      assert.deepStrictEqual(got.skippedColumns, [...k.leafKeys.keys()]);
      assert.deepStrictEqual(got.columns, plainLeaves);
      await assertRows(s, part, k.plainTops);
      await assert.rejects(
        transcodeFile(enc, part, footerOnly, { columns: [k.keyedTops[0]], durable: false }),
        PmeKeyMissingError,
      );
      if (c.footer === "signed") {
        // A reader without any key (no footer verification) reads the same plaintext columns.
        const got2 = await transcodeFile(enc, part, { aadPrefix: prefix, checkFooterIntegrity: false }, {
          durable: false,
        });
        assert.deepStrictEqual(got2.skippedColumns, [...k.leafKeys.keys()]);
        await assertRows(s, part, k.plainTops);
      }
    }

    // Column selection with a nested parent path.
    if (opts.selection) {
      const parent = s.tops.find((t) => t.nested && t.leaves.length > 1) ?? s.tops.find((t) => t.nested);
      const other = s.tops.find((t) => t !== parent)!;
      const tops = parent ? [other.name, parent.name] : s.tops.slice(0, 2).map((t) => t.name);
      const want = s.leaves.filter((l) => tops.some((t) => l === t || l.startsWith(t + ".")));
      const got = await transcodeFile(enc, sel, options, { columns: tops, durable: false });
      assert.deepStrictEqual(got.columns, want);
      const r = await openParquetFile(sel);
      assert.deepStrictEqual(r.columns.map((col) => col.dotted), want);
      r.close();
      await assertRows(s, sel, s.tops.filter((t) => tops.includes(t.name)).map((t) => t.name));
    }
  } finally {
    for (const f of [enc, dec, part, sel]) await Deno.remove(f).catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------

Deno.test("roundtrip: every encryption option combination decrypts to the original rows", async (t) => {
  await withTempDir(async (dir) => {
    const inputs = await allInputs(join(dir, "inputs"));
    const subjects: Subject[] = [];
    for (const input of inputs) subjects.push(await describe(input));
    const rich = RICH_INPUTS.map((name) => {
      const s = subjects.find((x) => x.input.file.endsWith(`/${name}`));
      assert(s, `rich input ${name} missing (pyarrow inputs need the venv: deno task bootstrap)`);
      return s;
    });
    assert(rich[0].input.features.includes("page-crc") && rich[0].input.features.includes("multi-page"));
    assert(rich[1].input.features.includes("bloom") && rich[1].input.features.includes("nested"));
    for (const s of rich) assert(s.valueNeedles.length > 0, `${s.name}: no string value found in its bytes`);
    const others = subjects.filter((s) => !rich.includes(s));
    const work = join(dir, "work");
    await Deno.mkdir(work);

    for (const s of rich) {
      await t.step(`full grid: ${s.name}`, async (t) => {
        for (const c of GRID) {
          await t.step(
            label(c),
            () => runCase(s, c, work, { selection: c.bits === 256 && c.keying !== "uniform" }),
          );
        }
      });
    }

    const covered = new Set<number>();
    await t.step("rotating subset: other inputs", async (t) => {
      for (const [i, s] of others.entries()) {
        await t.step(s.name, async (t) => {
          for (let j = 0; j < PER_INPUT; j++) {
            const c = GRID[((i * PER_INPUT + j) * STRIDE) % GRID.length];
            covered.add(c.index);
            await t.step(label(c), () => runCase(s, c, work, { selection: j === 0 }));
          }
        });
      }
    });
    // Across the other inputs every configuration (hence every option value) appears.
    if (others.length * PER_INPUT >= GRID.length) assert.strictEqual(covered.size, GRID.length);
    const dimensions: [keyof Config, readonly unknown[]][] = [
      ["algorithm", ALGORITHMS],
      ["footer", FOOTERS],
      ["bits", KEY_BITS],
      ["aad", AADS],
      ["keying", KEYINGS],
      ["keysVia", ["explicit", "retriever", "mixed"]],
    ];
    for (const [field, values] of dimensions) {
      for (const v of values) {
        assert(
          [...covered].some((ix) => GRID[ix][field] === v),
          `${field}=${v} not covered by the other inputs`,
        );
      }
    }
  });
});
