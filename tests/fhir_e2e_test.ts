/**
 * The FHIR pipeline end to end through the CLI: `serve` as a subprocess (killed with SIGKILL at random
 * moments and restarted on the same data folder), resources sent over HTTP, `convert` as a subprocess,
 * and every lake file decrypted with the keys of the data folder's keystore.
 *
 * - crash safety: every acknowledged resource is in the lake exactly once, nothing never sent is;
 * - no clear PHI at rest: no line of the generator's `identifiers.txt` in any byte under the data folder
 *   (landing zone after ingest; lake and temporary folder after conversion);
 * - end to end: generate → `$import` → convert → decrypt: every food_log, body_weight and patients row
 *   equals the value computed here from the generated NDJSON (PROFILE.md §6 dedupe rules).
 *
 * Assertion messages name ids and counts only, never identifying values.
 *
 * @module
 */

import assert from "node:assert";
import { freePort } from "./fixtures/net.ts";
import { join, relative } from "node:path";
import * as arrow from "apache-arrow";
import * as pw from "parquet-wasm";
import type { CryptoFactory } from "../kms/crypto_factory.ts";
import { openDataFolder } from "../app/data_folder.ts";
import { fileSource, MemorySink, ParquetReader, transcode } from "../pme/mod.ts";
import { generate, GENERATED_RESOURCE_TYPES, IDENTIFIERS_FILE } from "../fhir/generator.ts";
import { type Manifest, MANIFEST_FILE, readLines } from "../fhir/convert/mod.ts";
import { Prng } from "../fhir/prng.ts";

// deno-lint-ignore no-explicit-any
type Json = Record<string, any>;

// Default keystores of the data folders made here (by `serve` on first use) go to a private folder of
// this test file, which the `serve`/`convert` subprocesses inherit.
const CONFIG_DIR = await Deno.makeTempDir({ prefix: "fhir-e2e-config-" });
Deno.env.set("FHIR_PME_CONFIG_DIR", CONFIG_DIR);
globalThis.addEventListener("unload", () => Deno.removeSync(CONFIG_DIR, { recursive: true }));

const LOG_ENTRY = "https://fhir-pme.example/identifier/log-entry";
const DIET_LOG = "https://fhir-pme.example/CodeSystem/diet-log";
const TOKEN = "e2e-test-token-0123456789abcdef";
const LIVE = new Set(["final", "amended", "corrected"]);

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) out.push(...await walk(p));
    else if (e.isFile) out.push(p);
  }
  return out;
}

async function readNdjson(path: string): Promise<Json[]> {
  const out: Json[] = [];
  for await (const l of readLines(path)) if (l) out.push(JSON.parse(l));
  return out;
}

function cliArgs(...args: string[]): string[] {
  return ["run", "--allow-all", "cli/main.ts", ...args];
}

/** Runs a CLI command to completion; asserts success. */
async function cli(env: Record<string, string>, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), { args: cliArgs(...args), env, stdin: "null" })
    .output();
  const td = new TextDecoder();
  assert.strictEqual(out.code, 0, `cli ${args[0]} failed: ${td.decode(out.stderr)}`);
  return td.decode(out.stdout);
}

/** A `serve` subprocess. */
class Server {
  readonly base: string;
  private constructor(readonly child: Deno.ChildProcess, port: number) {
    this.base = `http://127.0.0.1:${port}/fhir`;
  }

