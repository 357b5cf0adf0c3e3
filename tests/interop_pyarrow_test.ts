/**
 * Interoperability with pyarrow (Arrow C++), both directions, with every value compared:
 *
 * - pyarrow writes PME (low-level uniform key, and `CryptoFactory` column keys with the identity test
 *   KMS whose PKMT1 key metadata carries base64(key)) → this engine decrypts → same rows as the input.
 * - this engine writes PME (uniform; per-column keys with identity PKMT1 key metadata) over pyarrow,
 *   DuckDB and parquet-wasm inputs → pyarrow decrypts → pyarrow finds the same values as in the input.
 * - Page CRCs written by us cover the encrypted page module, as Arrow verifies them.
 * - Data page V2: whole-body framing is what Arrow reads; parquet-java framing is not (pitfall P2).
 * - CTR with a plaintext footer stores the true algorithm in FileMetaData field 8 (pitfall P1).
 *
 * Needs the project venv with pyarrow (`deno task bootstrap`); the tests fail, not skip, without it.
 *
 * @module
 */
import assert from "node:assert";
import { basename, join } from "node:path";
import {
  type DecryptionOptions,
  type EncryptionOptions,
  type KeyRetriever,
  openParquetFile,
  PmeAadPrefixError,
  transcodeFile,
} from "../pme/mod.ts";
import { DPH2, FMD, OI, PageType, PH, PL } from "../pme/metadata.ts";
import type { TStruct } from "../pme/thrift.ts";
import { assertSameRows } from "./fixtures/compare.ts";
import { allInputs, type InputFile } from "./fixtures/inputs.ts";
import { hasPyarrow, pyarrowInputs, pyarrowTool, PYTHON, runPyarrowTool } from "./fixtures/pyarrow.ts";
import { withTempDir } from "./fixtures/tmp.ts";

const te = new TextEncoder();
const td = new TextDecoder();

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A deterministic key of `length` bytes (distinct per `seed`). */
function testKey(length: 16 | 24 | 32, seed: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (seed * 31 + i * 7 + 1) & 0xff);
}

const KEY128 = testKey(16, 1);
const KEY192 = testKey(24, 2);
const KEY256 = testKey(32, 3);
const COLUMN_KEY_A = testKey(16, 4);
const COLUMN_KEY_B = testKey(32, 5);
const AAD_PREFIX = "fhir-pme interop";

function requirePyarrow(): void {
  if (!hasPyarrow()) {
    throw new Error(
      `pyarrow interop tests need the project venv (${PYTHON}); run \`deno task bootstrap\` first`,
    );
  }
}

/** Base64 → bytes. */
function fromBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/**
 * Key retriever for pyarrow's identity test KMS: the key metadata is PKMT1 key material stored
 * internally, whose single-wrapped `wrappedDEK` is base64 of the data key. Records what it was asked.
 */
function identityRetriever(
  asked: { kind: string; column?: string; masterKeyID: string }[] = [],
): KeyRetriever {
  return (keyMetadata, request) => {
    const material = JSON.parse(td.decode(keyMetadata));
    assert.strictEqual(material.keyMaterialType, "PKMT1", "key metadata is not PKMT1 key material");
    assert.strictEqual(material.internalStorage, true, "key material is not stored internally");
    assert.strictEqual(material.doubleWrapping, false, "identity KMS keys are single-wrapped");
    assert.strictEqual(material.isFooterKey, request.kind === "footer");
    asked.push({ kind: request.kind, column: request.column, masterKeyID: material.masterKeyID });
    return Promise.resolve(fromBase64(material.wrappedDEK));
  };
}

/** Decrypts `encrypted` with this engine into `plain` and checks its rows against `expected`. */
async function decryptAndCompare(
  encrypted: string,
  expected: string,
  decryption: DecryptionOptions,
): Promise<void> {
  const plain = `${encrypted}.ours.parquet`;
  await transcodeFile(encrypted, plain, decryption, { durable: false });
  await assertSameRows(expected, plain);
}

