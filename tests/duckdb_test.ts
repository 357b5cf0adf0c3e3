/**
 * DuckDB 1.5 (`@duckdb/node-api`) reading this engine's PME output: what works, and the exact way
 * everything else fails, so that these tests notice when DuckDB's PME support changes.
 *
 * DuckDB reads uniformly encrypted AES_GCM_V1 files with an encrypted footer and no AAD prefix,
 * keys of 128, 192 and 256 bits, given by `PRAGMA add_parquet_key` (the key's bytes as text, or
 * base64 — which DuckDB only tries when the text is not 16, 24 or 32 characters long) or by
 * `encryption_config = {footer_key_value: <BLOB>}`. Its page decryption, however, only computes the
 * spec's module AADs for a flat column chunk with a single data page (V1), an optional dictionary
 * page and no bloom filter:
 *
 * - it restarts the page ordinal at 0 for every data page after the first (and then takes a chunk
 *   with a dictionary for a dictionary page header);
 * - it derives bloom-filter module types for the first page of a chunk that has a bloom filter;
 * - it decrypts nested (list/struct/map) leaves without any AAD;
 * - it decrypts the levels and the values of a data page V2 as separate modules.
 *
 * A model of those AADs, applied by re-encrypting our pages, makes DuckDB read every V1 file in full,
 * which shows that these are the only reasons. AAD prefixes, plaintext footers, AES_GCM_CTR_V1 and
 * column keys are not supported at all. DuckDB's own encrypted files use no AAD (not PME-compliant).
 *
 * Inputs come from pyarrow, DuckDB and parquet-wasm; the pyarrow venv is required.
 *
 * @module
 */
import assert from "node:assert";
import { basename, join } from "node:path";
import {
  AesKey,
  decodeStruct,
  encodeStruct,
  type EncryptionOptions,
  fileSource,
  openParquetFile,
  peekFooter,
  PmeAuthError,
  transcodeFile,
} from "../pme/mod.ts";
import { decryptModule, encryptModule } from "../pme/cipher.ts";
import { CMD, PageType, PH, RG, rowGroups } from "../pme/metadata.ts";
import { type DuckDBConnection, queryRows, sqlIdent, sqlString, withDuckDB } from "./fixtures/duckdb.ts";
import { allInputs, type InputFile } from "./fixtures/inputs.ts";
import { hasPyarrow, PYTHON } from "./fixtures/pyarrow.ts";
import { withTempDir } from "./fixtures/tmp.ts";

const te = new TextEncoder();

/** ASCII keys: DuckDB's PRAGMA takes a 16/24/32-character string as the key bytes themselves. */
const ASCII_KEYS = {
  16: "0123456789abcdef",
  24: "0123456789abcdefghijklmn",
  32: "0123456789abcdefghijklmnopqrstuv",
} as const;
const KEY = te.encode(ASCII_KEYS[16]);

/** Errors of DuckDB 1.5.6 (extension/parquet/parquet_crypto.cpp, column_reader.cpp, parquet_reader.cpp). */
const TAG_MISMATCH = /Computed AES tag differs from read AES tag, are you using the right key\?/;
const V2_FAILURE =
  /Computed AES tag differs|Too many bytes requested from crypto buffer|DecryptionTransport::Finalize was called with bytes remaining|Page size mismatch/;

function requirePyarrow(): void {
  if (!hasPyarrow()) {
    throw new Error(
      `the DuckDB tests use pyarrow-written inputs: the venv (${PYTHON}) is missing; run \`deno task bootstrap\``,
    );
  }
}

function readEncrypted(file: string, config = "{footer_key: 'k'}"): string {
  return `read_parquet(${sqlString(file)}, encryption_config = ${config})`;
}

/** Error message of a failing DuckDB query (first line), or null when it succeeds. */
async function queryError(conn: DuckDBConnection, sql: string): Promise<string | null> {
  try {
    await queryRows(conn, sql);
    return null;
  } catch (e) {
    return (e as Error).message.split("\n")[0];
  }
}

