/**
 * Key tools over an InMemoryKMS-compatible KMS: PKMT1 key material and key metadata as parquet-java
 * and Arrow C++ write them, single and double wrapping, internal and external key material, KEK and
 * client caching (KMS calls per master key, not per file), access denial per master key, KMS
 * outages, master-key rotation and re-encryption with fresh data keys.
 *
 * @module
 */

import assert from "node:assert";
import { join } from "node:path";
import { openParquetFile, PmeKeyMissingError } from "../pme/mod.ts";
import { CryptoFactory, type EncryptionConfiguration } from "../kms/crypto_factory.ts";
import { decryptFileWithKms, encryptFileWithKms } from "../kms/files.ts";
import {
  externalKeyMetadata,
  type KeyMaterial,
  keyMaterialJson,
  parseKeyMaterial,
  parseKeyMetadata,
} from "../kms/key_material.ts";
import { keyMaterialPath, KeyMaterialStore } from "../kms/key_material_store.ts";
import { checkAllCurrent, rotateMasterKeys } from "../kms/rotation.ts";
import { reencryptFile } from "../kms/reencrypt.ts";
import { KeyMaterialError, KmsUnavailableError } from "../kms/errors.ts";
import { MemoryKms } from "./fixtures/memory_kms.ts";
import { assertSameRows } from "./fixtures/compare.ts";
import { parquetWasmInputs } from "./fixtures/inputs.ts";
import { withTempDir } from "./fixtures/tmp.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const MASTER = {
  kf: te.encode("0123456789012345"),
  kc1: te.encode("1234567890123450"),
  kc2: te.encode("1234567890123451"),
};
const CONFIG: EncryptionConfiguration = {
  footerKey: "kf",
  columnKeys: { kc1: ["id", "i64"], kc2: ["label", "point"] },
};

async function input(dir: string): Promise<string> {
  return (await parquetWasmInputs(dir)).find((f) => f.file.endsWith("wasm_v1_snappy_dict.parquet"))!.file;
}

async function footerKeyMetadata(path: string, factory: CryptoFactory): Promise<Uint8Array> {
  const r = await openParquetFile(path, factory.fileDecryptionProperties({}, {}, path));
  try {
    return r.footerKeyMetadata!;
  } finally {
    r.close();
  }
}

Deno.test("PKMT1 key material: Arrow C++ field order, any order parsed, malformed refused", () => {
  const footer: KeyMaterial = {
    isFooterKey: true,
    kmsInstanceId: "DEFAULT",
    kmsInstanceUrl: "DEFAULT",
    masterKeyId: "kf",
    wrappedDek: "d2Vk",
    doubleWrapping: true,
    kekId: "a2Vr",
    wrappedKek: "d2tlaw==",
  };
  assert.strictEqual(
    keyMaterialJson(footer, true),
    '{"keyMaterialType":"PKMT1","internalStorage":true,"isFooterKey":true,"kmsInstanceID":"DEFAULT",' +
      '"kmsInstanceURL":"DEFAULT","masterKeyID":"kf","wrappedDEK":"d2Vk","doubleWrapping":true,' +
      '"keyEncryptionKeyID":"a2Vr","wrappedKEK":"d2tlaw=="}',
  );
  const column: KeyMaterial = {
    isFooterKey: false,
    masterKeyId: "kc1",
    wrappedDek: "eA==",
    doubleWrapping: false,
  };
  // As pyarrow writes single-wrapped external column material.
  assert.strictEqual(
    keyMaterialJson(column),
    '{"keyMaterialType":"PKMT1","isFooterKey":false,"masterKeyID":"kc1","wrappedDEK":"eA==","doubleWrapping":false}',
  );
  assert.strictEqual(
    td.decode(externalKeyMetadata("columnKey0")),
    '{"keyMaterialType":"PKMT1","internalStorage":false,"keyReference":"columnKey0"}',
  );
  // parquet-java writes fields in HashMap order.
  const shuffled = '{"wrappedDEK":"d2Vk","doubleWrapping":false,"masterKeyID":"kf","isFooterKey":true,' +
    '"kmsInstanceURL":"u","keyMaterialType":"PKMT1","kmsInstanceID":"i","internalStorage":true}';
  const parsed = parseKeyMetadata(te.encode(shuffled));
  assert.ok(parsed.internal);
  assert.deepStrictEqual(parsed.material, {
    isFooterKey: true,
    kmsInstanceId: "i",
    kmsInstanceUrl: "u",
    masterKeyId: "kf",
    wrappedDek: "d2Vk",
    doubleWrapping: false,
  });
  assert.deepStrictEqual(parseKeyMetadata(externalKeyMetadata("footerKey")), {
    internal: false,
    reference: "footerKey",
  });
  for (
    const bad of [
      "kf", // a plain key id (parquet-testing low-level files)
      "{}",
      '{"keyMaterialType":"PKMT2","internalStorage":true}',
      '{"keyMaterialType":"PKMT1"}', // internalStorage is required
      '{"keyMaterialType":"PKMT1","internalStorage":true,"isFooterKey":"yes"}',
      '{"keyMaterialType":"PKMT1","internalStorage":true,"isFooterKey":false,"masterKeyID":"k","wrappedDEK":"x","doubleWrapping":true}',
    ]
  ) {
    assert.throws(() => parseKeyMetadata(te.encode(bad)), KeyMaterialError, bad);
  }
  assert.throws(() => parseKeyMetadata(new Uint8Array([0xff, 0xfe])), KeyMaterialError);
  assert.throws(() => parseKeyMaterial("[1]"), KeyMaterialError);
});