/** Decrypts `encrypted` with pyarrow (read-encrypted) and has pyarrow compare every value with `expected`. */
async function pyarrowDecryptAndCompare(encrypted: string, expected: string, args: string[]): Promise<void> {
  const plain = `${encrypted}.pyarrow.parquet`;
  await pyarrowTool(["read-encrypted", encrypted, plain, ...args]);
  const cmp = await pyarrowTool<{ equal?: boolean }>(["compare", expected, plain]);
  assert.strictEqual(cmp.equal, true);
}

function byName(inputs: InputFile[], name: string): InputFile {
  const found = inputs.find((i) => basename(i.file) === name);
  assert(found, `input ${name} was not generated`);
  return found;
}

interface LowLevelCase {
  name: string;
  args: string[];
  decryption: DecryptionOptions;
  mode: "encrypted" | "signed";
  algorithm: "AES_GCM_V1" | "AES_GCM_CTR_V1";
}

const LOW_LEVEL_CASES: LowLevelCase[] = [
  {
    name: "GCM, encrypted footer",
    args: ["--footer-key", `kf=${hex(KEY128)}`],
    decryption: { footerKey: KEY128 },
    mode: "encrypted",
    algorithm: "AES_GCM_V1",
  },
  {
    name: "CTR, encrypted footer",
    args: ["--footer-key", `kf=${hex(KEY128)}`, "--algorithm", "AES_GCM_CTR_V1"],
    decryption: { footerKey: KEY128 },
    mode: "encrypted",
    algorithm: "AES_GCM_CTR_V1",
  },
  {
    name: "GCM, plaintext footer",
    args: ["--footer-key", `kf=${hex(KEY128)}`, "--plaintext-footer"],
    decryption: { footerKey: KEY128 },
    mode: "signed",
    algorithm: "AES_GCM_V1",
  },
  {
    name: "CTR, plaintext footer",
    args: ["--footer-key", `kf=${hex(KEY128)}`, "--plaintext-footer", "--algorithm", "AES_GCM_CTR_V1"],
    decryption: { footerKey: KEY128 },
    mode: "signed",
    algorithm: "AES_GCM_CTR_V1",
  },
  {
    name: "AAD prefix stored",
    args: ["--footer-key", `kf=${hex(KEY128)}`, "--aad-prefix", AAD_PREFIX],
    decryption: { footerKey: KEY128 },
    mode: "encrypted",
    algorithm: "AES_GCM_V1",
  },
  {
    name: "AAD prefix not stored, supplied by the reader",
    args: ["--footer-key", `kf=${hex(KEY128)}`, "--aad-prefix", AAD_PREFIX, "--no-store-aad-prefix"],
    decryption: { footerKey: KEY128, aadPrefix: te.encode(AAD_PREFIX) },
    mode: "encrypted",
    algorithm: "AES_GCM_V1",
  },
  {
    name: "192-bit key, CTR",
    args: ["--footer-key", `kf=${hex(KEY192)}`, "--algorithm", "AES_GCM_CTR_V1"],
    decryption: { footerKey: KEY192 },
    mode: "encrypted",
    algorithm: "AES_GCM_CTR_V1",
  },
  {
    name: "256-bit key, plaintext footer",
    args: ["--footer-key", `kf=${hex(KEY256)}`, "--plaintext-footer"],
    decryption: { footerKey: KEY256 },
    mode: "signed",
    algorithm: "AES_GCM_V1",
  },
];

