/**
 * app/data_folder.ts: a data folder is opened only when it exists and is one; its keystore lives outside
 * it and is refused inside; new master keys are created only when a folder is created; every master key
 * a command needs is probed before it starts (missing, denied, unavailable and broken keys named).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  DATA_FOLDER_FILE,
  DEFAULT_MASTER_KEYS,
  initDataFolder,
  MASTER_KEY_ROLES,
  openDataFolder,
  readDataFolderRecord,
} from "../app/data_folder.ts";
import { DataFolderError } from "../app/errors.ts";
import { LocalKeystore } from "../kms/local_keystore.ts";
import { probeMasterKeys } from "../kms/probe.ts";
import { KmsUnavailableError } from "../kms/errors.ts";
import type { KmsClient } from "../kms/client.ts";
import { MemoryKms } from "./fixtures/memory_kms.ts";
import { withTempDir } from "./fixtures/tmp.ts";
import { freePort } from "./fixtures/net.ts";

/** Every path under `dir` (relative), sorted; [] when it does not exist. */
async function tree(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(join(dir, prefix))) {
      const p = prefix ? `${prefix}/${e.name}` : e.name;
      out.push(p);
      if (e.isDirectory) out.push(...await tree(dir, p));
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out.sort();
}

async function rejects(p: Promise<unknown>, re: RegExp): Promise<DataFolderError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof DataFolderError, `DataFolderError expected, got ${e}`);
    assert.match(e.message, re);
    assert.equal(e.retryable, false);
    return e;
  }
  assert.fail(`expected a DataFolderError matching ${re}`);
}

/** A keystore at `path` holding `ids`. */
async function keystoreWith(path: string, ids: string[]): Promise<void> {
  const ks = await LocalKeystore.create(path);
  try {
    for (const id of ids) await ks.addKey(id);
  } finally {
    ks.close();
  }
}

function setup(fn: (d: { root: string; config: string; data: string }) => Promise<void>) {
  return withTempDir(async (root) => {
    const config = join(root, "config");
    await fn({ root, config, data: join(root, "data") });
  }, "fhir-pme-folder-");
}

Deno.test("openDataFolder: a folder that does not exist is refused and nothing is created", () =>
  setup(async ({ root, config, data }) => {
    const e = await rejects(
      openDataFolder(data, { configDir: config }),
      /data folder .*\/data does not exist/,
    );
    assert.match(e.message, /fhir-pme init --data DIR/);
    assert.deepEqual(await tree(root), [], "no folder, no keystore");
    // An existing folder that is not a data folder (a typo of a sibling, an empty folder) too.
    await Deno.mkdir(data);
    await rejects(openDataFolder(data, { configDir: config }), /is not a fhir-pme data folder/);
    assert.deepEqual(await tree(root), ["data"]);
  }));

Deno.test("openDataFolder create: record, keystore outside the folder with every master key; reopened as is", () =>
  setup(async ({ root, config, data }) => {
    const events: string[] = [];
    const f = await openDataFolder(data, {
      configDir: config,
      create: true,
      needs: MASTER_KEY_ROLES,
      onEvent: (e) => events.push(e.kind),
    });
    assert.deepEqual(events, ["keystore-created", "master-keys-created", "folder-created"]);
    const record = (await readDataFolderRecord(data))!;
    assert.equal(record.kms.kind, "local");
    const keystore = (record.kms as { keystore: string }).keystore;
    assert.equal(keystore, join(config, "keystores", `${record.id}.json`));
    assert.deepEqual(await tree(data), [DATA_FOLDER_FILE], "nothing but the record inside the folder");
    assert.deepEqual(record.masterKeys, DEFAULT_MASTER_KEYS);
    assert.deepEqual(f.masterKeys, DEFAULT_MASTER_KEYS);
    assert.equal((await Deno.stat(keystore)).mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(join(config, "keystores"))).mode! & 0o777, 0o700);
    const ks = await LocalKeystore.open(keystore);
    assert.deepEqual(ks.list().map((k) => k.id).sort(), Object.values(DEFAULT_MASTER_KEYS).sort());
    ks.close();
    // Reopening (with or without create) creates nothing and changes no key.
    const before = await Deno.readFile(keystore);
    const again: string[] = [];
    await openDataFolder(data, { configDir: config, create: true, onEvent: (e) => again.push(e.kind) });
    await openDataFolder(data, { configDir: config, needs: MASTER_KEY_ROLES });
    assert.deepEqual(again, []);
    assert.deepEqual(await Deno.readFile(keystore), before);
    assert.deepEqual(await tree(root), [
      "config",
      "config/keystores",
      `config/keystores/${record.id}.json`,
      "data",
      `data/${DATA_FOLDER_FILE}`,
    ]);
  }));

