/**
 * The parquet-testing PME vectors (written by Arrow C++ and parquet-java): every file decrypts and
 * every value of every row matches the generator; key metadata, AAD prefixes, signatures and column
 * selection behave as the files declare; and our re-encryption of each vector decrypts back to the
 * same values.
 *
 * @module
 */

import assert from "node:assert";
import { join } from "node:path";
import {
  type KeyRetriever,
  openParquetFile,
  PmeAadPrefixError,
  PmeAuthError,
  PmeKeyMissingError,
  transcodeFile,
} from "../pme/mod.ts";
import { withTempDir } from "./fixtures/tmp.ts";
import { assertVectorValues, VECTOR_COLUMNS, VECTOR_KEYS, VECTORS, VECTORS_DIR } from "./fixtures/vectors.ts";

const te = new TextEncoder();
const td = new TextDecoder();

function retriever(keys: Readonly<Record<string, Uint8Array>>, only?: string[]): KeyRetriever {
  return (meta) => {
    const id = td.decode(meta);
    return Promise.resolve(only && !only.includes(id) ? null : keys[id] ?? null);
  };
}

function aadOf(v: (typeof VECTORS)[number]) {
  return v.aadPrefix && !v.aadPrefix.stored ? te.encode(v.aadPrefix.value) : undefined;
}

Deno.test("every vector decrypts and every value matches the generator", async (t) => {
  await withTempDir(async (dir) => {
    for (const v of VECTORS) {
      await t.step(v.file, async () => {
        const out = join(dir, v.file.replace("/", "_") + ".plain.parquet");
        const keys = VECTOR_KEYS[v.keySet];
        const result = await transcodeFile(join(VECTORS_DIR, v.file), out, {
          keyRetriever: retriever(keys),
          aadPrefix: aadOf(v),
        }, { durable: false });
        assert.deepStrictEqual(result.skippedColumns, []);
        assert.strictEqual(result.rows, v.rows);
        await assertVectorValues(out);
      });
    }
  });
});

Deno.test("vectors declare their protection as documented", async () => {
  for (const v of VECTORS) {
    const keys = VECTOR_KEYS[v.keySet];
    const reader = await openParquetFile(join(VECTORS_DIR, v.file), {
      keyRetriever: retriever(keys),
      aadPrefix: aadOf(v),
    });
    try {
      assert.strictEqual(reader.mode, v.footer === "encrypted" ? "encrypted" : "signed", v.file);
      assert.strictEqual(reader.algorithm?.algorithm, v.algorithm);
      assert.strictEqual(td.decode(reader.footerKeyMetadata), "kf");
      if (v.footer === "plaintext") assert.strictEqual(reader.signatureVerified, true);
      if (v.aadPrefix?.stored) assert.strictEqual(td.decode(reader.algorithm?.aadPrefix), v.aadPrefix.value);
      for (const c of reader.columns) {
        const keyId = v.columnKeys[c.dotted] ?? v.columnKeys[c.path[0]];
        if (!keyId) assert.strictEqual(c.encryption, "none", `${v.file} ${c.dotted}`);
        else if (v.uniform) assert.strictEqual(c.encryption, "footer-key");
        else {
          assert.strictEqual(c.encryption, "column-key", `${v.file} ${c.dotted}`);
          assert.strictEqual(td.decode(c.keyMetadata), keyId);
        }
      }
    } finally {
      reader.close();
    }
  }
});

Deno.test("with only the footer key, plaintext columns decrypt and keyed ones are skipped or refused", async () => {
  await withTempDir(async (dir) => {
    for (const v of VECTORS.filter((x) => !x.uniform)) {
      const keys = VECTOR_KEYS[v.keySet];
      const input = join(VECTORS_DIR, v.file);
      const opts = { keyRetriever: retriever(keys, ["kf"]), aadPrefix: aadOf(v) };
      const out = join(dir, "partial.parquet");
      const keyed = Object.keys(v.columnKeys);
      const plain = VECTOR_COLUMNS.filter((c) => !keyed.some((k) => k === c || k.startsWith(c + ".")));
      if (plain.length === 0) {
        // Every column has its own key: nothing can be output with the footer key alone.
        await assert.rejects(() => transcodeFile(input, out, opts, { durable: false }), PmeKeyMissingError);
      } else {
        const result = await transcodeFile(input, out, opts, { durable: false });
        assert.deepStrictEqual(result.skippedColumns.sort(), keyed.sort(), v.file);
        await assertVectorValues(out, plain);
      }
      await assert.rejects(
        () =>
          transcodeFile(input, join(dir, "x.parquet"), opts, { columns: ["double_field"], durable: false }),
        (e: unknown) => e instanceof PmeKeyMissingError && e.location.column === "double_field",
      );
    }
  });
});