Deno.test("pyarrow writes PME, this engine decrypts the same values", async (t) => {
  requirePyarrow();
  await withTempDir(async (dir) => {
    const inputs = await pyarrowInputs(dir);
    // Nested, 3 row groups, several pages per chunk, page index and page CRCs.
    const big = byName(inputs, "pyarrow_v1_snappy_mixeddict_multirg_multipage_pageindex_checksum.parquet");

    for (const c of LOW_LEVEL_CASES) {
      await t.step(`low-level uniform: ${c.name}`, async () => {
        const enc = join(dir, `lowlevel-${LOW_LEVEL_CASES.indexOf(c)}.parquet`);
        const w = await pyarrowTool<{ footer_magic: string }>([
          "write-encrypted",
          big.file,
          enc,
          "--uniform",
          "--page-checksum",
          ...c.args,
        ]);
        assert.strictEqual(w.footer_magic, c.mode === "signed" ? "PAR1" : "PARE");
        const reader = await openParquetFile(enc, c.decryption);
        try {
          assert.strictEqual(reader.mode, c.mode);
          assert.strictEqual(reader.algorithm?.algorithm, c.algorithm);
          if (c.mode === "signed") assert.strictEqual(reader.signatureVerified, true);
          assert(reader.columns.every((col) => col.encryption === "footer-key"));
        } finally {
          reader.close();
        }
        await decryptAndCompare(enc, big.file, c.decryption);
        if (c.decryption.aadPrefix) {
          // Without the prefix the file cannot be opened, and the error says why.
          await assert.rejects(
            openParquetFile(enc, { footerKey: c.decryption.footerKey }),
            PmeAadPrefixError,
          );
        }
      });
    }

    // CryptoFactory (identity KMS) with column keys: footer key and two column master keys; the
    // other columns stay plaintext. Parent names select all leaves of a nested column.
    const factoryCases: { input: string; algorithm: string; plaintextFooter: boolean; extra: string[] }[] = [
      {
        input: "pyarrow_v1_snappy_dict.parquet",
        algorithm: "AES_GCM_V1",
        plaintextFooter: false,
        extra: [],
      },
      {
        input: "pyarrow_v1_snappy_mixeddict_multirg_multipage_pageindex_checksum.parquet",
        algorithm: "AES_GCM_CTR_V1",
        plaintextFooter: false,
        extra: ["--page-checksum"],
      },
      {
        input: "pyarrow_v2_zstd_dict_pageindex.parquet",
        algorithm: "AES_GCM_V1",
        plaintextFooter: true,
        extra: ["--data-page-version", "2.0"],
      },
      {
        input: "pyarrow_v2_zstd_dict_multirg_multipage_pageindex_checksum.parquet",
        algorithm: "AES_GCM_CTR_V1",
        plaintextFooter: true,
        extra: ["--data-page-version", "2.0", "--data-key-bits", "256"],
      },
    ];
    for (const c of factoryCases) {
      const footer = c.plaintextFooter ? "plaintext footer" : "encrypted footer";
      await t.step(`CryptoFactory column keys: ${c.input}, ${c.algorithm}, ${footer}`, async () => {
        const input = byName(inputs, c.input);
        const enc = join(dir, `factory-${factoryCases.indexOf(c)}.parquet`);
        const w = await pyarrowTool<{ footer_magic: string }>([
          "write-encrypted",
          input.file,
          enc,
          "--footer-key",
          `kf=${hex(KEY128)}`,
          "--column-key",
          `id,str_opt,list_struct:kc1=${hex(COLUMN_KEY_A)}`,
          "--column-key",
          `struct_nested,map_si,f64_req:kc2=${hex(COLUMN_KEY_B)}`,
          "--algorithm",
          c.algorithm,
          ...(c.plaintextFooter ? ["--plaintext-footer"] : []),
          ...c.extra,
        ]);
        assert.strictEqual(w.footer_magic, c.plaintextFooter ? "PAR1" : "PARE");
        const asked: { kind: string; column?: string; masterKeyID: string }[] = [];
        const decryption = { keyRetriever: identityRetriever(asked) };
        const reader = await openParquetFile(enc, decryption);
        try {
          assert.strictEqual(reader.algorithm?.algorithm, c.algorithm);
          const keyed = reader.columns.filter((col) => col.encryption === "column-key").map((col) =>
            col.dotted
          );
          const roots = new Set(keyed.map((d) => d.split(".")[0]));
          assert.deepStrictEqual(
            [...roots].sort(),
            ["f64_req", "id", "list_struct", "map_si", "str_opt", "struct_nested"],
          );
          assert(reader.columns.some((col) => col.encryption === "none"), "some columns stay plaintext");
        } finally {
          reader.close();
        }
        await decryptAndCompare(enc, input.file, decryption);
        assert(asked.some((a) => a.kind === "footer" && a.masterKeyID === "kf"));
        assert(asked.some((a) => a.kind === "column" && a.column === "id" && a.masterKeyID === "kc1"));
        assert(asked.some((a) => a.kind === "column" && a.column === "f64_req" && a.masterKeyID === "kc2"));
      });
    }
  });
});

