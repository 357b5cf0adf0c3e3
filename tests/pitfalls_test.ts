/**
 * The interoperability pitfalls of docs/pme-spec-notes.md §11 that concern this engine, one test each,
 * with this engine only (inputs from DuckDB and parquet-wasm, no pyarrow):
 *
 * - P1: AES_GCM_CTR_V1 with a plaintext footer names the true algorithm in FileMetaData field 8.
 * - P2: data page V2 in both framings (whole body encrypted; levels in clear as parquet-java does).
 * - P3: parquet-java zero-pads encrypted Thrift plaintexts; the decoder ignores the padding.
 * - P4: the plaintext-footer signature covers the footer's raw bytes, whatever their encoding.
 * - P5: RowGroup.ordinal is written for every row group.
 * - P6: a plaintext footer hides statistics; the encrypted column metadata keeps them.
 * - P7: bloom filters are encrypted and read back.
 * - P12: uniform encryption honours a plaintext footer.
 * - P14: a parent column name selects all its leaves for a column key.
 * - P16: key lengths other than 128, 192 and 256 bits are refused, and all-zero keys for writing.
 * - Page CRCs cover the encrypted page module; a CTR page has no integrity without them.
 *
 * @module
 */
import assert from "node:assert";
import { crc32 } from "node:zlib";
import { basename, join } from "node:path";
import {
  AesKey,
  bytesSource,
  decodeStruct,
  encodeStruct,
  type EncryptionOptions,
  openParquetFile,
  ParquetReader,
  PmeAuthError,
  PmeConfigError,
  transcodeFile,
  TStruct,
} from "../pme/mod.ts";
import { decryptModule, signFooter, verifyFooterSignature } from "../pme/cipher.ts";
import { CC, CMD, DPH2, FMD, OI, PageType, PH, PL, RG, rowGroups } from "../pme/metadata.ts";
import { assertSameRows } from "./fixtures/compare.ts";
import { duckdbInputs, type InputFile, parquetWasmInputs } from "./fixtures/inputs.ts";
import { withTempDir } from "./fixtures/tmp.ts";
import { assertVectorValues, VECTOR_KEYS, VECTORS_DIR } from "./fixtures/vectors.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const KEY = Uint8Array.from({ length: 16 }, (_, i) => 0x30 + i);
const COLUMN_KEY = Uint8Array.from({ length: 32 }, (_, i) => 0x80 + i);

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function u32le(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

function byName(inputs: InputFile[], name: string): InputFile {
  const found = inputs.find((i) => basename(i.file) === name);
  assert(found, `input ${name} was not generated`);
  return found;
}

async function encrypt(
  input: string,
  output: string,
  encryption: EncryptionOptions,
  pageChecksums?: boolean,
): Promise<void> {
  await transcodeFile(input, output, {}, { encryption, pageChecksums, durable: false });
}

/** Decrypts `encrypted` into a plaintext file next to it and compares its rows with `expected`. */
async function assertDecryptsTo(encrypted: string, expected: string, key = KEY): Promise<void> {
  const plain = `${encrypted}.plain.parquet`;
  await transcodeFile(encrypted, plain, { footerKey: key }, { durable: false });
  await assertSameRows(expected, plain);
}

/** The footer of a PAR1 file: start offset, FileMetaData bytes and the 28-byte signature. */
function signedFooter(bytes: Uint8Array): { start: number; fmd: Uint8Array; signature: Uint8Array } {
  assert.strictEqual(td.decode(bytes.subarray(bytes.length - 4)), "PAR1");
  const length = new DataView(bytes.buffer, bytes.byteOffset).getUint32(bytes.length - 8, true);
  const start = bytes.length - 8 - length;
  return {
    start,
    fmd: bytes.subarray(start, bytes.length - 8 - 28),
    signature: bytes.subarray(bytes.length - 8 - 28, bytes.length - 8),
  };
}

/** File range of the encrypted module of data page `page` (not its header), via the offset index. */
async function dataPageModule(
  reader: ParquetReader,
  bytes: Uint8Array,
  rg: number,
  col: number,
  page: number,
): Promise<{ start: number; end: number }> {
  const oi = await reader.offsetIndex(rg, col);
  assert(oi, "no offset index");
  const loc = oi.list(OI.pageLocations)!.items[page] as TStruct;
  const offset = loc.reqInt(PL.offset, "offset");
  const headerModule = 4 + new DataView(bytes.buffer, bytes.byteOffset).getUint32(offset, true);
  return { start: offset + headerModule, end: offset + loc.reqInt(PL.compressedPageSize, "size") };
}

Deno.test("P1: AES_GCM_CTR_V1 with a plaintext footer names AES_GCM_CTR_V1 in FileMetaData field 8", async () => {
  await withTempDir(async (dir) => {
    const [input] = await parquetWasmInputs(dir);
    const enc = join(dir, "ctr.parquet");
    await encrypt(input.file, enc, { footerKey: KEY, algorithm: "AES_GCM_CTR_V1", plaintextFooter: true });
    const reader = await openParquetFile(enc, { footerKey: KEY });
    try {
      assert.strictEqual(reader.mode, "signed");
      assert.strictEqual(reader.algorithm?.algorithm, "AES_GCM_CTR_V1");
      // EncryptionAlgorithm union: member 1 = AES_GCM_V1, member 2 = AES_GCM_CTR_V1.
      assert.deepStrictEqual(reader.metadata.struct(FMD.encryptionAlgorithm)?.fields.map((f) => f.id), [2]);
    } finally {
      reader.close();
    }
    await assertDecryptsTo(enc, input.file);
  });
});

Deno.test("P2: data page V2 with levels reads back in both framings", async () => {
  await withTempDir(async (dir) => {
    const input = byName(await parquetWasmInputs(dir), "wasm_v2_zstd_plain.parquet");
    const plain = await openParquetFile(input.file);
    // A nullable column: its V2 pages start with definition levels.
    const col = plain.columns.findIndex((c) => c.dotted === "i64");
    const first = await plain.pages(0, col).next();
    plain.close();
    assert(!first.done && first.value.type === PageType.DataPageV2);
    const levels = first.value.header.struct(PH.dataPageHeaderV2)!.reqInt(
      DPH2.definitionLevelsByteLength,
      "dl",
    );
    assert(levels > 0);

    for (const framing of ["whole-body", "levels-plaintext"] as const) {
      const enc = join(dir, `${framing}.parquet`);
      await encrypt(input.file, enc, { footerKey: KEY, pageV2Framing: framing });
      await assertDecryptsTo(enc, input.file);
      // The page as stored: one module (u32 length = rest of the page), or the level bytes in clear.
      const bytes = await Deno.readFile(enc);
      const reader = await openParquetFile(enc, { footerKey: KEY });
      try {
        const { start, end } = await dataPageModule(reader, bytes, 0, col, 0);
        const stored = bytes.subarray(start, end);
        if (framing === "whole-body") {
          assert.strictEqual(
            new DataView(stored.buffer, stored.byteOffset).getUint32(0, true),
            stored.length - 4,
          );
        } else {
          assert.deepStrictEqual(stored.subarray(0, levels), first.value.payload.subarray(0, levels));
          const values = stored.subarray(levels);
          assert.strictEqual(
            new DataView(values.buffer, values.byteOffset).getUint32(0, true),
            values.length - 4,
          );
        }
      } finally {
        reader.close();
      }
    }
  });
});

Deno.test("P3: zero-padded Thrift plaintexts of parquet-java decode and decrypt", async (t) => {
  await t.step("decodeStruct stops at STOP and ignores trailing zero padding", () => {
    const header = new TStruct().setI32(PH.type, PageType.DataPage).setI32(PH.uncompressedPageSize, 1234)
      .setI32(PH.compressedPageSize, 567).setStruct(
        PH.dataPageHeader,
        new TStruct().setI32(1, 100).setI32(2, 0).setI32(3, 3).setI32(4, 3),
      );
    const exact = encodeStruct(header);
    const padded = concat(exact, new Uint8Array(64));
    const decoded = decodeStruct(padded);
    assert.strictEqual(decoded.length, exact.length);
    assert.deepStrictEqual(encodeStruct(decoded.struct), exact);
  });

  await t.step("the parquet-java AES-256 vector (padded footer) decrypts to its values", async () => {
    await withTempDir(async (dir) => {
      const file = join(VECTORS_DIR, "aes256/encrypt_columns_and_footer.parquet.encrypted");
      const keys = VECTOR_KEYS.aes256;
      // The key metadata is the key id (UTF-8).
      const keyRetriever = (meta: Uint8Array) => Promise.resolve(keys[td.decode(meta)]);
      const reader = await openParquetFile(file, { keyRetriever });
      let fileAad: Uint8Array;
      try {
        assert.strictEqual(reader.mode, "encrypted");
        assert(reader.columns.every((c) => c.encryption === "column-key"));
        fileAad = reader.fileAad!;
      } finally {
        reader.close();
      }
      // The footer plaintext is padded: decrypt the footer module by hand and look.
      const bytes = await Deno.readFile(file);
      const length = new DataView(bytes.buffer).getUint32(bytes.length - 8, true);
      const footer = bytes.subarray(bytes.length - 8 - length, bytes.length - 8);
      const module = footer.subarray(decodeStruct(footer).length);
      const aad = concat(fileAad, Uint8Array.of(0));
      const plain = await decryptModule(await AesKey.import(keys.kf), "gcm", module, aad);
      const used = decodeStruct(plain).length;
      assert(used < plain.length, "the footer plaintext is not padded");
      assert(plain.subarray(used).every((b) => b === 0));

      const out = join(dir, "aes256.parquet");
      await transcodeFile(file, out, { keyRetriever }, { durable: false });
      await assertVectorValues(out);
    });
  });
});

Deno.test("P4: the plaintext-footer signature covers the raw footer bytes", async () => {
  await withTempDir(async (dir) => {
    const input = byName(await parquetWasmInputs(dir), "wasm_v1_mixed_codecs.parquet");
    const enc = join(dir, "signed.parquet");
    await encrypt(input.file, enc, { footerKey: KEY, plaintextFooter: true });
    const bytes = await Deno.readFile(enc);
    const { start, fmd } = signedFooter(bytes);
    const reader = await openParquetFile(enc, { footerKey: KEY });
    const fileAad = reader.fileAad!;
    reader.close();

    // Non-canonical but equivalent encoding: field 1 (version, i32) in the long header form
    // (type byte, then the zigzag field id) instead of the short delta form 0x15.
    assert.strictEqual(fmd[0], 0x15);
    const alt = concat(Uint8Array.of(0x05, 0x02), fmd.subarray(1));
    const strip = (s: TStruct) =>
      JSON.stringify(s, (k, v) => k === "longHeader" ? undefined : typeof v === "bigint" ? `${v}` : v);
    assert.strictEqual(strip(decodeStruct(alt).struct), strip(decodeStruct(fmd).struct));

    const key = await AesKey.import(KEY);
    const aad = concat(fileAad, Uint8Array.of(0)); // footer module AAD: file AAD || 0x00
    const signature = await signFooter(key, alt, aad);
    // The signature is over these bytes: it does not verify over the canonical encoding.
    assert.strictEqual(await verifyFooterSignature(key, fmd, aad, signature), false);
    const rebuilt = concat(
      bytes.subarray(0, start),
      alt,
      signature,
      u32le(alt.length + signature.length),
      te.encode("PAR1"),
    );

    const verified = await ParquetReader.open(bytesSource(rebuilt, "rebuilt.parquet"), { footerKey: KEY });
    try {
      assert.strictEqual(verified.signatureVerified, true);
    } finally {
      verified.close();
    }
    const rebuiltFile = join(dir, "rebuilt.parquet");
    await Deno.writeFile(rebuiltFile, rebuilt);
    await assertDecryptsTo(rebuiltFile, input.file);

    // One changed footer byte (a letter of created_by) fails the signature.
    const createdBy = decodeStruct(alt).struct.bin(FMD.createdBy)!;
    const at = start + indexOf(alt, createdBy) + 2;
    const tampered = rebuilt.slice();
    tampered[at] ^= 0x01;
    await assert.rejects(ParquetReader.open(bytesSource(tampered), { footerKey: KEY }), (e: Error) => {
      assert(e instanceof PmeAuthError, String(e));
      assert.match(e.message, /signature does not verify/);
      return true;
    });
  });
});

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  for (let i = 0; i + needle.length <= haystack.length; i++) {
    if (needle.every((b, k) => haystack[i + k] === b)) return i;
  }
  throw new Error("not found");
}

