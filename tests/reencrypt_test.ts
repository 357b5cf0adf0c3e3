/**
 * Re-encryption with fresh data keys keeps a file's protection unless told otherwise
 * (`kms/reencrypt.ts`, `kms/files.ts`), over an InMemoryKMS-compatible KMS:
 *
 * - `currentEncryptionConfiguration` reads back exactly the configuration a file was written with:
 *   footer and column master keys (columns sharing a data key stay one selector), uniform encryption,
 *   algorithm, footer mode, AAD prefix (stored or supplied), internal or external key material,
 *   single or double wrapping, data key and KEK lengths;
 * - `reencryptFile` without a configuration reproduces all of it with new data keys and new key
 *   references (external key material stays external, the old references are gone);
 * - a configuration that leaves columns encrypted today without a key is refused
 *   (`PmeProtectionError` naming them) unless `decryptColumns` names them; nothing changes on disk;
 * - a principal who cannot unwrap one master key's data keys cannot re-encrypt (the old code dropped
 *   those columns from the new file);
 * - the KEK cache keeps KEKs of different lengths apart.
 *
 * @module
 */

import assert from "node:assert";
import { join } from "node:path";
import { openParquetFile, PmeKeyMissingError } from "../pme/mod.ts";
import { CryptoFactory, type EncryptionConfiguration } from "../kms/crypto_factory.ts";
import { currentEncryptionConfiguration, decryptFileWithKms, encryptFileWithKms } from "../kms/files.ts";
import { reencryptFile } from "../kms/reencrypt.ts";
import { type KeyMaterial, parseKeyMetadata } from "../kms/key_material.ts";
import { keyMaterialPath, KeyMaterialStore } from "../kms/key_material_store.ts";
import { MemoryKms } from "./fixtures/memory_kms.ts";
import { assertSameRows } from "./fixtures/compare.ts";
import { parquetWasmInputs } from "./fixtures/inputs.ts";
import { withTempDir } from "./fixtures/tmp.ts";

const te = new TextEncoder();
const MASTER = {
  kf: te.encode("0123456789012345"),
  kc1: te.encode("1234567890123450"),
  kc2: te.encode("1234567890123451"),
};

/** External key material, double wrapping, 256-bit DEKs and KEKs, CTR, plaintext footer, stored AAD prefix. */
const EXTERNAL: EncryptionConfiguration = {
  footerKey: "kf",
  columnKeys: { kc1: ["id", "i64"], kc2: ["label", "point"] },
  uniformEncryption: false,
  encryptionAlgorithm: "AES_GCM_CTR_V1",
  plaintextFooter: true,
  doubleWrapping: true,
  internalKeyMaterial: false,
  dataKeyLengthBits: 256,
  kekLengthBits: 256,
  aadPrefix: te.encode("lake/food_log/part-7"),
  storeAadPrefix: true,
};

/** Internal key material, single wrapping, 192-bit DEKs, uniform encryption, GCM, encrypted footer. */
const INTERNAL: EncryptionConfiguration = {
  footerKey: "kf",
  uniformEncryption: true,
  encryptionAlgorithm: "AES_GCM_V1",
  plaintextFooter: false,
  doubleWrapping: false,
  internalKeyMaterial: true,
  dataKeyLengthBits: 192,
  kekLengthBits: 128,
  storeAadPrefix: true,
};

async function input(dir: string): Promise<string> {
  return (await parquetWasmInputs(dir)).find((f) => f.file.endsWith("wasm_v1_snappy_dict.parquet"))!.file;
}

/** Every key metadata of a file: footer first, then per leaf column (undefined when plaintext). */
async function keyMetadata(
  factory: CryptoFactory,
  file: string,
  aadPrefix?: Uint8Array,
): Promise<{ footer: Uint8Array; columns: Record<string, Uint8Array | undefined>; leaves: string[] }> {
  const r = await openParquetFile(file, factory.fileDecryptionProperties({}, { aadPrefix }, file));
  try {
    return {
      footer: r.footerKeyMetadata!,
      columns: Object.fromEntries(r.columns.map((c) => [c.dotted, c.keyMetadata])),
      leaves: r.columns.map((c) => c.dotted),
    };
  } finally {
    r.close();
  }
}

