/**
 * The key tools through the command line with the local keystore (`--kms local --keystore FILE`),
 * every CLI call a subprocess (`deno run -A cli/main.ts …`):
 *
 * - end to end: `kms local init/add`, `pme encrypt` of a DuckDB and a parquet-wasm input with column
 *   master keys (internal and external key material, single and double wrapping, plaintext footer,
 *   AES_GCM_CTR_V1), `pme inspect --json` (PKMT1 key metadata, column protection), `pme decrypt`
 *   compared row by row with the input; a keystore lacking a master key skips exactly its columns;
 *   usage errors exit 2; no key bytes of any keystore in any output;
 * - rotation: many files with external key material in nested folders, `kms local rotate`, `kms
 *   rotate DIR` (also `--rotate-master-keys`), `kms min-decryption-version --check DIR` refusing
 *   while key material (external, or internal to a Parquet file) needs old versions, `kms reencrypt`
 *   of the internal ones, every file decrypting to its values afterwards;
 * - re-encryption keeps protection: `kms reencrypt` without key-tool options keeps external key
 *   material (new references and wrapped keys only), double or single wrapping, data key length,
 *   algorithm, footer mode and every column's master key; a reduced `--column-master-key` is refused
 *   naming the columns, `--decrypt-column` writes exactly those in plaintext, explicit options
 *   override and the output says what was kept and what changed;
 * - crash safety: `kms rotate DIR` and `kms reencrypt` killed with SIGKILL at random points; after
 *   every kill each file decrypts, key material files are never replaced by their temporary copies,
 *   temporary files are not taken for data, and a new run completes the work.
 *
 * @module
 */