Deno.test("P5: RowGroup.ordinal is written for every row group", async () => {
  await withTempDir(async (dir) => {
    const inputs = [...await parquetWasmInputs(dir), ...await duckdbInputs(dir)]
      .filter((i) => i.features.includes("multi-rowgroup"));
    assert(inputs.length >= 4);
    // DuckDB does not write RowGroup.ordinal in plaintext files: the encrypted output adds it.
    let inputsWithout = 0;
    for (const input of inputs) {
      const plain = await openParquetFile(input.file);
      if (rowGroups(plain.metadata).every((g) => !g.has(RG.ordinal))) inputsWithout++;
      plain.close();
    }
    assert(inputsWithout >= 2, `${inputsWithout} inputs without ordinals`);
    for (const input of inputs) {
      for (const plaintextFooter of [false, true]) {
        const enc = join(dir, `${basename(input.file)}-${plaintextFooter}.enc`);
        await encrypt(input.file, enc, { footerKey: KEY, plaintextFooter });
        const reader = await openParquetFile(enc, { footerKey: KEY });
        try {
          const ordinals = rowGroups(reader.metadata).map((g) => g.int(RG.ordinal));
          assert(ordinals.length > 1);
          assert.deepStrictEqual(ordinals, ordinals.map((_, i) => i), `${basename(input.file)}`);
        } finally {
          reader.close();
        }
      }
    }
  });
});