/**
 * Asserts that DuckDB reads `columns` of `encryptedSource` (a FROM expression) with the same rows as
 * in the plaintext file: equal counts and EXCEPT ALL empty both ways. Returns the row count.
 */
async function assertDuckDBSame(
  conn: DuckDBConnection,
  plain: string,
  encryptedSource: string,
  columns = "*",
): Promise<number> {
  const p = `read_parquet(${sqlString(plain)})`;
  const [r] = await queryRows(
    conn,
    `SELECT (SELECT count(*) FROM ${p}) AS plain_rows,
            (SELECT count(*) FROM ${encryptedSource}) AS decrypted_rows,
            (SELECT count(*) FROM (SELECT ${columns} FROM ${p} EXCEPT ALL SELECT ${columns} FROM ${encryptedSource}))
              AS only_plain,
            (SELECT count(*) FROM (SELECT ${columns} FROM ${encryptedSource} EXCEPT ALL SELECT ${columns} FROM ${p}))
              AS only_decrypted`,
  );
  assert.deepStrictEqual(
    { decrypted: r.decrypted_rows, onlyPlain: r.only_plain, onlyDecrypted: r.only_decrypted },
    { decrypted: r.plain_rows, onlyPlain: 0n, onlyDecrypted: 0n },
    `DuckDB read ${columns} of ${encryptedSource} differently from ${plain}`,
  );
  return Number(r.plain_rows);
}

async function encryptTo(input: string, output: string, encryption: EncryptionOptions): Promise<void> {
  await transcodeFile(input, output, {}, { encryption, durable: false });
}

/** Why DuckDB cannot read a top-level column of a file we encrypted, or undefined if it can. */
type Obstacle = "nested" | "data page v2" | "several data pages" | "bloom filter";

/** Top-level columns of a plaintext file and what stands in DuckDB's way for each. */
async function classifyColumns(file: string): Promise<Map<string, Obstacle | undefined>> {
  const reader = await openParquetFile(file);
  try {
    const found = new Map<string, Set<Obstacle>>();
    for (const col of reader.columns) {
      const root = col.path[0];
      const obstacles = found.get(root) ?? new Set<Obstacle>();
      found.set(root, obstacles);
      for (let rg = 0; rg < reader.numRowGroups; rg++) {
        // DuckDB reads no page of an empty row group.
        if (!rowGroups(reader.metadata)[rg].int(RG.numRows)) continue;
        if (col.path.length > 1) obstacles.add("nested");
        if ((await reader.columnMetaData(rg, col.index)).has(CMD.bloomFilterOffset)) {
          obstacles.add("bloom filter");
        }
        let dataPages = 0;
        for await (const page of reader.pages(rg, col.index)) {
          if (page.type === PageType.DataPageV2) obstacles.add("data page v2");
          if (page.type !== PageType.DictionaryPage) dataPages++;
        }
        if (dataPages > 1) obstacles.add("several data pages");
      }
    }
    // V2 first: it fails whatever else holds, with its own messages.
    const order: Obstacle[] = ["data page v2", "nested", "several data pages", "bloom filter"];
    return new Map([...found].map(([root, set]) => [root, order.find((o) => set.has(o))]));
  } finally {
    reader.close();
  }
}

const BLOOM_SNIPPET = `
import sys
import pyarrow as pa, pyarrow.parquet as pq
n = 3000
table = pa.table({"id": pa.array(range(n), pa.int64()), "code": pa.array([f"c{i % 40}" for i in range(n)])})
pq.write_table(table, sys.argv[1], use_dictionary=["code"], compression="snappy", data_page_size=4096,
               write_batch_size=256, bloom_filter_options={"id": True, "code": True})
`;

/**
 * A pyarrow V1 file whose bloom-filtered columns are one without dictionary (several pages) and one
 * with (the other inputs' bloom filters all sit on dictionary-encoded chunks).
 */