/** The key material behind key metadata (internal, or from the file's external store). */
async function material(file: string, meta: Uint8Array): Promise<KeyMaterial> {
  const parsed = parseKeyMetadata(meta);
  return parsed.internal ? parsed.material : (await KeyMaterialStore.load(file)).get(parsed.reference);
}

/** Length in bytes of the data key behind key metadata. */
async function dekLength(factory: CryptoFactory, file: string, meta: Uint8Array): Promise<number> {
  const key = await factory.fileDecryptionProperties({}, {}, file).keyRetriever!(meta, {
    kind: "footer",
    file,
  });
  return key!.length;
}

/** Protection of each leaf: "none", "footer-key" or the master key id of its column key. */
async function protection(
  factory: CryptoFactory,
  file: string,
  aadPrefix?: Uint8Array,
): Promise<Record<string, string>> {
  const r = await openParquetFile(file, factory.fileDecryptionProperties({}, { aadPrefix }, file));
  try {
    const out: Record<string, string> = {};
    for (const c of r.columns) {
      out[c.dotted] = c.encryption === "column-key"
        ? (await material(file, c.keyMetadata!)).masterKeyId
        : c.encryption;
    }
    return out;
  } finally {
    r.close();
  }
}

/** Files in `dir` whose names contain "reencrypt" or a temporary suffix. */
function leftovers(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) =>
    n.includes("reencrypt") || n.includes(".tmp-")
  );
}

Deno.test("currentEncryptionConfiguration reads back what a file was written with", async () => {
  await withTempDir(async (dir) => {
    const file = await input(dir);
    const kms = new MemoryKms(MASTER);
    const factory = new CryptoFactory(() => kms);
    const supplied: EncryptionConfiguration = {
      ...EXTERNAL,
      columnKeys: { kc2: ["f64", "point.a"], kc1: ["label"] },
      internalKeyMaterial: true,
      plaintextFooter: false,
      encryptionAlgorithm: "AES_GCM_V1",
      dataKeyLengthBits: 128,
      kekLengthBits: 192,
      aadPrefix: te.encode("supplied-by-readers"),
      storeAadPrefix: false,
    };
    for (
      const [name, config] of [["external", EXTERNAL], ["internal", INTERNAL], [
        "supplied",
        supplied,
      ]] as const
    ) {
      const out = join(dir, `${name}.parquet`);
      await encryptFileWithKms(factory, {}, config, file, out, { durable: false });
      const supply = config.storeAadPrefix === false ? config.aadPrefix : undefined;
      const current = await currentEncryptionConfiguration(new CryptoFactory(() => kms), {}, out, {
        aadPrefix: supply,
      });
      const expected = { ...config };
      if (expected.uniformEncryption) delete expected.columnKeys;
      assert.deepStrictEqual(current.configuration, expected, name);
      const { leaves } = await keyMetadata(factory, out, supply);
      assert.deepStrictEqual(current.columns, leaves);
      const covered = (leaf: string) =>
        config.uniformEncryption ||
        Object.values(config.columnKeys!).flat().some((s) => leaf === s || leaf.startsWith(s + "."));
      assert.deepStrictEqual(current.plaintextColumns, leaves.filter((l) => !covered(l)), name);
    }
  });
});

