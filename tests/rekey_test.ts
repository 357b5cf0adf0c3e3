/**
 * Re-keying with `transcodeFile(encryptedIn, out, oldDecryption, { encryption: newOptions })`.
 *
 * Each input goes through the chain plaintext → PME (A) → PME (B) → PME (C) → plaintext, where every
 * PME → PME step changes the footer key, the column keys (keyed ↔ plaintext ↔ footer-key columns), the
 * algorithm (GCM ↔ CTR), the footer mode (PARE ↔ PAR1) and the AAD prefix (stored → supplied-only →
 * none). After every step: the new keys decrypt to the original rows (DuckDB), the previous footer key
 * fails authentication, a column moved to a new column key cannot be read with the new footer key alone
 * (nor with its old column key), `aad_file_unique` is fresh, and the row groups, pages, page headers,
 * page payloads, column indexes and bloom filters are the original ones (nothing decoded or
 * re-compressed). The final plaintext file's pages equal the original's byte for byte. A re-key whose
 * decryption lacks some column keys skips and reports exactly those columns.
 *
 * A re-key never writes a column encrypted in the input in plaintext unless `decryptColumns` names it
 * (`PmeProtectionError` naming the columns, nothing written; with column keys and with uniform
 * inputs), named columns (leaf or parent paths) are the only plaintext ones, also next to uniform
 * encryption, and contradictory or unknown names are config errors. A re-key to a plaintext footer
 * shows no statistics and no unknown ColumnMetaData fields of encrypted columns.
 *
 * @module
 */

import assert from "node:assert";
import { join } from "node:path";
import {
  decodeStruct,
  type DecryptionOptions,
  encodeStruct,
  type EncryptionOptions,
  openParquetFile,
  type Page,
  type ParquetReader,
  PmeAadPrefixError,
  PmeAuthError,
  PmeKeyMissingError,
  transcodeFile,
} from "../pme/mod.ts";
import { CC, CMD, columnChunks, OI, PL, RG, rowGroups } from "../pme/metadata.ts";
import type { TStruct } from "../pme/thrift.ts";
import { assertSameRows } from "./fixtures/compare.ts";
import { allInputs, type InputFile, MIXED_LEAVES, writeMixedInput } from "./fixtures/inputs.ts";
import { withTempDir } from "./fixtures/tmp.ts";

const te = new TextEncoder();
const td = new TextDecoder();

/** Inputs that go through the chain: V1 and V2 pages with CRCs and page indexes, nested + bloom, arrow-rs V2. */
const CHAIN_INPUTS = [
  "pyarrow_v1_snappy_mixeddict_multirg_multipage_pageindex_checksum.parquet",
  "pyarrow_v2_zstd_dict_multirg_multipage_pageindex_checksum.parquet",
  "duckdb_types_v1_snappy.parquet",
  "wasm_v2_gzip_dict_fallback.parquet",
];

function randomKey(bytes: 16 | 24 | 32): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(bytes));
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

async function tailMagic(file: string): Promise<string> {
  const bytes = await Deno.readFile(file);
  return td.decode(bytes.subarray(bytes.length - 4));
}

/** A top-level column and its leaves. */
interface Top {
  name: string;
  leaves: string[];
  nested: boolean;
}

/** What is compared after every step, read from the original plaintext file. */
interface Original {
  input: InputFile;
  leaves: string[];
  tops: Top[];
  rowGroupRows: number[];
  /** Pages by row group and column. */
  pages: Page[][][];
  columnIndexes: (Uint8Array | undefined)[][];
  /** Offset index first_row_index lists. */
  firstRows: (number[] | undefined)[][];
  blooms: (string | undefined)[][];
}

async function readPages(r: ParquetReader, rg: number, col: number): Promise<Page[]> {
  const out: Page[] = [];
  for await (const p of r.pages(rg, col)) out.push(p);
  return out;
}

function firstRows(oi: TStruct | undefined): number[] | undefined {
  return (oi?.list(OI.pageLocations)?.items as TStruct[] | undefined)?.map((pl) => pl.int(PL.firstRowIndex)!);
}