  static async start(data: string, clients: string): Promise<Server> {
    const port = freePort();
    const child = new Deno.Command(Deno.execPath(), {
      args: cliArgs("serve", "--data", data, "--port", String(port), "--clients", clients),
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const s = new Server(child, port);
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        const r = await fetch(`${s.base}/metadata`);
        await r.body?.cancel();
        if (r.ok) return s;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        await child.status;
        throw new Error("serve did not start");
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async kill9(): Promise<void> {
    this.child.kill("SIGKILL");
    await this.child.status;
  }

  async stop(): Promise<void> {
    this.child.kill("SIGTERM");
    const st = await this.child.status;
    assert.strictEqual(st.code, 0, "serve exits cleanly on SIGTERM");
  }
}

/** Decrypts a lake file in memory. */
async function readLakeFile(factory: CryptoFactory, path: string): Promise<Json[]> {
  const reader = await ParquetReader.open(
    await fileSource(path),
    factory.fileDecryptionProperties({}, {}, path),
  );
  try {
    const sink = new MemorySink();
    await transcode(reader, sink, {});
    const table = arrow.tableFromIPC(pw.readParquet(sink.bytes()).intoIPCStream());
    return table.toArray().map((r) => r.toJSON() as Json);
  } finally {
    reader.close();
  }
}

/** Every row of every view in DIR/lake, decrypted with the keys of the folder's recorded keystore. */
async function readLake(data: string): Promise<Record<string, Json[]>> {
  const lake = join(data, "lake");
  const factory = (await openDataFolder(data)).kms.factory;
  const manifest = JSON.parse(await Deno.readTextFile(join(lake, MANIFEST_FILE))) as Manifest;
  const rows: Record<string, Json[]> = {};
  for (const f of manifest.files) {
    const got = await readLakeFile(factory, join(lake, f.path));
    assert.strictEqual(got.length, f.rows, f.path);
    (rows[f.view] ??= []).push(...got);
  }
  return rows;
}

/** Asserts no line of identifiers.txt occurs in any byte of any file under `dirs`. */
async function assertNoPhi(identifiers: string[], dirs: string[], stage: string): Promise<number> {
  const te = new TextEncoder();
  const needles = identifiers.map((s) => te.encode(s));
  let files = 0;
  for (const dir of dirs) {
    for (const p of await walk(dir)) {
      files++;
      // latin1 maps every byte to one code unit, so a UTF-8 needle matches iff its bytes do.
      const hay = new TextDecoder("latin1").decode(await Deno.readFile(p));
      for (let i = 0; i < needles.length; i++) {
        const n = new TextDecoder("latin1").decode(needles[i]);
        assert.ok(!hay.includes(n), `${stage}: identifier #${i} found in ${relative(dir, p)}`);
      }
    }
  }
  return files;
}

function component(r: Json, system: string, code: string): Json | undefined {
  return r.component?.find((c: Json) =>
    c.code.coding.some((k: Json) => k.system === system && k.code === code)
  );
}

function logEntry(r: Json): string | undefined {
  return r.identifier?.find((i: Json) => i.system === LOG_ENTRY)?.value;
}

function isCode(r: Json, code: string): boolean {
  return r.code?.coding?.some((c: Json) => c.system === "http://loinc.org" && c.code === code) ?? false;
}

function foodRow(r: Json): unknown[] {
  return [
    r.id,
    r.subject.reference.replace(/^Patient\//, ""),
    logEntry(r),
    r.effectiveDateTime,
    component(r, DIET_LOG, "meal")!.valueCodeableConcept.coding[0].code,
    component(r, DIET_LOG, "food-item")!.valueCodeableConcept.text,
    r.valueQuantity.value,
    component(r, "http://loinc.org", "9079-5")!.valueQuantity.value,
    component(r, "http://loinc.org", "9059-7")!.valueQuantity.value,
    component(r, "http://loinc.org", "9066-2")!.valueQuantity.value,
    r.status,
    r.effectiveDateTime.slice(0, 10),
  ];
}

function gotFoodRow(row: Json): unknown[] {
  return [
    row.entry_id,
    row.patient_id,
    row.log_entry_id,
    row.time,
    row.meal,
    row.item,
    row.kcal,
    row.protein_g,
    row.carbohydrate_g,
    row.fat_g,
    row.status,
    row.date,
  ];
}

function dateText(v: unknown): unknown {
  if (v instanceof Date) return v.toISOString().slice(0, 10);
  if (typeof v === "number") return new Date(v).toISOString().slice(0, 10);
  return v;
}

/**
 * Winners in NDJSON order as the server stamps them: every accepted line gets a later version than the
 * lines before it, so per id the last line wins, and per log-entry identifier the id first seen wins.
 */
function winnersInSendOrder(lines: Json[]): Json[] {
  const latest = new Map<string, Json>();
  for (const r of lines) latest.set(r.id, r);
  const byEntry = new Map<string, string>();
  for (const r of lines) {
    const k = logEntry(r);
    if (k !== undefined && !byEntry.has(k)) byEntry.set(k, r.id);
  }
  return [...latest.values()].filter((r) => {
    const k = logEntry(r);
    return k === undefined || byEntry.get(k) === r.id;
  });
}

async function writeClients(dir: string): Promise<string> {
  const path = join(dir, "clients.json");
  await Deno.writeTextFile(path, JSON.stringify({ [TOKEN]: "e2e" }));
  return path;
}

const AUTH = { authorization: `Bearer ${TOKEN}` };

Deno.test("fhir e2e: generate → $import → convert → decrypt equals the generator; no PHI at rest", async () => {
  const root = await Deno.makeTempDir({ prefix: "fhir-e2e-" });
  try {
    const gen = join(root, "gen");
    const data = join(root, "data");
    const tmp = join(root, "tmpdir");
    await Deno.mkdir(tmp);
    const summary = await generate({
      patients: 8,
      days: 4,
      seed: "fhir-e2e",
      outDir: gen,
      enteredInErrorRate: 0.05,
      reuploadRate: 0.05,
      redeliveryRate: 0.05,
    });
    assert.ok(summary.enteredInError > 0 && summary.reuploads > 0 && summary.redelivered > 0);
    const identifiers = (await Deno.readTextFile(join(gen, IDENTIFIERS_FILE))).split("\n").filter((s) => s);
    assert.ok(identifiers.length > 8 * 5);

    const server = await Server.start(data, await writeClients(root));
    let stopped = false;
    try {
      for (const type of GENERATED_RESOURCE_TYPES) {
        const body = await Deno.readFile(join(gen, `${type}.ndjson`));
        const lines = new TextDecoder().decode(body).split("\n").filter((l) => l).length;
        const r = await fetch(`${server.base}/$import`, {
          method: "POST",
          headers: { ...AUTH, "content-type": "application/fhir+ndjson" },
          body,
        });
        await r.body?.cancel();
        assert.strictEqual(r.status, 200, `$import ${type}`);
        assert.strictEqual(r.headers.get("x-accepted-count"), String(lines), `$import ${type} accepted`);
        assert.strictEqual(r.headers.get("x-rejected-count"), "0", `$import ${type} rejected`);
      }
      // Open segments (server running) and sealed ones (after SIGTERM) both hold no clear PHI.
      await assertNoPhi(identifiers, [data], "while serving");
      await server.stop();
      stopped = true;
    } finally {
      if (!stopped) await server.kill9();
    }
    assert.ok(await assertNoPhi(identifiers, [data], "after ingest") > 1);

    await cli({ TMPDIR: tmp, TMP: tmp, TEMP: tmp }, "convert", "--data", data);
    assert.ok(await assertNoPhi(identifiers, [data, tmp], "after convert") > 5);
    for (const p of await walk(join(data, "lake"))) {
      const name = p.split("/").pop()!;
      assert.ok(!name.startsWith("."), `temporary file left in the lake: ${name}`);
      if (name === MANIFEST_FILE) continue;
      const bytes = await Deno.readFile(p);
      const magic = new TextDecoder().decode(bytes.subarray(0, 4)) +
        new TextDecoder().decode(bytes.subarray(-4));
      assert.strictEqual(magic, "PAREPARE", `${name} is not an encrypted-footer Parquet file`);
    }

    // Expectation straight from the NDJSON, in the order it was sent.
    const allObs = await readNdjson(join(gen, "Observation.ndjson"));
    const obs = winnersInSendOrder(allObs);
    const food = obs.filter((r) => isCode(r, "9052-2") && LIVE.has(r.status));
    const weights = obs.filter((r) => isCode(r, "29463-7") && LIVE.has(r.status));
    const patients = winnersInSendOrder(await readNdjson(join(gen, "Patient.ndjson")));
    assert.strictEqual(food.length, summary.foodEntries - summary.enteredInError);

    const rows = await readLake(data);

    const gotFood = new Map((rows.food_log ?? []).map((r) => [r.log_entry_id as string, r]));
    assert.strictEqual(gotFood.size, rows.food_log.length, "each app entry once in food_log");
    assert.strictEqual(rows.food_log.length, food.length, "food_log rows");
    // A re-upload stamped in the same millisecond as its original may win the tie (smallest id; see
    // fhir/convert/dedupe.ts), so the row's id is any id of the entry; the content is the same either way
    // as long as no entry has an entered-in-error version on one id only (checked).
    const idsOfEntry = new Map<string, Set<string>>();
    for (const r of allObs) {
      const k = logEntry(r)!;
      idsOfEntry.set(k, (idsOfEntry.get(k) ?? new Set()).add(r.id));
    }
    assert.ok([...idsOfEntry.values()].some((s) => s.size > 1), "data set has re-uploads");
    for (const r of allObs.filter((x) => x.status === "entered-in-error")) {
      assert.strictEqual(
        idsOfEntry.get(logEntry(r)!)!.size,
        1,
        "no re-upload of a deleted entry (ambiguous)",
      );
    }
    for (const r of food) {
      const row = gotFood.get(logEntry(r)!);
      assert.ok(row, `food entry ${r.id} missing`);
      assert.ok(idsOfEntry.get(logEntry(r)!)!.has(row.entry_id), `food_log id of ${r.id}`);
      assert.deepStrictEqual(gotFoodRow(row), foodRow({ ...r, id: row.entry_id }), `food_log row of ${r.id}`);
    }

    assert.strictEqual(rows.body_weight.length, weights.length, "body_weight rows");
    const gotW = new Map(rows.body_weight.map((r) => [r.observation_id as string, r]));
    for (const r of weights) {
      const row = gotW.get(r.id);
      assert.ok(row, `body weight ${r.id} missing`);
      assert.deepStrictEqual(
        [row.patient_id, row.time, row.weight_kg, row.status, row.date],
        [
          r.subject.reference.replace(/^Patient\//, ""),
          r.effectiveDateTime,
          r.valueQuantity.value,
          r.status,
          r.effectiveDateTime.slice(0, 10),
        ],
        `body_weight row of ${r.id}`,
      );
    }

    assert.strictEqual(rows.patients.length, patients.length, "patients rows");
    const gotP = new Map(rows.patients.map((r) => [r.patient_id as string, r]));
    for (const p of patients) {
      const row = gotP.get(p.id);
      assert.ok(row, `patient ${p.id} missing`);
      const a = p.address?.[0];
      const tel = (s: string) => p.telecom?.find((t: Json) => t.system === s)?.value ?? null;
      assert.deepStrictEqual(
        [
          row.user_number,
          row.family_name,
          row.given_names,
          row.phone,
          row.email,
          row.address_line,
          dateText(row.birth_date),
          row.city,
          row.state,
          row.postal_code,
          row.gender,
          row.active,
          row.managing_organization_id,
        ],
        [
          p.identifier.find((i: Json) => i.system === "https://fhir-pme.example/identifier/patient").value,
          p.name[0].family,
          p.name[0].given.join(" "),
          tel("phone"),
          tel("email"),
          a.line.join(", "),
          p.birthDate,
          a.city,
          a.state,
          a.postalCode,
          p.gender,
          p.active,
          p.managingOrganization.reference.replace(/^Organization\//, ""),
        ],
        `patients row of ${p.id}`,
      );
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("fhir e2e: serve killed with SIGKILL at random moments loses no acknowledged resource", async () => {
  const root = await Deno.makeTempDir({ prefix: "fhir-crash-" });
  try {
    const gen = join(root, "gen");
    const data = join(root, "data");
    await generate({
      patients: 40,
      days: 10,
      seed: "fhir-crash",
      outDir: gen,
      enteredInErrorRate: 0,
      reuploadRate: 0,
      redeliveryRate: 0,
    });
    const patients = await readNdjson(join(gen, "Patient.ndjson"));
    const food = (await readNdjson(join(gen, "Observation.ndjson"))).filter((r) => isCode(r, "9052-2"));
    const identifiers = (await Deno.readTextFile(join(gen, IDENTIFIERS_FILE))).split("\n").filter((s) => s);

    // Work queue: patients by PUT (client id, idempotent), food entries by POST (server id).
    type Item = { kind: "patient" | "food"; r: Json };
    const queue: Item[] = [
      ...patients.map((r) => ({ kind: "patient" as const, r })),
      ...food.map((r) => ({ kind: "food" as const, r })),
    ];
    const ackedPatients = new Set<string>();
    /** log-entry id → server ids acknowledged (201) for it. */
    const ackedFood = new Map<string, Set<string>>();
    /** log-entry ids with an attempt whose outcome is unknown (no response). */
    const unknownFood = new Set<string>();
    const clients = await writeClients(root);
    const seed = Date.now();
    console.log(`kill schedule seed ${seed}`);
    const rng = new Prng(seed);

    const send = async (base: string, it: Item): Promise<boolean> => {
      const { id: _id, meta: _meta, ...rest } = it.r;
      const isPatient = it.kind === "patient";
      const body = JSON.stringify(isPatient ? { ...rest, id: it.r.id } : rest);
      const url = isPatient ? `${base}/Patient/${it.r.id}` : `${base}/Observation`;
      const res = await fetch(url, {
        method: isPatient ? "PUT" : "POST",
        headers: { ...AUTH, "content-type": "application/fhir+json", prefer: "return=minimal" },
        body,
      });
      await res.body?.cancel();
      if (isPatient) {
        assert.ok(res.status === 200 || res.status === 201, `PUT Patient: ${res.status}`);
        ackedPatients.add(it.r.id);
      } else {
        assert.strictEqual(res.status, 201, "POST Observation");
        const id = /\/Observation\/([^/]+)\/_history\//.exec(res.headers.get("location") ?? "")?.[1];
        assert.ok(id, "Location names the new id");
        const k = logEntry(it.r)!;
        ackedFood.set(k, (ackedFood.get(k) ?? new Set()).add(id));
      }
      return true;
    };

    const ROUNDS = 6;
    let interrupted = 0;
    let next = 0;
    const retry: Item[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const server = await Server.start(data, clients);
      const killAfter = rng.int(50, 300);
      const killed = new Promise<void>((resolve) =>
        setTimeout(() => server.kill9().then(resolve), killAfter)
      );
      // Three concurrent clients; a request without a response is retried in a later round.
      const worker = async () => {
        for (;;) {
          const it = retry.shift() ?? (next < queue.length ? queue[next++] : undefined);
          if (!it) return;
          try {
            await send(server.base, it);
          } catch (e) {
            if (e instanceof assert.AssertionError) throw e;
            if (it.kind === "food") unknownFood.add(logEntry(it.r)!);
            retry.push(it);
            return;
          }
        }
      };
      await Promise.all([worker(), worker(), worker()]);
      if (next < queue.length || retry.length > 0) interrupted++;
      await killed;
    }
    // Final round: deliver the rest, then stop cleanly.
    const server = await Server.start(data, clients);
    try {
      const rest = [...retry.splice(0), ...queue.slice(next)];
      next = queue.length;
      for (let i = 0; i < rest.length; i += 8) {
        await Promise.all(rest.slice(i, i + 8).map((it) => send(server.base, it)));
      }
    } finally {
      await server.stop();
    }
    console.log(
      `${interrupted} of ${ROUNDS} rounds killed mid-stream; ${unknownFood.size} food POSTs unanswered`,
    );
    assert.ok(interrupted >= 5, `only ${interrupted} rounds were killed mid-stream`);
    assert.ok(ackedFood.size === food.length && ackedPatients.size === patients.length, "all delivered");
    await assertNoPhi(identifiers, [data], "after crashes");

    await cli({}, "convert", "--data", data);
    const rows = await readLake(data);

    // Patients: each acknowledged id exactly once, nothing else.
    const pids = rows.patients.map((r) => r.patient_id as string);
    assert.strictEqual(new Set(pids).size, pids.length, "each patient once");
    assert.deepStrictEqual(new Set(pids), ackedPatients);

    // Food: each acknowledged entry exactly once; its row's id is an acknowledged one unless some
    // attempt for the entry got no response (then that attempt may have been stored first).
    const byEntry = new Map<string, Json[]>();
    for (const r of rows.food_log) byEntry.set(r.log_entry_id, [...byEntry.get(r.log_entry_id) ?? [], r]);
    const sent = new Map(food.map((r) => [logEntry(r)!, r]));
    for (const k of byEntry.keys()) assert.ok(sent.has(k), "no food_log row for an entry never sent");
    for (const [k, ids] of ackedFood) {
      const got = byEntry.get(k) ?? [];
      assert.strictEqual(got.length, 1, `acknowledged entry ${[...ids][0]} rows`);
      const row = got[0];
      assert.ok(ids.has(row.entry_id) || unknownFood.has(k), `entry ${row.entry_id} was acknowledged`);
      assert.deepStrictEqual(gotFoodRow(row), foodRow({ ...sent.get(k)!, id: row.entry_id }));
    }
    assert.strictEqual(rows.food_log.length, food.length);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
