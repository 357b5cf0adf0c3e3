/**
 * The conversion's plumbing: ordered batch pipelines (results consumed in submission order, bounded in
 * flight, rejections at their turn), reading ahead (bounded, errors in order, early stop closes the
 * source), the row cache's budget (inputs kept whole or dropped), the dedupe winner masks, the batch
 * encoding of lines (UTF-8 round trip, lone surrogates kept as text) and the batches cut from byte
 * chunks (any chunk boundaries, line numbers, sizes, invalid UTF-8 named by line).
 *
 * @module
 */

import assert from "node:assert";
import { type BatchResult, resultBytes } from "../fhir/convert/batch_work.ts";
import {
  byteBatches,
  decodeBatch,
  type EncodedBatch,
  lineBatches,
  lineSource,
} from "../fhir/convert/batches.ts";
import { ConvertInputError } from "../fhir/convert/errors.ts";
import { DedupeIndex } from "../fhir/convert/dedupe.ts";
import { inIndexOrderOfFailure, ordered, readAhead } from "../fhir/convert/pipeline.ts";
import { RowCache } from "../fhir/convert/row_cache.ts";
import { ColumnsBuilder } from "../fhir/views/columns.ts";

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function* items<T>(values: readonly T[]): AsyncGenerator<T> {
  yield* values;
}

Deno.test("ordered: results in submission order, at most inFlight pending, skips", async () => {
  const consumed: number[] = [];
  let pending = 0;
  let maxPending = 0;
  await ordered(items([1, 2, 3, 4, 5, 6, 7, 8]), 3, (n) => {
    if (n === 5) return undefined;
    pending++;
    maxPending = Math.max(maxPending, pending);
    // Later items finish first.
    return delay(40 - 4 * n).then(() => {
      pending--;
      return n * 10;
    });
  }, (r) => {
    consumed.push(r);
  });
  assert.deepStrictEqual(consumed, [10, 20, 30, 40, 60, 70, 80]);
  assert.ok(maxPending <= 3, `at most 3 pending (${maxPending})`);
});

Deno.test("ordered: a rejection surfaces at its turn, later ones are not unhandled", async () => {
  const consumed: number[] = [];
  await assert.rejects(
    ordered(items([1, 2, 3, 4]), 4, (n) => {
      if (n >= 3) return Promise.reject(new Error(`bad ${n}`));
      return delay(20).then(() => n);
    }, (r) => {
      consumed.push(r);
    }),
    /bad 3/,
  );
  assert.deepStrictEqual(consumed, [1, 2]);
  await delay(10); // an unhandled rejection of "bad 4" would fail the test here
});

Deno.test("readAhead: pulls ahead while the consumer is busy; errors in order; early stop closes", async () => {
  let produced = 0;
  let closed = false;
  async function* source() {
    try {
      for (let i = 0; i < 10; i++) {
        produced++;
        if (i === 7) throw new Error("source failed at 7");
        yield i;
      }
    } finally {
      closed = true;
    }
  }
  const got: number[] = [];
  const it = readAhead(source(), 3)[Symbol.asyncIterator]();
  got.push((await it.next()).value as number);
  await delay(10);
  assert.ok(produced >= 3 && produced <= 5, `read ahead, bounded (${produced})`);
  await assert.rejects(async () => {
    for (;;) {
      const r = await it.next();
      if (r.done) break;
      got.push(r.value);
    }
  }, /source failed at 7/);
  assert.deepStrictEqual(got, [0, 1, 2, 3, 4, 5, 6]);
  assert.ok(closed);

  closed = false;
  produced = 0;
  for await (const x of readAhead(source(), 2)) if (x === 1) break;
  assert.ok(closed, "stopping early closes the source");
  assert.ok(produced <= 4);
});

function result(input: number, firstLine: number, rows: number): BatchResult {
  const b = new ColumnsBuilder([{ name: "s", type: "string", collection: false }], rows);
  for (let i = 0; i < rows; i++) b.appendRow([`value ${i}`]);
  return {
    input,
    firstLine,
    count: rows,
    views: [{
      rows: b.finish(),
      dates: ["2025-01-01"],
      partitions: new Int32Array(rows),
      lines: Int32Array.from({ length: rows }, (_, i) => i),
    }],
    errors: [],
  };
}