Deno.test("openDataFolder create: refuses a folder that holds other things", () =>
  setup(async ({ config, data }) => {
    await Deno.mkdir(data);
    await Deno.writeTextFile(join(data, "notes.txt"), "x");
    await rejects(
      openDataFolder(data, { configDir: config, create: true }),
      /is not empty and not a fhir-pme data folder/,
    );
    assert.deepEqual(await tree(data), ["notes.txt"]);
  }));

Deno.test("a keystore inside the data folder, its landing zone or lake is refused (symbolic links resolved)", () =>
  setup(async ({ root, config, data }) => {
    await Deno.mkdir(join(data, "landing"), { recursive: true });
    await Deno.mkdir(join(data, "lake"), { recursive: true });
    for (const rel of ["keystore.json", "landing/keystore.json", "lake/k/keystore.json"]) {
      await rejects(
        openDataFolder(data, { configDir: config, kms: { kind: "local", keystore: join(data, rel) } }),
        /is inside the data folder .* a copy or backup of the folder would carry the master keys/,
      );
    }
    // Through a symbolic link that points into the folder.
    await Deno.symlink(data, join(root, "alias"));
    await rejects(
      openDataFolder(data, {
        configDir: config,
        kms: { kind: "local", keystore: join(root, "alias", "ks.json") },
      }),
      /is inside the data folder/,
    );
    // A new folder whose default keystore would land inside it (config dir inside the folder).
    const fresh = join(root, "fresh");
    await rejects(
      openDataFolder(fresh, { configDir: join(fresh, "cfg"), create: true }),
      /is inside the data folder/,
    );
    assert.deepEqual(await tree(fresh), [], "no keystore, no record written");
  }));

Deno.test("a folder of an older version (keystore.json inside, no record) is refused until adopted", () =>
  setup(async ({ root, config, data }) => {
    await Deno.mkdir(join(data, "landing"), { recursive: true });
    await keystoreWith(join(data, "keystore.json"), Object.values(DEFAULT_MASTER_KEYS));
    const e = await rejects(
      openDataFolder(data, { configDir: config, create: true }),
      /has no fhir-pme\.json and keeps its keystore inside/,
    );
    assert.match(e.message, /mv .*keystore\.json/);
    await rejects(initDataFolder(data, { configDir: config }), /name the KMS that holds its keys/);
    await rejects(
      initDataFolder(data, {
        configDir: config,
        kms: { kind: "local", keystore: join(data, "keystore.json") },
      }),
      /is inside the data folder/,
    );
    await rejects(
      initDataFolder(data, {
        configDir: config,
        kms: { kind: "local", keystore: join(root, "missing.json") },
      }),
      /does not exist .* new keys could not decrypt it/,
    );
    assert.equal(await readDataFolderRecord(data), null, "nothing adopted yet");
    // Move the keystore out, then adopt: the record names it, later opens need no --kms.
    const moved = join(root, "ks.json");
    await Deno.rename(join(data, "keystore.json"), moved);
    const r = await initDataFolder(data, { configDir: config, kms: { kind: "local", keystore: moved } });
    assert.equal(r.action, "adopted");
    assert.deepEqual((await readDataFolderRecord(data))!.kms, { kind: "local", keystore: moved });
    const f = await openDataFolder(data, { configDir: config, needs: MASTER_KEY_ROLES });
    assert.equal(f.kms.where, `local keystore ${moved}`);
    assert.equal((await initDataFolder(data, { configDir: config })).action, "existing");
    // A different KMS than the recorded one is refused.
    await keystoreWith(join(root, "other.json"), Object.values(DEFAULT_MASTER_KEYS));
    await rejects(
      openDataFolder(data, { configDir: config, kms: { kind: "local", keystore: join(root, "other.json") } }),
      /records its master keys in keystore .*ks\.json, not in the KMS given/,
    );
  }));