async function bloomHex(r: ParquetReader, rg: number, col: number): Promise<string | undefined> {
  const bf = await r.bloomFilter(rg, col);
  return bf && `${hex(bf.header)}/${hex(bf.bitset)}`;
}

async function readOriginal(input: InputFile): Promise<Original> {
  const r = await openParquetFile(input.file);
  try {
    const tops: Top[] = [];
    for (const c of r.columns) {
      const last = tops.at(-1);
      if (last && last.name === c.path[0]) last.leaves.push(c.dotted);
      else tops.push({ name: c.path[0], leaves: [c.dotted], nested: c.path.length > 1 });
    }
    const o: Original = {
      input,
      leaves: r.columns.map((c) => c.dotted),
      tops,
      rowGroupRows: [],
      pages: [],
      columnIndexes: [],
      firstRows: [],
      blooms: [],
    };
    for (let rg = 0; rg < r.numRowGroups; rg++) {
      o.pages.push([]);
      o.columnIndexes.push([]);
      o.firstRows.push([]);
      o.blooms.push([]);
      for (let col = 0; col < r.columns.length; col++) {
        o.pages[rg].push(await readPages(r, rg, col));
        o.columnIndexes[rg].push(await r.columnIndex(rg, col));
        o.firstRows[rg].push(firstRows(await r.offsetIndex(rg, col)));
        o.blooms[rg].push(await bloomHex(r, rg, col));
      }
    }
    o.rowGroupRows = rowGroups(r.metadata).map((g) => g.int(RG.numRows) ?? -1);
    return o;
  } finally {
    r.close();
  }
}

/**
 * Asserts that `file` (opened with `options`) holds the original's row groups and, per column chunk,
 * the original pages — same count, types, header fields and payload bytes (decrypted) — and the same
 * column index, offset-index row starts and bloom filter.
 */
async function assertSameModules(o: Original, file: string, options: DecryptionOptions): Promise<void> {
  const r = await openParquetFile(file, options);
  try {
    assert.strictEqual(r.numRowGroups, o.pages.length, "row group count");
    assert.deepStrictEqual(
      rowGroups(r.metadata).map((g) => g.int(RG.numRows) ?? -1),
      o.rowGroupRows,
      "rows per row group",
    );
    assert.deepStrictEqual(r.columns.map((c) => c.dotted), o.leaves);
    for (let rg = 0; rg < r.numRowGroups; rg++) {
      for (let col = 0; col < r.columns.length; col++) {
        const where = `row group ${rg} column ${o.leaves[col]}`;
        const want = o.pages[rg][col];
        const got = await readPages(r, rg, col);
        assert.strictEqual(got.length, want.length, `${where}: page count`);
        got.forEach((p, i) => {
          assert.strictEqual(p.type, want[i].type, `${where} page ${i}: type`);
          assert.strictEqual(p.ordinal, want[i].ordinal, `${where} page ${i}: ordinal`);
          assert(sameBytes(p.payload, want[i].payload), `${where} page ${i}: payload bytes differ`);
        });
        const ci = await r.columnIndex(rg, col);
        assert.strictEqual(ci && hex(ci), o.columnIndexes[rg][col] && hex(o.columnIndexes[rg][col]!), where);
        const oi = await r.offsetIndex(rg, col);
        assert.deepStrictEqual(firstRows(oi), o.firstRows[rg][col], where);
        if (oi) await assertOffsetIndexFits(r, rg, col, oi);
        assert.strictEqual(await bloomHex(r, rg, col), o.blooms[rg][col], `${where}: bloom filter`);
      }
    }
  } finally {
    r.close();
  }
}

/**
 * The offset index's page locations tile the column chunk's data pages: the first starts at
 * data_page_offset, each starts where the previous ends, the last ends at the end of the chunk.
 */
async function assertOffsetIndexFits(r: ParquetReader, rg: number, col: number, oi: TStruct): Promise<void> {
  const where = `row group ${rg} column ${r.columns[col].dotted}: offset index`;
  const locs = (oi.list(OI.pageLocations)?.items ?? []) as TStruct[];
  const cmd = await r.columnMetaData(rg, col);
  const { start, length } = await r.chunkRange(rg, col);
  let at = cmd.int(CMD.dataPageOffset)!;
  for (const [i, pl] of locs.entries()) {
    assert.strictEqual(pl.int(PL.offset), at, `${where}: page ${i} offset`);
    at += pl.int(PL.compressedPageSize)!;
  }
  if (locs.length) assert.strictEqual(at, start + length, `${where}: pages end at the chunk end`);
}