Deno.test("P6: a plaintext footer hides statistics, the encrypted column metadata keeps them", async () => {
  await withTempDir(async (dir) => {
    const input = byName(await duckdbInputs(dir), "duckdb_bloom_uncompressed.parquet");
    const enc = join(dir, "signed.parquet");
    await encrypt(input.file, enc, { footerKey: KEY, plaintextFooter: true });
    const reader = await openParquetFile(enc, { footerKey: KEY });
    try {
      const chunks = rowGroups(reader.metadata)[0].list(RG.columns)!.items as TStruct[];
      for (const col of reader.columns) {
        const visible = chunks[col.index].struct(CC.metaData)!;
        assert(chunks[col.index].bin(CC.encryptedColumnMetadata), `${col.dotted}: no encrypted copy`);
        for (const id of [CMD.statistics, CMD.encodingStats, CMD.sizeStatistics]) {
          assert(!visible.has(id), `${col.dotted}: field ${id} is visible`);
        }
        const full = await reader.columnMetaData(0, col.index);
        assert(full.has(CMD.statistics), `${col.dotted}: statistics lost`);
        // Bloom filter offsets stay visible (P6: only statistics-like fields are redacted).
        assert.strictEqual(visible.has(CMD.bloomFilterOffset), full.has(CMD.bloomFilterOffset));
      }
    } finally {
      reader.close();
    }
  });
});