import assert from "node:assert";
import { Buffer } from "node:buffer";
import { basename, dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { type DecryptionOptions, NullSink, openParquetFile, transcode } from "../pme/mod.ts";
import { CryptoFactory, type EncryptionConfiguration } from "../kms/crypto_factory.ts";
import { decryptFileWithKms, encryptFileWithKms } from "../kms/files.ts";
import { type KeyMaterial, parseKeyMaterial, parseKeyMetadata } from "../kms/key_material.ts";
import { KmsUnwrapError } from "../kms/errors.ts";
import {
  KEY_MATERIAL_PREFIX,
  keyMaterialPath,
  KeyMaterialStore,
  TMP_KEY_MATERIAL_PREFIX,
} from "../kms/key_material_store.ts";
import { LocalKeystore } from "../kms/local_keystore.ts";
import { LocalKmsClient, localKmsClientFactory } from "../kms/local_kms.ts";
import { checkAllCurrent } from "../kms/rotation.ts";
import { assertSameRows } from "./fixtures/compare.ts";
import { sqlString, withDuckDB } from "./fixtures/duckdb.ts";
import { duckdbInputs, parquetWasmInputs } from "./fixtures/inputs.ts";
import { withTempDir } from "./fixtures/tmp.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const td = new TextDecoder();
const te = new TextEncoder();
const MASTER_KEYS = ["footer", "identity", "clinical"];
/** `--footer-master-key footer`. */
const FOOTER = ["--footer-master-key", "footer"];

/** `--kms local --keystore PATH`. */
function kmsLocal(keystore: string): string[] {
  return ["--kms", "local", "--keystore", keystore];
}

/** `--column-master-key ID:col1,col2 …` for master key id → columns. */
function columnMasterKeyArgs(columns: Record<string, string[]>): string[] {
  return Object.entries(columns).flatMap(([id, cols]) => ["--column-master-key", `${id}:${cols.join(",")}`]);
}

function randomKeyBase64(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64");
}

// ---------------------------------------------------------------------------------------------------
// Running the CLI

/** What one CLI run produced. */
interface CliResult {
  args: string[];
  code: number;
  signal: string | null;
  stdout: string;
  stderr: string;
}

function cliCommand(args: string[], env: Record<string, string> = {}): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli/main.ts", ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

function result(args: string[], out: Deno.CommandOutput): CliResult {
  return {
    args,
    code: out.code,
    signal: out.signal,
    stdout: td.decode(out.stdout),
    stderr: td.decode(out.stderr),
  };
}

/** Records every CLI run of a test, to check afterwards that no output holds key bytes. */
class Cli {
  readonly runs: CliResult[] = [];

  async run(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
    const r = result(args, await cliCommand(args, env).output());
    this.runs.push(r);
    return r;
  }

  /** Starts the CLI and sends it SIGKILL after `delayMs` (unless it finished first). */
  async killedAfter(args: string[], delayMs: number): Promise<CliResult> {
    const child = cliCommand(args).spawn();
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    try {
      child.kill("SIGKILL");
    } catch {
      // It has finished already.
    }
    const r = result(args, await child.output());
    this.runs.push(r);
    if (r.code !== 0) assert.strictEqual(r.signal, "SIGKILL", show(r));
    return r;
  }

  /** Runs the argument lists with at most `concurrency` processes at a time. */
  async all(argLists: string[][], concurrency = 6): Promise<CliResult[]> {
    const out: CliResult[] = new Array(argLists.length);
    let next = 0;
    const worker = async () => {
      while (next < argLists.length) {
        const i = next++;
        out[i] = await this.run(argLists[i]);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return out;
  }

  /** Asserts that no spelling of any key of the keystores appears in any recorded output. */
  async assertNoKeyBytes(keystores: string[]): Promise<void> {
    const secrets = new Set<string>();
    for (const path of keystores) {
      const doc = JSON.parse(await Deno.readTextFile(path)) as {
        keys: Record<string, { versions: { key: string }[] }>;
      };
      for (const k of Object.values(doc.keys)) {
        for (const v of k.versions) {
          const hex = Buffer.from(v.key, "base64").toString("hex");
          secrets.add(v.key).add(hex).add(hex.toUpperCase());
        }
      }
    }
    assert(secrets.size > 0);
    for (const r of this.runs) {
      for (const s of secrets) {
        assert(
          !r.stdout.includes(s) && !r.stderr.includes(s),
          `key bytes (${s.length} chars) in the output of: ${r.args.join(" ")}`,
        );
      }
    }
  }
}

function show(r: CliResult): string {
  const exit = `exited ${r.code}${r.signal ? ` (${r.signal})` : ""}`;
  return `\`${r.args.join(" ")}\` ${exit}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

function ok(r: CliResult): CliResult {
  assert.strictEqual(r.code, 0, show(r));
  return r;
}

/** Failure with `code`: exactly one stderr line, no stack trace, nothing on stdout. */
function fails(r: CliResult, code: 1 | 2, ...patterns: RegExp[]): string {
  assert.strictEqual(r.code, code, show(r));
  const lines = r.stderr.split("\n");
  assert.strictEqual(lines.length, 2, `one stderr line: ${show(r)}`);
  assert.strictEqual(lines[1], "", show(r));
  assert.match(lines[0], code === 2 ? /^usage error: / : /^error: \w+: /, show(r));
  for (const p of patterns) assert.match(lines[0], p, show(r));
  assert.strictEqual(r.stdout, "", show(r));
  return lines[0];
}

// ---------------------------------------------------------------------------------------------------
// Files

/** Files under `dir`, recursively, as paths relative to `dir`. */
async function tree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      const p = join(d, e.name);
      if (e.isDirectory) await walk(p);
      else out.push(relative(dir, p));
    }
  };
  await walk(dir);
  return out.sort();
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** A copy of keystore `from` at `to` (mode 0600) after `edit` changed its JSON document. */
async function editedKeystore(
  from: string,
  to: string,
  edit: (keys: Record<string, { versions: { key: string }[] }>) => void,
): Promise<string> {
  const doc = JSON.parse(await Deno.readTextFile(from));
  edit(doc.keys);
  await Deno.writeTextFile(to, JSON.stringify(doc, null, 2) + "\n", { mode: 0o600 });
  await Deno.chmod(to, 0o600);
  return to;
}

/** A keystore with the three master keys, made in-process (the CLI path is tested separately). */
async function makeKeystore(path: string): Promise<void> {
  const ks = await LocalKeystore.create(path);
  try {
    for (const id of MASTER_KEYS) await ks.addKey(id);
  } finally {
    ks.close();
  }
}

/** Adds a new version of every master key; returns the new versions. */
async function rotateKeystore(path: string): Promise<number[]> {
  const ks = await LocalKeystore.open(path);
  try {
    const out = [];
    for (const id of MASTER_KEYS) out.push(await ks.rotate(id));
    return out;
  } finally {
    ks.close();
  }
}

/** Small FHIR-like plaintext inputs written by DuckDB, each with different rows. */
async function smallSources(dir: string, n: number): Promise<string[]> {
  return await withDuckDB(async (conn) => {
    const out: string[] = [];
    for (let k = 0; k < n; k++) {
      const file = join(dir, `source-${k}.parquet`);
      const select = `SELECT (i + ${k * 10000})::INTEGER AS id,
          'Patient ' || (i * 7 + ${k}) AS name,
          md5((i * ${k + 3})::VARCHAR) AS mrn,
          DATE '1950-01-01' + ((i * 37 + ${k}) % 20000)::INTEGER AS birth_date,
          {'code': 'LOINC-' || ((i + ${k}) % 17), 'value': i * 0.5 + ${k}} AS obs,
          CASE WHEN i % 9 = 0 THEN NULL ELSE [i % 5, (i + ${k}) % 7] END AS tags
        FROM range(${200 + 37 * k}) r(i) ORDER BY i`;
      await conn.run(`COPY (${select}) TO ${sqlString(file)} (FORMAT parquet, COMPRESSION snappy)`);
      out.push(file);
    }
    return out;
  });
}

/** Column master keys of the small inputs: identity leaves, clinical parents. */
const SMALL_COLUMNS: Record<string, string[]> = {
  identity: ["name", "mrn", "birth_date"],
  clinical: ["obs", "tags"],
};
const SMALL_COLUMN_ARGS = columnMasterKeyArgs(SMALL_COLUMNS);
/** Wrapped keys a rotation re-wraps per file: every DEK (single wrapping) or one KEK per master key. */
const REWRAPPED_SINGLE = 1 + Object.values(SMALL_COLUMNS).flat().length;
const REWRAPPED_DOUBLE = MASTER_KEYS.length;

/** A decryption factory without caches shared with anything else (each file unwraps its own KEKs). */
function freshFactory(keystore: string): CryptoFactory {
  return new CryptoFactory(localKmsClientFactory(keystore));
}

/** The decryption options of a file, for checkAllCurrent. */
function openWith(keystore: string): (path: string) => DecryptionOptions {
  return (path) => freshFactory(keystore).fileDecryptionProperties({}, {}, path);
}

/** Opens `file` with the keystore and decrypts every column (into nothing); returns the row count. */
async function decryptAllColumns(keystore: string, file: string): Promise<number> {
  const reader = await openParquetFile(file, freshFactory(keystore).fileDecryptionProperties({}, {}, file));
  try {
    const r = await transcode(reader, new NullSink(), { columns: reader.columns.map((c) => c.dotted) });
    assert.deepStrictEqual(r.skippedColumns, []);
    return r.rows;
  } finally {
    reader.close();
  }
}

/** Decrypts `file` with the keystore into `scratch` and compares every value with `source`. */
async function assertDecryptsTo(keystore: string, file: string, source: string, scratch: string) {
  const r = await decryptFileWithKms(freshFactory(keystore), {}, file, scratch, { durable: false });
  assert.deepStrictEqual(r.skippedColumns, [], file);
  await assertSameRows(source, scratch);
  await Deno.remove(scratch);
}

/** Dotted leaf column paths of a file. */
async function leaves(file: string, options: DecryptionOptions = {}): Promise<string[]> {
  const reader = await openParquetFile(file, options);
  try {
    return reader.columns.map((c) => c.dotted);
  } finally {
    reader.close();
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function sample<T>(items: T[], n: number): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j], copy[i]];
  }
  return copy.slice(0, n);
}

// ---------------------------------------------------------------------------------------------------
// 1. End to end with the local keystore

interface Case {
  name: string;
  flags: string[];
  external: boolean;
  doubleWrapping: boolean;
  plaintextFooter: boolean;
  algorithm: "AES_GCM_V1" | "AES_GCM_CTR_V1";
}

const CASES: Case[] = [
  {
    name: "external key material, single wrapping",
    flags: ["--external-key-material", "--no-double-wrapping"],
    external: true,
    doubleWrapping: false,
    plaintextFooter: false,
    algorithm: "AES_GCM_V1",
  },
  {
    name: "internal key material, double wrapping, plaintext footer, CTR",
    flags: ["--plaintext-footer", "--algorithm", "AES_GCM_CTR_V1"],
    external: false,
    doubleWrapping: true,
    plaintextFooter: true,
    algorithm: "AES_GCM_CTR_V1",
  },
  {
    name: "external key material, double wrapping, CTR",
    flags: ["--external-key-material", "--algorithm", "AES_GCM_CTR_V1"],
    external: true,
    doubleWrapping: true,
    plaintextFooter: false,
    algorithm: "AES_GCM_CTR_V1",
  },
  {
    name: "internal key material, single wrapping, plaintext footer",
    flags: ["--no-double-wrapping", "--plaintext-footer", "--algorithm", "AES_GCM_V1"],
    external: false,
    doubleWrapping: false,
    plaintextFooter: true,
    algorithm: "AES_GCM_V1",
  },
];

interface Input {
  file: string;
  rows: number;
  /** Top-level columns → master key. */
  columns: Record<string, string[]>;
}

interface InspectColumn {
  path: string;
  encrypted: boolean;
  key: string | null;
  keyMetadata: string | null;
  readable: boolean;
}

/** The key material a key metadata string of `pme inspect --json` stands for. */
async function materialOf(meta: string, file: string): Promise<KeyMaterial> {
  assert.strictEqual(JSON.parse(meta).keyMaterialType, "PKMT1", meta);
  const parsed = parseKeyMetadata(te.encode(meta));
  return parsed.internal ? parsed.material : (await KeyMaterialStore.load(file)).get(parsed.reference);
}

function masterKeyOfColumn(input: Input, path: string): string | null {
  const top = path.split(".")[0];
  for (const [id, cols] of Object.entries(input.columns)) if (cols.includes(top)) return id;
  return null;
}

Deno.test("cli --kms local: keystore, encrypt, inspect, decrypt, a keystore lacking a master key, usage errors", async (t) => {
  await withTempDir(async (dir) => {
    const cli = new Cli();
    const ks = join(dir, "keystore.json");
    ok(await cli.run(["kms", "local", "init", ks]));
    const footerHex = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex");
    assert.match(
      ok(await cli.run(["kms", "local", "add", ks, "footer", "--key", footerHex])).stdout,
      /footer version 1 \(256-bit, given\)/,
    );
    ok(await cli.run(["kms", "local", "add", ks, "identity"]));
    ok(await cli.run(["kms", "local", "add", ks, "clinical"]));
    assert.strictEqual(
      ok(await cli.run(["kms", "local", "list", ks])).stdout,
      "clinical: versions 1, current 1, min decryption version 1\n" +
        "footer: versions 1, current 1, min decryption version 1\n" +
        "identity: versions 1, current 1, min decryption version 1\n",
    );

    const duck = (await duckdbInputs(dir)).find((f) => f.file.endsWith("duckdb_types_v1_snappy.parquet"))!;
    const wasm = (await parquetWasmInputs(dir)).find((f) => f.file.endsWith("wasm_v1_snappy_dict.parquet"))!;
    const inputs: Input[] = [
      {
        file: duck.file,
        rows: duck.rows,
        columns: { identity: ["s", "u", "bl"], clinical: ["st", "l", "dec38"] },
      },
      {
        file: wasm.file,
        rows: wasm.rows,
        columns: { identity: ["label", "text"], clinical: ["point", "list", "i64"] },
      },
    ];
    const kmsArgs = kmsLocal(ks);
    const columnArgs = (input: Input) => columnMasterKeyArgs(input.columns);
    const encrypted: { c: Case; input: Input; file: string }[] = [];

    for (const c of CASES) {
      for (const input of inputs) {
        const name = `${basename(input.file, ".parquet")}-${CASES.indexOf(c)}.parquet`;
        await t.step(`${basename(input.file)}: ${c.name}`, async () => {
          const out = join(dir, "enc", name);
          await Deno.mkdir(dirname(out), { recursive: true });
          const options = [...kmsArgs, ...FOOTER, ...columnArgs(input), ...c.flags];
          const enc = ok(await cli.run(["pme", "encrypt", input.file, out, ...options]));
          assert.match(enc.stderr, new RegExp(`^encrypted .*: ${input.rows} rows`), show(enc));
          assert.strictEqual(await exists(keyMaterialPath(out)), c.external, "key material file beside");
          encrypted.push({ c, input, file: out });

          // inspect --json: PKMT1 key metadata and every column's protection.
          const o = JSON.parse(ok(await cli.run(["pme", "inspect", out, ...kmsArgs, "--json"])).stdout);
          assert.strictEqual(o.encrypted, true);
          assert.strictEqual(o.footer, c.plaintextFooter ? "plaintext, signed" : "encrypted");
          if (c.plaintextFooter) assert.strictEqual(o.signatureVerified, true);
          assert.strictEqual(o.algorithm, c.algorithm);
          assert.strictEqual(o.footerReadable, true);
          assert.strictEqual(o.rows, input.rows);
          const footerMeta = JSON.parse(o.footerKeyMetadata);
          assert.strictEqual(footerMeta.internalStorage, !c.external);
          if (c.external) assert.strictEqual(footerMeta.keyReference, "footerKey");
          const footer = await materialOf(o.footerKeyMetadata, out);
          assert.deepStrictEqual(
            [footer.isFooterKey, footer.masterKeyId, footer.doubleWrapping, footer.kmsInstanceId],
            [true, "footer", c.doubleWrapping, "DEFAULT"],
          );
          const columns = o.columns as InspectColumn[];
          const protectedTops = new Set<string>();
          for (const col of columns) {
            const id = masterKeyOfColumn(input, col.path);
            assert.strictEqual(col.readable, true, col.path);
            if (id === null) {
              assert.deepStrictEqual(
                [col.encrypted, col.key, col.keyMetadata],
                [false, null, null],
                col.path,
              );
              continue;
            }
            protectedTops.add(col.path.split(".")[0]);
            assert.deepStrictEqual([col.encrypted, col.key], [true, "column"], col.path);
            const m = await materialOf(col.keyMetadata!, out);
            assert.deepStrictEqual([m.isFooterKey, m.masterKeyId, m.doubleWrapping], [
              false,
              id,
              c.doubleWrapping,
            ]);
          }
          assert.deepStrictEqual([...protectedTops].sort(), Object.values(input.columns).flat().sort());

          // decrypt → the same rows as the input.
          const plain = join(dir, "plain", name);
          await Deno.mkdir(dirname(plain), { recursive: true });
          const dec = ok(await cli.run(["pme", "decrypt", out, plain, ...kmsArgs]));
          assert.match(dec.stderr, new RegExp(`^decrypted .*: ${input.rows} rows`), show(dec));
          assert.doesNotMatch(dec.stderr, /skipped/, show(dec));
          assert.strictEqual(await assertSameRows(input.file, plain), input.rows);
        });
      }
    }

    const withoutIdentity = await editedKeystore(ks, join(dir, "no-identity.json"), (k) => delete k.identity);
    const otherIdentity = await editedKeystore(ks, join(dir, "other-identity.json"), (k) => {
      k.identity.versions[0].key = randomKeyBase64();
    });
    const withoutFooter = await editedKeystore(ks, join(dir, "no-footer.json"), (keys) => delete keys.footer);
    // One file with internal and one with external key material.
    const partialCases = [encrypted[0], encrypted[3]];
    assert.deepStrictEqual(partialCases.map((e) => e.c.external), [true, false]);

    for (const { c, input, file } of partialCases) {
      const identityLeaves = (await leaves(file, freshFactory(ks).fileDecryptionProperties({}, {}, file)))
        .filter((p) => masterKeyOfColumn(input, p) === "identity").sort();
      const kept = [...new Set((await leaves(input.file)).map((p) => p.split(".")[0]))]
        .filter((top) => !input.columns.identity.includes(top));
      const base = basename(file, ".parquet");

      const partial = kmsLocal(withoutIdentity);
      await t.step(`keystore without "identity" (${c.name}): decrypt skips exactly its columns`, async () => {
        const plain = join(dir, "plain", `${base}-partial.parquet`);
        const r = await cli.run(["pme", "decrypt", file, plain, ...partial]);
        assert.strictEqual(r.code, 0, show(r));
        const m = r.stderr.match(
          new RegExp(`^decrypted .*: ${input.rows} rows.*; skipped \\(no key\\): (.*)\n$`),
        );
        assert(m, show(r));
        assert.deepStrictEqual(m[1].split(", ").sort(), identityLeaves, show(r));
        await assertSameRows(input.file, plain, kept);
      });

      await t.step(`keystore without "identity" (${c.name}): inspect shows what is readable`, async () => {
        const r = await cli.run(["pme", "inspect", file, ...partial, "--json"]);
        assert.strictEqual(r.code, 0, show(r));
        for (const col of JSON.parse(r.stdout).columns as InspectColumn[]) {
          assert.strictEqual(col.readable, masterKeyOfColumn(input, col.path) !== "identity", col.path);
        }
      });

      await t.step(`keystore without "identity" (${c.name}): --columns naming its column fails`, async () => {
        const plain = join(dir, "plain", `${base}-identity.parquet`);
        const cols = ["--columns", `id,${input.columns.identity[0]}`];
        fails(
          await cli.run(["pme", "decrypt", file, plain, ...partial, ...cols]),
          1,
          /master key "?identity\b/,
        );
        assert(!(await exists(plain)), "no output");
        // Columns of the other master keys still decrypt.
        const clinical = input.columns.clinical[0];
        ok(await cli.run(["pme", "decrypt", file, plain, ...partial, "--columns", clinical]));
        await assertSameRows(input.file, plain, [clinical]);
      });

      await t.step(`identity with other key bytes (${c.name}): never wrong data`, async () => {
        const plain = join(dir, "plain", `${base}-other.parquet`);
        const cols = ["--columns", input.columns.identity[0]];
        const args = kmsLocal(otherIdentity);
        fails(await cli.run(["pme", "decrypt", file, plain, ...args, ...cols]), 1, /master key "?identity\b/);
        assert(!(await exists(plain)), "no output");
        // Without --columns: the identity columns are skipped (and named), or the run fails naming
        // the master key; it never yields other values.
        const r = await cli.run(["pme", "decrypt", file, plain, ...args]);
        if (r.code === 0) {
          const skipped = r.stderr.match(/skipped \(no key\): (.*)\n$/)?.[1].split(", ");
          assert.deepStrictEqual(skipped?.sort(), identityLeaves, show(r));
          await assertSameRows(input.file, plain, kept);
        } else {
          fails(r, 1, /master key "?identity\b/);
        }
      });

      await t.step(`keystore without "footer" (${c.name}): nothing decrypts`, async () => {
        const plain = join(dir, "plain", `${base}-nofooter.parquet`);
        const args = kmsLocal(withoutFooter);
        fails(await cli.run(["pme", "decrypt", file, plain, ...args]), 1, /footer/);
        assert(!(await exists(plain)), "no output");
      });
    }

    await t.step("usage errors exit 2; a master key missing from the keystore exits 1", async () => {
      const input = inputs[1].file;
      const enc = encrypted.find((e) => e.input === inputs[1])!.file;
      const out = join(dir, "usage", "out.parquet");
      await Deno.mkdir(dirname(out), { recursive: true });
      const encrypt = ["pme", "encrypt", input, out];
      const withKms = [...encrypt, ...kmsArgs, ...FOOTER];
      const vault = ["--kms", "vault", "--vault-addr", "http://127.0.0.1:9"];
      const noToken = { VAULT_TOKEN: "" };
      const key = `k=${"ab".repeat(16)}`;
      const usage: [string[], RegExp, Record<string, string>?][] = [
        [[...encrypt, "--kms", "local", ...FOOTER], /--kms local needs --keystore/],
        [["pme", "decrypt", enc, out, "--kms", "local"], /--kms local needs --keystore/],
        [["pme", "inspect", enc, "--kms", "local"], /--kms local needs --keystore/],
        [[...encrypt, ...vault, ...FOOTER], /VAULT_TOKEN/, noToken],
        [["pme", "decrypt", enc, out, ...vault], /VAULT_TOKEN/, noToken],
        [["kms", "rotate", dir, ...vault], /VAULT_TOKEN/, noToken],
        [[...encrypt, ...FOOTER], /--footer-master-key needs --kms/],
        [[...encrypt, "--footer-key", key, "--column-master-key", "identity:label"], /needs --kms/],
        [["pme", "decrypt", enc, out, "--keystore", ks], /--keystore needs --kms/],
        [[...encrypt, ...kmsArgs, "--column-master-key", "identity:label"], /--footer-master-key/],
        [[...withKms, "--column-master-key", "identity"], /ID:col1,col2/],
        [[...withKms, "--column-master-key", ":label"], /ID:col1,col2/],
        [[...withKms, "--column-master-key", "identity:"], /ID:col1,col2/],
        [[...withKms, "--column-master-key", "identity: , "], /ID:col1,col2/],
        [[...encrypt, "--kms", "kmip", "--keystore", ks, ...FOOTER], /local or vault/],
        [[...withKms, "--footer-key", key], /--footer-key cannot be combined with --kms/],
        [[...withKms, "--algorithm", "AES_CBC"], /--algorithm/],
        [[...withKms, "--data-key-bits", "64"], /--data-key-bits/],
        [["pme", "decrypt", enc, out, ...kmsArgs, "--key", key], /--key cannot be combined/],
        [["kms", "rotate", dir], /needs --kms/],
        [["kms", "rotate", ...kmsArgs], /expects DIR/],
        [
          ["kms", "reencrypt", enc, ...kmsArgs, "--external-key-material", "--internal-key-material"],
          /--external-key-material and --internal-key-material exclude each other/,
        ],
        [
          ["kms", "reencrypt", enc, ...kmsArgs, "--double-wrapping", "--no-double-wrapping"],
          /--double-wrapping and --no-double-wrapping exclude each other/,
        ],
        [
          ["kms", "reencrypt", enc, ...kmsArgs, "--plaintext-footer", "--encrypted-footer"],
          /--plaintext-footer and --encrypted-footer exclude each other/,
        ],
        [["kms", "reencrypt", enc, ...kmsArgs, "--data-key-bits", "64"], /--data-key-bits/],
        [["kms", "reencrypt", enc, ...kmsArgs, "--column-master-key", "identity"], /ID:col1,col2/],
        [["kms", "reencrypt", ...kmsArgs, ...FOOTER], /expects FILE/],
        [["kms", "min-decryption-version", "footer", "0", ...kmsArgs], /positive integer/],
        [["kms", "min-decryption-version", "footer", "2"], /needs --kms/],
      ];
      const before = await tree(dir);
      for (const [args, pattern, env] of usage) fails(await cli.run(args, env), 2, pattern);
      assert.deepStrictEqual(await tree(dir), before, "usage errors write nothing");
      // The master key is looked up at run time: exit 1 naming it, and no output or key material.
      const noKey = [...encrypt, ...kmsArgs, "--footer-master-key", "nokey", "--external-key-material"];
      fails(await cli.run(noKey), 1, /master key "nokey"/);
      fails(await cli.run([...withKms, "--column-master-key", "x:label"]), 1, /master key "x"/);
      assert.deepStrictEqual(await tree(dir), before, "failed runs write nothing");
    });

    await cli.assertNoKeyBytes([ks, withoutIdentity, otherIdentity, withoutFooter]);
    assert(!cli.runs.some((r) => r.stdout.includes(footerHex) || r.stderr.includes(footerHex)));
  });
});

// ---------------------------------------------------------------------------------------------------
// 2. Rotation through the CLI

/** Parses the summary line of `kms rotate`. */
function rotateSummary(
  r: CliResult,
): { rotated: number; current: number; failed: number; rewrapped: number } {
  const m = r.stdout.match(
    /^rotated (\d+) key material file\(s\), (\d+) already current, (\d+) failed; (\d+) wrapped key\(s\) re-wrapped/m,
  );
  assert(m, show(r));
  return { rotated: +m[1], current: +m[2], failed: +m[3], rewrapped: +m[4] };
}

Deno.test("cli: kms rotate / min-decryption-version --check / reencrypt over a folder tree", async (t) => {
  await withTempDir(async (dir) => {
    const cli = new Cli();
    const ks = join(dir, "keystore.json");
    const kmsArgs = kmsLocal(ks);
    ok(await cli.run(["kms", "local", "init", ks]));
    for (const id of MASTER_KEYS) ok(await cli.run(["kms", "local", "add", ks, id]));
    const sources = await smallSources(dir, 4);
    const lake = join(dir, "lake");
    const folders = ["patient", "observation/2024/q1", "observation/2025", "encounter/a/b/c"];

    // 30 files with external key material (single and double wrapping, some with a plaintext
    // footer or CTR), 3 with internal key material.
    const external: { file: string; source: string; double: boolean }[] = [];
    const internal: { file: string; source: string }[] = [];
    const encryptions: string[][] = [];
    for (let i = 0; i < 33; i++) {
      const source = sources[i % sources.length];
      const isInternal = i >= 30;
      const file = isInternal
        ? join(lake, "legacy", `internal-${i}.parquet`)
        : join(lake, folders[i % folders.length], `part-${String(i).padStart(3, "0")}.parquet`);
      await Deno.mkdir(dirname(file), { recursive: true });
      const double = i % 3 !== 0;
      const flags = [
        ...(isInternal ? [] : ["--external-key-material"]),
        ...(double ? [] : ["--no-double-wrapping"]),
        ...(i % 4 === 1 ? ["--plaintext-footer"] : []),
        ...(i % 5 === 2 ? ["--algorithm", "AES_GCM_CTR_V1"] : []),
      ];
      encryptions.push([
        "pme",
        "encrypt",
        source,
        file,
        ...kmsArgs,
        ...FOOTER,
        ...SMALL_COLUMN_ARGS,
        ...flags,
      ]);
      if (isInternal) internal.push({ file, source });
      else external.push({ file, source, double });
    }
    for (const r of await cli.all(encryptions)) ok(r);
    const expectedRewrapped = external.reduce(
      (n, e) => n + (e.double ? REWRAPPED_DOUBLE : REWRAPPED_SINGLE),
      0,
    );
    const list = async () =>
      (JSON.parse(ok(await cli.run(["kms", "local", "list", ks, "--json"])).stdout) as {
        id: string;
        latestVersion: number;
        minDecryptionVersion: number;
      }[]).map((k) => [k.id, k.latestVersion, k.minDecryptionVersion]);

    await t.step("nothing to rotate before the master keys change", async () => {
      const s = rotateSummary(ok(await cli.run(["kms", "rotate", lake, ...kmsArgs])));
      assert.deepStrictEqual(s, { rotated: 0, current: 30, failed: 0, rewrapped: 0 });
    });

    const dataBefore = await Promise.all([...external, ...internal].map((e) => Deno.readFile(e.file)));
    const materialBefore = await Promise.all(external.map((e) => Deno.readTextFile(keyMaterialPath(e.file))));

    await t.step("kms local rotate; --check refuses while key material uses version 1", async () => {
      for (const id of MASTER_KEYS) {
        assert.match(
          ok(await cli.run(["kms", "local", "rotate", ks, id])).stdout,
          new RegExp(`rotated master key ${id}: version 2 is current; versions 1-2 unwrap`),
        );
      }
      for (const id of MASTER_KEYS) {
        fails(
          await cli.run(["kms", "min-decryption-version", id, "2", ...kmsArgs, "--check", lake]),
          1,
          /KmsConfigError: 30 key material file\(s\) under .* still use older master-key versions/,
          /kms rotate/,
        );
      }
      assert.deepStrictEqual(await list(), [["clinical", 2, 1], ["footer", 2, 1], ["identity", 2, 1]]);
    });

    await t.step("kms rotate DIR re-wraps every key material file, data files untouched", async () => {
      const s = rotateSummary(ok(await cli.run(["kms", "rotate", lake, ...kmsArgs])));
      assert.deepStrictEqual(s, { rotated: 30, current: 0, failed: 0, rewrapped: expectedRewrapped });
      for (const [i, e] of [...external, ...internal].entries()) {
        assert.deepStrictEqual(await Deno.readFile(e.file), dataBefore[i], e.file);
      }
      for (const [i, e] of external.entries()) {
        const after = await Deno.readTextFile(keyMaterialPath(e.file));
        assert.notStrictEqual(after, materialBefore[i], e.file);
        assert.deepStrictEqual(
          Object.keys(JSON.parse(after)).sort(),
          Object.keys(JSON.parse(materialBefore[i])).sort(),
        );
      }
      assert(!(await tree(lake)).some((p) => basename(p).startsWith(TMP_KEY_MATERIAL_PREFIX)));
      const again = rotateSummary(ok(await cli.run(["kms", "rotate", lake, ...kmsArgs])));
      assert.deepStrictEqual(again, { rotated: 0, current: 30, failed: 0, rewrapped: 0 });
    });

    await t.step("files keeping key material inside make --check refuse until re-encrypted", async () => {
      fails(
        await cli.run(["kms", "min-decryption-version", "footer", "2", ...kmsArgs, "--check", lake]),
        1,
        /3 Parquet file\(s\) under .* keep key material wrapped by older master-key versions inside the file/,
        /kms reencrypt/,
      );
      assert.deepStrictEqual(await list(), [["clinical", 2, 1], ["footer", 2, 1], ["identity", 2, 1]]);
      const paths = internal.map((e) => e.file);
      const r = ok(
        await cli.run(["kms", "reencrypt", ...paths, ...kmsArgs, ...FOOTER, ...SMALL_COLUMN_ARGS]),
      );
      const lines = r.stdout.split("\n").filter((l) => l.startsWith("re-encrypted "));
      assert.deepStrictEqual(
        lines.map((l) => /^re-encrypted (.*): \d+ rows with fresh data keys$/.exec(l)?.[1]),
        paths,
      );
      for (const [i, e] of internal.entries()) {
        assert.notDeepStrictEqual(await Deno.readFile(e.file), dataBefore[external.length + i]);
        assert(!(await exists(keyMaterialPath(e.file))), "still internal key material");
      }
      for (const id of MASTER_KEYS) {
        assert.match(
          ok(await cli.run(["kms", "min-decryption-version", id, "2", ...kmsArgs, "--check", lake])).stdout,
          new RegExp(`master key ${id}: versions below 2 no longer unwrap`),
        );
      }
      assert.deepStrictEqual(await list(), [["clinical", 2, 2], ["footer", 2, 2], ["identity", 2, 2]]);
      assert.deepStrictEqual(
        (await tree(lake)).filter((p) => basename(p).startsWith(".")),
        [],
        "no temporary files left",
      );
    });

    await t.step("every file decrypts to its rows with version 1 retired", async () => {
      const all = [...external, ...internal];
      const plain = all.map((_, i) => join(dir, "plain", `p${i}.parquet`));
      await Deno.mkdir(join(dir, "plain"));
      const runs = await cli.all(all.map((e, i) => ["pme", "decrypt", e.file, plain[i], ...kmsArgs]));
      for (const [i, r] of runs.entries()) {
        ok(r);
        assert.doesNotMatch(r.stderr, /skipped/, show(r));
        await assertSameRows(all[i].source, plain[i]);
      }
    });

    await t.step("kms rotate --rotate-master-keys rotates first, then re-wraps", async () => {
      const r = ok(
        await cli.run(["kms", "rotate", lake, ...kmsArgs, "--rotate-master-keys", MASTER_KEYS.join(",")]),
      );
      for (const id of MASTER_KEYS) {
        assert.match(r.stderr, new RegExp(`master key ${id}: rotated to version 3`));
      }
      assert.deepStrictEqual(rotateSummary(r), {
        rotated: 30,
        current: 0,
        failed: 0,
        rewrapped: expectedRewrapped,
      });
      // The re-encrypted files keep internal key material of version 2.
      fails(
        await cli.run(["kms", "min-decryption-version", "identity", "3", ...kmsArgs, "--check", lake]),
        1,
        /3 Parquet file\(s\)/,
      );
      const client = await freshFactory(ks).kmsClient({});
      const check = await checkAllCurrent(client, lake, openWith(ks));
      assert.deepStrictEqual(check.stale, []);
      assert.deepStrictEqual(check.staleInternal.sort(), internal.map((e) => e.file).sort());
      for (const e of sample(external, 3)) {
        await assertDecryptsTo(ks, e.file, e.source, join(dir, "sample.parquet"));
      }
    });

    await cli.assertNoKeyBytes([ks]);
  });
});

// ---------------------------------------------------------------------------------------------------
// 2b. Re-encryption keeps a file's protection

/** Key material of every key of a file, by leaf (footer as ""), from `pme inspect --json`. */
async function materials(cli: Cli, file: string, kmsArgs: string[]): Promise<Map<string, KeyMaterial>> {
  const o = JSON.parse(ok(await cli.run(["pme", "inspect", file, ...kmsArgs, "--json"])).stdout);
  const out = new Map<string, KeyMaterial>([["", await materialOf(o.footerKeyMetadata, file)]]);
  for (const c of o.columns as InspectColumn[]) {
    if (c.key === "column") out.set(c.path, await materialOf(c.keyMetadata!, file));
  }
  return out;
}

/** Leaf → "plaintext", "footer" or the master key id of its column key, from `pme inspect --json`. */
async function masterKeys(cli: Cli, file: string, kmsArgs: string[]): Promise<Record<string, string>> {
  const m = await materials(cli, file, kmsArgs);
  const o = JSON.parse(ok(await cli.run(["pme", "inspect", file, ...kmsArgs, "--json"])).stdout);
  return Object.fromEntries(
    (o.columns as InspectColumn[]).map((c) => [
      c.path,
      c.key === "column" ? m.get(c.path)!.masterKeyId : c.key === "footer" ? "footer" : "plaintext",
    ]),
  );
}

Deno.test("cli: kms reencrypt without key-tool options keeps each file's protection; lowering it needs --decrypt-column", async (t) => {
  await withTempDir(async (dir) => {
    const cli = new Cli();
    const ks = join(dir, "keystore.json");
    await makeKeystore(ks);
    const kmsArgs = kmsLocal(ks);
    const [source] = await smallSources(dir, 1);
    const data = join(dir, "data");
    await Deno.mkdir(data);
    const external = join(data, "external.parquet");
    const internal = join(data, "internal.parquet");
    const encrypt = (file: string, ...flags: string[]) =>
      cli.run(["pme", "encrypt", source, file, ...kmsArgs, ...FOOTER, ...SMALL_COLUMN_ARGS, ...flags]);
    ok(
      await encrypt(
        external,
        "--external-key-material",
        "--data-key-bits",
        "256",
        "--algorithm",
        "AES_GCM_CTR_V1",
        "--plaintext-footer",
      ),
    );
    ok(await encrypt(internal, "--no-double-wrapping"));
    const expectedKeys = {
      id: "plaintext",
      name: "identity",
      mrn: "identity",
      birth_date: "identity",
      "obs.code": "clinical",
      "obs.value": "clinical",
      "tags.list.element": "clinical",
    };
    const before = {
      external: await materials(cli, external, kmsArgs),
      internal: await materials(cli, internal, kmsArgs),
      externalStore: await KeyMaterialStore.load(external),
    };
    const scratch = join(dir, "scratch.parquet");

    await t.step("no options: both files keep everything, with fresh data keys", async () => {
      const r = ok(await cli.run(["kms", "reencrypt", external, internal, ...kmsArgs]));
      const lines = r.stdout.split("\n");
      const at = (file: string) => lines.findIndex((l) => l.startsWith(`re-encrypted ${file}: `));
      assert(at(external) >= 0 && at(internal) > at(external), show(r));
      const keptExternal = lines[at(external) + 1];
      const keptInternal = lines[at(internal) + 1];
      for (
        const part of [
          "footer key → footer",
          "name, mrn, birth_date → identity",
          "obs, tags → clinical",
          "plaintext: id",
          "AES_GCM_CTR_V1",
          "plaintext footer",
          "external key material",
          "double wrapping",
          "256-bit data keys",
        ]
      ) {
        assert(keptExternal.startsWith("  kept: ") && keptExternal.includes(part), `${part}: ${show(r)}`);
      }
      for (
        const part of [
          "AES_GCM_V1",
          "encrypted footer",
          "internal key material",
          "single wrapping",
          "128-bit data keys",
        ]
      ) {
        assert(keptInternal.startsWith("  kept: ") && keptInternal.includes(part), `${part}: ${show(r)}`);
      }
      assert.doesNotMatch(r.stdout, /changed:|written in plaintext/, show(r));

      // External: still external, the key material file holds new references and new wrapped keys only.
      const store = await KeyMaterialStore.load(external);
      assert.strictEqual(store.refs().length, before.externalStore.refs().length);
      for (const ref of store.refs()) {
        assert(!before.externalStore.refs().includes(ref), `old reference ${ref} kept`);
      }
      const afterExternal = await materials(cli, external, kmsArgs);
      for (const [leaf, m] of afterExternal) {
        const old = before.external.get(leaf)!;
        assert.deepStrictEqual([m.masterKeyId, m.doubleWrapping], [old.masterKeyId, true], leaf);
        assert.notStrictEqual(m.wrappedDek, old.wrappedDek, leaf);
      }
      assert.deepStrictEqual([...afterExternal.keys()], [...before.external.keys()]);
      assert.deepStrictEqual(await masterKeys(cli, external, kmsArgs), expectedKeys);
      const o = JSON.parse(ok(await cli.run(["pme", "inspect", external, ...kmsArgs, "--json"])).stdout);
      assert.deepStrictEqual([o.footer, o.algorithm], ["plaintext, signed", "AES_GCM_CTR_V1"]);
      assert.strictEqual(JSON.parse(o.footerKeyMetadata).internalStorage, false);
      const retriever = freshFactory(ks).fileDecryptionProperties({}, {}, external).keyRetriever!;
      const dek = await retriever(te.encode(o.footerKeyMetadata), { kind: "footer", file: external });
      assert.strictEqual(dek!.length, 32, "256-bit data keys");
      await assertDecryptsTo(ks, external, source, scratch);

      // Internal, single wrapping: no key material file appears; every key single-wrapped and new.
      assert(!(await exists(keyMaterialPath(internal))));
      const afterInternal = await materials(cli, internal, kmsArgs);
      for (const [leaf, m] of afterInternal) {
        assert.strictEqual(m.doubleWrapping, false, leaf);
        assert.strictEqual(m.masterKeyId, before.internal.get(leaf)!.masterKeyId, leaf);
        assert.notStrictEqual(m.wrappedDek, before.internal.get(leaf)!.wrappedDek, leaf);
      }
      assert.deepStrictEqual(await masterKeys(cli, internal, kmsArgs), expectedKeys);
      await assertDecryptsTo(ks, internal, source, scratch);
      assert.deepStrictEqual(await tree(data), [
        basename(keyMaterialPath(external)),
        "external.parquet",
        "internal.parquet",
      ]);
    });

    await t.step(
      "a reduced column configuration is refused, naming the columns; nothing changes",
      async () => {
        const bytes = await Deno.readFile(internal);
        const files = await tree(data);
        fails(
          await cli.run([
            "kms",
            "reencrypt",
            internal,
            ...kmsArgs,
            ...FOOTER,
            "--column-master-key",
            "identity:name",
          ]),
          1,
          /PmeProtectionError/,
          /columns mrn, birth_date, obs\.code, obs\.value, tags\.list\.element are encrypted in the input/,
          /--column-master-key/,
          /--decrypt-column/,
        );
        assert.deepStrictEqual(await Deno.readFile(internal), bytes);
        assert.deepStrictEqual(await tree(data), files);
      },
    );

    await t.step("--decrypt-column writes exactly the named columns in plaintext", async () => {
      const r = ok(
        await cli.run([
          "kms",
          "reencrypt",
          internal,
          ...kmsArgs,
          "--column-master-key",
          "identity:name,mrn,birth_date",
          "--decrypt-column",
          "obs",
          "--decrypt-column",
          "tags",
        ]),
      );
      assert.match(r.stdout, /written in plaintext as asked: obs\.code, obs\.value, tags\.list\.element/);
      assert.match(r.stdout, /changed: .*plaintext: id, obs\.code, obs\.value, tags\.list\.element/);
      assert.deepStrictEqual(await masterKeys(cli, internal, kmsArgs), {
        ...expectedKeys,
        "obs.code": "plaintext",
        "obs.value": "plaintext",
        "tags.list.element": "plaintext",
      });
      await assertDecryptsTo(ks, internal, source, scratch);
    });

    await t.step(
      "explicit options override: external → internal key material, encrypted footer",
      async () => {
        const r = ok(
          await cli.run([
            "kms",
            "reencrypt",
            external,
            ...kmsArgs,
            "--internal-key-material",
            "--encrypted-footer",
          ]),
        );
        assert.match(r.stdout, /changed: .*encrypted footer \(was plaintext footer\)/);
        assert.match(r.stdout, /changed: .*internal key material \(was external key material\)/);
        assert.match(r.stdout, /kept: .*256-bit data keys/);
        assert(!(await exists(keyMaterialPath(external))), "the key material file is gone");
        assert.deepStrictEqual(await masterKeys(cli, external, kmsArgs), expectedKeys);
        await assertDecryptsTo(ks, external, source, scratch);
      },
    );

    await cli.assertNoKeyBytes([ks]);
  });
});

// ---------------------------------------------------------------------------------------------------
// 3. Crash safety

/** The state of a lake after a kill: every data file readable, key material never lost. */
async function checkLakeAfterKill(
  lake: string,
  keystore: string,
  files: { file: string; source: string }[],
  scratch: string,
): Promise<{ staleTmp: number }> {
  const names = await tree(lake);
  const expected = new Set(
    files.flatMap((f) => [f.file, keyMaterialPath(f.file)]).map((p) => relative(lake, p)),
  );
  let staleTmp = 0;
  for (const p of names) {
    if (expected.has(p)) continue;
    const name = basename(p);
    assert(name.startsWith(TMP_KEY_MATERIAL_PREFIX), `unexpected file ${p} in ${names.join(", ")}`);
    // A temporary copy may be left, but never as the only copy.
    const real = join(dirname(p), KEY_MATERIAL_PREFIX + name.slice(TMP_KEY_MATERIAL_PREFIX.length));
    assert(names.includes(real), `${p} is left without ${real}`);
    staleTmp++;
  }
  for (const f of files) {
    assert(names.includes(relative(lake, f.file)), `${f.file} is missing`);
    const store = await KeyMaterialStore.load(f.file);
    assert.strictEqual(store.refs().length, REWRAPPED_SINGLE, f.file);
  }
  // Every file opens and every column decrypts; the values of a sample are compared.
  for (const f of files) assert(await decryptAllColumns(keystore, f.file) > 0);
  for (const f of sample(files, 3)) await assertDecryptsTo(keystore, f.file, f.source, scratch);
  return { staleTmp };
}

Deno.test("crash safety: kms rotate killed with SIGKILL at random points resumes; every file stays readable", async () => {
  await withTempDir(async (dir) => {
    const cli = new Cli();
    const ks = join(dir, "keystore.json");
    await makeKeystore(ks);
    const kmsArgs = kmsLocal(ks);
    const sources = await smallSources(dir, 4);
    const lake = join(dir, "lake");
    const folders = ["patient/2023", "patient/2024", "obs/vitals", "obs/labs/q1", "encounter"];
    const files: { file: string; source: string }[] = [];
    const N = 160; // enough files for a rotation that lasts several hundred milliseconds
    for (let i = 0; i < N; i++) {
      const file = join(lake, folders[i % folders.length], `part-${String(i).padStart(4, "0")}.parquet`);
      await Deno.mkdir(dirname(file), { recursive: true });
      const source = sources[i % sources.length];
      const config: EncryptionConfiguration = {
        footerKey: "footer",
        columnKeys: SMALL_COLUMNS,
        internalKeyMaterial: false,
        doubleWrapping: i % 2 === 0,
        plaintextFooter: i % 7 === 3,
      };
      await encryptFileWithKms(freshFactory(ks), {}, config, source, file, { durable: false });
      files.push({ file, source });
    }
    const scratch = join(dir, "scratch.parquet");
    const materials = () => Promise.all(files.map((f) => Deno.readTextFile(keyMaterialPath(f.file))));
    const rotate = () => cli.run(["kms", "rotate", lake, ...kmsArgs]);

    // Calibration: start-up without work, and a whole uninterrupted rotation.
    await Deno.mkdir(join(dir, "empty"));
    let t0 = performance.now();
    ok(await cli.run(["kms", "rotate", join(dir, "empty"), ...kmsArgs]));
    const startup = performance.now() - t0;
    await rotateKeystore(ks);
    t0 = performance.now();
    assert.strictEqual(rotateSummary(ok(await rotate())).rotated, N);
    const whole = performance.now() - t0;

    const kills: { delay: number; rotated: number; staleTmp: number }[] = [];
    let lastBefore: string[] = [];
    const mid = () => kills.filter((k) => k.rotated > 0 && k.rotated < N).length;
    // Delays spread over [start-up/2, whole run + 10 %]: early, middle and late kills; more rounds
    // (up to 16) while fewer than 4 kills landed in the middle of a rotation.
    const fractions = [0.02, 0.5, 1.1, 0.3, 0.7, 0.15, 0.9, 0.6, 0.4, 0.8];
    for (let round = 0; round < 16 && (round < 10 || mid() < 4); round++) {
      const fraction = round < fractions.length ? fractions[round] : 0.2 + 0.6 * Math.random();
      const lo = startup / 2;
      const delay = Math.round(lo + (fraction + (Math.random() - 0.5) * 0.1) * (whole * 1.1 - lo));
      const versions = await rotateKeystore(ks);
      const before = await materials();
      lastBefore = before;

      const killed = await cli.killedAfter(["kms", "rotate", lake, ...kmsArgs], delay);

      // Which files were rotated: changed key material, all of it wrapped by the newest versions.
      const after = await materials();
      const client = await freshFactory(ks).kmsClient({});
      let rotated = 0;
      for (const [i, f] of files.entries()) {
        const store = await KeyMaterialStore.load(f.file);
        const current = await Promise.all(
          store.refs().map((r) => {
            const m = store.get(r);
            return client.isCurrent!(m.doubleWrapping ? m.wrappedKek! : m.wrappedDek, m.masterKeyId);
          }),
        );
        const changed = after[i] !== before[i];
        assert.deepStrictEqual(current, current.map(() => changed), `${f.file}: changed=${changed}`);
        if (changed) rotated++;
      }
      if (killed.code === 0) assert.strictEqual(rotated, N);
      const { staleTmp } = await checkLakeAfterKill(lake, ks, files, scratch);
      kills.push({ delay, rotated, staleTmp });

      // The next run does the rest.
      const resumed = rotateSummary(ok(await rotate()));
      assert.deepStrictEqual([resumed.rotated, resumed.current, resumed.failed], [N - rotated, rotated, 0]);
      assert(
        !(await tree(lake)).some((p) => basename(p).startsWith(TMP_KEY_MATERIAL_PREFIX)),
        "tmp cleaned up",
      );
      assert.deepStrictEqual((await checkAllCurrent(client, lake)).stale, []);
      assert.deepStrictEqual(versions, MASTER_KEYS.map(() => round + 3));
    }
    const early = kills.filter((k) => k.rotated === 0).length;
    const late = kills.filter((k) => k.rotated === N).length;
    const withTmp = kills.filter((k) => k.staleTmp > 0).length;
    const points = kills.map((k) => `${k.delay}→${k.rotated}`).join(" ");
    console.log(
      `kms rotate of ${N} files (start-up ${startup.toFixed(0)} ms, whole run ${
        whole.toFixed(0)
      } ms) killed ` +
        `${kills.length} times: ${early} before the first file, ${mid()} mid-rotation, ${late} after the last; ` +
        `${withTmp} left a stale temporary key material file; (delay ms → files rotated) ${points}`,
    );
    assert(kills.length >= 8);
    assert(mid() >= 3, "fewer than three kills landed mid-rotation");

    // Retire every old version: everything still decrypts.
    const latest = kills.length + 2;
    for (const id of MASTER_KEYS) {
      ok(await cli.run(["kms", "min-decryption-version", id, String(latest), ...kmsArgs, "--check", lake]));
    }
    const ksInfo = await LocalKeystore.open(ks);
    try {
      assert.deepStrictEqual(
        ksInfo.list().map((k) => [k.id, k.latestVersion, k.minDecryptionVersion]),
        [["clinical", latest, latest], ["footer", latest, latest], ["identity", latest, latest]],
      );
      // Key material as it was before the last rotation no longer unwraps; the rotated one does.
      const client = new LocalKmsClient(ksInfo);
      const old = parseKeyMaterial(JSON.parse(lastBefore[1]).columnKey0);
      assert.strictEqual(old.doubleWrapping, false);
      await assert.rejects(client.unwrapKey(old.wrappedDek, old.masterKeyId), KmsUnwrapError);
      const now = (await KeyMaterialStore.load(files[1].file)).get("columnKey0");
      (await client.unwrapKey(now.wrappedDek, now.masterKeyId)).fill(0);
    } finally {
      ksInfo.close();
    }
    for (const f of files) await decryptAllColumns(ks, f.file);
    for (const f of sample(files, 5)) await assertDecryptsTo(ks, f.file, f.source, scratch);
    await cli.assertNoKeyBytes([ks]);
  });
});

Deno.test("crash safety: kms reencrypt killed with SIGKILL at random points never loses a file", async () => {
  await withTempDir(async (dir) => {
    const cli = new Cli();
    const ks = join(dir, "keystore.json");
    await makeKeystore(ks);
    const kmsArgs = kmsLocal(ks);
    const wasm = (await parquetWasmInputs(dir)).find((f) => f.file.endsWith("wasm_v1_snappy_dict.parquet"))!;
    const duck = (await duckdbInputs(dir)).find((f) => f.file.endsWith("duckdb_large_v2enc_zstd.parquet"))!;
    const data = join(dir, "data");
    await Deno.mkdir(data);
    const files = ["a", "b", "c", "d"].map((n, i) => ({
      file: join(data, `${n}.parquet`),
      source: (i < 2 ? wasm : duck).file,
      doubleWrapping: i % 2 === 1,
    }));
    for (const f of files) {
      const config: EncryptionConfiguration = {
        footerKey: "footer",
        columnKeys: { identity: ["id"] },
        internalKeyMaterial: false,
        doubleWrapping: f.doubleWrapping,
      };
      await encryptFileWithKms(freshFactory(ks), {}, config, f.source, f.file, { durable: false });
    }
    const scratch = join(dir, "scratch.parquet");
    // Each file twice: the kill lands somewhere in eight re-encryptions.
    const paths = files.map((f) => f.file);
    const config = [
      "--column-master-key",
      "identity:id",
      "--external-key-material",
      "--algorithm",
      "AES_GCM_CTR_V1",
    ];
    const args = ["kms", "reencrypt", ...paths, ...paths, ...kmsArgs, ...FOOTER, ...config];
    const t0 = performance.now();
    ok(await cli.run(args));
    const whole = performance.now() - t0;
    const leftover = [
      /^\.[a-d]\.parquet\.reencrypt-[0-9a-f]{8}$/, // complete new data file, not yet renamed
      /^\.\.[a-d]\.parquet\.reencrypt-[0-9a-f]{8}\.tmp-[0-9a-f]{12}$/, // partial new data file
      /^\._KEY_MATERIAL_FOR_[a-d]\.parquet\.json\.tmp-[0-9a-f]{12}$/, // partial key material
    ];
    const phases = { leftovers: 0, merged: 0, replaced: 0, killed: 0, midWork: 0, completed: 0 };
    const delays: number[] = [];
    // Delays spread over the run (the first ones before any work); more rounds (up to 16) until at
    // least 6 kills landed after the work had begun.
    for (let round = 0; round < 16 && (round < 8 || phases.midWork < 6); round++) {
      const fraction = round < 8 ? (round + Math.random()) / 8 : Math.random();
      const delay = Math.round((0.05 + 0.85 * fraction) * whole);
      delays.push(delay);
      const before = await Promise.all(files.map((f) => Deno.readFile(f.file)));
      const killed = await cli.killedAfter(args, delay);
      if (killed.code === 0) phases.completed++;
      else phases.killed++;

      // Only the files and their key material, plus hidden temporary files.
      const names = await tree(data);
      const extra = names.filter((n) =>
        !files.some((f) => n === basename(f.file) || n === basename(keyMaterialPath(f.file)))
      );
      for (const n of extra) {
        assert(leftover.some((re) => re.test(n)), `unexpected ${n} in ${names.join(", ")}`);
      }
      const seen = { ...phases };
      if (extra.length) phases.leftovers++;
      for (const f of files) {
        assert(
          names.includes(basename(f.file)) && names.includes(basename(keyMaterialPath(f.file))),
          names.join(),
        );
        const refs = (await KeyMaterialStore.load(f.file)).refs();
        // One generation (2 keys), or during a switch old ∪ new (more after repeated kills).
        assert(refs.length >= 2 && refs.length % 2 === 0, refs.join());
        if (refs.length > 2) phases.merged++;
      }
      // Temporary files are not taken for data or key material.
      const client = await freshFactory(ks).kmsClient({});
      const check = await checkAllCurrent(client, data, openWith(ks));
      assert.deepStrictEqual(check, { stale: [], staleInternal: [] });
      const s = rotateSummary(ok(await cli.run(["kms", "rotate", data, ...kmsArgs])));
      assert.deepStrictEqual([s.rotated + s.current, s.failed], [files.length, 0]);
      // Every file decrypts to the original rows.
      for (const [i, f] of files.entries()) {
        if (!equalBytes(await Deno.readFile(f.file), before[i])) phases.replaced++;
        await assertDecryptsTo(ks, f.file, f.source, scratch);
      }
      const changed = ["leftovers", "merged", "replaced"] as const;
      if (killed.code !== 0 && changed.some((k) => phases[k] > seen[k])) phases.midWork++;
    }
    console.log(
      `kms reencrypt of ${files.length} files twice (whole run ${whole.toFixed(0)} ms): ${phases.killed} ` +
        `kills (${phases.midWork} after work had begun), ${phases.completed} runs finished first; ` +
        `hidden temporary files left by ${phases.leftovers}; files caught with old ∪ new key material: ` +
        `${phases.merged}; data files replaced before a kill: ${phases.replaced}; delays ${
          delays.join(", ")
        } ms`,
    );
    assert(phases.midWork >= 6, "at least six kills landed during re-encryption");

    // A complete run afterwards leaves one generation of key material per file.
    ok(await cli.run(args));
    for (const f of files) {
      assert.strictEqual((await KeyMaterialStore.load(f.file)).refs().length, 2);
      await assertDecryptsTo(ks, f.file, f.source, scratch);
    }
    await cli.assertNoKeyBytes([ks]);
  });
});