/** One file of the chain and the options that decrypt it. */
interface Stage {
  name: string;
  file: string;
  encryption?: EncryptionOptions;
  /** Columns encrypted in the previous stage that this one writes in plaintext on purpose. */
  decryptColumns?: string[];
  decryption: DecryptionOptions;
}

async function aadFileUnique(stage: Stage): Promise<string | undefined> {
  const r = await openParquetFile(stage.file, stage.decryption);
  try {
    return r.algorithm && hex(r.algorithm.aadFileUnique);
  } finally {
    r.close();
  }
}

/** Column keys by leaf for a reader, from writer column keys (leaf or parent selectors). */
function leafKeys(o: Original, enc: EncryptionOptions): Record<string, Uint8Array> {
  const out: Record<string, Uint8Array> = {};
  for (const [sel, ck] of Object.entries(enc.columnKeys ?? {})) {
    for (const leaf of o.leaves) if (leaf === sel || leaf.startsWith(sel + ".")) out[leaf] = ck.key;
  }
  return out;
}

function decryptionFor(o: Original, enc: EncryptionOptions): DecryptionOptions {
  return {
    footerKey: enc.footerKey,
    columnKeys: leafKeys(o, enc),
    aadPrefix: enc.storeAadPrefix === false ? enc.aadPrefix : undefined,
  };
}

/** Leaves under a selector. */
function under(o: Original, sel: string): string[] {
  return o.leaves.filter((l) => l === sel || l.startsWith(sel + "."));
}

