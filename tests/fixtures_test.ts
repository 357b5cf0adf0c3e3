/**
 * Tests of the test fixtures themselves: generated inputs, the row comparison and the vector checker.
 *
 * @module
 */
import assert, { AssertionError } from "node:assert";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { assertSameRows } from "./fixtures/compare.ts";
import { type DuckDBConnection, queryRows, sqlString, withDuckDB } from "./fixtures/duckdb.ts";
import { duckdbInputs, type InputFile, parquetWasmInputs } from "./fixtures/inputs.ts";
import { assertVectorValues, VECTOR_COLUMNS, VECTOR_KEYS, VECTORS, VECTORS_DIR } from "./fixtures/vectors.ts";

const PYTHON = fileURLToPath(new URL("../.venv/bin/python", import.meta.url));
const PLAINTEXT_SCRIPT = fileURLToPath(new URL("./fixtures/vector_plaintext.py", import.meta.url));

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "pme-fixtures-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Writes `select` (a query over `read_parquet(src, file_row_number = true)` named `t`) to `dest`. */
async function rewrite(conn: DuckDBConnection, src: string, select: string, dest: string): Promise<void> {
  const t = `read_parquet(${sqlString(src)}, file_row_number = true) t`;
  await conn.run(
    `COPY (${select.replace("$t", t)} ORDER BY file_row_number) TO ${sqlString(dest)} (FORMAT parquet)`,
  );
}

/** Checks the features that DuckDB's parquet_metadata() can see against the file's tags. */
async function checkFeatures(conn: DuckDBConnection, input: InputFile): Promise<void> {
  const chunks = await queryRows(
    conn,
    `SELECT row_group_id, compression, encodings, bloom_filter_offset FROM parquet_metadata(${
      sqlString(input.file)
    })`,
  );
  const has = (tag: string) => input.features.includes(tag);
  const codecs = new Set(chunks.map((c) => String(c.compression).toLowerCase()));
  for (const codec of ["snappy", "zstd", "gzip", "uncompressed"]) {
    if (has(codec)) assert(codecs.has(codec), `${input.file}: no ${codec} chunk (${[...codecs]})`);
  }
  assert.strictEqual(codecs.size > 1, has("mixed-codec"), `${input.file}: codecs ${[...codecs]}`);
  const rowGroups = new Set(chunks.map((c) => c.row_group_id)).size;
  assert.strictEqual(rowGroups > 1, has("multi-rowgroup"), `${input.file}: ${rowGroups} row group(s)`);
  assert.strictEqual(
    chunks.some((c) => c.bloom_filter_offset !== null),
    has("bloom"),
    `${input.file}: bloom`,
  );
  const dict = chunks.map((c) => String(c.encodings).includes("DICTIONARY"));
  assert.strictEqual(dict.some((d) => d), has("dict"), `${input.file}: dictionary encodings`);
  assert.strictEqual(!dict.some((d) => d), has("plain"), `${input.file}: no dictionary encoding`);
}

Deno.test("fixtures: generated inputs match their tags and compare equal to themselves", async (t) => {
  await inTempDir(async (dir) => {
    const inputs = [...await duckdbInputs(dir), ...await parquetWasmInputs(dir)];
    assert.strictEqual(inputs.length, 8);
    assert(inputs.some((i) => i.rows >= 10_000 && i.features.includes("multi-page")));
    for (const input of inputs) {
      await t.step(input.file.slice(dir.length + 1), async () => {
        assert((await Deno.stat(input.file)).size < 5_000_000, "file too large");
        await withDuckDB((conn) => checkFeatures(conn, input));
        assert.strictEqual(await assertSameRows(input.file, input.file), input.rows);
      });
    }

    await t.step("one changed value is reported with its column and row", async () => {
      const src = inputs[0].file;
      const changed = join(dir, "changed.parquet");
      await withDuckDB((conn) =>
        rewrite(
          conn,
          src,
          `SELECT * EXCLUDE (file_row_number) REPLACE (CASE WHEN id = 1234 THEN 'other' ELSE s END AS s) FROM $t`,
          changed,
        )
      );
      await assert.rejects(
        assertSameRows(src, changed),
        (e) =>
          e instanceof AssertionError &&
          /column "s" first differs at row 1234: expected str-34/.test(e.message),
      );
      assert.strictEqual(await assertSameRows(src, changed, ["id", "m", "ls", "u"]), 5000);
    });
  });
});