interface UniformVariant {
  name: string;
  encryption: EncryptionOptions;
  /** Extra read-encrypted arguments besides the footer key. */
  readArgs: string[];
}

function uniformVariants(): UniformVariant[] {
  const gcm = "AES_GCM_V1" as const;
  const ctr = "AES_GCM_CTR_V1" as const;
  const aad = te.encode(AAD_PREFIX);
  const supplied = ["--aad-prefix", AAD_PREFIX];
  return [
    { name: "GCM PARE 128", encryption: { footerKey: KEY128, algorithm: gcm }, readArgs: [] },
    { name: "CTR PARE 192", encryption: { footerKey: KEY192, algorithm: ctr }, readArgs: [] },
    {
      name: "GCM PAR1 256",
      encryption: { footerKey: KEY256, algorithm: gcm, plaintextFooter: true },
      readArgs: [],
    },
    {
      name: "CTR PAR1 128",
      encryption: { footerKey: KEY128, algorithm: ctr, plaintextFooter: true },
      readArgs: [],
    },
    {
      name: "GCM PARE 256, AAD prefix stored",
      encryption: { footerKey: KEY256, algorithm: gcm, aadPrefix: aad },
      readArgs: [],
    },
    {
      name: "CTR PARE 128, AAD prefix supplied",
      encryption: { footerKey: KEY128, algorithm: ctr, aadPrefix: aad, storeAadPrefix: false },
      readArgs: supplied,
    },
    {
      name: "GCM PAR1 192, AAD prefix supplied",
      encryption: {
        footerKey: KEY192,
        algorithm: gcm,
        plaintextFooter: true,
        aadPrefix: aad,
        storeAadPrefix: false,
      },
      readArgs: supplied,
    },
    {
      name: "CTR PAR1 256, AAD prefix stored",
      encryption: { footerKey: KEY256, algorithm: ctr, plaintextFooter: true, aadPrefix: aad },
      readArgs: [],
    },
  ];
}

/** pyarrow's identity-KMS PKMT1 key metadata for `key`. */
async function identityKeyMetadata(masterId: string, key: Uint8Array, footer: boolean): Promise<Uint8Array> {
  const r = await runPyarrowTool([
    "identity-key-metadata",
    masterId,
    hex(key),
    ...(footer ? ["--footer"] : []),
  ]);
  assert.strictEqual(r.code, 0, r.stderr);
  return te.encode(r.stdout);
}