Deno.test("master keys a command needs are probed: missing ones named with the command that adds them", () =>
  setup(async ({ root, config, data }) => {
    const ks = join(root, "ks.json");
    await keystoreWith(ks, ["landing", "footer", "identity"]);
    await Deno.mkdir(join(data, "landing"), { recursive: true });
    const kms = { kind: "local" as const, keystore: ks };
    // The ingest server needs the landing key only: it starts.
    await openDataFolder(data, { configDir: config, kms, needs: ["landing"] });
    // A conversion needs every key: refused, naming both missing keys and the command for each.
    const e = await rejects(
      openDataFolder(data, { configDir: config, kms, needs: MASTER_KEY_ROLES }),
      /master key\(s\) quasi, clinical missing/,
    );
    assert.ok(
      e.message.includes(`./fhir-pme kms local add ${ks} quasi; ./fhir-pme kms local add ${ks} clinical`),
      e.message,
    );
    // A landing key given on the command line is the one probed.
    await rejects(
      openDataFolder(data, { configDir: config, kms, needs: ["landing"], masterKeys: { landing: "nope" } }),
      /master key\(s\) nope missing/,
    );
    // A record whose keystore file is gone: refused, nothing recreated.
    const other = join(root, "other");
    await openDataFolder(other, { configDir: config, create: true });
    const record = (await readDataFolderRecord(other))!;
    await Deno.remove((record.kms as { keystore: string }).keystore);
    await rejects(
      openDataFolder(other, { configDir: config, create: true }),
      /does not exist .* restore it from your key backup/,
    );
    assert.deepEqual(await tree(join(config, "keystores")), [], "no new keystore");
  }));

Deno.test("a malformed record is refused with its path", () =>
  setup(async ({ config, data }) => {
    await Deno.mkdir(data);
    for (
      const [text, why] of [
        ["{", /not JSON/],
        ['{"format":"x"}', /format is not fhir-pme-data-folder/],
        ['{"format":"fhir-pme-data-folder","version":2}', /version 2 is not supported/],
      ] as const
    ) {
      await Deno.writeTextFile(join(data, DATA_FOLDER_FILE), text);
      await rejects(openDataFolder(data, { configDir: config }), why);
    }
  }));

Deno.test("probeMasterKeys: missing, denied, unavailable and broken keys are told apart", async () => {
  const kms = new MemoryKms({
    a: crypto.getRandomValues(new Uint8Array(32)),
    b: crypto.getRandomValues(new Uint8Array(32)),
  });
  kms.denied.add("b");
  assert.deepEqual(await probeMasterKeys(kms, ["a", "a"]), []);
  const f = await probeMasterKeys(kms, ["a", "b", "c"]);
  assert.deepEqual(f.map((x) => [x.masterKeyId, x.problem]), [["b", "denied"], ["c", "missing"]]);
  kms.down = true;
  assert.deepEqual((await probeMasterKeys(kms, ["a"])).map((x) => x.problem), ["unavailable"]);
  // A KMS that returns other bytes than it was given.
  const liar: KmsClient = {
    wrapKey: () => Promise.resolve("w"),
    unwrapKey: () => Promise.resolve(new Uint8Array(16)),
  };
  assert.deepEqual((await probeMasterKeys(liar, ["x"])).map((x) => x.problem), ["broken"]);
});

Deno.test("openDataFolder: an unavailable KMS is a retryable KmsUnavailableError at start", () =>
  setup(async ({ config, data }) => {
    await openDataFolder(data, { configDir: config, create: true });
    const record = (await readDataFolderRecord(data))!;
    // The folder's KMS is a Vault nobody listens on (a port that was free a moment ago).
    const port = freePort();
    await Deno.writeTextFile(
      join(data, DATA_FOLDER_FILE),
      JSON.stringify({ ...record, kms: { kind: "vault", address: `http://127.0.0.1:${port}` } }),
    );
    const env = Deno.env.get("VAULT_TOKEN");
    Deno.env.set("VAULT_TOKEN", "test-token");
    try {
      await assert.rejects(openDataFolder(data, { configDir: config, needs: ["landing"] }), (e) => {
        assert.ok(e instanceof KmsUnavailableError, String(e));
        assert.equal(e.retryable, true);
        assert.match(e.message, /the KMS of data folder .* is unavailable/);
        return true;
      });
    } finally {
      if (env === undefined) Deno.env.delete("VAULT_TOKEN");
      else Deno.env.set("VAULT_TOKEN", env);
    }
  }));