Deno.test("P7: bloom filters are encrypted and read back unchanged", async () => {
  await withTempDir(async (dir) => {
    const input = byName(await duckdbInputs(dir), "duckdb_bloom_uncompressed.parquet");
    const plain = await openParquetFile(input.file);
    for (const algorithm of ["AES_GCM_V1", "AES_GCM_CTR_V1"] as const) {
      const enc = join(dir, `${algorithm}.parquet`);
      await encrypt(input.file, enc, { footerKey: KEY, algorithm });
      const bytes = await Deno.readFile(enc);
      const reader = await openParquetFile(enc, { footerKey: KEY });
      try {
        let filters = 0;
        for (const col of plain.columns) {
          const expected = await plain.bloomFilter(0, col.index);
          const actual = await reader.bloomFilter(0, col.index);
          assert.deepStrictEqual(actual, expected, col.dotted);
          if (!expected) continue;
          filters++;
          // The bitset is not stored in clear.
          assert.throws(() => indexOf(bytes, expected.bitset.subarray(0, 64)));
        }
        assert(filters >= 3, `${filters} bloom filters`);
      } finally {
        reader.close();
      }
    }
    plain.close();
  });
});

Deno.test("P12: uniform encryption with a plaintext footer writes a signed PAR1 footer", async () => {
  await withTempDir(async (dir) => {
    const [input] = await parquetWasmInputs(dir);
    const enc = join(dir, "uniform-signed.parquet");
    await encrypt(input.file, enc, { footerKey: KEY, plaintextFooter: true });
    const bytes = await Deno.readFile(enc);
    assert.strictEqual(td.decode(bytes.subarray(0, 4)), "PAR1");
    const reader = await openParquetFile(enc, { footerKey: KEY });
    try {
      assert.strictEqual(reader.mode, "signed");
      assert.strictEqual(reader.signatureVerified, true);
      assert(reader.columns.every((c) => c.encryption === "footer-key"));
    } finally {
      reader.close();
    }
    await assertDecryptsTo(enc, input.file);
  });
});