Deno.test("column selection decrypts just the columns asked for", async () => {
  await withTempDir(async (dir) => {
    const v = VECTORS.find((x) => x.keySet === "aes256")!;
    const out = join(dir, "sel.parquet");
    const result = await transcodeFile(join(VECTORS_DIR, v.file), out, {
      keyRetriever: retriever(VECTOR_KEYS.aes256),
    }, { columns: ["double_field", "int64_field"], durable: false });
    assert.deepStrictEqual(result.columns, ["int64_field.list.element", "double_field"]);
    await assertVectorValues(out, ["int64_field", "double_field"]);
  });
});

Deno.test("wrong keys, missing keys and AAD prefix misuse are refused", async () => {
  const aadFile = VECTORS.find((x) => x.aadPrefix?.stored)!;
  const keys = VECTOR_KEYS.aes128;
  const path = join(VECTORS_DIR, aadFile.file);
  await assert.rejects(
    () => openParquetFile(path, { keyRetriever: retriever(keys), aadPrefix: te.encode("other") }),
    PmeAadPrefixError,
  );
  // The stored prefix may be confirmed by the caller.
  (await openParquetFile(path, { keyRetriever: retriever(keys), aadPrefix: te.encode("tester") })).close();
  const plainVector = join(VECTORS_DIR, "encrypt_columns_and_footer.parquet.encrypted");
  await assert.rejects(
    () => openParquetFile(plainVector, { keyRetriever: retriever(keys), aadPrefix: te.encode("tester") }),
    PmeAadPrefixError,
  );
  await assert.rejects(() => openParquetFile(plainVector, { footerKey: keys.kc1 }), PmeAuthError);
  await assert.rejects(() => openParquetFile(plainVector, {}), PmeKeyMissingError);
  // A wrong column key fails on that column, naming it.
  await withTempDir(async (dir) => {
    await assert.rejects(
      () =>
        transcodeFile(plainVector, join(dir, "o.parquet"), {
          footerKey: keys.kf,
          columnKeys: { double_field: keys.kc2, float_field: keys.kc2 },
        }, { durable: false }),
      (e: unknown) => e instanceof PmeAuthError && e.location.column === "double_field",
    );
  });
  // Signed plaintext footer: the signature is checked with the footer key; a wrong one fails.
  const signed = join(VECTORS_DIR, "encrypt_columns_plaintext_footer.parquet.encrypted");
  await assert.rejects(() => openParquetFile(signed, { footerKey: keys.kc1 }), PmeAuthError);
  await assert.rejects(() => openParquetFile(signed, {}), PmeKeyMissingError);
  const unchecked = await openParquetFile(signed, { checkFooterIntegrity: false });
  assert.strictEqual(unchecked.signatureVerified, undefined);
  unchecked.close();
});

Deno.test("each vector re-encrypted by us (same layout, fresh AAD) decrypts to the same values", async () => {
  await withTempDir(async (dir) => {
    for (const v of VECTORS) {
      const keys = VECTOR_KEYS[v.keySet];
      const input = join(VECTORS_DIR, v.file);
      const enc = join(dir, "re.parquet.encrypted");
      const columnKeys = v.uniform ? undefined : Object.fromEntries(
        Object.entries(v.columnKeys).map(([c, id]) => [c, { key: keys[id], keyMetadata: te.encode(id) }]),
      );
      await transcodeFile(input, enc, { keyRetriever: retriever(keys), aadPrefix: aadOf(v) }, {
        encryption: {
          footerKey: keys.kf,
          footerKeyMetadata: te.encode("kf"),
          columnKeys,
          plaintextFooter: v.footer === "plaintext",
          aadPrefix: v.aadPrefix ? te.encode(v.aadPrefix.value) : undefined,
          storeAadPrefix: v.aadPrefix?.stored ?? true,
        },
        durable: false,
      });
      const out = join(dir, "re.plain.parquet");
      await transcodeFile(enc, out, { keyRetriever: retriever(keys), aadPrefix: aadOf(v) }, {
        durable: false,
      });
      await assertVectorValues(out);
    }
  });
});
