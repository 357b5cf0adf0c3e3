/**
 * End-to-end tests of the `pme` command line, run as a subprocess exactly as users run it
 * (`deno task -q cli pme …` from the repository root):
 *
 * - `inspect --json` and the human output on every parquet-testing vector, with and without keys;
 * - `decrypt` of every vector with keys given as `ID=HEX` and `ID=base64:…`, `--columns`,
 *   `--aad-prefix`, explicit `--footer-key`/`--column-key`, values checked by the vector checker;
 * - `encrypt` (uniform, column keys, AES_GCM_CTR_V1, plaintext footer, AAD prefix stored or not)
 *   and `rekey` (new keys, algorithm, footer mode, AAD prefix), decrypted back and compared row by
 *   row with the input; `rekey` refusing to write encrypted columns in plaintext unless named with
 *   `--decrypt-column`;
 * - exit codes (0 success, 2 usage error, 1 runtime error), a single stderr line without stack
 *   trace on failure, no key material in any output, and no output or temporary file left behind
 *   by a failed run.
 *
 * @module
 */
import assert from "node:assert";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { openParquetFile } from "../pme/mod.ts";
import { assertSameRows } from "./fixtures/compare.ts";
import { MIXED_LEAVES, parquetWasmInputs, writeMixedInput } from "./fixtures/inputs.ts";
import { withTempDir } from "./fixtures/tmp.ts";
import {
  assertVectorValues,
  VECTOR_COLUMNS,
  VECTOR_KEYS,
  type VectorFile,
  VECTORS,
  VECTORS_DIR,
} from "./fixtures/vectors.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const td = new TextDecoder();

/** What one CLI run produced. */
interface CliResult {
  args: string[];
  code: number;
  stdout: string;
  stderr: string;
}

/** Every key handed to the CLI (in all spellings); no output may ever contain one. */
const SECRETS = new Set<string>();

const hex = (key: Uint8Array) => Buffer.from(key).toString("hex");
const b64 = (key: Uint8Array) => Buffer.from(key).toString("base64");

/** Registers a key's spellings as secrets. */
function secret(key: Uint8Array): Uint8Array {
  for (const s of [hex(key), hex(key).toUpperCase(), b64(key), Buffer.from(key).toString("latin1")]) {
    SECRETS.add(s);
  }
  return key;
}

/** `ID=HEX` or `ID=base64:B64` for a key. */
function keySpec(id: string, key: Uint8Array, form: "hex" | "base64" = "hex"): string {
  secret(key);
  return `${id}=${form === "hex" ? hex(key) : `base64:${b64(key)}`}`;
}

/** Deterministic test keys (not the vectors' ASCII keys). */
function testKey(seed: number, length = 16): Uint8Array {
  return secret(Uint8Array.from({ length }, (_, i) => (seed * 41 + i * 13 + 7) & 0xff));
}

/**
 * Runs `deno task -q cli ARGS…` in the repository root and checks that no key material appears in
 * stdout or stderr.
 */
function cli(...args: string[]): Promise<CliResult> {
  return cliWithEnv({}, ...args);
}

/** {@link cli} with extra environment variables. */
async function cliWithEnv(env: Record<string, string>, ...args: string[]): Promise<CliResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", "cli", ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const r = { args, code: out.code, stdout: td.decode(out.stdout), stderr: td.decode(out.stderr) };
  for (const s of SECRETS) {
    assert(
      !r.stdout.includes(s) && !r.stderr.includes(s),
      `key material (${s.length} chars) appears in the output of: ${args.join(" ")}`,
    );
  }
  return r;
}

/** Same as {@link cli} with `pme` first. */
const pme = (...args: string[]) => cli("pme", ...args);