Deno.test("P14: a parent column name selects all its leaves for a column key", async () => {
  await withTempDir(async (dir) => {
    const [input] = await parquetWasmInputs(dir);
    const enc = join(dir, "parent.parquet");
    await encrypt(input.file, enc, {
      footerKey: KEY,
      columnKeys: { point: { key: COLUMN_KEY, keyMetadata: te.encode("kc") }, list: { key: COLUMN_KEY } },
    });
    const keyRetriever = (meta: Uint8Array) => Promise.resolve(td.decode(meta) === "kc" ? COLUMN_KEY : null);
    const reader = await openParquetFile(enc, { footerKey: KEY, keyRetriever });
    reader.close();
    {
      const keyed = reader.columns.filter((c) => c.encryption === "column-key").map((c) => c.dotted);
      const expected = reader.columns.filter((c) => ["point", "list"].includes(c.path[0])).map((c) =>
        c.dotted
      );
      assert.deepStrictEqual(keyed, expected);
      assert(keyed.includes("point.a") && keyed.includes("point.b"), keyed.join(", "));
      assert(
        reader.columns.filter((c) => !expected.includes(c.dotted)).every((c) => c.encryption === "none"),
      );
    }
    // The list key was stored without key metadata: the reader is given it by leaf path.
    const listLeaves = reader.columns.filter((c) => c.path[0] === "list").map((c) => c.dotted);
    const plain = join(dir, "parent.plain.parquet");
    await transcodeFile(enc, plain, {
      footerKey: KEY,
      keyRetriever,
      columnKeys: Object.fromEntries(listLeaves.map((leaf) => [leaf, COLUMN_KEY])),
    }, { durable: false });
    await assertSameRows(input.file, plain);
  });
});

Deno.test("P16: only 128-, 192- and 256-bit keys are accepted", async () => {
  await withTempDir(async (dir) => {
    const [input] = await parquetWasmInputs(dir);
    for (const length of [16, 24, 32]) {
      const key = Uint8Array.from({ length }, (_, i) => i + 1);
      const enc = join(dir, `key-${length}.parquet`);
      await encrypt(input.file, enc, { footerKey: key });
      await assertDecryptsTo(enc, input.file, key);
    }
    for (const length of [0, 8, 15, 17, 31, 33, 64]) {
      await assert.rejects(
        encrypt(input.file, join(dir, "bad.parquet"), { footerKey: new Uint8Array(length) }),
        PmeConfigError,
      );
    }
    // All-zero keys are refused for writing, as parquet-java refuses them.
    for (const columnKeys of [undefined, { id: { key: new Uint8Array(16) } }]) {
      await assert.rejects(
        encrypt(input.file, join(dir, "zero.parquet"), {
          footerKey: columnKeys ? Uint8Array.from({ length: 16 }, (_, i) => i + 1) : new Uint8Array(16),
          columnKeys,
        }),
        (e: unknown) => e instanceof PmeConfigError && /all zeros/.test(e.message),
      );
    }
  });
});

