/**
 * The conversion's memory does not grow with its input: a probe (`fixtures/convert_memory_probe.ts`, in
 * a subprocess with `--expose-gc`) converts about 100 MB of food-log Observations, in process and with
 * workers, with and without the row cache, sampling the JS heap and external memory (ArrayBuffers) after
 * full garbage collections. The peaks must stay far below the input size: the id index, the batches in
 * flight, the row cache (rows only, within its budget) and `maxBufferedRows` rows are all that may stay.
 * The probe also counts how often the input is read: once when the rows fit the cache, else twice.
 *
 * @module
 */

import assert from "node:assert";

const CASES: { workers: number; rowCacheBytes?: number; reads: number }[] = [
  { workers: 0, reads: 1 },
  { workers: 2, reads: 1 },
  { workers: 0, rowCacheBytes: 0, reads: 2 },
  { workers: 2, rowCacheBytes: 2_000_000, reads: 2 },
];

for (const c of CASES) {
  const name = `workers ${c.workers}, row cache ${c.rowCacheBytes ?? "default"}`;
  Deno.test(`convert: memory stays bounded while converting ~100 MB of NDJSON (${name})`, async () => {
    const args = ["run", "-A", "--v8-flags=--expose-gc", "tests/fixtures/convert_memory_probe.ts"];
    args.push(String(c.workers), ...(c.rowCacheBytes === undefined ? [] : [String(c.rowCacheBytes)]));
    const out = await new Deno.Command(Deno.execPath(), { args, stdin: "null" }).output();
    const td = new TextDecoder();
    assert.strictEqual(out.code, 0, td.decode(out.stderr));
    const { mb, reads, heap, external, rows } = JSON.parse(td.decode(out.stdout).trim().split("\n").pop()!);
    console.log(
      `input ${mb.toFixed(0)} MB read ${reads}×; peak growth: heap ${heap.toFixed(1)} MB, ` +
        `external ${external.toFixed(1)} MB`,
    );
    assert.strictEqual(rows, 30_000);
    assert.ok(mb > 90, "a sizeable input");
    assert.strictEqual(reads, c.reads, "inputs are read again only when their rows did not fit the cache");
    // Measured: heap 12–20 MB (the id index of 30 000 ids, batches, buffered rows), external 10–14 MB
    // (batches in flight, column buffers, the cached rows). Keeping the batches' text (e.g. ids sliced
    // from it) or the parsed resources would cost the whole input.
    assert.ok(heap < 40, `heap growth ${heap.toFixed(1)} MB for ${mb.toFixed(0)} MB of input`);
    assert.ok(external < 40, `external growth ${external.toFixed(1)} MB for ${mb.toFixed(0)} MB of input`);
  });
}