Deno.test("this engine writes PME, pyarrow decrypts the same values", async (t) => {
  requirePyarrow();
  await withTempDir(async (dir) => {
    const inputs = await allInputs(dir);
    for (const producer of ["pyarrow", "duckdb", "parquet-wasm"]) {
      assert(inputs.some((i) => i.features.includes(producer)), `no ${producer} input`);
    }
    const variants = uniformVariants();
    // Every input once, variants in rotation (each variant meets several producers).
    for (const [n, input] of inputs.entries()) {
      const v = variants[n % variants.length];
      await t.step(`uniform ${v.name}: ${basename(input.file)}`, async () => {
        const enc = join(dir, `uniform-${n}.parquet`);
        await transcodeFile(input.file, enc, {}, { encryption: v.encryption, durable: false });
        await pyarrowDecryptAndCompare(enc, input.file, [
          "--footer-key",
          `kf=${hex(v.encryption.footerKey)}`,
          ...v.readArgs,
        ]);
      });
    }

    // Per-column keys with the identity KMS's key metadata: pyarrow's CryptoFactory finds every key.
    const footerMeta = await identityKeyMetadata("kf", KEY128, true);
    const metaA = await identityKeyMetadata("kc1", COLUMN_KEY_A, false);
    const metaB = await identityKeyMetadata("kc2", COLUMN_KEY_B, false);
    const columnCases = [
      {
        input: "pyarrow_v1_snappy_dict_bloom_pageindex.parquet",
        algorithm: "AES_GCM_V1",
        plaintextFooter: false,
      },
      {
        input: "pyarrow_v2_zstd_dict_multirg_multipage_pageindex_checksum.parquet",
        algorithm: "AES_GCM_CTR_V1",
        plaintextFooter: true,
      },
      { input: "duckdb_types_v1_snappy.parquet", algorithm: "AES_GCM_V1", plaintextFooter: true },
      { input: "duckdb_nested_gzip_plain.parquet", algorithm: "AES_GCM_CTR_V1", plaintextFooter: false },
      { input: "wasm_v1_snappy_dict.parquet", algorithm: "AES_GCM_CTR_V1", plaintextFooter: false },
      { input: "wasm_v2_gzip_dict_fallback.parquet", algorithm: "AES_GCM_V1", plaintextFooter: true },
    ] as const;
    for (const [n, c] of columnCases.entries()) {
      const footer = c.plaintextFooter ? "PAR1" : "PARE";
      await t.step(`column keys ${c.algorithm} ${footer}: ${c.input}`, async () => {
        const input = byName(inputs, c.input);
        // Key the first top-level column with one key and the last (often nested) with another;
        // the columns between stay plaintext.
        const reader = await openParquetFile(input.file);
        const roots = [...new Set(reader.columns.map((col) => col.path[0]))];
        reader.close();
        assert(roots.length >= 3, `${c.input} has too few columns`);
        const enc = join(dir, `columns-${n}.parquet`);
        await transcodeFile(input.file, enc, {}, {
          encryption: {
            footerKey: KEY128,
            footerKeyMetadata: footerMeta,
            algorithm: c.algorithm,
            plaintextFooter: c.plaintextFooter,
            columnKeys: {
              [roots[0]]: { key: COLUMN_KEY_A, keyMetadata: metaA },
              [roots[roots.length - 1]]: { key: COLUMN_KEY_B, keyMetadata: metaB },
            },
          },
          durable: false,
        });
        const written = await openParquetFile(enc, { keyRetriever: identityRetriever() });
        try {
          assert.strictEqual(written.mode, c.plaintextFooter ? "signed" : "encrypted");
          assert(written.columns.some((col) => col.encryption === "column-key"));
          assert(written.columns.some((col) => col.encryption === "none"));
        } finally {
          written.close();
        }
        await pyarrowDecryptAndCompare(enc, input.file, []);
      });
    }
  });
});

const CHECKSUM_SNIPPET = `
import json, sys
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
path, out, key_hex, verify = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
props = pe.create_decryption_properties(bytes.fromhex(key_hex))
try:
    table = pq.read_table(path, page_checksum_verification=verify, decryption_properties=props)
except Exception as e:
    print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
    sys.exit(0)
pq.write_table(table, out, use_deprecated_int96_timestamps=True)
print(json.dumps({"ok": True, "rows": table.num_rows}))
`;

