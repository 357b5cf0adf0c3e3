/**
 * Thrift compact codec: byte-exact round trips of real footers (every vector and every generated
 * input), preservation of unknown fields and non-canonical encodings, tolerance of parquet-java's
 * zero padding, and typed errors on malformed input.
 *
 * @module
 */

import assert from "node:assert";
import { join } from "node:path";
import { bytesSource, openParquetFile, ParquetReader, PmeFormatError } from "../pme/mod.ts";
import { CT, decodeStruct, encodeStruct, TStruct } from "../pme/thrift.ts";
import { allInputs } from "./fixtures/inputs.ts";
import { withTempDir } from "./fixtures/tmp.ts";
import { VECTOR_KEYS, VECTORS, VECTORS_DIR } from "./fixtures/vectors.ts";

const te = new TextEncoder();

function roundTrips(bytes: Uint8Array, what: string) {
  const { struct, length } = decodeStruct(bytes, 0, what);
  assert.strictEqual(length, bytes.length, `${what}: decoder consumed ${length} of ${bytes.length} bytes`);
  assert.deepStrictEqual(encodeStruct(struct), bytes, `${what}: re-serialised bytes differ`);
}

Deno.test("decrypted footers of every parquet-testing vector re-serialise to the same bytes", async () => {
  for (const v of VECTORS) {
    const keys = VECTOR_KEYS[v.keySet];
    const reader = await openParquetFile(join(VECTORS_DIR, v.file), {
      keyRetriever: (m) => Promise.resolve(keys[new TextDecoder().decode(m)] ?? null),
    });
    try {
      roundTrips(reader.footerBytes, v.file);
      // Column metadata decrypted from encrypted_column_metadata modules round-trips too.
      for (const c of reader.columns) {
        const cmd = await reader.columnMetaData(0, c.index);
        assert.deepStrictEqual(encodeStruct(decodeStruct(encodeStruct(cmd)).struct), encodeStruct(cmd));
      }
    } finally {
      reader.close();
    }
  }
});

Deno.test("footers written by pyarrow, DuckDB and parquet-wasm re-serialise to the same bytes", async () => {
  await withTempDir(async (dir) => {
    const inputs = await allInputs(dir);
    assert.ok(inputs.length >= 8, `expected inputs from all producers, got ${inputs.length}`);
    for (const input of inputs) {
      const reader = await openParquetFile(input.file);
      try {
        roundTrips(reader.footerBytes, input.file);
      } finally {
        reader.close();
      }
    }
  });
});

Deno.test("unknown fields, sets, maps, doubles, bool lists and long headers survive a round trip", () => {
  // Hand-written compact bytes with explicit (long) field headers where a delta would fit.
  roundTrips(
    new Uint8Array([
      0x15,
      0x04, // field 1, i32 2 (delta header)
      0x08,
      0xc8,
      0x01,
      0x02,
      0x68,
      0x69, // field 100, binary "hi" (long header)
      0x05,
      0xca,
      0x01,
      0x03, // field 101, i32 -2 (long header although a delta of 1 fits)
      0x00,
    ]),
    "hand-written struct",
  );
  const s = new TStruct()
    .setI32(1, 2)
    .set(100, CT.BINARY, te.encode("hi"))
    .set(101, CT.I32, -2)
    .set(102, CT.DOUBLE, 1.5)
    .set(103, CT.SET, {
      kind: "list",
      elemType: CT.TRUE,
      items: [true, false],
      boolBytes: [1, 0],
      setType: true,
    })
    .set(104, CT.MAP, { kind: "map", keyType: CT.BINARY, valType: CT.I32, entries: [[te.encode("k1"), 2]] })
    .set(105, CT.LIST, { kind: "list", elemType: CT.I64, items: [1n, -(2n ** 62n)], longSize: true })
    .set(106, CT.STRUCT, new TStruct().setBool(1, false).setBool(300, true));
  s.field(101)!.longHeader = true;
  const encoded = encodeStruct(s);
  roundTrips(encoded, "synthetic struct");
  const back = decodeStruct(encoded).struct;
  assert.strictEqual(back.int(1), 2);
  assert.strictEqual(back.str(100), "hi");
  assert.strictEqual(back.int(101), -2);
  assert.strictEqual(back.get(102), 1.5);
  assert.deepStrictEqual(back.list(103)?.items, [true, false]);
  assert.deepStrictEqual(back.list(103)?.boolBytes, [1, 0]);
  assert.deepStrictEqual(back.list(105)?.items, [1n, -(2n ** 62n)]);
  assert.strictEqual(back.struct(106)?.bool(300), true);
  // Editing a known field keeps the unknown ones, in order.
  back.setI32(1, 7);
  const again = decodeStruct(encodeStruct(back)).struct;
  assert.deepStrictEqual(again.fields.map((f) => f.id), [1, 100, 101, 102, 103, 104, 105, 106]);
  assert.strictEqual(again.int(1), 7);
  assert.strictEqual(again.str(100), "hi");
});

Deno.test("trailing zero padding after a struct is ignored (parquet-java encrypted Thrift)", () => {
  const s = new TStruct().setI32(1, 5).setBin(2, te.encode("abc"));
  const raw = encodeStruct(s);
  const padded = new Uint8Array(100);
  padded.set(raw);
  const { struct, length } = decodeStruct(padded);
  assert.strictEqual(length, raw.length);
  assert.strictEqual(struct.int(1), 5);
  assert.strictEqual(struct.str(2), "abc");
});

Deno.test("malformed Thrift gives PmeFormatError, never a crash or a huge allocation", () => {
  const good = encodeStruct(
    new TStruct().setI32(1, 5).setBin(2, te.encode("abcdef")).setStruct(3, new TStruct().setI64(1, 9)),
  );
  for (let cut = 0; cut < good.length; cut++) {
    assert.throws(() => decodeStruct(good.subarray(0, cut)), PmeFormatError, `truncated at ${cut}`);
  }
  assert.throws(() => decodeStruct(new Uint8Array([0x1d])), PmeFormatError); // unknown type 13
  assert.throws(() => decodeStruct(new Uint8Array([0x19, 0xf5, 0xff, 0xff, 0xff, 0x0f])), PmeFormatError); // 4G-element list
  assert.throws(() => decodeStruct(new Uint8Array([0x18, 0xff, 0xff, 0xff, 0x7f])), PmeFormatError); // binary past the end
  const deep = new Uint8Array(200).fill(0x1c); // struct in struct in struct ...
  assert.throws(() => decodeStruct(deep), PmeFormatError);
});

Deno.test("a footer that is not Thrift is reported with the file and module", async () => {
  const body = te.encode("PAR1" + "x".repeat(20));
  const file = new Uint8Array([...body, 0x08, 0, 0, 0, ...te.encode("PAR1")]);
  await assert.rejects(
    () => ParquetReader.open(bytesSource(file, "bad.parquet")),
    (e: unknown) =>
      e instanceof PmeFormatError && e.location.file === "bad.parquet" && e.location.module === "footer",
  );
});
