/**
 * Key-tools interoperability with pyarrow (Arrow C++ `CryptoFactory`), both directions, through a Python
 * `KmsClient` (`tests/interop/pyarrow_kms.py`) that talks to the same KMS as this engine:
 *
 * - the Vault Transit double (`tests/fixtures/vault_double.ts`, started in-process on 127.0.0.1), used
 *   over HTTP by both sides with one principal's token;
 * - an InMemoryKMS-style local wrap: our {@link LocalKeystore} holds the master keys, the Python client
 *   gets the same bytes as `--key ID=HEX` (read from the keystore file, which only a test may do).
 *
 * Grid: KMS × single/double wrapping × internal/external key material × encrypted/plaintext footer on a
 * multi-row-group input with nested columns (list, struct), in both directions (pyarrow writes → we
 * decrypt; we write → pyarrow decrypts), every value compared with the plaintext input; a subset on
 * a data-page-V2 input and a DuckDB input with maps and lists of structs; CTR, 256-bit data keys and
 * uniform encryption (pyarrow ignores a plaintext footer with uniform encryption, pitfall P12).
 *
 * Rotation: our files with external key material → master keys rotated in the KMS → our
 * `rotateMasterKeys` → old versions retired (Vault `min_decryption_version`; the Python local client
 * only gets the new versions) → pyarrow still reads. pyarrow's files with external key material →
 * KMS rotation → pyarrow's `rotate_master_keys` → old versions retired → we still read.
 *
 * Needs the project venv with pyarrow and `cryptography` (`deno task bootstrap`); fails, not skips,
 * without them.
 *
 * @module
 */
import assert from "node:assert";
import { existsSync } from "node:fs";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { CryptoFactory, type EncryptionConfiguration } from "../kms/crypto_factory.ts";
import type { KmsConnectionConfig } from "../kms/client.ts";
import { decryptFileWithKms, encryptFileWithKms } from "../kms/files.ts";
import { parseKeyMetadata } from "../kms/key_material.ts";
import { keyMaterialPath, KeyMaterialStore } from "../kms/key_material_store.ts";
import { LocalKeystore } from "../kms/local_keystore.ts";
import { localKmsClientFactory } from "../kms/local_kms.ts";
import { rotateMasterKeys } from "../kms/rotation.ts";
import { vaultKmsClientFactory } from "../kms/vault.ts";
import { openParquetFile } from "../pme/mod.ts";
import { assertSameRows } from "./fixtures/compare.ts";
import { duckdbInputs, type InputFile, parquetWasmInputs } from "./fixtures/inputs.ts";
import { pyarrowTool, PYTHON } from "./fixtures/pyarrow.ts";
import { withTempDir } from "./fixtures/tmp.ts";
import { startVaultDouble, type TransitOp } from "./fixtures/vault_double.ts";

const TOOL = fileURLToPath(new URL("./interop/pyarrow_kms.py", import.meta.url));
const MASTER_KEYS = ["footer", "identity", "clinical"] as const;