Deno.test("reencryptFile without a configuration keeps storage, wrapping, key lengths, algorithm, footer, AAD prefix and master keys", async () => {
  await withTempDir(async (dir) => {
    const file = await input(dir);
    const kms = new MemoryKms(MASTER);
    const factory = new CryptoFactory(() => kms);
    const supplied: EncryptionConfiguration = {
      ...EXTERNAL,
      internalKeyMaterial: true,
      storeAadPrefix: false,
    };
    for (
      const [name, config] of [["external", EXTERNAL], ["internal", INTERNAL], [
        "supplied",
        supplied,
      ]] as const
    ) {
      const out = join(dir, `${name}.parquet`);
      await encryptFileWithKms(factory, {}, config, file, out, { durable: false });
      const supply = config.storeAadPrefix === false ? config.aadPrefix : undefined;
      const before = await keyMetadata(factory, out, supply);
      const protectionBefore = await protection(factory, out, supply);
      const storeBefore = config.internalKeyMaterial ? undefined : await KeyMaterialStore.load(out);
      const oldFooterDek = await factory.fileDecryptionProperties({}, {}, out).keyRetriever!(before.footer, {
        kind: "footer",
        file: out,
      });

      const result = await reencryptFile(new CryptoFactory(() => kms), {}, out, {}, {
        decryption: { aadPrefix: supply },
      });

      const reader = new CryptoFactory(() => kms);
      const after = await keyMetadata(reader, out, supply);
      assert.deepStrictEqual(result.after.configuration, result.before.configuration, name);
      assert.deepStrictEqual(result.changed, []);
      assert.deepStrictEqual(
        await protection(reader, out, supply),
        protectionBefore,
        `${name}: master key per column`,
      );
      const r = await openParquetFile(out, reader.fileDecryptionProperties({}, { aadPrefix: supply }, out));
      try {
        assert.strictEqual(r.algorithm?.algorithm, config.encryptionAlgorithm);
        assert.strictEqual(r.mode, config.plaintextFooter ? "signed" : "encrypted");
        assert.deepStrictEqual(r.algorithm?.aadPrefix, supply ? undefined : config.aadPrefix);
        assert.strictEqual(r.algorithm?.supplyAadPrefix, !!supply);
      } finally {
        r.close();
      }
      // Storage, wrapping and key lengths of every data key.
      const metas = [after.footer, ...Object.values(after.columns).filter((m): m is Uint8Array => !!m)];
      for (const meta of metas) {
        assert.strictEqual(parseKeyMetadata(meta).internal, config.internalKeyMaterial, name);
        const m = await material(out, meta);
        assert.strictEqual(m.doubleWrapping, config.doubleWrapping, name);
        assert.strictEqual(await dekLength(reader, out, meta), config.dataKeyLengthBits! / 8, name);
        if (m.doubleWrapping) {
          const kek = await kms.unwrapKey(m.wrappedKek!, m.masterKeyId);
          assert.strictEqual(kek.length, config.kekLengthBits! / 8, `${name}: KEK length`);
        }
      }
      if (storeBefore) {
        // Still external: new references only, every wrapped key new, one key material file.
        const storeAfter = await KeyMaterialStore.load(out);
        assert.strictEqual(storeAfter.refs().length, storeBefore.refs().length);
        assert(storeAfter.refs().every((ref) => !storeBefore.refs().includes(ref)), storeAfter.refs().join());
        const wrappedBefore = storeBefore.refs().map((ref) => storeBefore.get(ref).wrappedDek);
        for (const ref of storeAfter.refs()) assert(!wrappedBefore.includes(storeAfter.get(ref).wrappedDek));
      } else {
        await assert.rejects(Deno.lstat(keyMaterialPath(out)), Deno.errors.NotFound);
        const wrapped = async (meta: Uint8Array) => (await material(out, meta)).wrappedDek;
        assert.notStrictEqual(await wrapped(after.footer), await wrapped(before.footer));
      }
      // The old footer key no longer opens the file; the new one reads every value.
      await assert.rejects(() =>
        openParquetFile(out, { footerKey: oldFooterDek!, aadPrefix: config.aadPrefix })
      );
      const plain = join(dir, `${name}.plain.parquet`);
      await decryptFileWithKms(new CryptoFactory(() => kms), {}, out, plain, {
        durable: false,
        decryption: { aadPrefix: supply },
      });
      await assertSameRows(file, plain);
      assert.deepStrictEqual(leftovers(dir), []);
    }
  });
});