Deno.test("single/double wrapping × internal/external key material round-trip every value", async (t) => {
  await withTempDir(async (dir) => {
    const file = await input(dir);
    for (const doubleWrapping of [true, false]) {
      for (const internalKeyMaterial of [true, false]) {
        await t.step(`double=${doubleWrapping} internal=${internalKeyMaterial}`, async () => {
          const kms = new MemoryKms(MASTER);
          const factory = new CryptoFactory(() => kms);
          const out = join(dir, `o-${doubleWrapping}-${internalKeyMaterial}.parquet`);
          await encryptFileWithKms(
            factory,
            {},
            { ...CONFIG, doubleWrapping, internalKeyMaterial },
            file,
            out,
            {
              durable: false,
            },
          );
          const meta = parseKeyMetadata(await footerKeyMetadata(out, factory));
          assert.strictEqual(meta.internal, internalKeyMaterial);
          const material = meta.internal
            ? meta.material
            : (await KeyMaterialStore.load(out)).get(meta.reference);
          assert.strictEqual(material.doubleWrapping, doubleWrapping);
          assert.strictEqual(material.masterKeyId, "kf");
          assert.strictEqual(material.kmsInstanceId, "DEFAULT");
          if (!internalKeyMaterial) {
            const store = await KeyMaterialStore.load(out);
            assert.deepStrictEqual(store.refs().sort(), [
              "columnKey0",
              "columnKey1",
              "columnKey2",
              "columnKey3",
              "footerKey",
            ]);
          }
          // A fresh factory (no caches) decrypts through the KMS.
          const plain = join(dir, "plain.parquet");
          const result = await decryptFileWithKms(new CryptoFactory(() => kms), {}, out, plain, {
            durable: false,
          });
          assert.deepStrictEqual(result.skippedColumns, []);
          await assertSameRows(file, plain);
        });
      }
    }
  });
});