Deno.test("row cache: inputs are kept whole within the budget, else dropped", () => {
  const size = resultBytes(result(0, 1, 100));
  const cache = new RowCache(Math.floor(size * 3.5));
  assert.ok(cache.wants(0));
  cache.add(0, result(0, 1, 100));
  cache.add(0, result(0, 101, 100));
  assert.strictEqual(cache.used, 2 * size);
  // Input 1 does not fit: what was kept of it is dropped, and it is not wanted any more.
  cache.add(1, result(1, 1, 100));
  assert.ok(cache.wants(1));
  cache.add(1, result(1, 101, 100));
  assert.ok(!cache.wants(1));
  cache.add(1, result(1, 201, 1));
  assert.strictEqual(cache.used, 2 * size);
  // Input 2 started keyed only: never kept.
  cache.add(2, null);
  cache.add(2, result(2, 1, 1));
  assert.ok(cache.has(0) && !cache.has(1) && !cache.has(2));
  assert.deepStrictEqual([...cache.replay(0)].map((r) => r.firstLine), [1, 101]);
  assert.strictEqual(cache.used, 0);
  assert.ok(!cache.has(0));
  assert.throws(() => [...cache.replay(1)], /not in the row cache/);
  const none = new RowCache(0);
  assert.ok(!none.wants(0));
});

Deno.test("dedupe: winner masks mark the winning lines per input", () => {
  const index = new DedupeIndex();
  index.addLine("a", 1000, "1", undefined, 0, 1);
  index.addLine("b", 1000, "1", undefined, 0, 2);
  index.addLine("a", 2000, "2", undefined, 1, 1); // newer version of a, in input 1
  index.addLine("c", 1000, "1", "sys|e1", 1, 3);
  index.addLine("d", 1500, "1", "sys|e1", 1, 4); // re-upload of c's entry, created later
  index.finish();
  assert.deepStrictEqual([...index.winnerMask(0, 1, 3)], [0, 1, 0]);
  assert.deepStrictEqual([...index.winnerMask(1, 1, 5)], [1, 0, 1, 0, 0]);
  assert.ok(index.isWinnerLine(1, 3) && !index.isWinnerLine(1, 4) && !index.isWinnerLine(2, 1));
  assert.deepStrictEqual(index.stats, { lines: 5, ids: 4, supersededLines: 1, reuploadsDropped: 1 });
});

Deno.test("batches: lines round-trip through UTF-8; a lone surrogate keeps the batch as text", async () => {
  const lines = ['{"a":"é☃🍎"}', "", "  ", '{"b":1}', "x".repeat(150), "y".repeat(20), "z"];
  const batches = [];
  for await (const b of lineBatches(items(lines), 3, 100)) batches.push(b);
  assert.deepStrictEqual(batches.map((b) => [b.firstLine, b.count]), [[1, 5], [6, 2]]);
  const back: string[] = [];
  for (const b of batches) {
    assert.ok(b.bytes && b.text === undefined);
    const d = decodeBatch(b);
    assert.strictEqual(d.input, 3);
    let start = 0;
    for (const end of d.ends) {
      back.push(d.text.slice(start, end));
      start = end + 1;
    }
  }
  assert.deepStrictEqual(back, lines);
  const lone = ['{"a":"\ud800"}', '{"b":2}'];
  const [b] = await Array.fromAsync(lineBatches(items(lone), 0));
  assert.ok(b.text !== undefined && b.bytes === undefined);
  assert.strictEqual(decodeBatch(b).text, lone.join("\n"));
});

/** The lines of byte batches, through both decoders (line by line, and the batch as text). */
function linesOf(batches: readonly EncodedBatch[]): { viaSource: string[]; viaText: string[] } {
  const viaSource: string[] = [];
  const viaText: string[] = [];
  for (const b of batches) {
    const src = lineSource(b);
    for (let i = 0; i < src.count; i++) viaSource.push(src.line(i));
    const d = decodeBatch(b);
    let start = 0;
    for (const end of d.ends) {
      viaText.push(d.text.slice(start, end));
      start = end + 1;
    }
    assert.strictEqual(start, d.text.length + 1);
  }
  return { viaSource, viaText };
}

Deno.test("byteBatches: the same lines whatever the chunk boundaries; line numbers; batch sizes", async () => {
  const lines = ['{"a":"é☃🍎"}', "", "  ", '{"b":1}\r', "x".repeat(150), "y".repeat(20), "z", "{}"];
  const bytes = new TextEncoder().encode(lines.join("\n") + "\n");
  // Every way to cut the input in two, and into 1-byte chunks (splitting multi-byte characters).
  const cuts: Uint8Array[][] = [];
  for (let at = 0; at <= bytes.length; at++) cuts.push([bytes.subarray(0, at), bytes.subarray(at)]);
  cuts.push(Array.from(bytes, (b) => new Uint8Array([b])));
  for (const chunks of cuts) {
    const batches = await Array.fromAsync(byteBatches(items(chunks), 4, 100));
    // A batch ends at the first line end at or past 100 bytes.
    assert.deepStrictEqual(batches.map((b) => [b.input, b.firstLine, b.count]), [[4, 1, 5], [4, 6, 3]]);
    for (const b of batches) {
      assert.strictEqual(b.byteEnds!.length, b.count);
      assert.strictEqual(b.bytes!.buffer.byteLength >= b.bytes!.length, true);
    }
    const { viaSource, viaText } = linesOf(batches);
    assert.deepStrictEqual(viaSource, lines);
    assert.deepStrictEqual(viaText, lines);
    assert.deepStrictEqual(
      batches.flatMap((b) => Array.from({ length: b.count }, (_, i) => lineSource(b).blank(i))),
      [false, true, true, false, false, false, false, false],
    );
  }
  // A last line without LF counts; an empty input gives no batch; one line larger than a batch is whole.
  const noLf = await Array.fromAsync(byteBatches(items([new TextEncoder().encode('{"a":1}\n{"b":2}')]), 0));
  assert.deepStrictEqual(linesOf(noLf).viaSource, ['{"a":1}', '{"b":2}']);
  assert.deepStrictEqual(await Array.fromAsync(byteBatches(items([new Uint8Array(0)]), 0)), []);
  const huge = "h".repeat(5000);
  const big = await Array.fromAsync(
    byteBatches(items([new TextEncoder().encode(`a\n${huge}\nb\n`)]), 0, 64),
  );
  assert.deepStrictEqual(big.map((b) => [b.firstLine, b.count]), [[1, 2], [3, 1]]);
  assert.deepStrictEqual(linesOf(big).viaSource, ["a", huge, "b"]);
});