async function runChain(t: Deno.TestContext, o: Original, dir: string): Promise<void> {
  const flat = o.tops.filter((x) => !x.nested);
  const nested = o.tops.find((x) => x.nested && x.leaves.length > 1) ?? o.tops.find((x) => x.nested);
  assert(flat.length >= 4 && nested, "input needs four flat columns and a nested one");
  // Column roles: `a` keyed in A and B (new key in B); `b` (a parent) keyed in A and B (new key in B);
  // `c` plaintext in A, keyed in B; `d` keyed in A, plaintext in B. C is uniform.
  const [a, c, d] = [flat[1].name, flat[2].name, flat[3].name];
  const b = nested.name;
  const p = (name: string) => join(dir, name);

  const encA: EncryptionOptions = {
    footerKey: randomKey(16),
    footerKeyMetadata: te.encode("kf-A"),
    columnKeys: {
      [a]: { key: randomKey(16), keyMetadata: te.encode("ka-A") },
      [b]: { key: randomKey(16), keyMetadata: te.encode("kb-A") },
      [d]: { key: randomKey(16) },
    },
    algorithm: "AES_GCM_V1",
    aadPrefix: te.encode("rekey/A"),
  };
  const encB: EncryptionOptions = {
    footerKey: randomKey(32),
    footerKeyMetadata: te.encode("kf-B"),
    columnKeys: {
      [a]: { key: randomKey(32), keyMetadata: te.encode("ka-B") },
      [b]: { key: randomKey(24) },
      [c]: { key: randomKey(32), keyMetadata: te.encode("kc-B") },
    },
    algorithm: "AES_GCM_CTR_V1",
    plaintextFooter: true,
    aadPrefix: te.encode("rekey/B"),
    storeAadPrefix: false,
    pageV2Framing: "levels-plaintext",
  };
  const encC: EncryptionOptions = { footerKey: randomKey(24), algorithm: "AES_GCM_V1" };

  const plain: Stage = { name: "plaintext", file: o.input.file, decryption: {} };
  const A: Stage = { name: "A", file: p("A.parquet"), encryption: encA, decryption: decryptionFor(o, encA) };
  const B: Stage = {
    name: "B",
    file: p("B.parquet"),
    encryption: encB,
    decryptColumns: [d],
    decryption: decryptionFor(o, encB),
  };
  const C: Stage = { name: "C", file: p("C.parquet"), encryption: encC, decryption: decryptionFor(o, encC) };
  const F: Stage = { name: "final plaintext", file: p("F.parquet"), decryption: {} };

  /** Re-keys `from` into `to` and checks what every step must keep. */
  const step = async (from: Stage, to: Stage) => {
    const res = await transcodeFile(from.file, to.file, from.decryption, {
      encryption: to.encryption,
      decryptColumns: to.decryptColumns,
      durable: false,
    });
    assert.deepStrictEqual(res.skippedColumns, []);
    assert.deepStrictEqual(res.columns, o.leaves);
    assert.strictEqual(res.rows, o.input.rows);
    assert.strictEqual(res.rowGroups, o.pages.length);
    const enc = to.encryption;
    assert.strictEqual(await tailMagic(to.file), enc && !enc.plaintextFooter ? "PARE" : "PAR1");
    if (!enc) {
      const r = await openParquetFile(to.file);
      assert.strictEqual(r.mode, "plaintext");
      r.close();
    }
    // The new keys decrypt to the original rows.
    const dec = p(`${to.name}.decrypted.parquet`);
    await transcodeFile(to.file, dec, to.decryption, { durable: false });
    await assertSameRows(o.input.file, dec);
    await Deno.remove(dec);
    // Same row groups, pages, payloads, indexes and bloom filters.
    await assertSameModules(o, to.file, to.decryption);
    // A fresh file AAD.
    const before = await aadFileUnique(from);
    const after = await aadFileUnique(to);
    if (enc) assert(after && after.length === 16, "aad_file_unique");
    if (before && after) assert.notStrictEqual(after, before, "aad_file_unique was reused");
    // The old footer key no longer opens the file.
    if (from.encryption && enc) {
      const stale = { ...to.decryption, footerKey: from.encryption.footerKey };
      await assert.rejects(openParquetFile(to.file, stale), PmeAuthError);
    }
  };

  await t.step(
    "plaintext → PME (GCM, PARE, stored AAD prefix, column keys + plaintext columns)",
    async () => {
      await step(plain, A);
      const r = await openParquetFile(A.file, A.decryption);
      try {
        assert.strictEqual(r.mode, "encrypted");
        assert.strictEqual(r.algorithm?.algorithm, "AES_GCM_V1");
        assert.deepStrictEqual(r.algorithm?.aadPrefix, encA.aadPrefix);
        const enc = Object.fromEntries(r.columns.map((col) => [col.dotted, col.encryption]));
        for (const leaf of [a, ...under(o, b), d]) assert.strictEqual(enc[leaf], "column-key", leaf);
        assert.strictEqual(enc[c], "none");
      } finally {
        r.close();
      }
    },
  );

  await t.step("missing column keys: the re-key skips and reports exactly those columns", async () => {
    const out = p("A-partial.parquet");
    const dec = p("A-partial.decrypted.parquet");
    const missing = [a, ...under(o, b)];
    const newKey = randomKey(16);
    // The decryption has the footer key and d's key, but not a's or b's.
    const partialKeys = { footerKey: encA.footerKey, columnKeys: { [d]: encA.columnKeys![d].key } };
    const res = await transcodeFile(A.file, out, partialKeys, {
      encryption: { footerKey: newKey, algorithm: "AES_GCM_CTR_V1" },
      durable: false,
    });
    assert.deepStrictEqual(res.skippedColumns, missing);
    assert.deepStrictEqual(res.columns, o.leaves.filter((l) => !missing.includes(l)));
    // What is left decrypts (with the new key) to the original rows of the other columns.
    await transcodeFile(out, dec, { footerKey: newKey }, { durable: false });
    await assertSameRows(o.input.file, dec, o.tops.map((x) => x.name).filter((n) => n !== a && n !== b));
    await Deno.remove(out);
    await Deno.remove(dec);
    // Asking for a column whose key is missing fails instead of skipping it.
    await assert.rejects(
      transcodeFile(A.file, out, partialKeys, {
        columns: [a],
        encryption: { footerKey: newKey },
        durable: false,
      }),
      PmeKeyMissingError,
    );
  });

  await t.step(
    "PME → PME: new footer and column keys, GCM → CTR, PARE → PAR1, supplied-only AAD",
    async () => {
      await step(A, B);
      const r = await openParquetFile(B.file, B.decryption);
      try {
        assert.strictEqual(r.mode, "signed");
        assert.strictEqual(r.signatureVerified, true);
        assert.strictEqual(r.algorithm?.algorithm, "AES_GCM_CTR_V1");
        assert.strictEqual(r.algorithm?.supplyAadPrefix, true);
        assert.strictEqual(r.algorithm?.aadPrefix, undefined);
        const byLeaf = Object.fromEntries(r.columns.map((col) => [col.dotted, col]));
        for (const leaf of [a, ...under(o, b), c]) {
          assert.strictEqual(
            byLeaf[leaf].encryption,
            "column-key",
            leaf,
          );
        }
        assert.strictEqual(byLeaf[d].encryption, "none", `${d} is plaintext after the re-key`);
        assert.deepStrictEqual(byLeaf[a].keyMetadata, te.encode("ka-B"));
      } finally {
        r.close();
      }
      // The supplied-only prefix is required, and the old one is wrong.
      await assert.rejects(openParquetFile(B.file, { footerKey: encB.footerKey }), PmeAadPrefixError);
      await assert.rejects(
        openParquetFile(B.file, { footerKey: encB.footerKey, aadPrefix: encA.aadPrefix }),
        PmeAuthError,
      );
      // With only the new footer key, a column moved to a new column key is not readable...
      const col = o.leaves.indexOf(a);
      const footerOnly = await openParquetFile(B.file, {
        footerKey: encB.footerKey,
        aadPrefix: encB.aadPrefix,
      });
      try {
        assert.strictEqual(await footerOnly.canRead(col), false);
        await assert.rejects(readPages(footerOnly, 0, col), PmeKeyMissingError);
        assert.strictEqual(await footerOnly.canRead(o.leaves.indexOf(d)), true);
      } finally {
        footerOnly.close();
      }
      // ...nor with its old column key...
      const stale = await openParquetFile(B.file, {
        footerKey: encB.footerKey,
        aadPrefix: encB.aadPrefix,
        columnKeys: { [a]: encA.columnKeys![a].key },
      });
      try {
        await assert.rejects(readPages(stale, 0, col), PmeAuthError);
      } finally {
        stale.close();
      }
      // ...but with the new one it is, and its pages are the original ones.
      const fresh = await openParquetFile(B.file, {
        footerKey: encB.footerKey,
        aadPrefix: encB.aadPrefix,
        columnKeys: { [a]: encB.columnKeys![a].key },
      });
      try {
        assert.strictEqual(await fresh.canRead(col), true);
        const got = await readPages(fresh, 0, col);
        assert.strictEqual(got.length, o.pages[0][col].length);
        got.forEach((pg, i) => assert(sameBytes(pg.payload, o.pages[0][col][i].payload)));
      } finally {
        fresh.close();
      }
      // The old footer key fails even with the right AAD prefix (also checked in step()).
      await assert.rejects(
        openParquetFile(B.file, { footerKey: encA.footerKey, aadPrefix: encB.aadPrefix }),
        PmeAuthError,
      );
    },
  );

  await t.step("PME → PME: uniform footer key, CTR → GCM, PAR1 → PARE, no AAD prefix", async () => {
    await step(B, C);
    const r = await openParquetFile(C.file, C.decryption);
    try {
      assert.strictEqual(r.mode, "encrypted");
      assert.strictEqual(r.algorithm?.algorithm, "AES_GCM_V1");
      assert.strictEqual(r.algorithm?.supplyAadPrefix, false);
      assert.strictEqual(r.algorithm?.aadPrefix, undefined);
      for (const col of r.columns) assert.strictEqual(col.encryption, "footer-key", col.dotted);
    } finally {
      r.close();
    }
    await assert.rejects(openParquetFile(C.file, { footerKey: encB.footerKey }), PmeAuthError);
    await assert.rejects(
      openParquetFile(C.file, { footerKey: encC.footerKey, aadPrefix: encB.aadPrefix }),
      PmeAadPrefixError,
    );
    await assert.rejects(openParquetFile(C.file, {}), PmeKeyMissingError);
  });

  await t.step("PME → plaintext: every page header and payload equals the original's", async () => {
    await step(C, F);
    const r = await openParquetFile(F.file);
    const orig = await openParquetFile(o.input.file);
    try {
      assert.strictEqual(r.mode, "plaintext");
      assert.strictEqual(r.algorithm, undefined);
      for (let rg = 0; rg < r.numRowGroups; rg++) {
        for (let col = 0; col < r.columns.length; col++) {
          const got = await readPages(r, rg, col);
          const want = await readPages(orig, rg, col);
          assert.strictEqual(got.length, want.length);
          got.forEach((pg, i) => {
            const where = `row group ${rg} column ${o.leaves[col]} page ${i}`;
            assert(sameBytes(pg.payload, want[i].payload), `${where}: payload`);
            assert(sameBytes(encodeStruct(pg.header), encodeStruct(want[i].header)), `${where}: header`);
          });
        }
      }
    } finally {
      r.close();
      orig.close();
    }
  });

  await t.step("PME → plaintext directly, from a PAR1 (signed) file", async () => {
    const out = p("B-plain.parquet");
    await step(B, { name: "B-plain", file: out, decryption: {} });
    assert.strictEqual(await tailMagic(out), "PAR1");
  });
}