Deno.test("double wrapping: N files cost one wrap per master key; reads one unwrap per KEK", async () => {
  await withTempDir(async (dir) => {
    const file = await input(dir);
    const kms = new MemoryKms(MASTER);
    const factory = new CryptoFactory(() => kms);
    const n = 12;
    for (let i = 0; i < n; i++) {
      await encryptFileWithKms(factory, {}, CONFIG, file, join(dir, `f${i}.parquet`), { durable: false });
    }
    assert.deepStrictEqual(kms.calls, { wrap: 3, unwrap: 0 }); // kf, kc1, kc2: one KEK each
    for (let i = 0; i < n; i++) {
      await decryptFileWithKms(factory, {}, join(dir, `f${i}.parquet`), join(dir, "p.parquet"), {
        durable: false,
      });
    }
    assert.deepStrictEqual(kms.calls, { wrap: 3, unwrap: 3 });
    // Single wrapping: one KMS call per data key.
    const single = new MemoryKms(MASTER);
    const f2 = new CryptoFactory(() => single);
    for (let i = 0; i < 3; i++) {
      await encryptFileWithKms(
        f2,
        {},
        { ...CONFIG, doubleWrapping: false },
        file,
        join(dir, `s${i}.parquet`),
        {
          durable: false,
        },
      );
    }
    assert.strictEqual(single.calls.wrap, 3 * 5); // footer + 4 columns per file
    // A token's caches expire after the lifetime: new KEKs are wrapped.
    let now = 0;
    const timed = new MemoryKms(MASTER);
    const f3 = new CryptoFactory(() => timed, { cacheLifetimeSeconds: 10, now: () => now });
    await encryptFileWithKms(f3, {}, CONFIG, file, join(dir, "t1.parquet"), { durable: false });
    now = 5_000;
    await encryptFileWithKms(f3, {}, CONFIG, file, join(dir, "t2.parquet"), { durable: false });
    assert.strictEqual(timed.calls.wrap, 3);
    now = 11_000;
    await encryptFileWithKms(f3, {}, CONFIG, file, join(dir, "t3.parquet"), { durable: false });
    assert.strictEqual(timed.calls.wrap, 6);
    // Different tokens never share KEKs.
    await encryptFileWithKms(f3, { keyAccessToken: "other" }, CONFIG, file, join(dir, "t4.parquet"), {
      durable: false,
    });
    assert.strictEqual(timed.calls.wrap, 9);
  });
});

Deno.test("a principal denied a master key reads exactly the other columns", async () => {
  await withTempDir(async (dir) => {
    const file = await input(dir);
    const kms = new MemoryKms(MASTER);
    const out = join(dir, "o.parquet");
    await encryptFileWithKms(new CryptoFactory(() => kms), {}, CONFIG, file, out, { durable: false });
    kms.denied.add("kc2");
    const factory = new CryptoFactory(() => kms);
    const plain = join(dir, "p.parquet");
    const result = await decryptFileWithKms(factory, {}, out, plain, { durable: false });
    assert.deepStrictEqual(result.skippedColumns, ["label", "point.a", "point.b"]);
    const kept = ["id", "i16", "i64", "f32", "f64", "flag", "text", "bin", "list"];
    await assertSameRows(file, plain, kept);
    await assert.rejects(
      () => decryptFileWithKms(factory, {}, out, plain, { columns: ["label"], durable: false }),
      (e: unknown) =>
        e instanceof PmeKeyMissingError && /master key kc2/.test(e.message) && /denied/.test(e.message),
    );
    kms.denied.add("kf");
    await assert.rejects(
      () => decryptFileWithKms(new CryptoFactory(() => kms), {}, out, plain, { durable: false }),
      (e: unknown) => e instanceof PmeKeyMissingError && /footer key/.test(e.message) && /kf/.test(e.message),
    );
  });
});

Deno.test("a KMS outage is a retryable error and leaves no output or key material", async () => {
  await withTempDir(async (dir) => {
    const file = await input(dir);
    const kms = new MemoryKms(MASTER);
    kms.down = true;
    const out = join(dir, "o.parquet");
    await assert.rejects(
      () =>
        encryptFileWithKms(
          new CryptoFactory(() => kms),
          {},
          { ...CONFIG, internalKeyMaterial: false },
          file,
          out,
        ),
      (e: unknown) => e instanceof KmsUnavailableError && e.retryable,
    );
    assert.deepStrictEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) =>
        n !== "wasm_v1_snappy_dict.parquet" && !n.startsWith("wasm_")
      ),
      [],
    );
    kms.down = false;
    await encryptFileWithKms(new CryptoFactory(() => kms), {}, CONFIG, file, out, { durable: false });
    kms.down = true;
    await assert.rejects(
      () => decryptFileWithKms(new CryptoFactory(() => kms), {}, out, join(dir, "p.parquet")),
      (e: unknown) => e instanceof KmsUnavailableError,
    );
    assert.ok(![...Deno.readDirSync(dir)].some((e) => e.name.includes("p.parquet")));
  });
});

