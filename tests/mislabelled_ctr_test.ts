/**
 * Pitfall P1: Arrow C++ up to pyarrow 25 wrote AES_GCM_V1 into the plaintext footer of files whose
 * pages are AES_GCM_CTR_V1. Such files fail with a hint naming the cause, and read correctly with
 * `assumeCtrPages`. The file is made by re-labelling (and re-signing) a CTR file we wrote, exactly
 * as the old Arrow writer labelled it.
 *
 * @module
 */

import assert from "node:assert";
import { join } from "node:path";
import {
  bytesSource,
  MemorySink,
  openParquetFile,
  ParquetReader,
  PmeAuthError,
  transcode,
  transcodeFile,
} from "../pme/mod.ts";
import { AesKey, signFooter } from "../pme/cipher.ts";
import { moduleAad, ModuleType } from "../pme/aad.ts";
import { ALG, FMD } from "../pme/metadata.ts";
import { CT, encodeStruct, TStruct } from "../pme/thrift.ts";
import { duckdbInputs } from "./fixtures/inputs.ts";
import { assertSameRows } from "./fixtures/compare.ts";
import { withTempDir } from "./fixtures/tmp.ts";

const KEY = new Uint8Array(16).map((_, i) => i + 1);

Deno.test("CTR pages under a footer that says AES_GCM_V1 (old Arrow C++) read with assumeCtrPages", async () => {
  await withTempDir(async (dir) => {
    const [input] = await duckdbInputs(dir);
    const ctr = join(dir, "ctr.parquet");
    await transcodeFile(input.file, ctr, {}, {
      encryption: { footerKey: KEY, algorithm: "AES_GCM_CTR_V1", plaintextFooter: true },
      durable: false,
    });
    // Relabel: field 8 AES_GCM_CTR_V1 → AES_GCM_V1 (same parameters), created_by as Arrow C++, re-sign.
    const reader = await openParquetFile(ctr, { footerKey: KEY });
    const fmd = reader.metadata.clone();
    const alg = fmd.struct(FMD.encryptionAlgorithm)!;
    const params = alg.struct(ALG.gcmCtrV1)!;
    fmd.setStruct(FMD.encryptionAlgorithm, new TStruct().setStruct(ALG.gcmV1, params));
    fmd.set(FMD.createdBy, CT.BINARY, new TextEncoder().encode("parquet-cpp-arrow version 19.0.0"));
    const footer = encodeStruct(fmd);
    const sig = await signFooter(
      await AesKey.import(KEY),
      footer,
      moduleAad(reader.fileAad!, ModuleType.Footer),
    );
    const original = await Deno.readFile(ctr);
    const bodyEnd = original.length - 8 - (reader.footerBytes.length + 28);
    reader.close();
    const tail = new Uint8Array(8);
    new DataView(tail.buffer).setUint32(0, footer.length + 28, true);
    tail.set(new TextEncoder().encode("PAR1"), 4);
    const relabelled = new Uint8Array([...original.subarray(0, bodyEnd), ...footer, ...sig, ...tail]);

    // Without the option: a clear authentication error that names the likely cause.
    const plainReader = await ParquetReader.open(bytesSource(relabelled, "relabelled.parquet"), {
      footerKey: KEY,
    });
    await assert.rejects(
      () => transcode(plainReader, new MemorySink()),
      (e: unknown) => e instanceof PmeAuthError && /assumeCtrPages/.test(e.message) && e.location.page === 0,
    );
    // With it: the data comes back intact.
    const fixed = await ParquetReader.open(bytesSource(relabelled, "relabelled.parquet"), {
      footerKey: KEY,
      assumeCtrPages: true,
    });
    const sink = new MemorySink();
    await transcode(fixed, sink);
    const out = join(dir, "out.parquet");
    await Deno.writeFile(out, sink.bytes());
    await assertSameRows(input.file, out);
  });
});