Deno.test("rekey: PME → PME, plaintext → PME and PME → plaintext keep rows, pages and indexes", async (t) => {
  await withTempDir(async (dir) => {
    const inputs = await allInputs(join(dir, "inputs"));
    for (const name of CHAIN_INPUTS) {
      const input = inputs.find((i) => i.file.endsWith(`/${name}`));
      assert(input, `input ${name} missing (pyarrow inputs need the venv: deno task bootstrap)`);
      await t.step(name, async (t) => {
        const work = join(dir, name.replace(/\.parquet$/, ""));
        await Deno.mkdir(work);
        await runChain(t, await readOriginal(input), work);
      });
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// A re-key never writes an encrypted column in plaintext unless the caller names it

/** Leaves of the small DuckDB input written by {@link writeSmallInput}. */
const SMALL_LEAVES = MIXED_LEAVES;

/** 3000 rows in 2 row groups with statistics: ints, strings with nulls, a struct and a list. */
const writeSmallInput = (file: string) => writeMixedInput(file, 3000);

/** Protection of each leaf of `file`: "none", "footer-key" or "column-key". */
async function protectionOf(file: string, options: DecryptionOptions): Promise<Record<string, string>> {
  const r = await openParquetFile(file, options);
  try {
    return Object.fromEntries(r.columns.map((c) => [c.dotted, c.encryption]));
  } finally {
    r.close();
  }
}

/** Names of the entries of `dir`, sorted. */
async function listDir(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

/** Awaits a rejection and returns the error. */
async function rejection(p: Promise<unknown>): Promise<Error & Record<string, unknown>> {
  try {
    await p;
  } catch (e) {
    return e as Error & Record<string, unknown>;
  }
  throw new assert.AssertionError({ message: "expected a rejection, the promise resolved" });
}

Deno.test("rekey: a column encrypted in the input is never written in plaintext unless named in decryptColumns", async (t) => {
  await withTempDir(async (dir) => {
    const input = join(dir, "input.parquet");
    await writeSmallInput(input);
    const kf = randomKey(16);
    const kc = randomKey(32);
    // Every column under a column key ("fully encrypted"), and the uniform variant.
    const full = join(dir, "full.parquet");
    await transcodeFile(input, full, {}, {
      encryption: {
        footerKey: kf,
        footerKeyMetadata: te.encode("kf"),
        columnKeys: Object.fromEntries(
          ["id", "name", "amount", "coding", "tags"].map((
            c,
          ) => [c, { key: kc, keyMetadata: te.encode("kc") }]),
        ),
      },
      durable: false,
    });
    const uniform = join(dir, "uniform.parquet");
    await transcodeFile(input, uniform, {}, { encryption: { footerKey: kf }, durable: false });
    const fullKeys: DecryptionOptions = {
      footerKey: kf,
      columnKeys: Object.fromEntries(SMALL_LEAVES.map((l) => [l, kc])),
    };
    const nf = randomKey(16);
    const nc = randomKey(16);
    const oneColumnKey: EncryptionOptions = { footerKey: nf, columnKeys: { name: { key: nc } } };
    const out = join(dir, "out", "rekeyed.parquet");
    await Deno.mkdir(join(dir, "out"));

    for (
      const [label, file, keys] of [["column keys", full, fullKeys], ["uniform", uniform, {
        footerKey: kf,
      }]] as const
    ) {
      await t.step(
        `${label}: one new column key → refused, the other columns named, nothing written`,
        async () => {
          const e = await rejection(
            transcodeFile(file, out, keys, { encryption: oneColumnKey, durable: false }),
          );
          assert.strictEqual(e.name, "PmeProtectionError", e.message);
          const others = SMALL_LEAVES.filter((l) => l !== "name");
          assert.deepStrictEqual(e.columns, others);
          assert.match(e.message, /id, amount, coding\.code, coding\.n, tags\.list\.element/);
          assert.match(e.message, /columnKeys/);
          assert.match(e.message, /decryptColumns/);
          assert.match(e.message, new RegExp(file.replaceAll(".", "\\.")));
          assert.strictEqual(e.retryable, false);
          assert.deepStrictEqual(await listDir(join(dir, "out")), [], "no output, no temporary file");
          // Naming some of them is not enough: the rest are still named.
          const partly = await rejection(
            transcodeFile(file, out, keys, {
              encryption: oneColumnKey,
              decryptColumns: ["id", "coding"],
              durable: false,
            }),
          );
          assert.strictEqual(partly.name, "PmeProtectionError");
          assert.deepStrictEqual(partly.columns, ["amount", "tags.list.element"]);
          assert.deepStrictEqual(await listDir(join(dir, "out")), []);
        },
      );
    }

    await t.step("decryptColumns (leaf and parent paths) writes exactly those in plaintext", async () => {
      const res = await transcodeFile(full, out, fullKeys, {
        encryption: { ...oneColumnKey, columnKeys: { name: { key: nc }, tags: { key: nc } } },
        decryptColumns: ["id", "amount", "coding"],
        durable: false,
      });
      assert.deepStrictEqual(res.decryptedColumns, ["id", "amount", "coding.code", "coding.n"]);
      const newKeys = { footerKey: nf, columnKeys: { name: nc, "tags.list.element": nc } };
      assert.deepStrictEqual(await protectionOf(out, newKeys), {
        id: "none",
        name: "column-key",
        amount: "none",
        "coding.code": "none",
        "coding.n": "none",
        "tags.list.element": "column-key",
      });
      const plain = join(dir, "plain.parquet");
      await transcodeFile(out, plain, newKeys, { durable: false });
      await assertSameRows(input, plain);
      await Deno.remove(out);
    });

    await t.step(
      "uniform output with decryptColumns: those in plaintext, the rest under the footer key",
      async () => {
        await transcodeFile(full, out, fullKeys, {
          encryption: { footerKey: nf },
          decryptColumns: ["id"],
          durable: false,
        });
        assert.deepStrictEqual(await protectionOf(out, { footerKey: nf }), {
          id: "none",
          name: "footer-key",
          amount: "footer-key",
          "coding.code": "footer-key",
          "coding.n": "footer-key",
          "tags.list.element": "footer-key",
        });
        const plain = join(dir, "plain-uniform.parquet");
        await transcodeFile(out, plain, { footerKey: nf }, { durable: false });
        await assertSameRows(input, plain);
        await Deno.remove(out);
      },
    );

    await t.step(
      "decryptColumns naming an unknown column, or a column given a key, is a config error",
      async () => {
        for (
          const decryptColumns of [["nosuch"], ["name"], ["coding.code", "nosuch.leaf"]]
        ) {
          const e = await rejection(
            transcodeFile(full, out, fullKeys, {
              encryption: oneColumnKey,
              decryptColumns,
              durable: false,
            }),
          );
          assert.strictEqual(e.name, "PmeConfigError", e.message);
          assert.match(e.message, decryptColumns.includes("name") ? /name/ : /nosuch/);
        }
        assert.deepStrictEqual(await listDir(join(dir, "out")), []);
      },
    );

    await t.step(
      "without encryption (pme decrypt) every column is written in plaintext as asked",
      async () => {
        const res = await transcodeFile(full, out, fullKeys, { durable: false });
        assert.deepStrictEqual(res.columns, SMALL_LEAVES);
        assert.deepStrictEqual(
          await protectionOf(out, {}),
          Object.fromEntries(SMALL_LEAVES.map((l) => [l, "none"])),
        );
        await Deno.remove(out);
      },
    );
  });
});

Deno.test("rekey to a plaintext footer: encrypted columns show no statistics and no unknown metadata fields", async () => {
  await withTempDir(async (dir) => {
    const input = join(dir, "input.parquet");
    await writeSmallInput(input);
    // The input's ColumnMetaData carry a field this engine does not know (id 99, as a future
    // statistics field would be); it must not appear in a plaintext footer for encrypted columns.
    const marked = join(dir, "marked.parquet");
    const bytes = await Deno.readFile(input);
    const footerLength = new DataView(bytes.buffer, bytes.length - 8, 4).getUint32(0, true);
    const footerStart = bytes.length - 8 - footerLength;
    const fmd = decodeStruct(bytes.subarray(footerStart, bytes.length - 8)).struct;
    for (const g of rowGroups(fmd)) {
      for (const chunk of columnChunks(g)) chunk.struct(CC.metaData)!.setBin(99, te.encode("secret-stat"));
    }
    const footer = encodeStruct(fmd);
    const length = new Uint8Array(4);
    new DataView(length.buffer).setUint32(0, footer.length, true);
    await Deno.writeFile(
      marked,
      new Uint8Array([...bytes.subarray(0, footerStart), ...footer, ...length, ...te.encode("PAR1")]),
    );
    const kf = randomKey(16);
    const kc = randomKey(16);
    const encrypted = join(dir, "encrypted.parquet");
    await transcodeFile(marked, encrypted, {}, {
      encryption: { footerKey: kf, columnKeys: { name: { key: kc }, coding: { key: kc } } },
      durable: false,
    });
    const keys = { footerKey: kf, columnKeys: { name: kc, "coding.code": kc, "coding.n": kc } };
    const nf = randomKey(16);
    const nc = randomKey(16);
    const signed = join(dir, "signed.parquet");
    await transcodeFile(encrypted, signed, keys, {
      encryption: {
        footerKey: nf,
        columnKeys: { name: { key: nc }, coding: { key: nc } },
        plaintextFooter: true,
      },
      decryptColumns: [],
      durable: false,
    });
    // Without any key: the plaintext footer.
    const keyless = await openParquetFile(signed, { checkFooterIntegrity: false });
    const keyed = await openParquetFile(signed, {
      footerKey: nf,
      columnKeys: { name: nc, "coding.code": nc, "coding.n": nc },
    });
    try {
      assert.strictEqual(keyless.mode, "signed");
      for (const [i, g] of rowGroups(keyless.metadata).entries()) {
        for (const [col, chunk] of columnChunks(g).entries()) {
          const where = `row group ${i} column ${keyless.columns[col].dotted}`;
          const meta = chunk.struct(CC.metaData)!;
          const full = await keyed.columnMetaData(i, col);
          assert(full.has(99), `${where}: the encrypted copy keeps every field`);
          if (keyless.columns[col].encryption === "none") {
            assert(meta.has(CMD.statistics), `${where}: plaintext columns keep their statistics`);
            continue;
          }
          for (
            const id of [CMD.statistics, CMD.encodingStats, CMD.sizeStatistics, CMD.geospatialStatistics, 99]
          ) {
            assert(!meta.has(id), `${where}: field ${id} in the plaintext footer`);
          }
          assert(full.has(CMD.statistics), `${where}: statistics kept in the encrypted copy`);
          assert.strictEqual(meta.int(CMD.numValues), full.int(CMD.numValues));
        }
      }
    } finally {
      keyless.close();
      keyed.close();
    }
    const plain = join(dir, "plain.parquet");
    await transcodeFile(signed, plain, {
      footerKey: nf,
      columnKeys: { name: nc, "coding.code": nc, "coding.n": nc },
    }, {
      durable: false,
    });
    await assertSameRows(input, plain);
  });
});