Deno.test("external key material: a missing file or reference is a clear error", async () => {
  await withTempDir(async (dir) => {
    const file = await input(dir);
    const kms = new MemoryKms(MASTER);
    const out = join(dir, "o.parquet");
    await encryptFileWithKms(
      new CryptoFactory(() => kms),
      {},
      { ...CONFIG, internalKeyMaterial: false },
      file,
      out,
    );
    const material = keyMaterialPath(out);
    const saved = await Deno.readTextFile(material);
    await Deno.remove(material);
    await assert.rejects(
      () => decryptFileWithKms(new CryptoFactory(() => kms), {}, out, join(dir, "p.parquet")),
      (e: unknown) => e instanceof KeyMaterialError && e.message.includes(material),
    );
    const o = JSON.parse(saved);
    delete o.columnKey0;
    await Deno.writeTextFile(material, JSON.stringify(o));
    await assert.rejects(
      () =>
        decryptFileWithKms(new CryptoFactory(() => kms), {}, out, join(dir, "p.parquet"), {
          columns: ["id"],
        }),
      (e: unknown) => e instanceof KeyMaterialError && /columnKey0/.test(e.message),
    );
  });
});

Deno.test("master-key rotation re-wraps external key material; old versions can then be retired", async () => {
  await withTempDir(async (dir) => {
    const file = await input(dir);
    const kms = new MemoryKms(MASTER);
    const factory = new CryptoFactory(() => kms);
    const lake = join(dir, "lake", "food_log");
    await Deno.mkdir(lake, { recursive: true });
    const files = [];
    for (let i = 0; i < 4; i++) {
      const out = join(lake, `part-${i}.parquet`);
      await encryptFileWithKms(
        factory,
        {},
        {
          ...CONFIG,
          internalKeyMaterial: false,
          doubleWrapping: i % 2 === 0,
        },
        file,
        out,
        { durable: false },
      );
      files.push(out);
    }
    const before = await Promise.all(files.map((f) => Deno.readFile(f)));
    for (const id of ["kf", "kc1", "kc2"]) kms.rotate(id);
    assert.deepStrictEqual((await checkAllCurrent(kms, join(dir, "lake"))).stale.length, 4);
    // A leftover temporary file of a crashed run is cleaned up.
    await Deno.writeTextFile(join(lake, "_TMP_KEY_MATERIAL_FOR_part-0.parquet.json"), "{partial");
    const report = await rotateMasterKeys(kms, join(dir, "lake"));
    assert.strictEqual(report.rotated.length, 4);
    assert.deepStrictEqual(report.failed, []);
    assert.ok(![...Deno.readDirSync(lake)].some((e) => e.name.startsWith("_TMP_")));
    assert.deepStrictEqual(await checkAllCurrent(kms, join(dir, "lake")), { stale: [], staleInternal: [] });
    // Data files are untouched.
    for (const [i, f] of files.entries()) assert.deepStrictEqual(await Deno.readFile(f), before[i]);
    // Retire the old versions: everything still decrypts.
    for (const id of ["kf", "kc1", "kc2"]) kms.keys.set(id, kms.keys.get(id)!.slice(1));
    for (const f of files) {
      await decryptFileWithKms(new CryptoFactory(() => kms), {}, f, join(dir, "p.parquet"), {
        durable: false,
      });
      await assertSameRows(file, join(dir, "p.parquet"));
    }
    // Running again is a no-op.
    const again = await rotateMasterKeys(kms, join(dir, "lake"));
    assert.deepStrictEqual([again.rotated.length, again.current.length], [0, 4]);
    // A file whose master key is denied is reported; the others rotate.
    kms.rotate("kc2");
    kms.denied.add("kc1");
    const partial = await rotateMasterKeys(kms, join(dir, "lake"));
    assert.strictEqual(partial.failed.length, 4);
    assert.match(partial.failed[0].error, /kc1/);
  });
});