async function bloomWithoutDictionary(dir: string): Promise<InputFile> {
  const file = join(dir, "pyarrow_v1_bloom_nodict.parquet");
  const r = await new Deno.Command(PYTHON, { args: ["-B", "-c", BLOOM_SNIPPET, file], stderr: "piped" })
    .output();
  assert.strictEqual(r.code, 0, new TextDecoder().decode(r.stderr));
  return { file, features: ["pyarrow", "v1", "bloom", "dict", "plain", "multi-page"], rows: 3000 };
}

Deno.test("DuckDB reads our uniform AES_GCM_V1 output column by column where its PME support reaches", async (t) => {
  requirePyarrow();
  await withTempDir(async (dir) => {
    const inputs = [...await allInputs(dir), await bloomWithoutDictionary(dir)];
    for (const producer of ["pyarrow", "duckdb", "parquet-wasm"]) {
      assert(inputs.some((i) => i.features.includes(producer)), `no ${producer} input`);
    }
    let readable = 0;
    let unreadable = 0;
    for (const input of inputs) {
      await t.step(basename(input.file), async () => {
        const enc = `${input.file}.enc`;
        await encryptTo(input.file, enc, { footerKey: KEY });
        const columns = await classifyColumns(input.file);
        const ok = [...columns].filter(([, o]) => o === undefined).map(([c]) => c);
        await withDuckDB(async (conn) => {
          await conn.run(`PRAGMA add_parquet_key('k', '${ASCII_KEYS[16]}')`);
          if (ok.length) {
            // All readable columns together, row for row.
            const rows = await assertDuckDBSame(
              conn,
              input.file,
              readEncrypted(enc),
              ok.map(sqlIdent).join(", "),
            );
            assert.strictEqual(rows, input.rows);
            readable += ok.length;
          }
          if (ok.length === columns.size) await assertDuckDBSame(conn, input.file, readEncrypted(enc));
        });
        for (const [column, obstacle] of columns) {
          if (obstacle === undefined) continue;
          // A fresh instance each: some of these errors are INTERNAL and invalidate the database.
          const error = await withDuckDB(async (conn) => {
            await conn.run(`PRAGMA add_parquet_key('k', '${ASCII_KEYS[16]}')`);
            return await queryError(conn, `SELECT ${sqlIdent(column)} FROM ${readEncrypted(enc)}`);
          });
          assert(error, `DuckDB now reads ${column} (${obstacle}) of ${basename(enc)}`);
          assert.match(
            error,
            obstacle === "data page v2" ? V2_FAILURE : TAG_MISMATCH,
            `${column} (${obstacle}): ${error}`,
          );
          unreadable++;
        }
      });
    }
    assert(readable > 50 && unreadable > 50, `${readable} readable, ${unreadable} unreadable columns`);
  });
});

/** A flat DuckDB-written file with two row groups and no bloom filter (one page per chunk). */
async function flatDuckDBInput(dir: string): Promise<string> {
  const file = join(dir, "duckdb_flat.parquet");
  await withDuckDB((conn) =>
    conn.run(
      `COPY (SELECT i::INTEGER AS id, 'code-' || (i % 50) AS code,
                    CASE WHEN i % 7 = 0 THEN NULL ELSE i * 0.5 END AS amount,
                    DATE '2024-01-01' + (i % 400)::INTEGER AS day
             FROM range(3000) r(i) ORDER BY i)
       TO ${sqlString(file)} (FORMAT parquet, ROW_GROUP_SIZE 2048, WRITE_BLOOM_FILTER false)`,
    )
  );
  return file;
}

