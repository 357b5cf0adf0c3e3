/**
 * The per-file paths that small files depend on: the file sink's growing buffer keeps bytes in
 * order for every write size, a file opened in the background reports its open failure on close,
 * small input files read whole serve the same bytes and errors as positioned reads, and column
 * keys are requested a few at a time.
 *
 * @module
 */

import assert from "node:assert";
import * as arrow from "apache-arrow";
import * as pw from "parquet-wasm";
import { FileSink, fileSource } from "../pme/io.ts";
import { bytesSource, MemorySink, ParquetReader, PmeFormatError, transcode } from "../pme/mod.ts";

function pattern(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
}

Deno.test("FileSink: writes of every size land in order, whatever the buffer size and open mode", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const sizes = [0, 1, 10, 70_000, 3, 200_000, 1 << 20, 5, (1 << 20) + 7, 900_000, 64 << 10, 2];
    let n = 0;
    for (const bufferSize of [undefined, 100, 65_536, 1 << 20]) {
      for (const background of [false, true]) {
        const path = `${dir}/f${n++}`;
        const options = { durable: false, bufferSize };
        const open = () => Deno.open(path, { write: true, create: true, truncate: true });
        const sink = bufferSize === undefined
          ? (background ? FileSink.createInBackground(path, options) : await FileSink.create(path, options))
          : new FileSink(background ? open() : await open(), options);
        const parts = sizes.map((s, i) => pattern(s, i));
        for (const p of parts) await sink.write(p);
        await sink.close();
        const expected = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
        let at = 0;
        for (const p of parts) {
          expected.set(p, at);
          at += p.length;
        }
        assert.strictEqual(sink.position, expected.length);
        const got = await Deno.readFile(path);
        assert.strictEqual(got.length, expected.length, `${path} buffer ${bufferSize}`);
        assert.ok(got.every((b, i) => b === expected[i]), `${path} buffer ${bufferSize}`);
        if (bufferSize === undefined) assert.strictEqual((await Deno.stat(path)).mode! & 0o777, 0o600);
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("FileSink.createInBackground: an open failure is reported by close", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const sink = FileSink.createInBackground(`${dir}/missing/dir/f`, { durable: false });
    await sink.write(new Uint8Array(10)); // buffered: does not need the file yet
    await assert.rejects(() => sink.close(), Deno.errors.NotFound);
    const big = FileSink.createInBackground(`${dir}/missing/g`, { durable: false });
    await assert.rejects(() => big.write(new Uint8Array(2 << 20)), Deno.errors.NotFound);
    await assert.rejects(() => big.close(), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fileSource: small files read whole and large ones read by position give the same bytes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const size of [12, 1000, 256 << 10, (256 << 10) + 1, 600_000]) {
      const data = pattern(size, size);
      const path = `${dir}/s${size}`;
      await Deno.writeFile(path, data);
      const source = await fileSource(path);
      try {
        assert.strictEqual(source.size, size);
        assert.strictEqual(source.name, path);
        for (const [offset, length] of [[0, 4], [size - 8, 8], [size >> 1, size >> 2], [0, size]]) {
          assert.deepStrictEqual(await source.read(offset, length), data.subarray(offset, offset + length));
        }
        await assert.rejects(async () => await source.read(size - 4, 8), PmeFormatError);
      } finally {
        source.close();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("column keys are requested from the retriever at most four at a time", async () => {
  const columns: Record<string, Int32Array> = {};
  for (let c = 0; c < 10; c++) columns[`c${c}`] = Int32Array.from({ length: 10 }, (_, i) => i * c);
  const plain = pw.writeParquet(
    pw.Table.fromIPCStream(arrow.tableToIPC(arrow.tableFromArrays(columns), "stream")),
  );
  const te = new TextEncoder();
  const keyOf = (name: string) => new Uint8Array(16).fill(name === "f" ? 1 : Number(name.slice(1)) + 2);
  const sink = new MemorySink();
  await transcode(await ParquetReader.open(bytesSource(plain)), sink, {
    encryption: {
      footerKey: keyOf("f"),
      footerKeyMetadata: te.encode("f"),
      columnKeys: Object.fromEntries(
        Object.keys(columns).map((c) => [c, { key: keyOf(c), keyMetadata: te.encode(c) }]),
      ),
    },
  });
  let inFlight = 0;
  let most = 0;
  const asked: string[] = [];
  const keyRetriever = async (meta: Uint8Array) => {
    const name = new TextDecoder().decode(meta);
    asked.push(name);
    most = Math.max(most, ++inFlight);
    await new Promise((r) => setTimeout(r, 2));
    inFlight--;
    if (name === "c3") throw new Error("KMS down");
    return keyOf(name);
  };
  const reader = await ParquetReader.open(bytesSource(sink.bytes()), { keyRetriever });
  // The first failure in column order is the one reported, whatever finishes first.
  await assert.rejects(() => transcode(reader, new MemorySink()), /KMS down/);
  assert.strictEqual(most, 4);
  // Asked in column order (those after the failure may still be pending when it is reported).
  const columnsAsked = asked.filter((n) => n !== "f");
  assert.ok(columnsAsked.length >= 4);
  assert.deepStrictEqual(columnsAsked, Object.keys(columns).slice(0, columnsAsked.length));
  while (inFlight > 0 || asked.length < 11) await new Promise((r) => setTimeout(r, 2)); // the rest settle
  // Without the failing column the transcode completes with every column.
  const ok = await transcode(
    await ParquetReader.open(bytesSource(sink.bytes()), {
      keyRetriever: (m) => Promise.resolve(keyOf(new TextDecoder().decode(m))),
    }),
    new MemorySink(),
  );
  assert.strictEqual(ok.columns.length, 10);
});