Deno.test("re-encryption replaces data keys, keeps the data, and survives a failed verification", async () => {
  await withTempDir(async (dir) => {
    const file = await input(dir);
    const kms = new MemoryKms(MASTER);
    const factory = new CryptoFactory(() => kms);
    for (const internalKeyMaterial of [true, false]) {
      const out = join(dir, `r-${internalKeyMaterial}.parquet`);
      await encryptFileWithKms(factory, {}, { ...CONFIG, internalKeyMaterial }, file, out, {
        durable: false,
      });
      const oldMeta = td.decode(await footerKeyMetadata(out, factory));
      const oldDek = await (factory.fileDecryptionProperties({}, {}, out).keyRetriever!)(
        await footerKeyMetadata(out, factory),
        { kind: "footer", file: out },
      );
      await reencryptFile(factory, {}, out, {
        ...CONFIG,
        internalKeyMaterial,
        encryptionAlgorithm: "AES_GCM_CTR_V1",
      });
      const newMetaBytes = await footerKeyMetadata(out, new CryptoFactory(() => kms));
      assert.notStrictEqual(td.decode(newMetaBytes), oldMeta);
      const newDek = await (factory.fileDecryptionProperties({}, {}, out).keyRetriever!)(newMetaBytes, {
        kind: "footer",
        file: out,
      });
      assert.notDeepStrictEqual(newDek, oldDek);
      const reader = await openParquetFile(out, factory.fileDecryptionProperties({}, {}, out));
      assert.strictEqual(reader.algorithm?.algorithm, "AES_GCM_CTR_V1");
      reader.close();
      // The old footer DEK no longer opens the file.
      await assert.rejects(() => openParquetFile(out, { footerKey: oldDek! }));
      await decryptFileWithKms(new CryptoFactory(() => kms), {}, out, join(dir, "p.parquet"), {
        durable: false,
      });
      await assertSameRows(file, join(dir, "p.parquet"));
      if (!internalKeyMaterial) {
        const refs = (await KeyMaterialStore.load(out)).refs();
        assert.strictEqual(refs.length, 5); // only the new generation remains
        assert.ok(refs.every((r) => /\.g[0-9a-f]{8}$/.test(r)), refs.join());
      }
      // A KMS outage during re-encryption leaves the file as it was.
      const bytes = await Deno.readFile(out);
      const material = internalKeyMaterial ? undefined : await Deno.readTextFile(keyMaterialPath(out));
      const flaky = new MemoryKms();
      for (const [k, v] of kms.keys) flaky.keys.set(k, v);
      const f2 = new CryptoFactory(() => flaky);
      flaky.denied.add("kc2"); // the new keys cannot be made
      await assert.rejects(() => reencryptFile(f2, {}, out, { ...CONFIG, internalKeyMaterial }));
      assert.deepStrictEqual(await Deno.readFile(out), bytes);
      if (material) assert.strictEqual(await Deno.readTextFile(keyMaterialPath(out)), material);
      assert.ok(![...Deno.readDirSync(dir)].some((e) => e.name.includes("reencrypt")));
    }
  });
});

Deno.test("local key wrapping: node:crypto and WebCrypto paths interoperate; tampering is refused", async () => {
  const { encryptKeyLocally, decryptKeyLocally } = await import("../kms/local_wrap.ts");
  const { KmsUnwrapError } = await import("../kms/errors.ts");
  const aad = new TextEncoder().encode("kek-id");
  for (const len of [16, 24, 32]) {
    const kek = crypto.getRandomValues(new Uint8Array(len));
    const cryptoKey = await crypto.subtle.importKey("raw", kek, "AES-GCM", false, ["encrypt", "decrypt"]);
    const dek = crypto.getRandomValues(new Uint8Array(16));
    // Raw bytes (node:crypto for 16/32) and CryptoKey (WebCrypto) wrap and unwrap each other's output.
    const byBytes = await encryptKeyLocally(dek, kek, aad);
    const byKey = await encryptKeyLocally(dek, cryptoKey, aad);
    assert.deepStrictEqual(
      await decryptKeyLocally(byBytes, cryptoKey, aad),
      dek,
      `${len}: bytes → CryptoKey`,
    );
    assert.deepStrictEqual(await decryptKeyLocally(byKey, kek, aad), dek, `${len}: CryptoKey → bytes`);
    const raw = Uint8Array.from(atob(byBytes), (c) => c.charCodeAt(0));
    assert.strictEqual(raw.length, 12 + 16 + 16);
    raw[20] ^= 1;
    const tampered = btoa(String.fromCharCode(...raw));
    for (const k of [kek, cryptoKey]) {
      await assert.rejects(decryptKeyLocally(tampered, k, aad), KmsUnwrapError);
      await assert.rejects(decryptKeyLocally(byBytes, k, new TextEncoder().encode("other")), KmsUnwrapError);
    }
  }
});