Deno.test("DuckDB: key lengths and the ways to hand it a key", async (t) => {
  await withTempDir(async (dir) => {
    const plain = await flatDuckDBInput(dir);

    for (const length of [16, 24, 32] as const) {
      await t.step(`${length * 8}-bit key as a ${length}-character PRAGMA string`, async () => {
        const enc = join(dir, `ascii-${length}.parquet`);
        await encryptTo(plain, enc, { footerKey: te.encode(ASCII_KEYS[length]) });
        await withDuckDB(async (conn) => {
          await conn.run(`PRAGMA add_parquet_key('k', '${ASCII_KEYS[length]}')`);
          assert.strictEqual(await assertDuckDBSame(conn, plain, readEncrypted(enc)), 3000);
        });
      });
    }

    for (const length of [16, 24, 32] as const) {
      await t.step(
        `random ${length * 8}-bit key: footer_key_value BLOB works, PRAGMA base64 only for 256 bits`,
        async () => {
          const key = crypto.getRandomValues(new Uint8Array(length));
          const b64 = btoa(String.fromCharCode(...key));
          const enc = join(dir, `random-${length}.parquet`);
          await encryptTo(plain, enc, { footerKey: key });
          await withDuckDB(async (conn) => {
            const blob = `from_base64(${sqlString(b64)})`;
            await assertDuckDBSame(conn, plain, readEncrypted(enc, `{footer_key_value: ${blob}}`));
            // base64 of a 16- or 24-byte key is 24 or 32 characters long: DuckDB takes those characters
            // as a 192- or 256-bit key instead of decoding them.
            await conn.run(`PRAGMA add_parquet_key('k', ${sqlString(b64)})`);
            if (length === 32) await assertDuckDBSame(conn, plain, readEncrypted(enc));
            else {assert.match(
                (await queryError(conn, `SELECT count(*) FROM ${readEncrypted(enc)}`))!,
                TAG_MISMATCH,
              );}
          });
        },
      );
    }

    await t.step("a wrong key fails on the footer", async () => {
      const enc = join(dir, "ascii-16.parquet");
      await withDuckDB(async (conn) => {
        await conn.run(`PRAGMA add_parquet_key('k', 'fedcba9876543210')`);
        assert.match((await queryError(conn, `SELECT count(*) FROM ${readEncrypted(enc)}`))!, TAG_MISMATCH);
      });
    });
  });
});

Deno.test("DuckDB: PME features it does not support fail with these errors", async (t) => {
  await withTempDir(async (dir) => {
    const plain = await flatDuckDBInput(dir);
    const expectFailure = async (
      name: string,
      encryption: EncryptionOptions,
      pattern: RegExp,
      config?: string,
    ) => {
      await t.step(name, async () => {
        const enc = join(dir, `${name.replace(/\W+/g, "-")}.parquet`);
        await encryptTo(plain, enc, encryption);
        await withDuckDB(async (conn) => {
          await conn.run(`PRAGMA add_parquet_key('k', '${ASCII_KEYS[16]}')`);
          const error = await queryError(conn, `SELECT * FROM ${readEncrypted(enc, config)}`);
          assert(error, `DuckDB now reads ${name}`);
          assert.match(error, pattern);
        });
      });
    };
    // DuckDB's file AAD is aad_file_unique alone: a prefix (stored or not) is ignored.
    await expectFailure(
      "AAD prefix stored",
      { footerKey: KEY, aadPrefix: te.encode("tenant-1") },
      TAG_MISMATCH,
    );
    await expectFailure(
      "AAD prefix not stored",
      { footerKey: KEY, aadPrefix: te.encode("tenant-1"), storeAadPrefix: false },
      TAG_MISMATCH,
    );
    await expectFailure(
      "plaintext footer",
      { footerKey: KEY, plaintextFooter: true },
      /is not encrypted, but 'encryption_config' was set/,
    );
    await expectFailure(
      "AES_GCM_CTR_V1",
      { footerKey: KEY, algorithm: "AES_GCM_CTR_V1" },
      /is encrypted with AES_GCM_CTR_V1, but only AES_GCM_V1 is supported/,
    );
    // Every page is decrypted with the footer key, also those of plaintext columns and of columns
    // whose ColumnMetaData is only in encrypted_column_metadata (read as all defaults).
    await expectFailure(
      "column keys",
      { footerKey: KEY, columnKeys: { amount: { key: te.encode(ASCII_KEYS[16]) } } },
      /Could not read enough bytes from file/,
    );
    await expectFailure(
      "column_keys in encryption_config",
      { footerKey: KEY },
      /Parquet encryption_config column_keys not yet implemented/,
      `{footer_key: 'k', column_keys: {amount: 'k'}}`,
    );

    await t.step("a plaintext footer file read without encryption_config", async () => {
      const enc = join(dir, "plaintext-footer.parquet");
      await withDuckDB(async (conn) => {
        const error = await queryError(conn, `SELECT * FROM read_parquet(${sqlString(enc)})`);
        assert(error, "DuckDB read encrypted pages as plaintext");
      });
    });
  });
});

