/**
 * What a new user meets on a fresh clone, through the command line as users run it:
 * - `--help`/`-h` on every command and subcommand prints its usage and exits 0;
 * - commands that read a data folder refuse one that does not exist (a typo) and create nothing;
 * - `serve` and `convert` refuse to start when a master key they need is missing, naming it and the
 *   command that adds it; a keystore inside the data folder is refused;
 * - the default keystore lives outside the data folder; `init` is the explicit way to make one;
 * - `convert` while `serve` runs says which process holds the landing zone and what to do;
 * - `./fhir-pme` (the launcher) passes SIGINT/SIGTERM to the server, which stops cleanly and frees the
 *   landing zone; `scripts/demo.sh --help` and bad numbers are usage errors, not stack traces.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { LocalKeystore } from "../kms/local_keystore.ts";
import { DEFAULT_MASTER_KEYS, openDataFolder } from "../app/data_folder.ts";
import { withTempDir } from "./fixtures/tmp.ts";
import { freePort } from "./fixtures/net.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const td = new TextDecoder();

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `cli/main.ts ARGS` with FHIR_PME_CONFIG_DIR = `config`. */
async function cli(config: string, ...args: string[]): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli/main.ts", ...args],
    cwd: ROOT,
    env: { FHIR_PME_CONFIG_DIR: config, NO_COLOR: "1" },
    stdin: "null",
  }).output();
  return { code: out.code, stdout: td.decode(out.stdout), stderr: td.decode(out.stderr) };
}

/** Asserts an error run: exit 1, one line on stderr starting with "error:", no stack trace. */
function assertError(r: Run, re: RegExp): void {
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  assert.match(lines[0], /^error: /);
  assert.match(lines[0], re);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
}

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.lstat(p);
    return true;
  } catch {
    return false;
  }
}

async function waitListening(port: number, child: Deno.ChildProcess): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/fhir/metadata`);
      await r.body?.cancel();
      if (r.ok) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error("serve did not start");
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

const HELP_COMMANDS = [
  [],
  ["init"],
  ["demo"],
  ["serve"],
  ["convert"],
  ["generate"],
  ["pme"],
  ["pme", "inspect"],
  ["pme", "encrypt"],
  ["pme", "decrypt"],
  ["pme", "rekey"],
  ["kms"],
  ["kms", "local"],
  ["kms", "local", "init"],
  ["kms", "local", "add"],
  ["kms", "local", "rotate"],
  ["kms", "local", "list"],
  ["kms", "local", "min-decryption-version"],
  ["kms", "rotate"],
  ["kms", "reencrypt"],
  ["kms", "min-decryption-version"],
  ["views"],
  ["views", "test"],
];

Deno.test("--help and -h on every command and subcommand: usage on stdout, exit 0", async () => {
  await withTempDir(async (config) => {
    for (const cmd of HELP_COMMANDS) {
      for (const flag of ["--help", "-h"]) {
        // Also after other (even incomplete) options: help wins.
        const r = await cli(config, ...cmd, "--data", flag);
        assert.equal(r.code, 0, `${cmd.join(" ")} ${flag}: ${r.stderr}`);
        assert.match(r.stdout, /^Usage: /, `${cmd.join(" ")} ${flag}`);
        assert.equal(r.stderr, "", `${cmd.join(" ")} ${flag}`);
      }
    }
    // Each area's help names its own options.
    assert.match(
      (await cli(config, "serve", "--help")).stdout,
      /--validation-workers N.*\n[\s\S]*--max-imports N/,
    );
    assert.match((await cli(config, "convert", "-h")).stdout, /--row-cache-mb N[\s\S]*--keep-segments/);
    assert.deepEqual(await Array.fromAsync(Deno.readDir(config)), [], "help creates nothing");
  }, "fhir-pme-help-");
});

Deno.test("convert/serve/demo on a data folder that is not there: a clear error, nothing created", async () => {
  await withTempDir(async (root) => {
    const config = join(root, "config");
    const typo = join(root, "dtaa");
    const r = await cli(config, "convert", "--data", typo);
    assertError(
      r,
      new RegExp(`data folder ${typo} does not exist — check the path .*fhir-pme init --data DIR`),
    );
    assert.ok(!await exists(typo), "no folder created");
    assert.ok(!await exists(config), "no keystore created");
    // An existing folder that is not a data folder.
    await Deno.mkdir(typo);
    assertError(await cli(config, "convert", "--data", typo), /is not a fhir-pme data folder/);
    assert.deepEqual(await Array.fromAsync(Deno.readDir(typo)), []);
    assert.ok(!await exists(config));
  }, "fhir-pme-typo-");
});

Deno.test("init: a data folder with its keystore outside; convert then works without --kms", async () => {
  await withTempDir(async (root) => {
    const config = join(root, "config");
    const data = join(root, "data");
    const r = await cli(config, "init", "--data", data);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`created keystore ${config}/keystores/[0-9a-f]{32}\\.json .*back it up`),
    );
    assert.match(r.stderr, /created master keys landing, footer, identity, quasi, clinical/);
    assert.match(r.stdout, /data folder created: .*all usable/);
    assert.deepEqual((await Array.fromAsync(Deno.readDir(data))).map((e) => e.name), ["fhir-pme.json"]);
    const again = await cli(config, "init", "--data", data);
    assert.equal(again.code, 0);
    assert.match(again.stdout, /already initialised/);
    assert.equal(again.stderr, "", "nothing created the second time");
    const c = await cli(config, "convert", "--data", data);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /nothing to convert/);
  }, "fhir-pme-init-");
});

Deno.test("serve and convert refuse to start when a master key is missing, naming it and the fix", async () => {
  await withTempDir(async (root) => {
    const config = join(root, "config");
    const data = join(root, "data");
    const ks = join(root, "keys.json");
    const store = await LocalKeystore.create(ks);
    await store.addKey("footer");
    store.close();
    const port = freePort();
    const s = await cli(
      config,
      "serve",
      "--data",
      data,
      "--port",
      String(port),
      "--kms",
      "local",
      "--keystore",
      ks,
    );
    assertError(
      s,
      new RegExp(
        `master key\\(s\\) ${DEFAULT_MASTER_KEYS.landing} missing — add it with: \\./fhir-pme kms local add ${ks} landing`,
      ),
    );
    // It did not start, created no key in the keystore the user chose, and left no folder behind.
    await assert.rejects(fetch(`http://127.0.0.1:${port}/fhir/metadata`));
    assert.ok(!await exists(data), "the folder it would have created is gone");
    const listed = await LocalKeystore.open(ks);
    assert.deepEqual(listed.list().map((k) => k.id), ["footer"], "no key added to a chosen keystore");
    // With the landing key the server may start, but convert needs every class key.
    await listed.addKey("landing");
    listed.close();
    await openDataFolder(data, { kms: { kind: "local", keystore: ks }, create: true, needs: ["landing"] });
    const c = await cli(config, "convert", "--data", data, "--kms", "local", "--keystore", ks);
    assertError(
      c,
      /master key\(s\) identity, quasi, clinical missing — add them with: .*kms local add .* identity;/,
    );
    // A keystore inside the data folder is refused.
    await Deno.copyFile(ks, join(data, "keystore.json"));
    await Deno.chmod(join(data, "keystore.json"), 0o600);
    assertError(
      await cli(
        config,
        "convert",
        "--data",
        data,
        "--kms",
        "local",
        "--keystore",
        join(data, "keystore.json"),
      ),
      /keystore .* is inside the data folder .* move the keystore out/,
    );
  }, "fhir-pme-keys-");
});

