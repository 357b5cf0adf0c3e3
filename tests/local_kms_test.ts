/**
 * Tests of the local keystore (`kms/local_keystore.ts`), the local KMS client (`kms/local_kms.ts`) and
 * the `kms local` commands:
 *
 * - keystore creation (mode 0600, atomic, no leftovers), opening (group/other bits refused with the
 *   `chmod` to run, symbolic links and directories refused, malformed contents named with the file and
 *   never quoted), add/rotate/list/min-decryption-version and their validation;
 * - wrapping byte-compatible with parquet-java `InMemoryKMS`: keys wrapped by parquet-java
 *   (parquet-testing `external_key_material_java` key material) and by an independent node:crypto
 *   implementation of the spec notes §9.2 unwrap with ours, and ours unwrap with the independent one;
 * - rotation (new wraps use the new version, old wraps still unwrap newest-first, raising the minimum
 *   decryption version retires them), unknown ids, tampered wrapped keys;
 * - the client factory seeing a rotation made by another process, the lock file (stale and busy
 *   locks), concurrent rotation by two processes losing no version;
 * - the CLI as a subprocess: exit codes 0/1/2, one-line stderr errors, no key bytes in any output.
 *
 * @module
 */
import assert from "node:assert";
import { Buffer } from "node:buffer";
import { type CipherGCMTypes, createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { withTempDir } from "./fixtures/tmp.ts";
import { withDefaults } from "../kms/client.ts";
import {
  KmsConfigError,
  KmsError,
  KmsKeyNotFoundError,
  KmsUnavailableError,
  KmsUnwrapError,
} from "../kms/errors.ts";
import { decryptKeyLocally } from "../kms/local_wrap.ts";
import { LocalKeystore } from "../kms/local_keystore.ts";
import { LocalKmsClient, localKmsClientFactory } from "../kms/local_kms.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const td = new TextDecoder();
const te = new TextEncoder();
const ascii = (s: string) => te.encode(s);
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");

// ---------------------------------------------------------------------------------------------------
// An independent implementation of parquet-java InMemoryKMS (spec notes §9.2/§9.7) on node:crypto:
// base64(nonce(12) || AES-GCM(master key, nonce, AAD = UTF-8 id, key) || tag(16)). Deno's node:crypto has
// no aes-192-gcm, so 24-byte master keys use WebCrypto with the framing assembled here.

async function inMemoryKmsWrap(key: Uint8Array, masterKey: Uint8Array, masterKeyId: string): Promise<string> {
  const nonce = randomBytes(12);
  const aad = Buffer.from(masterKeyId, "utf8");
  if (masterKey.length === 24) {
    const k = await crypto.subtle.importKey("raw", Uint8Array.from(masterKey), "AES-GCM", false, ["encrypt"]);
    const ct = await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: Uint8Array.from(nonce), additionalData: Uint8Array.from(aad) },
      k,
      Uint8Array.from(key),
    );
    return Buffer.concat([nonce, new Uint8Array(ct)]).toString("base64");
  }
  const c = createCipheriv(`aes-${masterKey.length * 8}-gcm` as CipherGCMTypes, masterKey, nonce);
  c.setAAD(aad);
  return Buffer.concat([nonce, c.update(key), c.final(), c.getAuthTag()]).toString("base64");
}

/** Null when the tag does not verify. */
async function inMemoryKmsUnwrap(
  wrapped: string,
  masterKey: Uint8Array,
  masterKeyId: string,
): Promise<Uint8Array | null> {
  const b = Buffer.from(wrapped, "base64");
  const aad = Buffer.from(masterKeyId, "utf8");
  try {
    if (masterKey.length === 24) {
      const k = await crypto.subtle.importKey("raw", Uint8Array.from(masterKey), "AES-GCM", false, [
        "decrypt",
      ]);
      const iv = Uint8Array.from(b.subarray(0, 12));
      return new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "AES-GCM", iv, additionalData: Uint8Array.from(aad) },
          k,
          Uint8Array.from(b.subarray(12)),
        ),
      );
    }
    const d = createDecipheriv(
      `aes-${masterKey.length * 8}-gcm` as CipherGCMTypes,
      masterKey,
      b.subarray(0, 12),
    );
    d.setAAD(aad);
    d.setAuthTag(b.subarray(b.length - 16));
    return new Uint8Array(Buffer.concat([d.update(b.subarray(12, b.length - 16)), d.final()]));
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------------
// parquet-java's own output: the external key material of parquet-testing
// `data/external_key_material_java.parquet.encrypted` (parquet-mr 1.12.0, InMemoryKMS, double wrapping),
// file `data/_KEY_MATERIAL_FOR_external_key_material_java.parquet.encrypted.json` of apache/parquet-testing
// commit 1a2a75127be06fc0123f03ebd36c966f7beda27d (Apache License 2.0). The file is not among the vectors
// copied to tests/data/parquet-testing/, so its values are copied here (checked against upstream).

const JAVA_MASTER_KEYS: Record<string, string> = {
  kf: "0123456789012345",
  kc1: "1234567890123450",
  kc2: "1234567890123451",
};

interface JavaKeyMaterial {
  masterKeyID: string;
  wrappedKEK: string;
  keyEncryptionKeyID: string;
  wrappedDEK: string;
}