/** Fails clearly when the venv or one of its packages is missing. */
async function requireVenv(): Promise<void> {
  if (!existsSync(PYTHON)) {
    throw new Error(
      `pyarrow KMS interop tests need the project venv (${PYTHON}); run \`deno task bootstrap\``,
    );
  }
  const probe = await new Deno.Command(PYTHON, {
    args: ["-B", "-c", "import pyarrow.parquet.encryption, cryptography"],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (probe.code !== 0) {
    throw new Error(
      `pyarrow KMS interop tests need pyarrow and cryptography in ${PYTHON} ` +
        `(bootstrap installs them): ${new TextDecoder().decode(probe.stderr).trim().split("\n").at(-1)}`,
    );
  }
}

/** Non-secret description of one key material entry, as the Python tool prints it. */
interface MaterialInfo {
  fields: string[];
  masterKeyID: string;
  isFooterKey: boolean;
  doubleWrapping: boolean;
  kmsInstanceID?: string;
  kmsInstanceURL?: string;
  vaultVersion: number | null;
  kekId?: string;
}

interface ExternalInfo {
  file: string;
  references: string[];
  materials: Record<string, MaterialInfo>;
}

interface WriteResult {
  path: string;
  rows: number;
  row_groups: number;
  footer_magic: string;
  kms_calls: Record<string, number>;
  external: ExternalInfo | null;
  note?: string;
}

interface ReadResult {
  rows: number;
  row_groups: number;
  footer_magic: string;
  kms_calls: Record<string, number>;
}

interface RotateResult {
  kms_calls: Record<string, number>;
  before: ExternalInfo;
  after: ExternalInfo;
  leftovers: string[];
}

/** Runs the Python peer; throws with its one-line error on failure. */
function py<T>(args: string[]): Promise<T> {
  return pyarrowTool<T>(args, TOOL);
}

/** One KMS both sides talk to. */
interface SharedKms {
  name: "vault" | "local";
  /** The factory of the grid (its KMS clients and KEKs are cached for 600 s, as the key tools do). */
  factory: CryptoFactory;
  /** A fresh factory (no cached clients or KEKs), as a new process would have. */
  newFactory(): CryptoFactory;
  connection: KmsConnectionConfig;
  /** KMS options of the Python tool (for local: the versions not retired, oldest first). */
  pyArgs(): Promise<string[]>;
  /** Adds a master-key version in the KMS; returns it. */
  rotate(id: string): Promise<number>;
  /** Retires the versions below `version`. */
  retire(id: string, version: number): Promise<void>;
  close(): Promise<void>;
}

async function vaultKms(): Promise<SharedKms> {
  const double = await startVaultDouble();
  const root = async (path: string, body: unknown = {}) => {
    const res = await fetch(`${double.url}/v1/${double.mount}/${path}`, {
      method: "POST",
      headers: { "x-vault-token": double.rootToken, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    assert.ok(res.ok, `vault ${path}: HTTP ${res.status} ${text}`);
    return text ? JSON.parse(text) : {};
  };
  for (const id of MASTER_KEYS) await root(`keys/${id}`, { type: "aes256-gcm96" });
  // The principal may use the master keys; it may not rotate or retire them (the root token does).
  const ops: TransitOp[] = ["encrypt", "decrypt", "rewrap", "read"];
  const token = double.createToken(MASTER_KEYS.map((key) => ({ key, ops })));
  return {
    name: "vault",
    factory: new CryptoFactory(vaultKmsClientFactory({ retries: 0 })),
    newFactory: () => new CryptoFactory(vaultKmsClientFactory({ retries: 0 })),
    connection: { kmsInstanceUrl: double.url, keyAccessToken: token },
    pyArgs: () => Promise.resolve(["--kms", "vault", "--vault-url", double.url, "--token", token]),
    rotate: async (id) => (await root(`keys/${id}/rotate`)).data.latest_version,
    retire: async (id, version) => void await root(`keys/${id}/config`, { min_decryption_version: version }),
    close: () => double.close(),
  };
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A key of the keystore file (see kms/README.md). */
interface KeystoreEntry {
  minDecryptionVersion: number;
  versions: { version: number; key: string }[];
}

async function localKms(dir: string): Promise<SharedKms> {
  const path = join(dir, "keystore.json");
  const keystore = await LocalKeystore.create(path);
  for (const id of MASTER_KEYS) await keystore.addKey(id);
  return {
    name: "local",
    factory: new CryptoFactory(localKmsClientFactory(path)),
    newFactory: () => new CryptoFactory(localKmsClientFactory(path)),
    connection: {},
    pyArgs: async () => {
      // A test may read the key bytes: the Python client holds the same master keys.
      const doc = JSON.parse(await Deno.readTextFile(path));
      const args = ["--kms", "local"];
      const keys: Record<string, KeystoreEntry> = doc.keys;
      for (const [id, entry] of Object.entries(keys)) {
        for (const v of entry.versions) {
          if (v.version >= entry.minDecryptionVersion) {
            args.push("--key", `${id}=${hex(Uint8Array.from(atob(v.key), (c) => c.charCodeAt(0)))}`);
          }
        }
      }
      return args;
    },
    rotate: (id) => keystore.rotate(id),
    retire: (id, version) => keystore.setMinDecryptionVersion(id, version),
    close: () => Promise.resolve(keystore.close()),
  };
}

/** One cell: an input and an encryption configuration. */
interface Cell {
  input: InputFile;
  /** Master key → columns (parent names for nested columns). */
  columnKeys?: Record<string, string[]>;
  uniform?: boolean;
  doubleWrapping: boolean;
  external: boolean;
  plaintextFooter: boolean;
  algorithm?: "AES_GCM_V1" | "AES_GCM_CTR_V1";
  dataKeyBits?: 128 | 192 | 256;
}

function cellName(c: Cell): string {
  return [
    basename(c.input.file, ".parquet"),
    c.uniform ? "uniform" : "column keys",
    c.doubleWrapping ? "double" : "single",
    c.external ? "external" : "internal",
    c.plaintextFooter ? "plaintext footer" : "encrypted footer",
    ...(c.algorithm === "AES_GCM_CTR_V1" ? ["CTR"] : []),
    ...(c.dataKeyBits && c.dataKeyBits !== 128 ? [`${c.dataKeyBits}-bit DEKs`] : []),
  ].join(", ");
}

function pyConfigArgs(c: Cell): string[] {
  const args = ["--footer-key", "footer"];
  if (c.uniform) args.push("--uniform");
  for (const [id, cols] of Object.entries(c.columnKeys ?? {})) {
    args.push("--column-key", `${id}:${cols.join(",")}`);
  }
  args.push(c.doubleWrapping ? "--double-wrapping" : "--no-double-wrapping");
  if (c.external) args.push("--external-key-material");
  if (c.plaintextFooter) args.push("--plaintext-footer");
  if (c.algorithm) args.push("--algorithm", c.algorithm);
  if (c.dataKeyBits) args.push("--data-key-bits", String(c.dataKeyBits));
  return args;
}

function ourConfig(c: Cell): EncryptionConfiguration {
  return {
    footerKey: "footer",
    columnKeys: c.columnKeys,
    uniformEncryption: c.uniform,
    doubleWrapping: c.doubleWrapping,
    internalKeyMaterial: !c.external,
    plaintextFooter: c.plaintextFooter,
    encryptionAlgorithm: c.algorithm,
    dataKeyLengthBits: c.dataKeyBits,
  };
}

async function footerMagic(path: string): Promise<string> {
  const f = await Deno.open(path);
  try {
    await f.seek(-4, Deno.SeekMode.End);
    const b = new Uint8Array(4);
    await f.read(b);
    return new TextDecoder().decode(b);
  } finally {
    f.close();
  }
}

/**
 * How each leaf column of an encrypted file is protected, in leaf order as `<top-level column>#<leaf
 * index>: <footer-key | plaintext | master key id of its column key>` (inner names differ between writers:
 * pyarrow names list leaves `list.element`, arrow-rs `list.item`).
 */
async function leafProtection(kms: SharedKms, path: string): Promise<string[]> {
  const reader = await openParquetFile(path, kms.factory.fileDecryptionProperties(kms.connection, {}, path));
  let store: KeyMaterialStore | undefined;
  try {
    const out: string[] = [];
    for (const c of reader.columns) {
      let how: string;
      if (c.encryption !== "column-key") how = c.encryption === "none" ? "plaintext" : c.encryption;
      else {
        const meta = parseKeyMetadata(c.keyMetadata!);
        if (meta.internal) how = meta.material.masterKeyId;
        else {
          store ??= await KeyMaterialStore.load(path);
          how = store.get(meta.reference).masterKeyId;
        }
      }
      out.push(`${c.path[0]}#${c.index}: ${how}`);
    }
    return out;
  } finally {
    reader.close();
  }
}

/** pyarrow writes the cell, we decrypt; returns what pyarrow reported. */
async function pyarrowWritesWeRead(kms: SharedKms, c: Cell, dir: string): Promise<WriteResult> {
  await Deno.mkdir(dir, { recursive: true });
  const enc = join(dir, "pyarrow.parquet.encrypted");
  const w = await py<WriteResult>(["write", c.input.file, enc, ...(await kms.pyArgs()), ...pyConfigArgs(c)]);
  assert.strictEqual(w.rows, c.input.rows);
  // P12: pyarrow's CryptoFactory ignores a plaintext footer with uniform encryption.
  assert.strictEqual(w.footer_magic, c.plaintextFooter && !c.uniform ? "PAR1" : "PARE");
  assert.strictEqual(
    existsSync(keyMaterialPath(enc)),
    c.external,
    "external key material file beside the file",
  );
  const plain = join(dir, "pyarrow.ours.parquet");
  await decryptFileWithKms(kms.factory, kms.connection, enc, plain, { durable: false });
  await assertSameRows(c.input.file, plain);
  return w;
}

/** We write the cell, pyarrow decrypts. */
async function weWritePyarrowReads(kms: SharedKms, c: Cell, dir: string): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  const enc = join(dir, "ours.parquet.encrypted");
  await encryptFileWithKms(kms.factory, kms.connection, ourConfig(c), c.input.file, enc, { durable: false });
  assert.strictEqual(await footerMagic(enc), c.plaintextFooter ? "PAR1" : "PARE");
  const plain = join(dir, "ours.pyarrow.parquet");
  const r = await py<ReadResult>(["read", enc, plain, ...(await kms.pyArgs())]);
  assert.strictEqual(r.rows, c.input.rows);
  assert.ok(
    Object.keys(r.kms_calls).some((k) => k.startsWith("unwrap ")),
    "pyarrow unwrapped through the KMS",
  );
  await assertSameRows(c.input.file, plain);
  return enc;
}

function byName(inputs: InputFile[], name: string): InputFile {
  const found = inputs.find((i) => basename(i.file) === name);
  assert.ok(found, `input ${name} was not generated`);
  return found;
}

/** Runs tasks with at most `n` at a time (the Python peer and DuckDB use one core each). */
async function pool<T>(tasks: (() => Promise<T>)[], n: number): Promise<T[]> {
  const results: T[] = new Array(tasks.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, tasks.length) }, async () => {
      while (next < tasks.length) {
        const i = next++;
        results[i] = await tasks[i]();
      }
    }),
  );
  return results;
}

Deno.test("pyarrow CryptoFactory ↔ this engine through the same KMS (Vault double, local wrap)", async (t) => {
  await requireVenv();
  await withTempDir(async (dir) => {
    await Deno.mkdir(join(dir, "in"), { recursive: true });
    const inputs = [...(await parquetWasmInputs(join(dir, "in"))), ...(await duckdbInputs(join(dir, "in")))];
    const main = byName(inputs, "wasm_v1_snappy_dict.parquet"); // 3 row groups, list and struct columns
    const v2 = byName(inputs, "wasm_v2_zstd_plain.parquet"); // data page V2, 3 row groups
    const nested = byName(inputs, "duckdb_nested_gzip_plain.parquet"); // maps, lists of structs
    const wasmKeys = { identity: ["label", "text"], clinical: ["list", "point"] };
    const duckKeys = { identity: ["note", "meta"], clinical: ["items", "lookup"] };

    const cells: Cell[] = [];
    for (const doubleWrapping of [false, true]) {
      for (const external of [false, true]) {
        for (const plaintextFooter of [false, true]) {
          cells.push({ input: main, columnKeys: wasmKeys, doubleWrapping, external, plaintextFooter });
        }
      }
    }
    cells.push(
      { input: v2, columnKeys: wasmKeys, doubleWrapping: true, external: true, plaintextFooter: false },
      { input: v2, columnKeys: wasmKeys, doubleWrapping: false, external: false, plaintextFooter: true },
      { input: nested, columnKeys: duckKeys, doubleWrapping: true, external: false, plaintextFooter: true },
      { input: nested, columnKeys: duckKeys, doubleWrapping: false, external: true, plaintextFooter: false },
      {
        input: main,
        columnKeys: wasmKeys,
        doubleWrapping: true,
        external: false,
        plaintextFooter: false,
        algorithm: "AES_GCM_CTR_V1",
        dataKeyBits: 256,
      },
      { input: main, uniform: true, doubleWrapping: true, external: true, plaintextFooter: true },
    );

    for (const make of [vaultKms, () => localKms(dir)]) {
      const kms = await make();
      try {
        await t.step(`${kms.name}: ${cells.length} configurations, both directions`, async () => {
          const failures: string[] = [];
          const runs = cells.map((c, i) => async () => {
            const at = join(dir, kms.name, `cell-${i}`);
            let theirs: string | undefined;
            let ours: string | undefined;
            try {
              theirs = (await pyarrowWritesWeRead(kms, c, at)).path;
            } catch (e) {
              failures.push(`pyarrow writes, we read [${cellName(c)}]: ${(e as Error).message}`);
            }
            try {
              ours = await weWritePyarrowReads(kms, c, at);
            } catch (e) {
              failures.push(`we write, pyarrow reads [${cellName(c)}]: ${(e as Error).message}`);
            }
            if (theirs && ours) {
              // Both writers protect the same leaves with the same master keys (parent names → leaves).
              try {
                assert.deepStrictEqual(await leafProtection(kms, ours), await leafProtection(kms, theirs));
              } catch (e) {
                failures.push(`leaf protection differs [${cellName(c)}]: ${(e as Error).message}`);
              }
            }
          });
          await pool(runs, 3);
          assert.deepStrictEqual(failures, []);
        });

        await t.step(`${kms.name}: pyarrow's external key material file and PKMT1 field order`, async () => {
          const c: Cell = {
            input: main,
            columnKeys: wasmKeys,
            doubleWrapping: true,
            external: true,
            plaintextFooter: false,
          };
          const w = await pyarrowWritesWeRead(kms, c, join(dir, kms.name, "layout"));
          const ext = w.external!;
          assert.strictEqual(ext.file, "_KEY_MATERIAL_FOR_pyarrow.parquet.encrypted.json");
          assert.deepStrictEqual(
            [...ext.references].sort(),
            ["columnKey0", "columnKey1", "columnKey2", "columnKey3", "footerKey"],
          );
          assert.deepStrictEqual(ext.materials.footerKey.fields, [
            "keyMaterialType",
            "isFooterKey",
            "kmsInstanceID",
            "kmsInstanceURL",
            "masterKeyID",
            "wrappedDEK",
            "doubleWrapping",
            "keyEncryptionKeyID",
            "wrappedKEK",
          ]);
          assert.deepStrictEqual(ext.materials.columnKey0.fields, [
            "keyMaterialType",
            "isFooterKey",
            "masterKeyID",
            "wrappedDEK",
            "doubleWrapping",
            "keyEncryptionKeyID",
            "wrappedKEK",
          ]);
          assert.strictEqual(ext.materials.footerKey.kmsInstanceID, "DEFAULT");
          assert.strictEqual(
            ext.materials.footerKey.kmsInstanceURL,
            kms.name === "vault" ? kms.connection.kmsInstanceUrl : "DEFAULT",
          );
          // One KEK per master key: the two identity columns share one, as do the two clinical ones.
          const kek = (ref: string) => ext.materials[ref].kekId;
          const byMaster = (id: string) =>
            new Set(ext.references.filter((r) => ext.materials[r].masterKeyID === id).map(kek));
          assert.strictEqual(byMaster("identity").size, 1);
          assert.strictEqual(byMaster("clinical").size, 1);
          // Double wrapping costs one KMS wrap per master key.
          assert.deepStrictEqual(w.kms_calls, { "wrap footer": 1, "wrap identity": 1, "wrap clinical": 1 });
          if (kms.name === "vault") {
            for (const r of ext.references) assert.strictEqual(ext.materials[r].vaultVersion, 1);
          }
        });

        await t.step(`${kms.name}: our rotation → pyarrow reads; pyarrow's rotation → we read`, async () => {
          const ours = join(dir, kms.name, "rot-ours");
          const theirs = join(dir, kms.name, "rot-pyarrow");
          await Deno.mkdir(ours, { recursive: true });
          await Deno.mkdir(theirs, { recursive: true });
          const rotCells: Cell[] = [
            {
              input: main,
              columnKeys: wasmKeys,
              doubleWrapping: true,
              external: true,
              plaintextFooter: false,
            },
            {
              input: nested,
              columnKeys: duckKeys,
              doubleWrapping: false,
              external: true,
              plaintextFooter: true,
            },
          ];
          // Our files (written by a service's long-lived factory), and pyarrow's, all with external key
          // material; then every master key rotated in the KMS (version 2) by an administrator.
          const factory = kms.newFactory();
          const ourFiles = [];
          const theirFiles = [];
          for (const [i, c] of rotCells.entries()) {
            const o = join(ours, `part-${i}.parquet`);
            await encryptFileWithKms(factory, kms.connection, ourConfig(c), c.input.file, o, {
              durable: false,
            });
            ourFiles.push(o);
            const p = join(theirs, `part-${i}.parquet`);
            await py<WriteResult>(["write", c.input.file, p, ...(await kms.pyArgs()), ...pyConfigArgs(c)]);
            theirFiles.push(p);
          }
          for (const id of MASTER_KEYS) assert.strictEqual(await kms.rotate(id), 2);

          // Our rotation (the same service, right after the KMS rotation), then version 1 retired:
          // pyarrow reads with version 2 only.
          const report = await rotateMasterKeys(await factory.kmsClient(kms.connection), ours);
          assert.deepStrictEqual(report.failed, []);
          assert.deepStrictEqual(
            report.rotated,
            ourFiles.map(keyMaterialPath).sort(),
            "after the KMS rotated its master keys, rotateMasterKeys must re-wrap every key material file",
          );
          for (const id of MASTER_KEYS) await kms.retire(id, 2);
          for (const [i, c] of rotCells.entries()) {
            if (kms.name === "vault") {
              const text = await Deno.readTextFile(keyMaterialPath(ourFiles[i]));
              assert.ok(!text.includes("vault:v1:"), "no key is wrapped by version 1 any more");
            }
            const plain = join(ours, `part-${i}.pyarrow.parquet`);
            await py<ReadResult>(["read", ourFiles[i], plain, ...(await kms.pyArgs())]);
            await assertSameRows(c.input.file, plain);
          }

          // pyarrow's files (wrapped by version 1) no longer open before pyarrow rotates them…
          await assert.rejects(
            decryptFileWithKms(kms.factory, kms.connection, theirFiles[0], join(theirs, "x.parquet"), {
              durable: false,
            }),
          );
          // …so lower the minimum again, rotate to version 3, let pyarrow rotate, retire 1 and 2.
          for (const id of MASTER_KEYS) {
            await kms.retire(id, 1);
            assert.strictEqual(await kms.rotate(id), 3);
          }
          for (const [i, file] of theirFiles.entries()) {
            // The single-wrapped file switches to double wrapping on the way (rotation may change modes).
            const rot = await py<RotateResult>([
              "rotate",
              file,
              ...(await kms.pyArgs()),
              "--double-wrapping",
            ]);
            assert.deepStrictEqual(rot.leftovers, []);
            assert.deepStrictEqual([...rot.after.references].sort(), [...rot.before.references].sort());
            for (const ref of rot.after.references) {
              const [b, a] = [rot.before.materials[ref], rot.after.materials[ref]];
              assert.strictEqual(a.masterKeyID, b.masterKeyID);
              assert.strictEqual(b.doubleWrapping, rotCells[i].doubleWrapping);
              assert.strictEqual(a.doubleWrapping, true);
              if (b.doubleWrapping) assert.notStrictEqual(a.kekId, b.kekId, "rotation makes new KEKs");
              if (kms.name === "vault") assert.deepStrictEqual([b.vaultVersion, a.vaultVersion], [1, 3]);
            }
          }
          for (const id of MASTER_KEYS) await kms.retire(id, 3);
          for (const [i, c] of rotCells.entries()) {
            const plain = join(theirs, `part-${i}.ours.parquet`);
            await decryptFileWithKms(kms.factory, kms.connection, theirFiles[i], plain, { durable: false });
            await assertSameRows(c.input.file, plain);
          }
        });
      } finally {
        await kms.close();
      }
    }
  });
});
