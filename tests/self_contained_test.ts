/**
 * The repository carries every file its tests, scripts and examples read: no source, test, script or
 * document points outside the clone (at a `shared` folder beside it, which a user's clone does not have),
 * and the third-party test data lives in `tests/data/` with its licence, byte-for-byte as published
 * upstream.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { join } from "node:path";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DATA = fileURLToPath(new URL("./data/", import.meta.url));

/** Paths outside the clone (spelt in two parts so this file does not match itself). */
const FORBIDDEN = ["../" + "shared", "/work/" + "shared"];
const SCANNED = /\.(ts|py|sh|java|json|md)$/;

/** Files git knows of: tracked ones plus new ones not ignored (so a reference is caught before commit). */
async function repoFiles(): Promise<string[]> {
  const out = await new Deno.Command("git", {
    args: ["ls-files", "-z", "--cached", "--others", "--exclude-standard"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return [...new Set(new TextDecoder().decode(out.stdout).split("\0").filter((f) => f !== ""))].sort();
}

/** The git blob id of `bytes` (what `git hash-object` prints): proves a copy is the upstream file. */
async function gitBlobId(bytes: Uint8Array): Promise<string> {
  const header = new TextEncoder().encode(`blob ${bytes.length}\0`);
  const all = new Uint8Array(header.length + bytes.length);
  all.set(header);
  all.set(bytes, header.length);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-1", all));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function namesIn(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.isDirectory ? e.name + "/" : e.name);
  return out.sort();
}

Deno.test("self-contained: no source, test, script or doc refers to a shared folder outside the clone", async () => {
  const files = (await repoFiles()).filter((f) =>
    SCANNED.test(f) && !(f.startsWith("tests/data/") && f.endsWith(".md"))
  );
  assert.ok(files.includes("tests/fixtures/vectors.ts") && files.includes("scripts/test.sh"), "scanned");
  const hits: string[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await Deno.readTextFile(join(ROOT, file));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) continue; // deleted in the work tree, not yet in the index
      throw e;
    }
    text.split("\n").forEach((line, i) => {
      if (FORBIDDEN.some((bad) => line.includes(bad))) hits.push(`${file}:${i + 1}: ${line.trim()}`);
    });
  }
  assert.deepEqual(hits, [], `files point outside the repository:\n${hits.join("\n")}`);
});

/** apache/parquet-testing commit 1a2a75127be06fc0123f03ebd36c966f7beda27d, `data/…`: git blob ids. */
const PARQUET_TESTING_BLOBS: Record<string, string> = {
  "encrypt_columns_and_footer.parquet.encrypted": "a5bf6eb8d162d719e3c940f12ab00017c936e096",
  "encrypt_columns_and_footer_aad.parquet.encrypted": "7e921144d436a146d67a59da73b10f351469890c",
  "encrypt_columns_plaintext_footer.parquet.encrypted": "5078fc2581e2939b78d66a1e36836d0d8eef1d95",
  "uniform_encryption.parquet.encrypted": "703244604295b7b245ae47091929566e3159bc8e",
  "aes256/encrypt_columns_and_footer.parquet.encrypted": "3037e478d9a07e462ff5fa8d0ec357b7c019eca4",
};

Deno.test("self-contained: tests/data/parquet-testing holds the 5 upstream vectors and the Apache licence", async () => {
  const dir = join(DATA, "parquet-testing");
  assert.deepEqual(await namesIn(dir), [
    "LICENSE.txt",
    "README.md",
    "aes256/",
    "encrypt_columns_and_footer.parquet.encrypted",
    "encrypt_columns_and_footer_aad.parquet.encrypted",
    "encrypt_columns_plaintext_footer.parquet.encrypted",
    "uniform_encryption.parquet.encrypted",
  ]);
  assert.deepEqual(await namesIn(join(dir, "aes256")), ["encrypt_columns_and_footer.parquet.encrypted"]);
  for (const [file, blob] of Object.entries(PARQUET_TESTING_BLOBS)) {
    assert.equal(
      await gitBlobId(await Deno.readFile(join(dir, file))),
      blob,
      `${file} differs from upstream`,
    );
  }
  const licence = await Deno.readTextFile(join(dir, "LICENSE.txt"));
  assert.match(licence, /Apache License\s+Version 2\.0, January 2004/);
  assert.match(licence, /END OF TERMS AND CONDITIONS/);
  const readme = await Deno.readTextFile(join(dir, "README.md"));
  assert.match(readme, /apache\/parquet-testing/);
  assert.match(readme, /1a2a75127be06fc0123f03ebd36c966f7beda27d/);
});

/** FHIR/sql-on-fhir-v2 commit 49fc1adffa8490e7cd5c1e8917d8eb24cbea9dee, `tests/*.json`: git blob ids. */
const SQL_ON_FHIR_BLOBS: Record<string, string> = {
  "basic.json": "2e4d4bfee0371bf5d7547b557e637d8415e77de5",
  "collection.json": "9b5f2a6db616cfdad8f3950ed09cd5c5173740c0",
  "combinations.json": "c30124136d7032dfb22a3756fe0c6a8213fba343",
  "constant.json": "051776f1ddbe8a5d50225848a9a3433612887d4e",
  "constant_types.json": "9def91a8c716b9647317d86ecb0a02319c8ed02e",
  "fhirpath.json": "e114d88003655a76d8ec33059148c8dc24fa3b69",
  "fhirpath_numbers.json": "faf6f5de92cfdf8e66120646c315c6ac141dfd6a",
  "fn_boundary.json": "647e8909dd1425fa38b177eea29fae5a01902f62",
  "fn_empty.json": "8db72b242c37600b402751f82d7b166d24401d73",
  "fn_extension.json": "9963e1838d08b29d9dcf9746e4b35859cf4d1989",
  "fn_first.json": "9d6aa898f1067dd7679fbbd33759a7b8e7a74520",
  "fn_join.json": "edfc999bcf1342877e85d0ae04eaf58ebf49e5b1",
  "fn_oftype.json": "173cde041ed48256be12389a0f2a06355f1d1291",
  "fn_reference_keys.json": "4abbd9b331da0f75258bc9150be57f1a52504bce",
  "foreach.json": "5a08cc9980ee104674c2bd9aaae045b96714c2cf",
  "logic.json": "ee3f733a3f8ba32768da9cb85a2f051f1cc89bca",
  "repeat.json": "ef174aeba0de438d4df6f685dc614c6795e113ab",
  "row_index.json": "cceea8e5eb64d1156fede91848adce6eccb7c98c",
  "union.json": "548fa542193d906f3d24c72254a73e1717bfbf0f",
  "validate.json": "892c46ba302479a6eda7349917676c67fb4055a3",
  "view_resource.json": "5b39d1bf0630c9d00431d1387654eb58b4786f43",
  "where.json": "0459914e42e86273f78a4351407ce84c54848129",
};

Deno.test("self-contained: tests/data/sql-on-fhir-v2 holds the 22 suite files (134 tests) and the MIT licence", async () => {
  const dir = join(DATA, "sql-on-fhir-v2");
  const names = await namesIn(dir);
  const suite = names.filter((n) => n.endsWith(".json"));
  assert.equal(suite.length, 22);
  assert.deepEqual(suite, Object.keys(SQL_ON_FHIR_BLOBS).sort());
  for (const [file, blob] of Object.entries(SQL_ON_FHIR_BLOBS)) {
    assert.equal(
      await gitBlobId(await Deno.readFile(join(dir, file))),
      blob,
      `${file} differs from upstream`,
    );
  }
  assert.deepEqual(names.filter((n) => !n.endsWith(".json")), ["LICENSE-AND-SOURCE.md"]);
  let tests = 0;
  for (const name of suite) {
    tests += (JSON.parse(await Deno.readTextFile(join(dir, name))) as { tests: unknown[] }).tests.length;
  }
  assert.equal(tests, 134);
  const notice = await Deno.readTextFile(join(dir, "LICENSE-AND-SOURCE.md"));
  assert.match(notice, /github\.com\/FHIR\/sql-on-fhir-v2/);
  assert.match(notice, /49fc1adffa8490e7cd5c1e8917d8eb24cbea9dee/);
  assert.match(notice, /Permission is hereby granted, free of charge/);
  // Every suite file is named in the notice, and the notice names no file that is missing.
  const listed = notice.split("**Files:**")[1]?.split("(134 test cases")[0].match(/[a-z_]+\.json/g) ?? [];
  assert.deepEqual(listed.sort(), suite);
});

Deno.test("self-contained: tests/data/README.md lists both folders with their licences", async () => {
  const readme = await Deno.readTextFile(join(DATA, "README.md"));
  for (const needle of ["parquet-testing/", "sql-on-fhir-v2/", "Apache License 2.0", "MIT"]) {
    assert.ok(readme.includes(needle), `tests/data/README.md mentions ${needle}`);
  }
});

/** Every file under `dir`, as repository paths (`tests/data/…`), sorted. */
async function filesUnder(dir: string, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isDirectory) out.push(...await filesUnder(join(dir, e.name), `${prefix}${e.name}/`));
    else out.push(prefix + e.name);
  }
  return out.sort();
}

Deno.test("self-contained: git sees every file of tests/data (none is ignored, so a clone carries them)", async () => {
  const onDisk = await filesUnder(DATA, "tests/data/");
  assert.equal(onDisk.length, 31);
  const known = (await repoFiles()).filter((f) => f.startsWith("tests/data/"));
  assert.deepEqual(known, onDisk, "a .gitignore pattern hides tests/data (e.g. an unanchored `data/`)");
});