const JAVA_KEY_MATERIAL: Record<string, JavaKeyMaterial> = {
  footerKey: {
    masterKeyID: "kf",
    wrappedKEK: "kWHNReXsULhmTplhvImESLFTXV91t5CyoqaEVYLk7k0jD8oeTDDJCUnIiCs=",
    keyEncryptionKeyID: "NFkiTmDXYzZMTb+O3b9nSA==",
    wrappedDEK: "FLQDczpR9upRCqUjtzac5N1PbdduFekfeklLxi4VwOLul7un1iBcdAsJAXc=",
  },
  columnKey0: {
    masterKeyID: "kc1",
    wrappedKEK: "lriDjlnkKi5MvjdHb0+pA2Xc9FtpK5lUti3TwNzUNS7vbPfuxiChBbb0Tf4=",
    keyEncryptionKeyID: "obYT2tJ6W3JI9Pv7E8LgPQ==",
    wrappedDEK: "bdm0fNsrrL6Nxu8pbx1KNOLrGoZ8nKhezu+ctInKwAbau1rgjXULcIJQAoc=",
  },
  columnKey1: {
    masterKeyID: "kc2",
    wrappedKEK: "ImQvItflZylrO0xon5ydb76OTbQgaL8iLSkBoyQ0h2FdoBbh9saOtNsdP2E=",
    keyEncryptionKeyID: "wxefHIzuJo6FH93Gqrc8OQ==",
    wrappedDEK: "cTH8VFwBMb+3u0r7XJrcjxPu1agMZ7gXWeo8WX6nKFVWpRWsgSLlJSIBo+w=",
  },
};

// ---------------------------------------------------------------------------------------------------
// Helpers

interface StoredVersion {
  version: number;
  key: string;
  created: string;
}

interface StoredKeystore {
  format: string;
  version: number;
  keys: Record<string, { minDecryptionVersion: number; versions: StoredVersion[] }>;
}

async function readStored(path: string): Promise<StoredKeystore> {
  return JSON.parse(await Deno.readTextFile(path));
}

/** Key bytes of `id` version `version` as stored in the file. */
async function storedKey(path: string, id: string, version: number): Promise<Uint8Array> {
  const v = (await readStored(path)).keys[id].versions.find((x) => x.version === version);
  assert(v, `${id} v${version} stored`);
  return new Uint8Array(Buffer.from(v.key, "base64"));
}

/** Every spelling of every key in the file (no output may contain one). */
async function secretsOf(path: string): Promise<string[]> {
  const out: string[] = [];
  for (const k of Object.values((await readStored(path)).keys)) {
    for (const v of k.versions) {
      const bytes = Buffer.from(v.key, "base64");
      out.push(v.key, bytes.toString("hex"), bytes.toString("hex").toUpperCase());
      if (bytes.every((c) => c >= 0x20 && c < 0x7f)) out.push(bytes.toString("latin1"));
    }
  }
  return out;
}

async function writeStored(path: string, doc: unknown, mode = 0o600): Promise<void> {
  await Deno.writeTextFile(path, typeof doc === "string" ? doc : JSON.stringify(doc));
  await Deno.chmod(path, mode);
}

async function modeOf(path: string): Promise<number> {
  return (await Deno.stat(path)).mode! & 0o777;
}