/**
 * The module AAD DuckDB 1.5.6 uses for a page header or page, null for "no AAD" (nested leaves);
 * a transcription of ParquetCrypto::GetModuleHeader / GetModule / GetFinalPageOrdinal and of
 * ColumnReader::ReadPageHeaders, which starts each call (each data page) at page ordinal 0.
 */
function duckdbAad(
  fileAad: Uint8Array,
  chunk: { rg: number; col: number; nested: boolean; dictionary: boolean; bloom: boolean },
  page: { index: number; header: boolean; type: PageType },
): Uint8Array | null {
  if (chunk.nested) return null;
  // DuckDB's counter: 1 for the first data page after a dictionary page, else 0.
  const counter = page.index === 1 && chunk.dictionary ? 1 : 0;
  const headerModule = counter > 0 ? 4 : chunk.dictionary ? 5 : chunk.bloom ? 8 : 4;
  const headerOrdinal = headerModule === 4 ? counter - (chunk.dictionary || chunk.bloom ? 1 : 0) : -1;
  let module: number;
  let ordinal: number;
  if (page.header) {
    [module, ordinal] = [headerModule, headerOrdinal];
  } else {
    const isDict = page.type === PageType.DictionaryPage;
    module = chunk.bloom && headerOrdinal === 0 ? 9 : isDict ? 3 : 2;
    ordinal = module === 2 ? headerOrdinal : -1;
  }
  const out = new Uint8Array(fileAad.length + (ordinal >= 0 ? 7 : 5));
  out.set(fileAad);
  const view = new DataView(out.buffer);
  view.setUint8(fileAad.length, module);
  view.setInt16(fileAad.length + 1, chunk.rg, true);
  view.setInt16(fileAad.length + 3, chunk.col, true);
  if (ordinal >= 0) view.setInt16(fileAad.length + 5, ordinal, true);
  return out;
}

/**
 * Re-encrypts, in place, every page header and page of a uniformly GCM-encrypted file of ours with
 * DuckDB's AADs ({@link duckdbAad}). Module sizes do not change, so nothing else moves.
 */
async function reencryptForDuckDB(file: string, out: string, key: Uint8Array): Promise<void> {
  const bytes = await Deno.readFile(file);
  const reader = await openParquetFile(file, { footerKey: key });
  const aesKey = await AesKey.import(key);
  try {
    const groups = rowGroups(reader.metadata);
    for (let rg = 0; rg < reader.numRowGroups; rg++) {
      for (const col of reader.columns) {
        const cmd = await reader.columnMetaData(rg, col.index);
        const chunk = {
          rg: groups[rg].int(RG.ordinal) ?? rg,
          col: col.index,
          nested: col.path.length > 1,
          dictionary: cmd.has(CMD.dictionaryPageOffset),
          bloom: cmd.has(CMD.bloomFilterOffset),
        };
        let pos = (await reader.chunkRange(rg, col.index)).start;
        let index = 0;
        for await (const page of reader.pages(rg, col.index)) {
          const parts: [Uint8Array, boolean][] = [[encodeStruct(page.header), true], [page.payload, false]];
          for (const [plain, header] of parts) {
            const aad = duckdbAad(reader.fileAad!, chunk, { index, header, type: page.type }) ??
              new Uint8Array();
            const module = await encryptModule(aesKey, "gcm", plain, aad);
            const size = header
              ? module.length
              : page.header.reqInt(PH.compressedPageSize, "compressed_page_size");
            assert.strictEqual(module.length, size, "re-encrypted module changed size");
            bytes.set(module, pos);
            pos += size;
          }
          index++;
        }
      }
    }
  } finally {
    reader.close();
  }
  await Deno.writeFile(out, bytes);
}

