/**
 * Conversion in Deno Workers against conversion in process: for the same inputs both write the same
 * files (paths, partitions, row counts, row groups, schemas) with the same rows in the same order, the
 * same dedupe counters, and fail with the same typed error on a bad line. Inputs given as byte chunks
 * (cut anywhere, as landing segments are read) convert exactly as the same lines given as strings.
 * Small batches, files and buffers make many batches in flight, split partitions and early flushes.
 *
 * @module
 */

import assert from "node:assert";
import { join, relative } from "node:path";
import { CryptoFactory } from "../kms/crypto_factory.ts";
import { generate, GENERATED_RESOURCE_TYPES } from "../fhir/generator.ts";
import {
  convert,
  type ConvertInput,
  ConvertInputError,
  type ConvertOptions,
  loadProjectViews,
  MANIFEST_FILE,
  readLines,
} from "../fhir/convert/mod.ts";
import { ArrowConversionError } from "../fhir/views/arrow.ts";
import { MemoryKms } from "./fixtures/memory_kms.ts";
import { type Json, readLake, stableJson, walk } from "./fixtures/lake.ts";

const MASTER_KEYS = {
  "direct-identifier": "identity",
  "quasi-identifier": "quasi",
  "clinical": "clinical",
  "technical": null,
} as const;

const kms = new MemoryKms(Object.fromEntries(
  ["footer", "identity", "quasi", "clinical"].map((k) => [k, crypto.getRandomValues(new Uint8Array(16))]),
));
const factory = new CryptoFactory(() => kms);

function linesInput(type: string, lines: readonly string[]): ConvertInput {
  return {
    type,
    lines: async function* () {
      yield* lines;
    },
  };
}

/** `lines` as UTF-8 NDJSON in chunks of `chunkBytes` (cutting lines and characters anywhere). */
function bytesInput(type: string, lines: readonly (string | Uint8Array)[], chunkBytes = 777): ConvertInput {
  const parts = lines.map((l) => typeof l === "string" ? new TextEncoder().encode(l) : l);
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length + 1, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    all[at += p.length] = 10;
    at++;
  }
  return {
    type,
    bytes: async function* () {
      for (let i = 0; i < all.length; i += chunkBytes) yield all.slice(i, i + chunkBytes);
    },
  };
}

async function dataset(
  root: string,
): Promise<{ inputs: ConvertInput[]; byteInputs: ConvertInput[]; obs: string[] }> {
  const gen = join(root, "gen");
  await generate({
    patients: 30,
    days: 6,
    seed: "convert-workers",
    outDir: gen,
    enteredInErrorRate: 0.05,
    reuploadRate: 0.05,
    redeliveryRate: 0.05,
  });
  const obs: string[] = [];
  for await (const l of readLines(join(gen, "Observation.ndjson"))) obs.push(l);
  const third = Math.floor(obs.length / 3);
  const inputs: ConvertInput[] = GENERATED_RESOURCE_TYPES.filter((t) => t !== "Observation")
    .map((type) => ({ type, path: join(gen, `${type}.ndjson`) }));
  // Observations in three inputs (dedupe across inputs), one with blank lines.
  const parts = [obs.slice(0, third), ["", ...obs.slice(third, 2 * third), "  "], obs.slice(2 * third)];
  const byteInputs = [...inputs, ...parts.map((p) => bytesInput("Observation", p))];
  inputs.push(...parts.map((p) => linesInput("Observation", p)));
  return { inputs, byteInputs, obs };
}

function options(
  lakeDir: string,
  inputs: ConvertInput[],
  extra: Partial<ConvertOptions>,
): Promise<ConvertOptions> {
  return loadProjectViews("views").then((views) => ({
    inputs,
    views,
    lakeDir,
    factory,
    connection: {},
    masterKeys: MASTER_KEYS,
    footerMasterKey: "footer",
    rowGroupRows: 30,
    maxRowsPerFile: 50,
    maxBufferedRows: 300,
    runId: "same-run",
    conversionDate: "2030-06-15",
    durable: false,
    ...extra,
  }));
}