Deno.test("byteBatches: a line that is not UTF-8 fails with its line number; U+FFFD itself is fine", async () => {
  const good = new TextEncoder().encode('{"a":"\uFFFD ok"}\n');
  const bad = new Uint8Array([
    ...new TextEncoder().encode('{"a":"'),
    0xc3,
    0x28,
    ...new TextEncoder().encode('"}\n'),
  ]);
  const [b] = await Array.fromAsync(byteBatches(items([good, good, bad, good]), 2, 1 << 20));
  const src = lineSource(b);
  assert.strictEqual(src.line(1), '{"a":"\uFFFD ok"}');
  for (const read of [() => src.line(2), () => decodeBatch(b)]) {
    assert.throws(read, (e: unknown) => {
      assert.ok(e instanceof ConvertInputError);
      assert.strictEqual(e.input, 2);
      assert.strictEqual(e.line, 3);
      assert.match(e.message, /not valid UTF-8/);
      return true;
    });
  }
  assert.strictEqual(src.line(3), '{"a":"\uFFFD ok"}');
});

Deno.test("inIndexOrderOfFailure: the failure of the smallest index wins, whatever the timing", async () => {
  const started: number[] = [];
  const finished: number[] = [];
  let stoppedSeen = false;
  await assert.rejects(
    inIndexOrderOfFailure(6, 2, async (k, stopped) => {
      started.push(k);
      if (k === 1) {
        await delay(40);
        throw new Error("item 1");
      }
      if (k === 2) throw new Error("item 2"); // fails first
      for (let i = 0; i < 10; i++) {
        await delay(5);
        if (stopped()) {
          stoppedSeen = true;
          return;
        }
      }
      finished.push(k);
    }),
    /item 1/,
  );
  assert.ok(!started.includes(4) && !started.includes(5), `nothing after the failure starts (${started})`);
  assert.ok(finished.includes(0), "earlier items run to the end");
  assert.ok(stoppedSeen || !started.includes(3), "a later running item is asked to stop");
  await inIndexOrderOfFailure(3, 2, async () => {});
});

Deno.test("dedupe: the winners do not depend on the order pass 1 sees the lines", () => {
  const lines: [string, number, string, string | undefined, number, number][] = [
    ["a", 1000, "1", undefined, 0, 1],
    ["a", 1000, "1", undefined, 1, 5], // the same version redelivered: the first occurrence wins
    ["b", 2000, "2", "sys|e", 0, 2],
    ["b", 1000, "1", "sys|e", 1, 1],
    ["c", 1500, "1", "sys|e", 0, 3], // re-upload, created later than b
    ["d", 1000, "x", undefined, 1, 2],
    ["d", 1000, "y", undefined, 0, 4], // text versions: "y" wins
  ];
  const masks = (order: typeof lines) => {
    const index = new DedupeIndex();
    for (const l of order) index.addLine(...l);
    index.finish();
    return [[...index.winnerMask(0, 1, 4)], [...index.winnerMask(1, 1, 5)], index.stats];
  };
  const want = masks(lines);
  assert.deepStrictEqual(want, [[1, 1, 0, 1], [0, 0, 0, 0, 0], {
    lines: 7,
    ids: 4,
    supersededLines: 3,
    reuploadsDropped: 1,
  }]);
  for (let seed = 1; seed < 30; seed++) {
    const shuffled = lines.map((l, i) => [((i + 1) * seed * 7919) % 101, l] as const).sort((x, y) =>
      x[0] - y[0]
    )
      .map((x) => x[1]);
    assert.deepStrictEqual(masks(shuffled), want, `order ${seed}`);
  }
});