Deno.test("DuckDB's page AADs: re-encrypted with DuckDB's model, every V1 file reads in full", async (t) => {
  requirePyarrow();
  await withTempDir(async (dir) => {
    const inputs = [...await allInputs(dir), await bloomWithoutDictionary(dir)];
    const v1 = inputs.filter((i: InputFile) => !i.features.includes("v2") && i.rows > 0);
    assert(v1.length >= 8, `${v1.length} V1 inputs`);
    for (const input of v1) {
      await t.step(basename(input.file), async () => {
        const enc = `${input.file}.enc`;
        await encryptTo(input.file, enc, { footerKey: KEY });
        const columns = await classifyColumns(input.file);
        const modeled = `${input.file}.duckdb-aad.enc`;
        await reencryptForDuckDB(enc, modeled, KEY);
        await withDuckDB(async (conn) => {
          await conn.run(`PRAGMA add_parquet_key('k', '${ASCII_KEYS[16]}')`);
          if ([...columns.values()].some((o) => o !== undefined)) {
            assert.match((await queryError(conn, `SELECT * FROM ${readEncrypted(enc)}`))!, TAG_MISMATCH);
          }
          assert.strictEqual(await assertDuckDBSame(conn, input.file, readEncrypted(modeled)), input.rows);
        });
        // The modeled file is no longer valid PME: our reader rejects its pages.
        if ([...columns.values()].some((o) => o !== undefined)) {
          await assert.rejects(
            transcodeFile(modeled, `${modeled}.plain`, { footerKey: KEY }, { durable: false }),
            PmeAuthError,
          );
        }
      });
    }
  });
});

Deno.test("DuckDB-written encrypted Parquet uses no AAD at all, so this engine rejects it", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "duckdb_encrypted.parquet");
    await withDuckDB(async (conn) => {
      // Without httpfs (OpenSSL) DuckDB only writes encrypted files with this explicit opt-in.
      await conn.run(`SET force_mbedtls_unsafe = 'true'`);
      await conn.run(`PRAGMA add_parquet_key('k', '${ASCII_KEYS[16]}')`);
      await conn.run(
        `COPY (SELECT i AS id FROM range(100) r(i)) TO ${sqlString(file)}
         (FORMAT parquet, ENCRYPTION_CONFIG {footer_key: 'k'})`,
      );
    });
    // DuckDB writes AES_GCM_V1 without aad_file_unique and encrypts the footer with an empty AAD
    // instead of the footer module AAD (file AAD || 0x00): the footer does not authenticate.
    const source = await fileSource(file);
    try {
      const info = await peekFooter(source);
      assert.strictEqual(info.mode, "encrypted");
      assert.strictEqual(info.algorithm?.algorithm, "AES_GCM_V1");
      assert.strictEqual(info.algorithm?.aadFileUnique.length, 0);
      const tail = await source.read(source.size - 8, 8);
      const length = new DataView(tail.buffer, tail.byteOffset).getUint32(0, true);
      const footer = await source.read(source.size - 8 - length, length);
      const module = footer.subarray(decodeStruct(footer).length);
      const aesKey = await AesKey.import(KEY);
      await decryptModule(aesKey, "gcm", module, new Uint8Array()); // authenticates
      await assert.rejects(decryptModule(aesKey, "gcm", module, Uint8Array.of(0)), PmeAuthError);
    } finally {
      source.close();
    }
    await assert.rejects(openParquetFile(file, { footerKey: KEY }), (e: Error) => {
      assert(e instanceof PmeAuthError, String(e));
      assert.match(e.message, /encrypted footer does not decrypt/);
      return true;
    });
  });
});