Deno.test("convert: workers and in process write the same lake", async () => {
  const root = await Deno.makeTempDir({ prefix: "convert-workers-" });
  try {
    const { inputs, byteInputs } = await dataset(root);
    const lakes: Record<string, string> = {};
    const results: Record<string, Awaited<ReturnType<typeof convert>>> = {};
    const runs: [string, Partial<ConvertOptions>, ConvertInput[]?][] = [
      ["inprocess", { workers: 0, batchBytes: 20_000 }],
      ["workers2", { workers: 2, batchBytes: 20_000 }],
      // No speculative evaluation: pass 1 only keys the lines, pass 2 reads and evaluates the winners.
      ["inprocess-nocache", { workers: 0, batchBytes: 20_000, rowCacheBytes: 0 }],
      ["workers2-nocache", { workers: 2, batchBytes: 20_000, rowCacheBytes: 0 }],
      // A small cache: speculation stops when it is full, and the inputs it could not hold are read again.
      ["workers2-smallcache", { workers: 2, batchBytes: 20_000, rowCacheBytes: 300_000 }],
      ["workers1-bigbatch", { workers: 1 }],
      // The Observations as byte chunks.
      ["inprocess-bytes", { workers: 0, batchBytes: 20_000 }, byteInputs],
      ["workers2-bytes", { workers: 2, batchBytes: 20_000 }, byteInputs],
      ["workers2-bytes-nocache", { workers: 2, batchBytes: 20_000, rowCacheBytes: 0 }, byteInputs],
    ];
    for (const [name, extra, given] of runs) {
      lakes[name] = join(root, name);
      results[name] = await convert(await options(lakes[name], given ?? inputs, extra));
    }
    const a = await readLake(factory, lakes.inprocess);
    const b = await readLake(factory, lakes.workers2);
    const c = await readLake(factory, lakes["workers1-bigbatch"]);

    // Same batches: the very same files, in the same order, with the same rows in the same order.
    const shape = (m: typeof a.manifest) =>
      m.files.map((f) => ({
        path: f.path,
        view: f.view,
        date: f.date,
        rows: f.rows,
        rowGroups: f.rowGroups,
      }));
    assert.deepStrictEqual(shape(b.manifest), shape(a.manifest));
    const others = await Promise.all(
      [
        "inprocess-nocache",
        "workers2-nocache",
        "workers2-smallcache",
        "inprocess-bytes",
        "workers2-bytes",
        "workers2-bytes-nocache",
      ].map((n) => readLake(factory, lakes[n])),
    );
    for (const o of others) {
      assert.deepStrictEqual(shape(o.manifest), shape(a.manifest));
      for (const [path, fa] of a.files) {
        assert.strictEqual(stableJson(o.files.get(path)!.rows), stableJson(fa.rows));
      }
    }
    assert.ok(a.manifest.files.length > 20, `many files (${a.manifest.files.length})`);
    assert.ok(a.manifest.files.some((f) => f.rows === 50), "a partition was split at maxRowsPerFile");
    assert.ok(a.manifest.files.some((f) => f.view === "food_log" && f.rows < 50), "an early or last flush");
    for (const [path, fa] of a.files) {
      const fb = b.files.get(path)!;
      assert.strictEqual(stableJson(fb.rows), stableJson(fa.rows), path);
      assert.deepStrictEqual(fb.fields, fa.fields, path);
      assert.deepStrictEqual(fb.columns, fa.columns, path);
    }
    assert.deepStrictEqual(results.workers2.run.rows, results.inprocess.run.rows);
    assert.deepStrictEqual(results.workers2.run.dedupe, results.inprocess.run.dedupe);
    assert.ok(results.inprocess.run.dedupe.Observation.supersededLines > 0);
    assert.ok(results.inprocess.run.dedupe.Observation.reuploadsDropped > 0);

    // Other batch sizes flush at other moments, but the rows per view and partition are the same.
    const byPartition = (lake: typeof a) => {
      const out: Record<string, string[]> = {};
      for (const f of lake.manifest.files) {
        (out[`${f.view}/${f.date}`] ??= []).push(...lake.files.get(f.path)!.rows.map((r) => stableJson(r)));
      }
      for (const k of Object.keys(out)) out[k].sort();
      return out;
    };
    assert.deepStrictEqual(byPartition(c), byPartition(a));
    assert.deepStrictEqual(results["workers1-bigbatch"].run.rows, results.inprocess.run.rows);

    // Types: the schema the views declare (spot checks) and the manifest's byte counts.
    const food = [...a.files.entries()].find(([p]) => p.startsWith("food_log/"))![1];
    const field = (name: string) => food.fields.find((f) => f.name === name)!;
    assert.strictEqual(field("kcal").type, "Float64");
    assert.strictEqual(field("kcal").metadata["fhir.type"], "decimal");
    assert.strictEqual(field("entry_id").type, "Utf8");
    assert.strictEqual(field("date").type, "Utf8");
    for (const f of a.manifest.files) {
      assert.strictEqual(f.bytes, (await Deno.stat(join(lakes.inprocess, f.path))).size, f.path);
    }
    for (const lake of Object.values(lakes)) {
      const onDisk = (await walk(lake)).map((p) => relative(lake, p)).filter((p) => p !== MANIFEST_FILE);
      const listed = JSON.parse(await Deno.readTextFile(join(lake, MANIFEST_FILE))).files.map((f: Json) =>
        f.path
      );
      assert.deepStrictEqual(onDisk.sort(), listed.sort(), "only listed files, no temporary ones");
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("convert: workers and in process fail alike on a bad line", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "convert-workers-err-" });
  try {
    const { obs } = await dataset(root);
    const food = obs.map((l) => JSON.parse(l)).filter((r: Json) =>
      r.code.coding.some((c: Json) => c.code === "9052-2") && r.status === "final"
    );
    const bad = '{"resourceType":"Observation",';
    const half = Math.floor(obs.length / 2);
    const cases: [string, (string | Uint8Array)[][], (e: unknown) => boolean][] = [
      [
        "not JSON (pass 1)",
        [[...obs.slice(0, 300), bad, ...obs.slice(300)]],
        (e) =>
          e instanceof ConvertInputError && e.input === 0 && e.line === 301 && /not JSON/.test(e.message),
      ],
      [
        // Inputs are read two at a time: the early bad line of input 1 is found first, but the error is
        // the first in input order, as when reading one input after the other.
        "the first bad line in input order (pass 1, two inputs)",
        [[...obs.slice(0, half), bad], [bad, ...obs.slice(half)]],
        (e) => e instanceof ConvertInputError && e.input === 0 && e.line === half + 1,
      ],
      [
        "a value that does not fit its column",
        [[
          ...obs,
          JSON.stringify({
            ...food[0],
            id: "bad-kcal",
            identifier: [{ system: "https://fhir-pme.example/identifier/log-entry", value: "bad-kcal" }],
            valueQuantity: { value: "lots" },
          }),
        ]],
        (e) =>
          e instanceof ConvertInputError && e.input === 0 && e.line === obs.length + 1 &&
          /view food_log: column kcal, row 0: expected a number, got string/.test(e.message) &&
          e.cause instanceof ArrowConversionError && e.cause.column === "kcal",
      ],
      [
        "bytes that are not UTF-8 (byte input only)",
        [[...obs.slice(0, 40), new Uint8Array([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x7d]), ...obs.slice(40)]],
        (e) =>
          e instanceof ConvertInputError && e.input === 0 && e.line === 41 &&
          /not valid UTF-8/.test(e.message),
      ],
    ];
    for (const [name, inputs, isExpected] of cases) {
      await t.step(name, async () => {
        const errors: unknown[] = [];
        const asBytes = inputs.some((lines) => lines.some((l) => typeof l !== "string"));
        const forms = asBytes ? [true] : [false, true];
        for (
          const [workers, rowCacheBytes, bytes] of forms.flatMap((b) =>
            [[0, undefined], [2, undefined], [0, 0], [2, 0]].map(([w, c]) => [w, c, b] as const)
          )
        ) {
          const lake = join(root, `${name.replace(/\W+/g, "-")}-${workers}-${rowCacheBytes}-${bytes}`);
          const given = inputs.map((lines) =>
            bytes ? bytesInput("Observation", lines) : linesInput("Observation", lines as string[])
          );
          const o = await options(lake, given, { workers, rowCacheBytes, batchBytes: 50_000 });
          await assert.rejects(convert(o), (e: unknown) => {
            errors.push(e);
            return isExpected(e);
          });
          const left = await walk(lake).catch(() => []);
          assert.ok(!left.some((p) => p.endsWith(MANIFEST_FILE)), "no manifest after a failure");
          assert.ok(!left.some((p) => p.split("/").pop()!.startsWith(".")), "no temporary file left");
        }
        const [a, ...rest] = errors as Error[];
        for (const b of rest) {
          assert.strictEqual(b.constructor, a.constructor);
          assert.strictEqual(b.message, a.message);
          assert.strictEqual((b.cause as Error)?.message, (a.cause as Error)?.message);
        }
      });
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("convert: workers option is validated", async () => {
  const o = await options("/nonexistent-lake", [], { workers: -1 });
  await assert.rejects(convert(o), /workers must be 0/);
  await assert.rejects(convert({ ...o, workers: 1.5 }), /workers must be 0/);
  await assert.rejects(convert({ ...o, workers: 0, batchBytes: 0 }), /batchBytes must be a positive integer/);
});

Deno.test("convert: an evaluation error of a line that loses the dedupe does not count", async () => {
  const root = await Deno.makeTempDir({ prefix: "convert-workers-loser-" });
  try {
    const { obs } = await dataset(root);
    const food = obs.map((l) => JSON.parse(l)).filter((r: Json) =>
      r.code.coding.some((c: Json) => c.code === "9052-2") && r.status === "final"
    );
    const good = food[0];
    // An older version of the same id with a value that does not fit: speculative evaluation fails on
    // it, but the newer version wins.
    const older = {
      ...good,
      meta: { ...good.meta, versionId: "0", lastUpdated: "2000-01-01T00:00:00Z" },
      valueQuantity: { value: "lots" },
    };
    const lines = [JSON.stringify(older), ...obs];
    const kcal: number[] = [];
    for (const [workers, rowCacheBytes] of [[0, undefined], [2, undefined], [0, 0], [2, 0]]) {
      const lake = join(root, `lake-${workers}-${rowCacheBytes}`);
      const r = await convert(
        await options(lake, [linesInput("Observation", lines)], {
          workers,
          rowCacheBytes,
          batchBytes: 50_000,
        }),
      );
      assert.ok(r.run.dedupe.Observation.supersededLines > 0);
      const { manifest, files } = await readLake(factory, lake);
      const rows = manifest.files.filter((f) => f.view === "food_log").flatMap((f) =>
        files.get(f.path)!.rows
      );
      kcal.push(rows.find((x) => x.entry_id === good.id)!.kcal);
    }
    assert.deepStrictEqual(kcal, [
      good.valueQuantity.value,
      good.valueQuantity.value,
      good.valueQuantity.value,
      good.valueQuantity.value,
    ]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