function show(r: CliResult): string {
  return `\`${r.args.join(" ")}\` exited ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

/** Asserts success. */
function ok(r: CliResult): CliResult {
  assert.strictEqual(r.code, 0, show(r));
  return r;
}

/**
 * Asserts failure with `code`: stderr is exactly one line (no stack trace) matching every pattern,
 * stdout is empty.
 */
function fails(r: CliResult, code: 1 | 2, ...patterns: RegExp[]): string {
  assert.strictEqual(r.code, code, show(r));
  const lines = r.stderr.split("\n");
  assert.strictEqual(lines.at(-1), "", `stderr ends with a newline: ${show(r)}`);
  assert.strictEqual(lines.length, 2, `stderr is one line: ${show(r)}`);
  assert(!/^\s+at /m.test(r.stderr), `no stack trace: ${show(r)}`);
  assert.match(lines[0], code === 2 ? /^usage error: / : /^error: /, show(r));
  for (const p of patterns) assert.match(lines[0], p, show(r));
  assert.strictEqual(r.stdout, "", `nothing on stdout: ${show(r)}`);
  return lines[0];
}

/** Asserts that `dir` holds exactly `names` (no output and no temporary file left behind). */
async function assertDir(dir: string, names: string[]) {
  const found = [];
  for await (const e of Deno.readDir(dir)) found.push(e.name);
  assert.deepStrictEqual(found.sort(), [...names].sort(), `contents of ${dir}`);
}

// ---------------------------------------------------------------------------------------------------
// The parquet-testing vectors

/** `--key ID=KEY` for every key of the vector's key set. */
function vectorKeyArgs(v: VectorFile, form: "hex" | "base64" = "hex"): string[] {
  return Object.entries(VECTOR_KEYS[v.keySet]).flatMap(([id, key]) => ["--key", keySpec(id, key, form)]);
}

/** Leaf paths of a vector, in file order. */
function vectorLeaves(v: VectorFile): string[] {
  return VECTOR_COLUMNS.map((
    c,
  ) => (c === "int64_field" && v.int64Shape === "list" ? "int64_field.list.element" : c));
}

interface InspectColumn {
  path: string;
  encrypted: boolean;
  key: "footer" | "column" | null;
  keyMetadata: string | null;
  readable: boolean;
}

/** Expected `columns` of `inspect --json` for a vector, with or without keys. */
function expectedColumns(v: VectorFile, withKeys: boolean): InspectColumn[] {
  return vectorLeaves(v).map((path) => {
    const id = v.columnKeys[path];
    if (id === undefined) return { path, encrypted: false, key: null, keyMetadata: null, readable: true };
    return {
      path,
      encrypted: true,
      key: v.uniform ? "footer" : "column",
      keyMetadata: id,
      readable: withKeys,
    };
  });
}

/** The lines the human `inspect` output must contain for what `--json` said. */
function humanLines(o: Record<string, unknown>): string[] {
  const lines = [`encrypted: ${o.encrypted ? "yes" : "no"}`];
  const signed = o.footer === "plaintext, signed";
  if (o.signatureVerified === true) lines.push(`footer: ${o.footer} (signature verified)`);
  else if (signed) lines.push(`footer: ${o.footer} (signature not checked: no footer key)`);
  else lines.push(`footer: ${o.footer}`);
  if (o.encrypted) {
    lines.push(`algorithm: ${o.algorithm}`, `footer key metadata: ${o.footerKeyMetadata}`);
    const aad = o.aadPrefix as { stored: boolean; value?: string; required?: boolean };
    lines.push(
      `aad prefix: ${
        aad.stored ? `stored (${aad.value})` : aad.required ? "not stored, must be supplied" : "none"
      }`,
    );
  }
  if (o.footerReadable === false) {
    lines.push("footer: not readable without the footer key (pass --key ID=KEY)");
    return lines;
  }
  lines.push(`rows: ${o.rows} in ${o.rowGroups} row group(s)`);
  for (const c of o.columns as InspectColumn[]) {
    lines.push(
      c.encrypted
        ? `  ${c.path}: encrypted with ${c.key} key (key metadata ${c.keyMetadata})${
          c.readable ? "" : " [key not available]"
        }`
        : `  ${c.path}: plaintext`,
    );
  }
  return lines;
}

/** Runs `inspect FILE --json` and the human form; checks they agree; returns the JSON. */
async function inspect(file: string, ...args: string[]): Promise<Record<string, unknown>> {
  const json = JSON.parse(ok(await pme("inspect", file, "--json", ...args)).stdout);
  const human = ok(await pme("inspect", file, ...args)).stdout.split("\n");
  for (const line of humanLines(json)) {
    assert(
      human.some((h) => h === line || (line.startsWith("rows: ") && h.startsWith(line + ","))),
      `human inspect output of ${file} lacks "${line}":\n${human.join("\n")}`,
    );
  }
  return json;
}

Deno.test("cli: pme inspect of the parquet-testing vectors", async (t) => {
  for (const v of VECTORS) {
    const file = join(VECTORS_DIR, v.file);
    await t.step(v.file, async (t) => {
      const common = {
        file,
        encrypted: true,
        footer: v.footer === "encrypted" ? "encrypted" : "plaintext, signed",
        algorithm: v.algorithm,
        aadPrefix: v.aadPrefix
          ? { stored: true, value: v.aadPrefix.value }
          : { stored: false, required: false },
        footerKeyMetadata: "kf",
      };
      await t.step("with keys", async () => {
        const o = await inspect(file, ...vectorKeyArgs(v));
        assert.deepStrictEqual(
          { ...o, size: undefined, createdBy: undefined, columns: undefined },
          {
            ...common,
            size: undefined,
            footerReadable: true,
            ...(v.footer === "plaintext" ? { signatureVerified: true } : {}),
            createdBy: undefined,
            rows: v.rows,
            rowGroups: 1,
            columns: undefined,
          },
        );
        assert.strictEqual(o.size, (await Deno.stat(file)).size);
        assert(String(o.createdBy).startsWith(v.writer), `createdBy ${o.createdBy}`);
        assert.deepStrictEqual(o.columns, expectedColumns(v, true));
      });
      await t.step("without keys", async () => {
        const o = await inspect(file);
        if (v.footer === "encrypted") {
          assert.deepStrictEqual({ ...o, size: undefined }, {
            ...common,
            size: undefined,
            footerReadable: false,
          });
        } else {
          assert.strictEqual(o.footerReadable, true);
          assert.strictEqual(o.signatureVerified, null);
          assert.strictEqual(o.rows, v.rows);
          assert.deepStrictEqual(o.columns, expectedColumns(v, false));
        }
      });
      if (v.aadPrefix) {
        await t.step("with the stored AAD prefix, and with a different one", async () => {
          const o = await inspect(file, ...vectorKeyArgs(v), "--aad-prefix", v.aadPrefix!.value);
          assert.strictEqual(o.footerReadable, true);
          fails(
            await pme("inspect", file, ...vectorKeyArgs(v), "--aad-prefix", "other"),
            1,
            /PmeAadPrefixError/,
            /differs from the one stored/,
          );
        });
      }
    });
  }
});

Deno.test("cli: pme decrypt of the parquet-testing vectors", async (t) => {
  await withTempDir(async (dir) => {
    for (const v of VECTORS) {
      const file = join(VECTORS_DIR, v.file);
      for (const form of ["hex", "base64"] as const) {
        await t.step(`${v.file}, keys as ${form}`, async () => {
          const out = join(dir, `${v.file.replaceAll("/", "_")}.${form}.parquet`);
          const r = ok(await pme("decrypt", file, out, ...vectorKeyArgs(v, form)));
          assert.match(
            r.stderr,
            new RegExp(`^decrypted ${out}: ${v.rows} rows, 1 row groups, 8 columns\\n$`),
          );
          await assertVectorValues(out);
        });
      }
    }

    const cpp = VECTORS.find((v) => v.file === "encrypt_columns_and_footer.parquet.encrypted")!;
    const cppFile = join(VECTORS_DIR, cpp.file);
    await t.step("--columns subset", async () => {
      const out = join(dir, "subset.parquet");
      const columns = ["boolean_field", "double_field", "ba_field", "int96_field"];
      ok(await pme("decrypt", cppFile, out, ...vectorKeyArgs(cpp), "--columns", columns.join(",")));
      const reader = await openParquetFile(out);
      assert.deepStrictEqual(
        reader.columns.map((c) => c.dotted),
        VECTOR_COLUMNS.filter((c) => columns.includes(c)),
        "selected columns, in file order",
      );
      reader.close();
      await assertVectorValues(out, columns);
    });
    await t.step("--columns with a parent path (aes256 LIST column)", async () => {
      const java = VECTORS.find((v) => v.keySet === "aes256")!;
      const out = join(dir, "subset-list.parquet");
      ok(
        await pme(
          "decrypt",
          join(VECTORS_DIR, java.file),
          out,
          ...vectorKeyArgs(java),
          "--columns",
          "int64_field",
        ),
      );
      await assertVectorValues(out, ["int64_field"]);
    });
    await t.step("only the footer key: column-key columns are skipped and reported", async () => {
      const out = join(dir, "footer-only.parquet");
      const r = ok(await pme("decrypt", cppFile, out, "--key", keySpec("kf", VECTOR_KEYS.aes128.kf)));
      assert.match(r.stderr, /skipped \(no key\): float_field, double_field/);
      await assertVectorValues(
        out,
        VECTOR_COLUMNS.filter((c) => c !== "float_field" && c !== "double_field"),
      );
    });
    await t.step("explicit --footer-key and --column-key, whatever the key metadata", async () => {
      const out = join(dir, "explicit.parquet");
      const k = VECTOR_KEYS.aes128;
      ok(
        await pme(
          "decrypt",
          cppFile,
          out,
          "--footer-key",
          keySpec("any", k.kf),
          "--column-key",
          `double_field:${keySpec("x", k.kc1, "base64")}`,
          "--column-key",
          `float_field:${keySpec("y", k.kc2)}`,
        ),
      );
      await assertVectorValues(out);
    });
    await t.step("--aad-prefix", async () => {
      const aad = VECTORS.find((v) => v.aadPrefix)!;
      const out = join(dir, "aad.parquet");
      ok(
        await pme(
          "decrypt",
          join(VECTORS_DIR, aad.file),
          out,
          ...vectorKeyArgs(aad),
          "--aad-prefix",
          "tester",
        ),
      );
      await assertVectorValues(out);
    });
  });
});

// ---------------------------------------------------------------------------------------------------
// encrypt, rekey

/** A small plaintext input: 5000 rows in 3 row groups, strings, nulls, a struct and a list. */
const writeInput = (file: string) => writeMixedInput(file, 5000);

const LEAVES = MIXED_LEAVES;

Deno.test("cli: pme encrypt and rekey, decrypted back to the same rows", async (t) => {
  await withTempDir(async (dir) => {
    const input = join(dir, "input.parquet");
    await writeInput(input);
    const kf = testKey(1);
    const kc1 = testKey(2, 24);
    const kc2 = testKey(3, 32);
    const kfArg = keySpec("kf", kf);
    const allKeys = ["--key", kfArg, "--key", keySpec("kc1", kc1), "--key", keySpec("kc2", kc2, "base64")];
    const path = (name: string) => join(dir, name);
    const columnsOf = (o: Record<string, unknown>) =>
      Object.fromEntries(
        (o.columns as InspectColumn[]).map((c) => [c.path, c.encrypted ? c.keyMetadata : null]),
      );

    await t.step("uniform", async () => {
      ok(await pme("encrypt", input, path("uniform.parquet"), "--footer-key", kfArg));
      const o = await inspect(path("uniform.parquet"), "--key", kfArg);
      assert.strictEqual(o.footer, "encrypted");
      assert.strictEqual(o.algorithm, "AES_GCM_V1");
      assert.strictEqual(o.footerKeyMetadata, "kf");
      assert.deepStrictEqual(o.aadPrefix, { stored: false, required: false });
      assert.strictEqual(o.rows, 5000);
      assert.strictEqual(o.rowGroups, 3);
      assert.deepStrictEqual(
        (o.columns as InspectColumn[]).map((c) => [c.path, c.key, c.keyMetadata]),
        LEAVES.map((l) => [l, "footer", "kf"]),
      );
      assert.strictEqual((await inspect(path("uniform.parquet"))).footerReadable, false);
      ok(await pme("decrypt", path("uniform.parquet"), path("uniform.out.parquet"), "--key", kfArg));
      assert.strictEqual(await assertSameRows(input, path("uniform.out.parquet")), 5000);
    });

    await t.step("column keys (leaf and parent path, hex and base64)", async () => {
      ok(
        await pme(
          "encrypt",
          input,
          path("columns.parquet"),
          "--footer-key",
          kfArg,
          "--column-key",
          `name:${keySpec("kc1", kc1)}`,
          "--column-key",
          `coding:${keySpec("kc2", kc2, "base64")}`,
        ),
      );
      const o = await inspect(path("columns.parquet"), ...allKeys);
      assert.deepStrictEqual(columnsOf(o), {
        id: null,
        name: "kc1",
        amount: null,
        "coding.code": "kc2",
        "coding.n": "kc2",
        "tags.list.element": null,
      });
      ok(await pme("decrypt", path("columns.parquet"), path("columns.out.parquet"), ...allKeys));
      await assertSameRows(input, path("columns.out.parquet"));
      const r = ok(
        await pme("decrypt", path("columns.parquet"), path("columns.part.parquet"), "--key", kfArg),
      );
      assert.match(r.stderr, /skipped \(no key\): name, coding\.code, coding\.n/);
      await assertSameRows(input, path("columns.part.parquet"), ["id", "amount", "tags"]);
    });

    await t.step("--algorithm AES_GCM_CTR_V1 --page-checksums", async () => {
      ok(
        await pme(
          "encrypt",
          input,
          path("ctr.parquet"),
          "--footer-key",
          kfArg,
          "--algorithm",
          "AES_GCM_CTR_V1",
          "--page-checksums",
        ),
      );
      assert.strictEqual((await inspect(path("ctr.parquet"), "--key", kfArg)).algorithm, "AES_GCM_CTR_V1");
      ok(await pme("decrypt", path("ctr.parquet"), path("ctr.out.parquet"), "--key", kfArg));
      await assertSameRows(input, path("ctr.out.parquet"));
    });

    await t.step("--algorithm AES_GCM_CTR_V1 on a DATA_PAGE_V2, multi-page parquet-wasm input", async () => {
      await Deno.mkdir(path("wasm"));
      const wasm = (await parquetWasmInputs(path("wasm"))).find((i) => i.features.includes("v2"))!;
      ok(
        await pme(
          "encrypt",
          wasm.file,
          path("v2.parquet"),
          "--footer-key",
          kfArg,
          "--algorithm",
          "AES_GCM_CTR_V1",
        ),
      );
      ok(await pme("decrypt", path("v2.parquet"), path("v2.out.parquet"), "--key", kfArg));
      assert.strictEqual(await assertSameRows(wasm.file, path("v2.out.parquet")), wasm.rows);
    });

    await t.step("--plaintext-footer", async () => {
      ok(
        await pme(
          "encrypt",
          input,
          path("signed.parquet"),
          "--footer-key",
          kfArg,
          "--column-key",
          `amount:${keySpec("kc1", kc1)}`,
          "--plaintext-footer",
        ),
      );
      const o = await inspect(path("signed.parquet"), ...allKeys);
      assert.strictEqual(o.footer, "plaintext, signed");
      assert.strictEqual(o.signatureVerified, true);
      const keyless = await inspect(path("signed.parquet"));
      assert.strictEqual(keyless.signatureVerified, null);
      assert.strictEqual(keyless.rows, 5000);
      ok(await pme("decrypt", path("signed.parquet"), path("signed.out.parquet"), ...allKeys));
      await assertSameRows(input, path("signed.out.parquet"));
    });

    await t.step("--aad-prefix with --no-store-aad-prefix", async () => {
      const file = path("aad.parquet");
      ok(
        await pme(
          "encrypt",
          input,
          file,
          "--footer-key",
          kfArg,
          "--aad-prefix",
          "fhir/tenant-7",
          "--no-store-aad-prefix",
        ),
      );
      const o = await inspect(file, "--key", kfArg, "--aad-prefix", "fhir/tenant-7");
      assert.deepStrictEqual(o.aadPrefix, { stored: false, required: true });
      assert.strictEqual(o.rows, 5000);
      await Deno.mkdir(path("aad-out"));
      const out = path("aad-out/plain.parquet");
      fails(await pme("decrypt", file, out, "--key", kfArg), 1, /PmeAadPrefixError/, /AAD prefix/);
      fails(
        await pme("decrypt", file, out, "--key", kfArg, "--aad-prefix", "fhir/tenant-8"),
        1,
        /PmeAuthError/,
        /footer/,
      );
      await assertDir(path("aad-out"), []);
      ok(await pme("decrypt", file, out, "--key", kfArg, "--aad-prefix", "fhir/tenant-7"));
      await assertSameRows(input, out);
    });

    await t.step("--aad-prefix, stored", async () => {
      const file = path("aad-stored.parquet");
      ok(await pme("encrypt", input, file, "--footer-key", kfArg, "--aad-prefix", "fhir/tenant-7"));
      assert.deepStrictEqual((await inspect(file, "--key", kfArg)).aadPrefix, {
        stored: true,
        value: "fhir/tenant-7",
      });
      ok(await pme("decrypt", file, path("aad-stored.out.parquet"), "--key", kfArg));
      await assertSameRows(input, path("aad-stored.out.parquet"));
    });

    await t.step("rekey: new keys, algorithm and footer mode", async () => {
      const nf = testKey(11, 32);
      const nc = testKey(12);
      const file = path("rekeyed.parquet");
      ok(
        await pme(
          "rekey",
          path("columns.parquet"),
          file,
          ...allKeys,
          "--new-footer-key",
          keySpec("nf", nf),
          "--new-column-key",
          `amount:${keySpec("nc", nc)}`,
          // name and coding are encrypted in the input: plaintext only because they are named.
          "--decrypt-column",
          "name",
          "--decrypt-column",
          "coding",
          "--new-algorithm",
          "AES_GCM_CTR_V1",
          "--new-plaintext-footer",
        ),
      );
      const newKeys = ["--key", keySpec("nf", nf), "--key", keySpec("nc", nc, "base64")];
      const o = await inspect(file, ...newKeys);
      assert.strictEqual(o.algorithm, "AES_GCM_CTR_V1");
      assert.strictEqual(o.footer, "plaintext, signed");
      assert.strictEqual(o.signatureVerified, true);
      assert.strictEqual(o.footerKeyMetadata, "nf");
      assert.deepStrictEqual(columnsOf(o), {
        id: null,
        name: null,
        amount: "nc",
        "coding.code": null,
        "coding.n": null,
        "tags.list.element": null,
      });
      await Deno.mkdir(path("rekey-out"));
      fails(
        await pme("decrypt", file, path("rekey-out/x.parquet"), ...allKeys),
        1,
        /PmeKeyMissingError/,
        /footer/,
      );
      await assertDir(path("rekey-out"), []);
      ok(await pme("decrypt", file, path("rekeyed.out.parquet"), ...newKeys));
      await assertSameRows(input, path("rekeyed.out.parquet"));
    });

    await t.step("rekey: AAD prefix not stored; back to uniform AES_GCM_V1", async () => {
      const nf = testKey(13, 24);
      const file = path("rekeyed-aad.parquet");
      ok(
        await pme(
          "rekey",
          path("rekeyed.parquet"),
          file,
          "--key",
          keySpec("nf", testKey(11, 32)),
          "--key",
          keySpec("nc", testKey(12)),
          "--new-footer-key",
          keySpec("kf2", nf),
          "--new-aad-prefix",
          "fhir/tenant-9",
          "--new-no-store-aad-prefix",
        ),
      );
      const o = await inspect(file, "--key", keySpec("kf2", nf), "--aad-prefix", "fhir/tenant-9");
      assert.strictEqual(o.algorithm, "AES_GCM_V1");
      assert.strictEqual(o.footer, "encrypted");
      assert.deepStrictEqual(o.aadPrefix, { stored: false, required: true });
      ok(
        await pme(
          "decrypt",
          file,
          path("rekeyed-aad.out.parquet"),
          "--key",
          keySpec("kf2", nf),
          "--aad-prefix",
          "fhir/tenant-9",
        ),
      );
      await assertSameRows(input, path("rekeyed-aad.out.parquet"));
    });

    await t.step("rekey of a vector", async () => {
      const v = VECTORS.find((v) => v.file === "encrypt_columns_plaintext_footer.parquet.encrypted")!;
      const nf = testKey(14);
      const file = path("vector-rekeyed.parquet");
      ok(
        await pme(
          "rekey",
          join(VECTORS_DIR, v.file),
          file,
          ...vectorKeyArgs(v),
          "--new-footer-key",
          keySpec("nf", nf),
        ),
      );
      ok(await pme("decrypt", file, path("vector-rekeyed.out.parquet"), "--key", keySpec("nf", nf)));
      await assertVectorValues(path("vector-rekeyed.out.parquet"));
    });

    await t.step("rekey without every column's key fails and writes nothing", async () => {
      await Deno.mkdir(path("rekey-fail"));
      fails(
        await pme(
          "rekey",
          path("columns.parquet"),
          path("rekey-fail/out.parquet"),
          "--key",
          kfArg,
          "--new-footer-key",
          keySpec("nf", testKey(15)),
        ),
        1,
        /PmeKeyMissingError/,
        /name, coding\.code, coding\.n/,
      );
      await assertDir(path("rekey-fail"), []);
    });

    await t.step(
      "rekey never writes an encrypted column in plaintext unless named with --decrypt-column",
      async () => {
        // Every column under a column key.
        const full = path("full.parquet");
        ok(
          await pme(
            "encrypt",
            input,
            full,
            "--footer-key",
            kfArg,
            ...["id", "name", "amount", "coding", "tags"].flatMap((c) => [
              "--column-key",
              `${c}:${keySpec(c === "name" ? "kc1" : "kc2", c === "name" ? kc1 : kc2)}`,
            ]),
          ),
        );
        const nf = keySpec("nf", testKey(16));
        const nc = keySpec("nc", testKey(17));
        const refused = path("rekey-refused");
        await Deno.mkdir(refused);
        const out = join(refused, "out.parquet");
        const rekey = (file: string, ...args: string[]) =>
          pme(
            "rekey",
            file,
            out,
            ...allKeys,
            "--new-footer-key",
            nf,
            "--new-column-key",
            `name:${nc}`,
            ...args,
          );
        // One new column key: refused, the other five columns named with the two ways out.
        for (const file of [full, path("uniform.parquet")]) {
          fails(
            await rekey(file),
            1,
            /PmeProtectionError/,
            /columns id, amount, coding\.code, coding\.n, tags\.list\.element are encrypted in the input/,
            /--new-column-key/,
            /--decrypt-column/,
          );
          await assertDir(refused, []);
        }
        // Naming some of them: the others are still refused.
        fails(
          await rekey(full, "--decrypt-column", "id", "--decrypt-column", "coding"),
          1,
          /PmeProtectionError/,
          /columns amount, tags\.list\.element are encrypted/,
        );
        fails(await rekey(full, "--decrypt-column", "nosuch"), 1, /PmeConfigError/, /nosuch/);
        fails(await rekey(full, "--decrypt-column", "name"), 1, /PmeConfigError/, /name/);
        await assertDir(refused, []);
        // Each remaining column either gets a key or is named (parent path coding).
        const r = ok(
          await rekey(
            full,
            "--new-column-key",
            `tags:${nc}`,
            "--decrypt-column",
            "id",
            "--decrypt-column",
            "coding",
            "--decrypt-column",
            "amount",
          ),
        );
        assert.match(r.stderr, /written in plaintext as asked: id, amount, coding\.code, coding\.n/);
        const o = await inspect(out, "--key", nf, "--key", nc);
        assert.deepStrictEqual(columnsOf(o), {
          id: null,
          name: "nc",
          amount: null,
          "coding.code": null,
          "coding.n": null,
          "tags.list.element": "nc",
        });
        ok(await pme("decrypt", out, path("rekey-decrypt-column.out.parquet"), "--key", nf, "--key", nc));
        await assertSameRows(input, path("rekey-decrypt-column.out.parquet"));
        // Uniform output with --decrypt-column: that column in plaintext, the others under the footer key.
        const uniformOut = path("rekey-uniform-decrypt.parquet");
        ok(
          await pme("rekey", full, uniformOut, ...allKeys, "--new-footer-key", nf, "--decrypt-column", "id"),
        );
        assert.deepStrictEqual(
          ((await inspect(uniformOut, "--key", nf)).columns as InspectColumn[]).map((c) => [c.path, c.key]),
          LEAVES.map((l) => [l, l === "id" ? null : "footer"]),
        );
      },
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// Exit codes and error output

Deno.test("cli: exit codes, one-line errors, no key material, nothing left behind", async (t) => {
  await withTempDir(async (dir) => {
    const uniform = join(VECTORS_DIR, "uniform_encryption.parquet.encrypted");
    const kf = keySpec("kf", VECTOR_KEYS.aes128.kf);
    const plain = join(dir, "plain.parquet");
    await writeInput(plain);
    const out = join(dir, "out");
    await Deno.mkdir(out);
    const target = join(out, "result.parquet");

    await t.step("0 on success, including help", async () => {
      ok(await pme("inspect", uniform, "--key", kf));
      assert.match(ok(await pme("help")).stdout, /Usage: deno task cli pme/);
      assert.match(ok(await cli("help")).stdout, /Areas:/);
    });

    await t.step("no command: exit 2 with the usage", async () => {
      const r = await pme();
      assert.strictEqual(r.code, 2, show(r));
      assert.match(r.stdout + r.stderr, /Usage: deno task cli pme/);
    });

    const usage: [string, string[], RegExp][] = [
      ["unknown area", ["frobnicate"], /unknown area "frobnicate"/],
      ["unknown command", ["pme", "frobnicate"], /unknown pme command "frobnicate"/],
      ["inspect without a file", ["pme", "inspect"], /expected FILE, got 0/],
      ["decrypt with one path", ["pme", "decrypt", uniform], /expected IN OUT, got 1/],
      ["decrypt with three paths", ["pme", "decrypt", uniform, target, target], /expected IN OUT, got 3/],
      ["encrypt without --footer-key", ["pme", "encrypt", plain, target], /--footer-key is required/],
      ["rekey without --new-footer-key", ["pme", "rekey", uniform, target, "--key", kf], /--new-footer-key/],
      ["unknown option", ["pme", "decrypt", uniform, target, "--bogus"], /bogus/],
      [
        "key that is not hex",
        ["pme", "decrypt", uniform, target, "--key", "kf=xyz"],
        /--key kf: .*not hexadecimal/,
      ],
      [
        "hex key of the wrong length",
        ["pme", "decrypt", uniform, target, "--key", "kf=00112233445566778899aabbccddee"],
        /--key kf: a hex key has 32, 48 or 64 digits, got 30/,
      ],
      [
        "key without ID=",
        ["pme", "decrypt", uniform, target, "--key", "0123456789abcdef"],
        /--key expects ID=/,
      ],
      [
        "key with an empty ID",
        ["pme", "decrypt", uniform, target, "--key", "=0123456789abcdef"],
        /--key expects ID=/,
      ],
      [
        "invalid base64 key",
        ["pme", "decrypt", uniform, target, "--key", "kf=base64:!!!!"],
        /not valid base64/,
      ],
      [
        "base64 key of the wrong length",
        ["pme", "decrypt", uniform, target, "--key", "kf=base64:AAECAwQFBgcICQoLDA0ODxA="],
        /keys are 16, 24 or 32 bytes, got 17/,
      ],
      [
        "column key without a column",
        [
          "pme",
          "encrypt",
          plain,
          target,
          "--footer-key",
          kf,
          "--column-key",
          "kc1=00112233445566778899aabbccddeeff",
        ],
        /--column-key expects COLUMN:ID=KEY/,
      ],
      [
        "unknown algorithm",
        ["pme", "encrypt", plain, target, "--footer-key", kf, "--algorithm", "AES_CBC"],
        /--algorithm must be AES_GCM_V1 or AES_GCM_CTR_V1/,
      ],
      [
        "--no-store-aad-prefix without --aad-prefix",
        ["pme", "encrypt", plain, target, "--footer-key", kf, "--no-store-aad-prefix"],
        /--no-store-aad-prefix needs --aad-prefix/,
      ],
      ["empty --columns", ["pme", "decrypt", uniform, target, "--key", kf, "--columns", ""], /--columns/],
      [
        "column key given twice",
        [
          "pme",
          "encrypt",
          plain,
          target,
          "--footer-key",
          kf,
          "--column-key",
          `id:${kf}`,
          "--column-key",
          `id:${kf}`,
        ],
        /given twice for id/,
      ],
    ];
    for (const [label, args, pattern] of usage) {
      await t.step(`2: ${label}`, async () => {
        const line = fails(await cli(...args), 2, pattern);
        for (
          const bad of [
            "xyz",
            "00112233445566778899aabbccddee",
            "00112233445566778899aabbccddeeff",
            "0123456789abcdef",
            "!!!!",
            "AAECAwQFBgcICQoLDA0ODxA=",
          ]
        ) {
          assert(!line.includes(bad), `the key value is echoed: ${line}`);
        }
        await assertDir(out, []);
      });
    }

    const wrong = keySpec("kf", testKey(21));
    const runtime: [string, string[], RegExp[]][] = [
      ["wrong footer key", ["decrypt", uniform, target, "--key", wrong], [
        /PmeAuthError/,
        /footer/,
        /uniform_encryption/,
      ]],
      ["missing footer key", ["decrypt", uniform, target], [/PmeKeyMissingError/, /footer key/]],
      ["key for another key id", ["decrypt", uniform, target, "--key", keySpec("other", testKey(22))], [
        /PmeKeyMissingError/,
      ]],
      [
        "wrong column key (fails after the output file was started)",
        [
          "decrypt",
          join(VECTORS_DIR, "encrypt_columns_and_footer.parquet.encrypted"),
          target,
          "--key",
          kf,
          "--key",
          keySpec("kc1", testKey(23)),
          "--key",
          keySpec("kc2", VECTOR_KEYS.aes128.kc2),
        ],
        [/PmeAuthError/, /column double_field/],
      ],
      [
        "selected column without its key",
        [
          "decrypt",
          join(VECTORS_DIR, "encrypt_columns_and_footer.parquet.encrypted"),
          target,
          "--key",
          kf,
          "--columns",
          "int32_field,double_field",
        ],
        [/PmeKeyMissingError/, /column double_field/],
      ],
      ["unknown column in --columns", ["decrypt", uniform, target, "--key", kf, "--columns", "nosuch"], [
        /PmeConfigError/,
        /nosuch/,
      ]],
      ["missing input file", ["decrypt", join(dir, "nosuch.parquet"), target, "--key", kf], [
        /nosuch\.parquet/,
      ]],
      ["inspect of a missing file", ["inspect", join(dir, "nosuch.parquet")], [/nosuch\.parquet/]],
      ["input that is not Parquet", ["inspect", join(ROOT, "deno.json")], [/PmeFormatError/, /deno\.json/]],
      ["output directory missing", ["decrypt", uniform, join(dir, "nodir", "x.parquet"), "--key", kf], [
        /nodir/,
      ]],
      ["unknown column key path", [
        "encrypt",
        plain,
        target,
        "--footer-key",
        kf,
        "--column-key",
        `nosuch:${kf}`,
      ], [
        /PmeConfigError/,
        /nosuch/,
      ]],
      ["encrypting an encrypted file without its key", ["encrypt", uniform, target, "--footer-key", kf], [
        /PmeKeyMissingError/,
      ]],
    ];
    for (const [label, args, patterns] of runtime) {
      await t.step(`1: ${label}`, async () => {
        fails(await pme(...args), 1, ...patterns);
        await assertDir(out, []);
      });
    }

    await t.step("1: a failed run leaves an existing output file untouched", async () => {
      const existing = join(dir, "existing.parquet");
      await Deno.writeTextFile(existing, "previous content");
      fails(await pme("decrypt", uniform, existing, "--key", wrong), 1, /PmeAuthError/);
      fails(
        await pme(
          "decrypt",
          join(VECTORS_DIR, "encrypt_columns_and_footer.parquet.encrypted"),
          existing,
          "--key",
          kf,
          "--key",
          keySpec("kc1", testKey(23)),
          "--key",
          keySpec("kc2", VECTOR_KEYS.aes128.kc2),
        ),
        1,
        /PmeAuthError/,
      );
      assert.strictEqual(await Deno.readTextFile(existing), "previous content");
      await assertDir(dir, ["existing.parquet", "out", "plain.parquet"]);
    });

    await t.step(
      "1: a 19-byte file with a malformed footer (Thrift map header claiming 2^31 entries)",
      async () => {
        // Footer = struct { field 1: map<bool, bool> of 2^31 entries }, then nothing. A correct
        // decoder rejects it at once; the heap cap only keeps a wrong one from using gigabytes.
        const footer = [0x1b, 0x80, 0x80, 0x80, 0x80, 0x08, 0x11, 0x00];
        const evil = join(dir, "evil.parquet");
        await Deno.writeFile(
          evil,
          Uint8Array.of(0x50, 0x41, 0x52, 0x31, ...footer, footer.length, 0, 0, 0, 0x50, 0x41, 0x52, 0x31),
        );
        fails(
          await cliWithEnv({ DENO_V8_FLAGS: "--max-old-space-size=256" }, "pme", "inspect", evil),
          1,
          /PmeFormatError/,
          /evil\.parquet/,
        );
      },
    );
  });
});