Deno.test("the launcher passes SIGINT/SIGTERM to serve; convert meanwhile says who holds the landing zone", async () => {
  await withTempDir(async (root) => {
    const config = join(root, "config");
    const data = join(root, "data");
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      const port = freePort();
      const child = new Deno.Command(join(ROOT, "fhir-pme"), {
        args: ["serve", "--data", data, "--port", String(port)],
        cwd: root,
        env: { FHIR_PME_CONFIG_DIR: config },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      await waitListening(port, child);
      const c = await cli(config, "convert", "--data", data);
      assertError(
        c,
        new RegExp(
          `landing directory .* is in use by another process \\(pid ${child.pid}\\), normally a running ingest ` +
            `server .* stop that process \\(Ctrl-C in its terminal, or kill -TERM ${child.pid}.*\\) and run the command again`,
        ),
      );
      child.kill(signal);
      const st = await child.status;
      const err = td.decode((await child.stderr.getReader().read()).value ?? new Uint8Array());
      assert.equal(st.code, 0, `${signal}: exit ${st.code} ${err}`);
      assert.match(err, /ingest server stopped; open segments sealed/);
      await assert.rejects(fetch(`http://127.0.0.1:${port}/fhir/metadata`), "no longer listening");
      const after = await cli(config, "convert", "--data", data);
      assert.equal(after.code, 0, `${signal}: landing zone freed: ${after.stderr}`);
      await child.stdout.cancel();
    }
  }, "fhir-pme-signal-");
});

Deno.test("scripts/demo.sh: --help is usage (exit 0); bad numbers are usage errors, not stack traces", async () => {
  await withTempDir(async (root) => {
    const run = async (...args: string[]) => {
      const out = await new Deno.Command("bash", {
        args: [join(ROOT, "scripts", "demo.sh"), ...args],
        cwd: root,
        env: { FHIR_PME_CONFIG_DIR: join(root, "config") },
        stdin: "null",
      }).output();
      return { code: out.code, stdout: td.decode(out.stdout), stderr: td.decode(out.stderr) };
    };
    const help = await run("--help");
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^Usage: fhir-pme demo /);
    for (
      const [args, re] of [
        [["--patients", "abc"], /usage error: --patients expects an integer from 1 to 100000, got "abc"/],
        [["--days", "0"], /usage error: --days expects an integer from 1 to 3650, got "0"/],
        [["--bogus"], /usage error: Unknown option '--bogus'/],
        [["extra"], /usage error: unexpected argument "extra"/],
      ] as const
    ) {
      const r = await run(...args);
      assert.equal(r.code, 2, `${args}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
    }
    assert.ok(!await exists(join(root, "data")) && !await exists(join(root, "config")), "nothing created");
  }, "fhir-pme-demo-");
});