Deno.test("page CRCs cover the encrypted page module; CTR pages have no integrity without them", async (t) => {
  await withTempDir(async (dir) => {
    // Dictionary and several data pages per chunk, offset index, no CRCs of its own.
    const input = byName(await parquetWasmInputs(dir), "wasm_v1_snappy_dict.parquet");

    for (const algorithm of ["AES_GCM_V1", "AES_GCM_CTR_V1"] as const) {
      await t.step(`${algorithm}: CRC = crc32 of the stored page module`, async () => {
        const enc = join(dir, `crc-${algorithm}.parquet`);
        await encrypt(input.file, enc, { footerKey: KEY, algorithm }, true);
        const bytes = await Deno.readFile(enc);
        const reader = await openParquetFile(enc, { footerKey: KEY });
        try {
          let checked = 0;
          for (let rg = 0; rg < reader.numRowGroups; rg++) {
            for (const col of reader.columns) {
              let page = 0;
              for await (const p of reader.pages(rg, col.index)) {
                let range: { start: number; end: number };
                if (p.type === PageType.DictionaryPage) {
                  // The dictionary page header module opens the chunk; the page module follows it.
                  const header = (await reader.chunkRange(rg, col.index)).start;
                  const start = header + 4 + new DataView(bytes.buffer).getUint32(header, true);
                  range = { start, end: start + p.header.reqInt(PH.compressedPageSize, "size") };
                } else {
                  range = await dataPageModule(reader, bytes, rg, col.index, page++);
                }
                const { start, end } = range;
                const module = bytes.subarray(start, end);
                assert.strictEqual(end - start, p.header.reqInt(PH.compressedPageSize, "size"));
                assert.strictEqual(crc32(module) | 0, p.header.int(PH.crc), `${col.dotted} page ${page}`);
                checked++;
              }
            }
          }
          assert(checked > 30, `${checked} pages`);
        } finally {
          reader.close();
        }
      });
    }

    // i64: a dictionary page and several data pages per chunk.
    const plain = await openParquetFile(input.file);
    const col = plain.columns.findIndex((c) => c.dotted === "i64");
    plain.close();
    /** Flips one ciphertext bit in data page 1 of i64; returns the file and the bit's offset in the page. */
    const tamper = async (file: string): Promise<{ file: string; at: number }> => {
      const bytes = await Deno.readFile(file);
      const reader = await openParquetFile(file, { footerKey: KEY });
      const { start, end } = await dataPageModule(reader, bytes, 0, col, 1);
      reader.close();
      const at = Math.floor((end - start - 16) / 2);
      bytes[start + 16 + at] ^= 0x04;
      const out = `${file}.tampered`;
      await Deno.writeFile(out, bytes);
      return { file: out, at };
    };
    const payloads = async (file: string, options = {}): Promise<Uint8Array[]> => {
      const reader = await openParquetFile(file, { footerKey: KEY, ...options });
      try {
        const out: Uint8Array[] = [];
        for await (const p of reader.pages(0, col)) {
          if (p.type !== PageType.DictionaryPage) out.push(p.payload);
        }
        return out;
      } finally {
        reader.close();
      }
    };

    await t.step("CTR with CRCs: a flipped page bit fails the CRC", async () => {
      const { file } = await tamper(join(dir, "crc-AES_GCM_CTR_V1.parquet"));
      await assert.rejects(payloads(file), (e: Error) => {
        assert(e instanceof PmeAuthError, String(e));
        assert.match(e.message, /CRC/);
        return true;
      });
    });

    await t.step("CTR without CRCs: a flipped page bit decrypts to a flipped plaintext bit", async () => {
      const enc = join(dir, "ctr-nocrc.parquet");
      await encrypt(input.file, enc, { footerKey: KEY, algorithm: "AES_GCM_CTR_V1" });
      const { file, at } = await tamper(enc);
      const [original, changed] = [await payloads(enc), await payloads(file)];
      assert.strictEqual(changed.length, original.length);
      assert.deepStrictEqual(changed[0], original[0]);
      const diff = [...original[1]].flatMap((b, i) => b === changed[1][i] ? [] : [[i, b ^ changed[1][i]]]);
      // CTR is malleable: the page is unauthenticated by the spec (only its header is GCM).
      assert.deepStrictEqual(diff, [[at, 0x04]]);
    });

    await t.step("GCM without CRCs: a flipped page bit fails the tag", async () => {
      const enc = join(dir, "gcm-nocrc.parquet");
      await encrypt(input.file, enc, { footerKey: KEY });
      const { file } = await tamper(enc);
      await assert.rejects(payloads(file), (e: Error) => {
        assert(e instanceof PmeAuthError, String(e));
        assert.match(e.message, /authentication tag/);
        return true;
      });
    });

    await t.step("CTR with CRCs, CRC checking off: the flipped bit goes through", async () => {
      const { file, at } = await tamper(join(dir, "crc-AES_GCM_CTR_V1.parquet"));
      const original = await payloads(join(dir, "crc-AES_GCM_CTR_V1.parquet"));
      const changed = await payloads(file, { checkPageCrc: false });
      assert.strictEqual(changed[1][at], original[1][at] ^ 0x04);
    });
  });
});