Deno.test("reencryptFile refuses to leave encrypted columns without a key unless decryptColumns names them", async () => {
  await withTempDir(async (dir) => {
    const file = await input(dir);
    const kms = new MemoryKms(MASTER);
    const factory = new CryptoFactory(() => kms);
    const out = join(dir, "data.parquet");
    await encryptFileWithKms(factory, {}, EXTERNAL, file, out, { durable: false });
    const bytes = await Deno.readFile(out);
    const materialText = await Deno.readTextFile(keyMaterialPath(out));
    const unchanged = async () => {
      assert.deepStrictEqual(await Deno.readFile(out), bytes);
      assert.strictEqual(await Deno.readTextFile(keyMaterialPath(out)), materialText);
      assert.deepStrictEqual(leftovers(dir), []);
    };
    const reduced = { columnKeys: { kc1: ["id"] } };
    for (
      const [decryptColumns, named] of [
        [undefined, ["i64", "label", "point.a", "point.b"]],
        [["i64", "point"], ["label"]],
      ] as const
    ) {
      await assert.rejects(
        reencryptFile(factory, {}, out, reduced, { decryptColumns: decryptColumns && [...decryptColumns] }),
        (e: Error & { columns?: string[] }) => {
          assert.strictEqual(e.name, "PmeProtectionError", e.message);
          assert.deepStrictEqual(e.columns, named);
          assert.match(e.message, /decryptColumns/);
          return true;
        },
      );
      await unchanged();
    }
    // Named: those columns in plaintext, id under kc1, the rest of the file as it was.
    const res = await reencryptFile(factory, {}, out, reduced, { decryptColumns: ["i64", "label", "point"] });
    assert.deepStrictEqual(res.decryptedColumns, ["i64", "label", "point.a", "point.b"]);
    const p = await protection(new CryptoFactory(() => kms), out);
    assert.deepStrictEqual(
      Object.entries(p).filter(([, v]) => v !== "none"),
      [["id", "kc1"]],
    );
    assert.strictEqual(parseKeyMetadata((await keyMetadata(factory, out)).footer).internal, false);
    // decryptColumns alone: a leaf of a column that shared a data key leaves it, its sibling keeps it.
    await reencryptFile(factory, {}, out, { columnKeys: EXTERNAL.columnKeys }); // protection raised again
    await reencryptFile(factory, {}, out, {}, { decryptColumns: ["point.a"] });
    const q = await protection(new CryptoFactory(() => kms), out);
    assert.strictEqual(q["point.a"], "none");
    assert.strictEqual(q["point.b"], "kc2");
    assert.strictEqual(q.label, "kc2");
    assert.strictEqual(q.id, "kc1");
    const plain = join(dir, "plain.parquet");
    await decryptFileWithKms(new CryptoFactory(() => kms), {}, out, plain, { durable: false });
    await assertSameRows(file, plain);
  });
});

Deno.test("reencryptFile by a principal who cannot unwrap some columns fails and drops nothing", async () => {
  await withTempDir(async (dir) => {
    const file = await input(dir);
    const kms = new MemoryKms(MASTER);
    const out = join(dir, "data.parquet");
    await encryptFileWithKms(
      new CryptoFactory(() => kms),
      {},
      { ...EXTERNAL, internalKeyMaterial: true },
      file,
      out,
      {
        durable: false,
      },
    );
    const bytes = await Deno.readFile(out);
    // This principal may not use kc2; its configuration does not need kc2 to write.
    const limited = new MemoryKms(MASTER);
    limited.denied.add("kc2");
    await assert.rejects(
      reencryptFile(new CryptoFactory(() => limited), {}, out, {
        footerKey: "kf",
        columnKeys: { kc1: ["id", "i64"] },
      }, {
        decryptColumns: ["label", "point"],
      }),
      (e: Error) => {
        assert(e instanceof PmeKeyMissingError, `${e.name}: ${e.message}`);
        assert.match(e.message, /kc2/);
        return true;
      },
    );
    assert.deepStrictEqual(await Deno.readFile(out), bytes);
    assert.deepStrictEqual(leftovers(dir), []);
  });
});

Deno.test("KEKs of different lengths for one master key are kept apart by the KEK cache", async () => {
  await withTempDir(async (dir) => {
    const file = await input(dir);
    const kms = new MemoryKms(MASTER);
    const factory = new CryptoFactory(() => kms);
    const lengths: number[] = [];
    for (const bits of [128, 256, 192]) {
      const out = join(dir, `kek-${bits}.parquet`);
      await encryptFileWithKms(
        factory,
        {},
        { ...INTERNAL, doubleWrapping: true, kekLengthBits: bits },
        file,
        out,
        {
          durable: false,
        },
      );
      const m = await material(out, (await keyMetadata(factory, out)).footer);
      lengths.push((await kms.unwrapKey(m.wrappedKek!, m.masterKeyId)).length * 8);
    }
    assert.deepStrictEqual(lengths, [128, 256, 192]);
  });
});