async function names(dir: string): Promise<string[]> {
  const out = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

/** Asserts that `p` rejects with an instance of `cls` whose message matches every pattern. */
async function rejects<E extends Error>(
  p: Promise<unknown>,
  cls: new (...a: never[]) => E,
  ...patterns: RegExp[]
): Promise<E> {
  try {
    await p;
  } catch (e) {
    assert(e instanceof cls, `expected ${cls.name}, got ${(e as Error)?.name}: ${(e as Error)?.message}`);
    for (const pat of patterns) assert.match(e.message, pat);
    return e;
  }
  assert.fail(`expected ${cls.name}, but it resolved`);
}

function flipBit(wrapped: string, byte: number): string {
  const b = Buffer.from(wrapped, "base64");
  b[byte] ^= 0x01;
  return b.toString("base64");
}

/** A keystore in a fresh directory. */
function withKeystore(fn: (path: string, dir: string) => Promise<void>): Promise<void> {
  return withTempDir((dir) => fn(join(dir, "keystore.json"), dir), "pme-kms-test-");
}

// ---------------------------------------------------------------------------------------------------
// Keystore file

Deno.test("keystore: create writes an empty 0600 keystore atomically and refuses an existing file", async () => {
  await withKeystore(async (path, dir) => {
    const ks = await LocalKeystore.create(path);
    assert.strictEqual(ks.path, path);
    assert.strictEqual(await modeOf(path), 0o600);
    assert.deepStrictEqual(await readStored(path), { format: "fhir-pme-keystore", version: 1, keys: {} });
    assert.deepStrictEqual(ks.list(), []);
    assert.deepStrictEqual(await names(dir), ["keystore.json"], "no temporary or lock file left");
    await rejects(LocalKeystore.create(path), KmsConfigError, /already exists/, new RegExp(path));
    // Also when the existing file is not a keystore: it is not replaced.
    const other = join(dir, "other.txt");
    await Deno.writeTextFile(other, "precious");
    await rejects(LocalKeystore.create(other), KmsConfigError, /already exists/);
    assert.strictEqual(await Deno.readTextFile(other), "precious");
    await rejects(LocalKeystore.create(join(dir, "missing", "ks.json")), KmsConfigError, /does not exist/);
  });
});

Deno.test("keystore: open refuses group/other permission bits with the chmod to run", async () => {
  await withKeystore(async (path) => {
    (await LocalKeystore.create(path)).close();
    for (const mode of [0o644, 0o640, 0o604, 0o660, 0o602]) {
      await Deno.chmod(path, mode);
      const e = await rejects(LocalKeystore.open(path), KmsConfigError, new RegExp(path));
      assert.match(e.message, new RegExp(`mode 0${mode.toString(8)}`));
      assert(e.message.includes(`chmod 600 ${JSON.stringify(path)}`), e.message);
    }
    for (const mode of [0o600, 0o400]) {
      await Deno.chmod(path, mode);
      (await LocalKeystore.open(path)).close();
    }
  });
});

Deno.test("keystore: open refuses symlinks, directories and missing files", async () => {
  await withKeystore(async (path, dir) => {
    (await LocalKeystore.create(path)).close();
    const link = join(dir, "link.json");
    await Deno.symlink(path, link);
    await rejects(LocalKeystore.open(link), KmsConfigError, /symbolic link/, /rename/);
    await rejects(LocalKeystore.open(dir), KmsConfigError, /not a regular file/);
    await rejects(
      LocalKeystore.open(join(dir, "nope.json")),
      KmsConfigError,
      /does not exist/,
      /kms local init/,
    );
  });
});

Deno.test("keystore: malformed contents are refused with errors naming the file, never quoting keys", async () => {
  await withKeystore(async (path) => {
    const key = "QUJDREVGR0hJSktMTU5PUA=="; // 16 bytes
    const version = (v: Partial<StoredVersion> = {}) => ({
      version: 1,
      key,
      created: "2025-01-01T00:00:00.000Z",
      ...v,
    });
    const doc = (keys: unknown, extra: Record<string, unknown> = {}) => ({
      format: "fhir-pme-keystore",
      version: 1,
      keys,
      ...extra,
    });
    const cases: [unknown, RegExp][] = [
      [
        `{"format":"fhir-pme-keystore","version":1,"keys":{"k":{"versions":[{"key":"${key}"`,
        /not valid JSON/,
      ],
      [[], /not a JSON object/],
      [{ ...doc({}), format: "other" }, /"format" is "other"/],
      [{ ...doc({}), version: 2 }, /"version" is 2/],
      [doc({}, { extra: 1 }), /unknown field.*"extra"/],
      [doc([]), /"keys" must be an object/],
      [doc({ "": { minDecryptionVersion: 1, versions: [version()] } }), /empty/],
      [doc({ "a\nb": { minDecryptionVersion: 1, versions: [version()] } }), /control character/],
      [doc({ k: { minDecryptionVersion: 1, versions: [] } }), /non-empty array/],
      [
        doc({ k: { minDecryptionVersion: 1, versions: [version({ key: "QUJD" })] } }),
        /16, 24 or 32 bytes, got 3/,
      ],
      [
        doc({ k: { minDecryptionVersion: 1, versions: [version({ key: "AAAAAAAAAAAAAAAAAAAAAA==" })] } }),
        /all zero/,
      ],
      [doc({ k: { minDecryptionVersion: 1, versions: [version({ key: "not base64!" })] } }), /base64/],
      [doc({ k: { minDecryptionVersion: 1, versions: [version({ version: 0 })] } }), /positive integer/],
      [doc({ k: { minDecryptionVersion: 1, versions: [version({ version: 2 }), version()] } }), /increasing/],
      [doc({ k: { minDecryptionVersion: 2, versions: [version()] } }), /minDecryptionVersion.*1\.\.1/],
      [doc({ k: { versions: [version()] } }), /minDecryptionVersion/],
      [doc({ k: { minDecryptionVersion: 1, versions: [version({ created: "yesterday" })] } }), /ISO 8601/],
      [doc({ k: { minDecryptionVersion: 1, versions: [{ ...version(), extra: 1 }] } }), /unknown field/],
    ];
    for (const [content, pattern] of cases) {
      await writeStored(path, content);
      const e = await rejects(LocalKeystore.open(path), KmsConfigError, pattern);
      assert(e.message.includes(path), `names the file: ${e.message}`);
      assert(
        !e.message.includes(key) && !e.message.includes("ABCDEFGHIJKLMNOP"),
        `no key bytes: ${e.message}`,
      );
    }
    // A valid one opens.
    await writeStored(path, doc({ k: { minDecryptionVersion: 1, versions: [version()] } }));
    const ks = await LocalKeystore.open(path);
    assert.deepStrictEqual(ks.list().map((k) => k.id), ["k"]);
  });
});

Deno.test("keystore: addKey — random 32-byte default, 16/24/32 accepted, bad keys and ids refused", async () => {
  await withKeystore(async (path, dir) => {
    const ks = await LocalKeystore.create(path);
    assert.strictEqual(await ks.addKey("a"), 1);
    await ks.addKey("b");
    const a = await storedKey(path, "a", 1);
    const b = await storedKey(path, "b", 1);
    assert.strictEqual(a.length, 32);
    assert.notStrictEqual(hex(a), hex(b), "random keys differ");
    for (const n of [16, 24, 32]) {
      const key = Uint8Array.from({ length: n }, (_, i) => i + 1);
      await ks.addKey(`k${n}`, key);
      assert.strictEqual(hex(await storedKey(path, `k${n}`, 1)), hex(key));
      assert.strictEqual(key[0], 1, "the caller's key is not modified");
    }
    await rejects(ks.addKey("x", new Uint8Array(15).fill(1)), KmsConfigError, /16, 24 or 32 bytes, got 15/);
    await rejects(ks.addKey("x", new Uint8Array(32)), KmsConfigError, /all zero/);
    await rejects(ks.addKey("a"), KmsConfigError, /already exists/, /rotate/);
    for (const bad of ["", "a\u0000b", "tab\there", "del\u007f", "c1\u0085", "lone\ud800", "x".repeat(257)]) {
      await rejects(ks.addKey(bad), KmsConfigError);
    }
    // Ids are used as written, including ones that are special in JavaScript objects.
    await ks.addKey("__proto__");
    await ks.addKey("clé ü/ 1");
    assert.strictEqual(await modeOf(path), 0o600, "saves keep 0600");
    assert.deepStrictEqual(await names(dir), ["keystore.json"]);
    const reopened = await LocalKeystore.open(path);
    assert.deepStrictEqual(reopened.list().map((k) => k.id), [
      "__proto__",
      "a",
      "b",
      "clé ü/ 1",
      "k16",
      "k24",
      "k32",
    ]);
    assert.strictEqual((await readStored(path)).keys["__proto__"].versions.length, 1);
  });
});

Deno.test("keystore: rotate, list and min decryption version; list holds no key bytes", async () => {
  await withKeystore(async (path) => {
    const ks = await LocalKeystore.create(path);
    await ks.addKey("k", Uint8Array.from({ length: 16 }, (_, i) => 100 + i));
    assert.strictEqual(await ks.rotate("k"), 2);
    assert.strictEqual(await ks.rotate("k"), 3);
    assert.strictEqual((await storedKey(path, "k", 3)).length, 16, "rotation keeps the key length");
    assert.notStrictEqual(hex(await storedKey(path, "k", 2)), hex(await storedKey(path, "k", 3)));
    await ks.setMinDecryptionVersion("k", 2);
    const list = ks.list();
    assert.strictEqual(list.length, 1);
    assert.deepStrictEqual(
      { ...list[0], versions: list[0].versions.map((v) => v.version) },
      { id: "k", versions: [1, 2, 3], latestVersion: 3, minDecryptionVersion: 2 },
    );
    for (const v of list[0].versions) assert(!Number.isNaN(Date.parse(v.created)));
    const text = JSON.stringify(list);
    for (const s of await secretsOf(path)) assert(!text.includes(s), "list() shows no key bytes");
    assert.deepStrictEqual(Object.keys(list[0].versions[0]).sort(), ["created", "version"]);
    for (const bad of [0, 4, 1.5, -1, NaN]) {
      await rejects(ks.setMinDecryptionVersion("k", bad), KmsConfigError, /1\.\.3/);
    }
    await ks.setMinDecryptionVersion("k", 1); // may be lowered again
    assert.strictEqual(ks.minDecryptionVersion("k"), 1);
    await rejects(ks.rotate("nope"), KmsKeyNotFoundError, /"nope"/);
    await rejects(ks.setMinDecryptionVersion("nope", 1), KmsKeyNotFoundError);
    assert.deepStrictEqual((await ks.keysNewestFirst("k")).map((v) => v.version), [3, 2, 1]);
    await ks.setMinDecryptionVersion("k", 3);
    assert.deepStrictEqual((await ks.keysNewestFirst("k")).map((v) => v.version), [3]);
    const current = await ks.currentKey("k");
    assert.strictEqual(current.version, 3);
    assert.strictEqual(current.key.extractable, false, "master keys are non-extractable CryptoKeys");
    await rejects(crypto.subtle.exportKey("raw", current.key), DOMException);
  });
});

Deno.test("keystore: save() refuses to overwrite another writer's change; refresh() sees it", async () => {
  await withKeystore(async (path) => {
    const a = await LocalKeystore.create(path);
    await a.addKey("k");
    const b = await LocalKeystore.open(path);
    await b.rotate("k");
    await rejects(a.save(), KmsConfigError, /changed on disk/);
    assert.strictEqual(a.list()[0].latestVersion, 1);
    assert.strictEqual(await a.refresh(), true);
    assert.strictEqual(a.list()[0].latestVersion, 2);
    assert.strictEqual(await a.refresh(), false);
    await a.save();
    // Mutations re-read under the lock, so a stale instance does not lose b's version either.
    await b.rotate("k");
    assert.strictEqual(await a.rotate("k"), 4);
    assert.deepStrictEqual((await LocalKeystore.open(path)).list()[0].versions.map((v) => v.version), [
      1,
      2,
      3,
      4,
    ]);
    a.close();
    await rejects(a.currentKey("k"), KmsConfigError, /closed/);
  });
});

// ---------------------------------------------------------------------------------------------------
// Wrapping

Deno.test("local KMS: wrap/unwrap round trip in InMemoryKMS format", async () => {
  await withKeystore(async (path) => {
    const ks = await LocalKeystore.create(path);
    await ks.addKey("mk");
    const kms = new LocalKmsClient(ks);
    for (const n of [16, 24, 32]) {
      const dek = crypto.getRandomValues(new Uint8Array(n));
      const wrapped = await kms.wrapKey(dek, "mk");
      assert.match(wrapped, /^[A-Za-z0-9+/]+={0,2}$/);
      assert.strictEqual(Buffer.from(wrapped, "base64").length, 12 + n + 16, "nonce || ct || tag, no marker");
      assert.strictEqual(hex(await kms.unwrapKey(wrapped, "mk")), hex(dek));
      assert.strictEqual(await kms.isCurrent(wrapped, "mk"), true);
    }
    assert.strictEqual((await kms.wrapKey(new Uint8Array(16).fill(7), "mk")).length, 60);
    assert.strictEqual((await kms.wrapKey(new Uint8Array(32).fill(7), "mk")).length, 80);
    const w1 = await kms.wrapKey(new Uint8Array(16).fill(7), "mk");
    const w2 = await kms.wrapKey(new Uint8Array(16).fill(7), "mk");
    assert.notStrictEqual(w1, w2, "random nonce per wrap");
  });
});

Deno.test("local KMS: byte-compatible with an independent InMemoryKMS implementation, both ways", async () => {
  await withKeystore(async (path) => {
    const ks = await LocalKeystore.create(path);
    const kms = new LocalKmsClient(ks);
    for (const [id, n] of [["m16", 16], ["m24", 24], ["m32", 32], ["clé-ü 🔑", 32]] as const) {
      const master = crypto.getRandomValues(new Uint8Array(n));
      await ks.addKey(id, master);
      for (const dekLen of [16, 32]) {
        const dek = crypto.getRandomValues(new Uint8Array(dekLen));
        // (a) wrapped by the independent implementation, unwrapped by ours
        assert.strictEqual(
          hex(await kms.unwrapKey(await inMemoryKmsWrap(dek, master, id), id)),
          hex(dek),
          id,
        );
        // (b) wrapped by ours, unwrapped by the independent implementation
        const ours = await kms.wrapKey(dek, id);
        assert.strictEqual(hex((await inMemoryKmsUnwrap(ours, master, id))!), hex(dek), id);
        // the AAD is the id: another id does not verify
        assert.strictEqual(await inMemoryKmsUnwrap(ours, master, id + "x"), null);
      }
    }
  });
});

Deno.test("local KMS: unwraps parquet-java InMemoryKMS wrappedKEKs (parquet-testing key material)", async () => {
  await withKeystore(async (path) => {
    // Master keys added the way a user would: kms local add KEYSTORE ID --key HEX
    assert.strictEqual((await cli("init", path)).code, 0);
    for (const [id, key] of Object.entries(JAVA_MASTER_KEYS)) {
      const r = await cli("add", path, id, "--key", hex(ascii(key)));
      assert.strictEqual(r.code, 0, r.stderr);
    }
    const kms = await localKmsClientFactory(path)(withDefaults({}));
    for (const [ref, m] of Object.entries(JAVA_KEY_MATERIAL)) {
      const kek = await kms.unwrapKey(m.wrappedKEK, m.masterKeyID);
      assert.strictEqual(kek.length, 16, ref);
      // The KEK is right: parquet-java's wrappedDEK verifies under it (AAD = raw KEK id).
      const dek = await decryptKeyLocally(m.wrappedDEK, kek, Buffer.from(m.keyEncryptionKeyID, "base64"));
      assert.strictEqual(dek.length, 16, ref);
      // Our wrap of the same KEK is what parquet-java's InMemoryKMS would unwrap (independent impl).
      const again = await kms.wrapKey(kek, m.masterKeyID);
      assert.strictEqual(
        hex((await inMemoryKmsUnwrap(again, ascii(JAVA_MASTER_KEYS[m.masterKeyID]), m.masterKeyID))!),
        hex(kek),
      );
      // Wrong master key id (AAD and key) fails.
      const other = m.masterKeyID === "kf" ? "kc1" : "kf";
      await rejects(kms.unwrapKey(m.wrappedKEK, other), KmsUnwrapError, new RegExp(`"${other}"`));
    }
  });
});

Deno.test("local KMS: rotation — new wraps use the new version, old wraps unwrap newest-first, min version retires them", async () => {
  await withKeystore(async (path) => {
    const ks = await LocalKeystore.create(path);
    await ks.addKey("mk");
    const kms = new LocalKmsClient(ks);
    const dek = crypto.getRandomValues(new Uint8Array(16));
    const w1 = await kms.wrapKey(dek, "mk");
    await ks.rotate("mk");
    const w2 = await kms.wrapKey(dek, "mk");
    const v1 = await storedKey(path, "mk", 1);
    const v2 = await storedKey(path, "mk", 2);
    assert.strictEqual(hex((await inMemoryKmsUnwrap(w2, v2, "mk"))!), hex(dek), "new wraps use version 2");
    assert.strictEqual(await inMemoryKmsUnwrap(w2, v1, "mk"), null);
    assert.strictEqual(hex(await kms.unwrapKey(w1, "mk")), hex(dek), "version-1 wraps still unwrap");
    assert.strictEqual(hex(await kms.unwrapKey(w2, "mk")), hex(dek));
    assert.strictEqual(await kms.isCurrent(w1, "mk"), false);
    assert.strictEqual(await kms.isCurrent(w2, "mk"), true);
    const rewrapped = await kms.rewrapKey(w1, "mk");
    assert.strictEqual(await kms.isCurrent(rewrapped, "mk"), true);
    assert.strictEqual(hex((await inMemoryKmsUnwrap(rewrapped, v2, "mk"))!), hex(dek));

    await ks.setMinDecryptionVersion("mk", 2);
    const e = await rejects(kms.unwrapKey(w1, "mk"), KmsUnwrapError, /"mk"/, /minimum decryption version 2/);
    assert.strictEqual(e.masterKeyId, "mk");
    assert(!e.message.includes(w1), "the wrapped key is not in the message");
    assert.strictEqual(hex(await kms.unwrapKey(w2, "mk")), hex(dek));
    await ks.setMinDecryptionVersion("mk", 1);
    assert.strictEqual(hex(await kms.unwrapKey(w1, "mk")), hex(dek), "lowered again: version 1 unwraps");
  });
});

Deno.test("local KMS: unknown master key, tampered and malformed wrapped keys", async () => {
  await withKeystore(async (path) => {
    const ks = await LocalKeystore.create(path);
    const same = crypto.getRandomValues(new Uint8Array(32));
    await ks.addKey("a", same);
    await ks.addKey("b", same); // same bytes, different id: the AAD still separates them
    const kms = new LocalKmsClient(ks);
    const dek = crypto.getRandomValues(new Uint8Array(16));
    const w = await kms.wrapKey(dek, "a");
    await rejects(kms.wrapKey(dek, "nope"), KmsKeyNotFoundError, /"nope"/);
    await rejects(kms.unwrapKey(w, "nope"), KmsKeyNotFoundError, /"nope"/);
    await rejects(kms.isCurrent(w, "nope"), KmsKeyNotFoundError);
    await rejects(kms.unwrapKey(w, "b"), KmsUnwrapError, /"b"/);
    for (const byte of [0, 12, 12 + 15, 12 + 16 + 15]) {
      const tampered = flipBit(w, byte);
      const e = await rejects(kms.unwrapKey(tampered, "a"), KmsUnwrapError, /"a"/, /modified/);
      assert(!e.message.includes(tampered));
      assert.strictEqual(await kms.isCurrent(tampered, "a"), false);
    }
    await rejects(kms.unwrapKey("not base64!", "a"), KmsUnwrapError, /not base64/);
    await rejects(kms.unwrapKey(Buffer.alloc(28).toString("base64"), "a"), KmsUnwrapError, /too short/);
    assert(new KmsUnwrapError("x") instanceof KmsError);
  });
});

Deno.test("local KMS: the factory opens the keystore once and sees a rotation made by another process", async () => {
  await withKeystore(async (path) => {
    const ks = await LocalKeystore.create(path);
    await ks.addKey("mk");
    const factory = localKmsClientFactory(path);
    const kms = await factory(withDefaults({})) as LocalKmsClient;
    assert(kms instanceof LocalKmsClient);
    assert.strictEqual(await factory(withDefaults({ keyAccessToken: "t" })), kms, "one client per keystore");
    const dek = crypto.getRandomValues(new Uint8Array(16));
    const w1 = await kms.wrapKey(dek, "mk");
    assert.strictEqual((await cli("rotate", path, "mk")).code, 0);
    const w2 = await kms.wrapKey(dek, "mk");
    assert.strictEqual(hex((await inMemoryKmsUnwrap(w2, await storedKey(path, "mk", 2), "mk"))!), hex(dek));
    assert.strictEqual(await kms.isCurrent(w1, "mk"), false);
    assert.strictEqual((await cli("min-decryption-version", path, "mk", "2")).code, 0);
    await rejects(kms.unwrapKey(w1, "mk"), KmsUnwrapError);
    // A keystore that fails to open is retried on the next call.
    const missing = localKmsClientFactory(path + ".missing");
    await rejects(Promise.resolve(missing(withDefaults({}))), KmsConfigError, /does not exist/);
    await Deno.copyFile(path, path + ".missing");
    await Deno.chmod(path + ".missing", 0o600);
    assert.strictEqual(hex(await (await missing(withDefaults({}))).unwrapKey(w2, "mk")), hex(dek));
  });
});

// ---------------------------------------------------------------------------------------------------
// Locking

Deno.test("lock: a stale lock is reported at once, a busy one after the timeout; foreign locks are kept", async () => {
  await withKeystore(async (path, dir) => {
    const ks = await LocalKeystore.open((await LocalKeystore.create(path)).path, { lockTimeoutMs: 300 });
    await ks.addKey("mk");
    const lock = `${path}.lock`;
    // A process that has exited.
    const child = new Deno.Command(Deno.execPath(), { args: ["eval", "0"], stdout: "null", stderr: "null" })
      .spawn();
    const deadPid = child.pid;
    await child.status;
    await Deno.writeTextFile(
      lock,
      JSON.stringify({ pid: deadPid, host: Deno.hostname(), created: "x", token: "t" }),
    );
    const t0 = Date.now();
    const stale = await rejects(ks.rotate("mk"), KmsConfigError, /stale lock/, /no longer running/);
    assert(stale.message.includes(`rm ${JSON.stringify(lock)}`), stale.message);
    assert(Date.now() - t0 < 250, "reported without waiting for the timeout");
    // A live holder (this process): wait, then a retryable error.
    await Deno.writeTextFile(lock, JSON.stringify({ pid: Deno.pid, host: Deno.hostname(), created: "x" }));
    const busy = await rejects(ks.rotate("mk"), KmsUnavailableError, /is locked by pid/, /waited 300 ms/);
    assert.strictEqual(busy.retryable, true);
    assert.strictEqual(await Deno.readTextFile(lock).then((t) => JSON.parse(t).pid), Deno.pid, "lock kept");
    assert.strictEqual(ks.list()[0].latestVersion, 1);
    // Released by its holder while we wait: we proceed.
    const p = ks.rotate("mk");
    setTimeout(() => Deno.remove(lock), 100);
    assert.strictEqual(await p, 2);
    assert.deepStrictEqual(await names(dir), ["keystore.json"]);
  });
});

Deno.test("lock: two processes rotating the same key concurrently lose no version", async () => {
  await withKeystore(async (path) => {
    const ks = await LocalKeystore.create(path);
    await ks.addKey("mk");
    const N = 20;
    const start = Date.now() + 1500; // both processes start rotating at the same moment
    const code = `
      const { LocalKeystore } = await import(${
      JSON.stringify(new URL("../kms/local_keystore.ts", import.meta.url).href)
    });
      const ks = await LocalKeystore.open(Deno.env.get("KS"), { lockTimeoutMs: 30000 });
      while (Date.now() < Number(Deno.env.get("START"))) await new Promise((r) => setTimeout(r, 2));
      const got = [];
      for (let i = 0; i < Number(Deno.env.get("N")); i++) {
        got.push(await ks.rotate("mk"));
        await new Promise((r) => setTimeout(r, Math.random() * 4)); // let the other one in
      }
      console.log(JSON.stringify(got));
    `;
    const run = () =>
      new Deno.Command(Deno.execPath(), {
        args: ["eval", code],
        cwd: ROOT,
        env: { KS: path, START: String(start), N: String(N), NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
    // Meanwhile this process keeps wrapping and unwrapping through a refreshing client: readers take
    // no lock and must never see a half-written or vanishing keystore.
    const kms = new LocalKmsClient(await LocalKeystore.open(path));
    const dek = crypto.getRandomValues(new Uint8Array(16));
    let done = false;
    let reads = 0;
    const reader = (async () => {
      while (!done) {
        const w = await kms.wrapKey(dek, "mk");
        assert.strictEqual(hex(await kms.unwrapKey(w, "mk")), hex(dek));
        reads++;
      }
    })();
    const [runs, read] = await Promise.allSettled([
      Promise.all([run(), run()]).finally(() => done = true),
      reader,
    ]);
    if (read.status === "rejected") throw read.reason;
    if (runs.status === "rejected") throw runs.reason;
    const outs = runs.value;
    assert(reads > 0);
    const got: number[][] = outs.map((o) => {
      assert.strictEqual(o.code, 0, td.decode(o.stderr));
      return JSON.parse(td.decode(o.stdout));
    });
    assert(got.every((g) => g.length === N));
    const all = got.flat().sort((a, b) => a - b);
    assert.deepStrictEqual(
      all,
      Array.from({ length: 2 * N }, (_, i) => i + 2),
      "each version given out once",
    );
    const stored = (await readStored(path)).keys.mk.versions;
    assert.deepStrictEqual(stored.map((v) => v.version), Array.from({ length: 2 * N + 1 }, (_, i) => i + 1));
    assert.strictEqual(new Set(stored.map((v) => v.key)).size, 2 * N + 1, "every version has its own key");
    assert.strictEqual(await modeOf(path), 0o600);
    await assert.rejects(Deno.stat(`${path}.lock`), Deno.errors.NotFound);
  });
});

// ---------------------------------------------------------------------------------------------------
// CLI

interface CliResult {
  args: string[];
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `deno task -q cli kms local ARGS…` in the repository root. */
async function cli(...args: string[]): Promise<CliResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "cli", "kms", "local", ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { args, code: out.code, stdout: td.decode(out.stdout), stderr: td.decode(out.stderr) };
}

function show(r: CliResult): string {
  return `\`kms local ${r.args.join(" ")}\` exited ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

function ok(r: CliResult): CliResult {
  assert.strictEqual(r.code, 0, show(r));
  assert.strictEqual(r.stderr, "", show(r));
  return r;
}

/** Failure with `code`: exactly one stderr line, no stack trace, nothing on stdout. */
function fails(r: CliResult, code: 1 | 2, ...patterns: RegExp[]): string {
  assert.strictEqual(r.code, code, show(r));
  const lines = r.stderr.split("\n");
  assert.strictEqual(lines.length, 2, `one stderr line: ${show(r)}`);
  assert.strictEqual(lines[1], "");
  assert.match(lines[0], code === 2 ? /^usage error: / : /^error: Kms\w*Error: /, show(r));
  for (const p of patterns) assert.match(lines[0], p, show(r));
  assert.strictEqual(r.stdout, "", show(r));
  return lines[0];
}

Deno.test("cli: kms local init/add/rotate/list/min-decryption-version, never printing key bytes", async () => {
  await withKeystore(async (path, dir) => {
    const results: CliResult[] = [];
    const run = async (...args: string[]) => {
      const r = await cli(...args);
      results.push(r);
      return r;
    };
    assert.match(ok(await run("init", path)).stdout, /created keystore .*0600/);
    assert.strictEqual(await modeOf(path), 0o600);
    assert.match(ok(await run("list", path)).stdout, /^no master keys\n$/);
    const given = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    assert.match(ok(await run("add", path, "kf", "--key", given)).stdout, /kf version 1 \(256-bit, given\)/);
    assert.strictEqual(hex(await storedKey(path, "kf", 1)), given);
    const b64key = b64(Uint8Array.from({ length: 24 }, (_, i) => 200 - i));
    ok(await run("add", path, "kb", "--key", `base64:${b64key}`));
    assert.strictEqual(b64(await storedKey(path, "kb", 1)), b64key);
    assert.match(ok(await run("add", path, "kc1")).stdout, /kc1 version 1 \(256-bit, random\)/);
    assert.match(ok(await run("rotate", path, "kc1")).stdout, /version 2 is current; versions 1-2 unwrap/);
    ok(await run("rotate", path, "kc1"));
    assert.match(
      ok(await run("min-decryption-version", path, "kc1", "2")).stdout,
      /min decryption version 2; versions 2-3 unwrap/,
    );
    assert.strictEqual(
      ok(await run("list", path)).stdout,
      "kb: versions 1, current 1, min decryption version 1\n" +
        "kc1: versions 1-3, current 3, min decryption version 2\n" +
        "kf: versions 1, current 1, min decryption version 1\n",
    );
    const json = JSON.parse(ok(await run("list", path, "--json")).stdout);
    assert.deepStrictEqual(
      json.map((
        k: { id: string; latestVersion: number; minDecryptionVersion: number; versions: unknown[] },
      ) => [
        k.id,
        k.latestVersion,
        k.minDecryptionVersion,
        k.versions.length,
      ]),
      [["kb", 1, 1, 1], ["kc1", 3, 2, 3], ["kf", 1, 1, 1]],
    );
    assert.strictEqual(await modeOf(path), 0o600);
    assert.deepStrictEqual(await names(dir), ["keystore.json"]);
    ok(await run("help"));

    // Runtime errors: exit 1, one line naming the error class.
    fails(await run("init", path), 1, /KmsConfigError: .*already exists/);
    fails(await run("add", path, "kf"), 1, /KmsConfigError: master key "kf" already exists/);
    fails(await run("rotate", path, "nope"), 1, /KmsKeyNotFoundError: master key "nope"/);
    fails(await run("min-decryption-version", path, "kc1", "4"), 1, /must be in 1\.\.3, got 4/);
    fails(await run("list", join(dir, "missing.json")), 1, /does not exist/);
    fails(await run("add", path, "bad\u0007id"), 1, /control character/);
    fails(await run("add", path, "z", "--key", "00".repeat(16)), 1, /all zero/);
    await Deno.chmod(path, 0o644);
    const line = fails(await run("list", path), 1, /KmsConfigError: .*mode 0644/);
    assert(line.includes(`chmod 600 ${JSON.stringify(path)}`), line);
    await Deno.chmod(path, 0o600);

    // Usage errors: exit 2.
    fails(await run("add", path), 2, /expects KEYSTORE ID/);
    fails(await run("add", path, "x", "--key", "abc"), 2, /32, 48 or 64 digits/);
    fails(await run("add", path, "x", "--key", "zz".repeat(16)), 2, /not hexadecimal/);
    fails(await run("add", path, "x", "--key", "base64:@@@@"), 2, /not valid base64/);
    fails(await run("add", path, "x", "--key", "base64:AAAA"), 2, /16, 24 or 32 bytes, got 3/);
    fails(await run("min-decryption-version", path, "kc1", "two"), 2, /positive integer/);
    fails(await run("min-decryption-version", path, "kc1", "0"), 2, /positive integer/);
    fails(await run("list", path, "--bogus"), 2);
    fails(await run("frobnicate", path), 2, /unknown command/);
    fails(await run(), 2, /expects a command/);
    assert.deepStrictEqual(await names(dir), ["keystore.json"], "failed runs leave nothing behind");

    // No key bytes in any output.
    const secrets = await secretsOf(path);
    for (const r of results) {
      for (const s of secrets) {
        assert(!r.stdout.includes(s) && !r.stderr.includes(s), `key bytes in the output of ${show(r)}`);
      }
      assert(!r.stdout.includes(b64key) && !r.stderr.includes(b64key));
      assert(!r.stdout.includes(given) && !r.stderr.includes(given));
    }
  });
});

Deno.test("cli: kms area errors and help", async () => {
  const run = async (...args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["task", "-q", "cli", ...args],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { args, code: out.code, stdout: td.decode(out.stdout), stderr: td.decode(out.stderr) };
  };
  fails(await run("kms"), 2, /kms expects a command: local, rotate, reencrypt or min-decryption-version/);
  fails(await run("kms", "vault", "list"), 2, /unknown kms command "vault"/);
  const help = await run("kms", "help");
  assert.strictEqual(help.code, 0);
  assert.match(help.stdout, /kms local <command>/);
  assert.match((await run("help")).stdout, /kms +key management/);
});