/** Reads an encrypted file with pyarrow, page CRC verification on or off; writes its plaintext to `out`. */
async function pyarrowReadChecked(
  file: string,
  out: string,
  key: Uint8Array,
  verify: boolean,
): Promise<{ ok: boolean; rows?: number; error?: string }> {
  const r = await new Deno.Command(PYTHON, {
    args: ["-B", "-c", CHECKSUM_SNIPPET, file, out, hex(key), verify ? "1" : "0"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.strictEqual(r.code, 0, td.decode(r.stderr));
  return JSON.parse(td.decode(r.stdout));
}

/** File range of the encrypted page module (not its header) of data page `page` of a chunk. */
async function dataPageModule(
  file: string,
  key: Uint8Array,
  rg: number,
  col: number,
  page: number,
): Promise<{ start: number; end: number }> {
  const reader = await openParquetFile(file, { footerKey: key });
  try {
    const oi = await reader.offsetIndex(rg, col);
    assert(oi, "the file has no offset index");
    const loc = oi.list(OI.pageLocations)!.items[page] as TStruct;
    const offset = loc.reqInt(PL.offset, "offset");
    const size = loc.reqInt(PL.compressedPageSize, "compressed_page_size");
    const bytes = await Deno.readFile(file);
    const headerModule = 4 + new DataView(bytes.buffer).getUint32(offset, true);
    return { start: offset + headerModule, end: offset + size };
  } finally {
    reader.close();
  }
}

Deno.test("page CRCs we write cover the encrypted page module, as Arrow verifies them", async (t) => {
  requirePyarrow();
  await withTempDir(async (dir) => {
    const inputs = await pyarrowInputs(dir);
    const cases = [
      // Input CRCs are recomputed over the encrypted modules.
      { input: "pyarrow_v2_zstd_dict_multirg_multipage_pageindex_checksum.parquet", checksums: undefined },
      // No CRCs in the input; pageChecksums adds them.
      { input: "pyarrow_v1_snappy_dict_bloom_pageindex.parquet", checksums: true },
    ];
    for (const c of cases) {
      for (const algorithm of ["AES_GCM_V1", "AES_GCM_CTR_V1"] as const) {
        await t.step(`${c.input}, ${algorithm}`, async () => {
          const input = byName(inputs, c.input);
          const enc = join(dir, `crc-${cases.indexOf(c)}-${algorithm}.parquet`);
          await transcodeFile(input.file, enc, {}, {
            encryption: { footerKey: KEY128, algorithm },
            pageChecksums: c.checksums,
            durable: false,
          });
          // Every page of the output carries a CRC.
          const reader = await openParquetFile(enc, { footerKey: KEY128 });
          try {
            for (const page of [reader.pages(0, 0), reader.pages(0, reader.columns.length - 1)]) {
              for await (const p of page) assert(p.header.has(PH.crc), "page without CRC");
            }
          } finally {
            reader.close();
          }

          const out = join(dir, `crc-out-${cases.indexOf(c)}-${algorithm}.parquet`);
          const good = await pyarrowReadChecked(enc, out, KEY128, true);
          assert.deepStrictEqual(good, { ok: true, rows: input.rows });
          const cmp = await pyarrowTool<{ equal?: boolean }>(["compare", input.file, out]);
          assert.strictEqual(cmp.equal, true);

          // One flipped ciphertext bit in the first data page of the first column: with verification
          // on, pyarrow reports the CRC (checked before decryption).
          const { start, end } = await dataPageModule(enc, KEY128, 0, 0, 0);
          const bytes = await Deno.readFile(enc);
          bytes[start + 4 + 12 + Math.floor((end - start - 16) / 2)] ^= 0x01;
          const bad = join(dir, `crc-bad-${cases.indexOf(c)}-${algorithm}.parquet`);
          await Deno.writeFile(bad, bytes);
          const verified = await pyarrowReadChecked(bad, out, KEY128, true);
          assert.strictEqual(verified.ok, false);
          assert.match(verified.error!, /CRC checksum verification failed/);
          // Without verification a GCM page still fails its tag; a CTR page has no integrity of its
          // own, so the damage surfaces (if at all) only when decoding the garbled plaintext.
          const unverified = await pyarrowReadChecked(bad, out, KEY128, false);
          if (algorithm === "AES_GCM_V1") {
            assert.strictEqual(unverified.ok, false);
            assert.match(unverified.error!, /decryption/i);
          } else {
            assert.doesNotMatch(unverified.error ?? "", /CRC/);
          }
        });
      }
    }
  });
});

Deno.test("data page V2: whole-body framing reads in pyarrow, parquet-java framing does not (P2)", async (t) => {
  requirePyarrow();
  await withTempDir(async (dir) => {
    const inputs = await pyarrowInputs(dir);
    const input = byName(inputs, "pyarrow_v2_zstd_dict_multirg_multipage_pageindex_checksum.parquet");

    // The input must have V2 pages with level bytes (nullable and repeated columns) for the framings to differ.
    const plain = await openParquetFile(input.file);
    let withLevels = 0;
    try {
      for (let col = 0; col < plain.columns.length; col++) {
        for await (const p of plain.pages(0, col)) {
          if (p.type !== PageType.DataPageV2) continue;
          const v2 = p.header.struct(PH.dataPageHeaderV2)!;
          const levels = (v2.int(DPH2.definitionLevelsByteLength) ?? 0) +
            (v2.int(DPH2.repetitionLevelsByteLength) ?? 0);
          if (levels > 0) withLevels++;
        }
      }
    } finally {
      plain.close();
    }
    assert(withLevels > 10, `only ${withLevels} V2 pages with levels`);

    await t.step("whole-body (default): pyarrow reads the same values", async () => {
      for (const algorithm of ["AES_GCM_V1", "AES_GCM_CTR_V1"] as const) {
        const enc = join(dir, `v2-whole-${algorithm}.parquet`);
        await transcodeFile(input.file, enc, {}, {
          encryption: { footerKey: KEY128, algorithm, pageV2Framing: "whole-body" },
          durable: false,
        });
        await pyarrowDecryptAndCompare(enc, input.file, ["--footer-key", `kf=${hex(KEY128)}`]);
      }
    });

    await t.step("levels-plaintext: this engine reads it back, pyarrow fails", async () => {
      const enc = join(dir, "v2-java.parquet");
      await transcodeFile(input.file, enc, {}, {
        encryption: { footerKey: KEY128, pageV2Framing: "levels-plaintext" },
        durable: false,
      });
      await decryptAndCompare(enc, input.file, { footerKey: KEY128 });
      // Arrow C++ takes the plaintext level bytes as the module's length prefix (known parquet-java /
      // Arrow incompatibility, pitfall P2).
      const r = await runPyarrowTool([
        "read-encrypted",
        enc,
        `${enc}.pyarrow.parquet`,
        "--footer-key",
        `kf=${hex(KEY128)}`,
      ]);
      assert.notStrictEqual(r.code, 0, "pyarrow read parquet-java V2 framing; pitfall P2 may be fixed");
      assert.match(r.stderr, /ciphertext length|decrypt/i);
    });
  });
});

Deno.test("CTR with a plaintext footer stores AES_GCM_CTR_V1 in footer field 8 (P1); pyarrow reads it", async () => {
  requirePyarrow();
  await withTempDir(async (dir) => {
    const inputs = await pyarrowInputs(dir);
    const input = byName(inputs, "pyarrow_v1_snappy_mixeddict_multirg_multipage_pageindex_checksum.parquet");
    const enc = join(dir, "ctr-par1.parquet");
    await transcodeFile(input.file, enc, {}, {
      encryption: { footerKey: KEY256, algorithm: "AES_GCM_CTR_V1", plaintextFooter: true },
      durable: false,
    });
    const reader = await openParquetFile(enc, { footerKey: KEY256 });
    try {
      assert.strictEqual(reader.mode, "signed");
      assert.strictEqual(reader.algorithm?.algorithm, "AES_GCM_CTR_V1");
      // The EncryptionAlgorithm union in FileMetaData.encryption_algorithm holds member 2 (AES_GCM_CTR_V1).
      const union = reader.metadata.struct(FMD.encryptionAlgorithm);
      assert(union, "no encryption_algorithm in the plaintext footer");
      assert.deepStrictEqual(union.fields.map((f) => f.id), [2]);
    } finally {
      reader.close();
    }
    const crypto = await pyarrowTool<{ algorithm: string; magic: string }>(["inspect-crypto", enc]);
    assert.strictEqual(crypto.magic, "PAR1");
    assert.strictEqual(crypto.algorithm, "AES_GCM_CTR_V1");
    await pyarrowDecryptAndCompare(enc, input.file, ["--footer-key", `kf=${hex(KEY256)}`]);
  });
});