Deno.test("fixtures: VECTORS lists every vector file, with keys of the right length", async () => {
  const files: string[] = [];
  for (const sub of ["", "aes256/"]) {
    for await (const e of Deno.readDir(join(VECTORS_DIR, sub))) {
      if (e.name.endsWith(".parquet.encrypted")) files.push(sub + e.name);
    }
  }
  assert.deepStrictEqual(VECTORS.map((v) => v.file).sort(), files.sort());
  for (const v of VECTORS) {
    const keys = VECTOR_KEYS[v.keySet];
    for (const id of ["kf", ...Object.values(v.columnKeys)]) {
      assert.strictEqual(keys[id]?.length, v.keySet === "aes128" ? 16 : 32, `${v.file}: key ${id}`);
    }
  }
});

Deno.test("fixtures: vector checker reads the C++ repeated int64 leaf of the plaintext-footer vector", async () => {
  // DuckDB reads the plaintext columns of a PAR1 file without decrypting; parquet-wasm cannot (it rejects
  // the encrypted column metadata), so int96_field is checked on the pyarrow copies below.
  const plain = VECTOR_COLUMNS.filter((c) => !["double_field", "float_field", "int96_field"].includes(c));
  await assertVectorValues(join(VECTORS_DIR, "encrypt_columns_plaintext_footer.parquet.encrypted"), plain);
});

const hasPython = existsSync(PYTHON);
if (!hasPython) {
  console.warn(`fixtures: skipping the pyarrow vector test: ${PYTHON} is missing (scripts/bootstrap.sh)`);
}

Deno.test({
  name: "fixtures: vector checker passes on pyarrow-decrypted plaintext and names altered values",
  ignore: !hasPython,
  fn: async (t) => {
    await inTempDir(async (dir) => {
      const src = join(VECTORS_DIR, "uniform_encryption.parquet.encrypted");
      const out = await new Deno.Command(PYTHON, { args: [PLAINTEXT_SCRIPT, src, dir] }).output();
      assert(out.success, new TextDecoder().decode(out.stderr));
      const utc = join(dir, "uniform_list_utc.parquet");
      await t.step("LIST shape, TIME UTC, INT96 as ns", () => assertVectorValues(utc));
      await t.step(
        "LIST shape, TIME local, INT96 as us",
        () => assertVectorValues(join(dir, "uniform_list_local.parquet")),
      );
      await t.step("column subset", () => assertVectorValues(utc, ["ba_field", "int96_field"]));

      await t.step("sub-microsecond INT96 change", async () => {
        const bytes = await Deno.readFile(utc);
        const rows16and17 = new Uint8Array(new Uint32Array([16, 17, 18, 17, 18, 19]).buffer);
        const at = bytes.findIndex((_, k) => rows16and17.every((b, j) => bytes[k + j] === b));
        assert(at >= 0);
        bytes[at + 12] = 16; // row 17's nanoseconds of day 18·2^32 + 16 instead of + 17: same microsecond
        const altered = join(dir, "int96.parquet");
        await Deno.writeFile(altered, bytes);
        await assertVectorValues(altered, ["boolean_field", "int64_field", "float_field"]);
        await assert.rejects(assertVectorValues(altered), /vector column "int96_field", row 17:/);
      });

      const changes: [string, number, string][] = [
        ["float_field", 5, "float_field + 0.000001::FLOAT"],
        ["int64_field", 49, "[98000000000000, 1]"],
        ["ba_field", 3, "'parquet003'::BLOB"],
        ["flba_field", 0, "'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x01'::BLOB"],
      ];
      const kept = VECTOR_COLUMNS.filter((c) => c !== "int96_field");
      for (const [column, row, value] of changes) {
        await t.step(`${column} changed at row ${row}`, async () => {
          const altered = join(dir, `${column}.parquet`);
          const replace = `CASE WHEN file_row_number = ${row} THEN ${value} ELSE ${column} END AS ${column}`;
          await withDuckDB((conn) =>
            rewrite(
              conn,
              utc,
              `SELECT * EXCLUDE (file_row_number, int96_field) REPLACE (${replace}) FROM $t`,
              altered,
            )
          );
          await assertVectorValues(altered, kept.filter((c) => c !== column));
          await assert.rejects(
            assertVectorValues(altered, kept),
            (e) =>
              e instanceof AssertionError && e.message.startsWith(`vector column "${column}", row ${row}:`),
          );
        });
      }
    });
  },
});
