/**
 * The module-level transcoder: reads a Parquet file (plaintext or PME) through {@link ParquetReader}
 * and writes it again — encrypted with new keys, algorithm and footer mode, or as plaintext — without
 * decoding or re-compressing a single page. Page headers and payloads become encrypted modules,
 * column metadata is encrypted per column, offsets and sizes are recomputed, page indexes and bloom
 * filters are re-framed, and the footer is encrypted or signed. Memory is bounded by one column chunk
 * (plus the next one, prefetched, and a few pages in flight).
 *
 * Output layout: magic, column chunks row group by row group, column indexes, offset indexes, bloom
 * filters, footer (as parquet-java orders them).
 *
 * @module
 */

import { CT, encodeStruct, stringList, structList, type TList, TStruct } from "./thrift.ts";
import { type AesKey, encryptModule, type ModuleCipher, signFooter } from "./cipher.ts";
import { AAD_FILE_UNIQUE_LENGTH, fileAad, MAX_ORDINAL, moduleAad, ModuleType } from "./aad.ts";
import { PmeConfigError, PmeError, PmeFormatError, PmeUnsupportedError } from "./errors.ts";
import type { ByteSink } from "./io.ts";
import { locate, type ParquetReader } from "./reader.ts";
import {
  type AlgorithmInfo,
  algorithmStruct,
  CC,
  CCM,
  CMD,
  columnChunks,
  EWCK,
  FCM,
  FMD,
  OI,
  PageType,
  PL,
  pruneSchema,
  RG,
  rowGroups,
} from "./metadata.ts";
import { type ColumnPlan, planColumns } from "./plan.ts";
import { type FramedPage, framePage } from "./frame.ts";
import type { EncryptionOptions, TranscodeOptions, TranscodeResult } from "./options.ts";

export type { ColumnKey, EncryptionOptions, TranscodeOptions, TranscodeResult } from "./options.ts";

/** How many pages are framed (encrypted) concurrently. */
const PAGE_WINDOW = 4;

const te = new TextEncoder();

/** One written column chunk: its new metadata, chunk struct and data-page locations. */
interface ChunkOut {
  cmd: TStruct;
  chunk: TStruct;
  pageLocations: { offset: number; size: number }[];
}

/** The output file's crypto parameters (encrypted output only). */
interface OutputCrypto {
  enc: EncryptionOptions;
  footerKey: AesKey;
  algorithm: AlgorithmInfo;
  fileAad: Uint8Array;
  pageCipher: ModuleCipher;
}

function outputCrypto(
  enc: EncryptionOptions | undefined,
  footerKey: AesKey | undefined,
): OutputCrypto | undefined {
  if (!enc || !footerKey) return undefined;
  const algorithm = enc.algorithm ?? "AES_GCM_V1";
  if (algorithm !== "AES_GCM_V1" && algorithm !== "AES_GCM_CTR_V1") {
    throw new PmeConfigError(`unknown algorithm ${algorithm}`, {}, "use AES_GCM_V1 or AES_GCM_CTR_V1");
  }
  if (enc.storeAadPrefix === false && !enc.aadPrefix) {
    throw new PmeConfigError("not storing the AAD prefix needs an AAD prefix");
  }
  const store = enc.storeAadPrefix ?? true;
  const unique = enc.aadFileUnique ?? crypto.getRandomValues(new Uint8Array(AAD_FILE_UNIQUE_LENGTH));
  return {
    enc,
    footerKey,
    algorithm: {
      algorithm,
      aadPrefix: enc.aadPrefix && store ? enc.aadPrefix : undefined,
      aadFileUnique: unique,
      supplyAadPrefix: !!enc.aadPrefix && !store,
    },
    fileAad: fileAad(enc.aadPrefix, unique),
    pageCipher: algorithm === "AES_GCM_CTR_V1" ? "ctr" : "gcm",
  };
}

/**
 * ColumnMetaData fields a plaintext footer shows for an encrypted column: what readers without the
 * column key need to skip or locate the chunk. Statistics, encoding stats, size and geospatial
 * statistics describe the data and stay only in the encrypted copy, and so do fields this engine
 * does not know (a newer format's statistics must not leak by being copied through).
 */
const SHOWN_IN_PLAINTEXT_FOOTER: ReadonlySet<number> = new Set([
  CMD.type,
  CMD.encodings,
  CMD.pathInSchema,
  CMD.codec,
  CMD.numValues,
  CMD.totalUncompressedSize,
  CMD.totalCompressedSize,
  CMD.keyValueMetadata,
  CMD.dataPageOffset,
  CMD.indexPageOffset,
  CMD.dictionaryPageOffset,
  CMD.bloomFilterOffset,
  CMD.bloomFilterLength,
]);

/** Copy of ColumnMetaData without the fields that describe the data (plaintext-footer mode). */
function redact(cmd: TStruct): TStruct {
  const r = cmd.clone();
  r.fields = r.fields.filter((f) => SHOWN_IN_PLAINTEXT_FOOTER.has(f.id));
  return r;
}

function u32le(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

class Transcoder {
  readonly #reader: ParquetReader;
  readonly #sink: ByteSink;
  readonly #options: TranscodeOptions;
  readonly #plans: ColumnPlan[];
  readonly #crypto?: OutputCrypto;
  readonly #groups: TStruct[];
  readonly #out: ChunkOut[][] = [];

  constructor(
    reader: ParquetReader,
    sink: ByteSink,
    options: TranscodeOptions,
    plans: ColumnPlan[],
    out?: OutputCrypto,
  ) {
    this.#reader = reader;
    this.#sink = sink;
    this.#options = options;
    this.#plans = plans;
    this.#crypto = out;
    this.#groups = rowGroups(reader.metadata);
    if (out && this.#groups.length > MAX_ORDINAL + 1) {
      throw new PmeUnsupportedError(
        `${this.#groups.length} row groups exceed the ${MAX_ORDINAL + 1} an encrypted file can hold`,
      );
    }
  }

  async run(): Promise<void> {
    const encryptedFooter = this.#crypto && !this.#crypto.enc.plaintextFooter;
    await this.#sink.write(te.encode(encryptedFooter ? "PARE" : "PAR1"));
    await this.#chunks();
    await this.#columnIndexes();
    await this.#offsetIndexes();
    await this.#bloomFilters();
    await this.#footer(await this.#metadata());
  }

  /** Module for an encrypted column, plain bytes otherwise. */
  async #protect(
    p: ColumnPlan,
    bytes: Uint8Array,
    type: ModuleType,
    rg: number,
    col: number,
  ): Promise<Uint8Array> {
    return p.key
      ? await encryptModule(p.key, "gcm", bytes, moduleAad(this.#crypto!.fileAad, type, rg, col))
      : bytes;
  }

  async #chunks() {
    const reader = this.#reader;
    const plans = this.#plans;
    let total = 0;
    for (let rg = 0; rg < this.#groups.length; rg++) {
      for (const p of plans) total += (await reader.chunkRange(rg, p.input)).length;
    }
    let done = 0;
    for (let rg = 0; rg < this.#groups.length; rg++) {
      const chunks: ChunkOut[] = [];
      for (let col = 0; col < plans.length; col++) {
        // Overlap reading the next chunk with the crypto of this one.
        if (col + 1 < plans.length) reader.prefetch(rg, plans[col + 1].input);
        else if (rg + 1 < this.#groups.length) reader.prefetch(rg + 1, plans[0].input);
        const p = plans[col];
        chunks.push(
          await locate({ file: reader.name, rowGroup: rg, column: p.dotted }, () => this.#chunk(rg, col)),
        );
        done += (await reader.chunkRange(rg, p.input)).length;
        this.#options.onProgress?.(done, total);
      }
      this.#out.push(chunks);
    }
  }

  async #chunk(rg: number, col: number): Promise<ChunkOut> {
    const p = this.#plans[col];
    const sink = this.#sink;
    const cmd = (await this.#reader.columnMetaData(rg, p.input)).clone();
    const start = sink.position;
    let uncompressed = 0;
    let dictOffset: number | undefined;
    let dataOffset: number | undefined;
    const pageLocations: { offset: number; size: number }[] = [];
    // Pages are framed concurrently (PAGE_WINDOW in flight) and written in order.
    const pending: Promise<FramedPage>[] = [];
    const writeOne = async () => {
      const f = await pending.shift()!;
      const at = sink.position;
      await sink.write(f.header);
      for (const b of f.body) await sink.write(b);
      uncompressed += f.uncompressed + f.header.length;
      if (f.type === PageType.DictionaryPage) dictOffset ??= at;
      else if (f.type === PageType.DataPage || f.type === PageType.DataPageV2) {
        dataOffset ??= at;
        pageLocations.push({ offset: at, size: sink.position - at });
      }
    };
    const ctx = {
      fileAad: this.#crypto?.fileAad ?? new Uint8Array(0),
      rowGroup: rg,
      column: col,
      pageCipher: this.#crypto?.pageCipher ?? "gcm",
      v2LevelsPlaintext: this.#crypto?.enc.pageV2Framing === "levels-plaintext",
      checksums: this.#options.pageChecksums,
    } as const;
    for await (const page of this.#reader.pages(rg, p.input)) {
      const framed = framePage(page, p.key, ctx);
      framed.catch(() => {}); // awaited in order by writeOne
      pending.push(framed);
      if (pending.length >= PAGE_WINDOW) await writeOne();
    }
    while (pending.length) await writeOne();
    // A chunk without data pages (empty row group) keeps data_page_offset 0, as pyarrow writes it.
    cmd.setI64(CMD.dataPageOffset, dataOffset ?? 0);
    if (dictOffset !== undefined) cmd.setI64(CMD.dictionaryPageOffset, dictOffset);
    else cmd.delete(CMD.dictionaryPageOffset);
    cmd.delete(CMD.indexPageOffset);
    cmd.setI64(CMD.totalCompressedSize, sink.position - start);
    cmd.setI64(CMD.totalUncompressedSize, uncompressed);
    // Keep file_offset and fields this engine does not know; the rest is rebuilt in #metadata.
    const input = columnChunks(this.#groups[rg])[p.input];
    const chunk = new TStruct(
      input.fields.filter((f) => f.id === CC.fileOffset || f.id > CC.encryptedColumnMetadata),
    )
      .clone()
      .setI64(CC.fileOffset, start);
    return { cmd, chunk, pageLocations };
  }

  async #eachChunk(fn: (p: ColumnPlan, out: ChunkOut, rg: number, col: number) => Promise<void>) {
    for (let rg = 0; rg < this.#out.length; rg++) {
      for (let col = 0; col < this.#plans.length; col++) {
        await fn(this.#plans[col], this.#out[rg][col], rg, col);
      }
    }
  }

  async #columnIndexes() {
    await this.#eachChunk(async (p, out, rg, col) => {
      const ci = await this.#reader.columnIndex(rg, p.input);
      if (!ci) return;
      const bytes = await this.#protect(p, ci, ModuleType.ColumnIndex, rg, col);
      out.chunk.setI64(CC.columnIndexOffset, this.#sink.position).setI32(CC.columnIndexLength, bytes.length);
      await this.#sink.write(bytes);
    });
  }

  async #offsetIndexes() {
    await this.#eachChunk(async (p, out, rg, col) => {
      const oi = await this.#reader.offsetIndex(rg, p.input);
      if (!oi) return;
      const items = (oi.list(OI.pageLocations)?.items ?? []) as TStruct[];
      if (items.length !== out.pageLocations.length) {
        throw new PmeFormatError(
          `offset index lists ${items.length} pages but the chunk has ${out.pageLocations.length} data pages`,
          { file: this.#reader.name, rowGroup: rg, column: p.dotted, module: "offset index" },
        );
      }
      items.forEach((pl, i) =>
        pl.setI64(PL.offset, out.pageLocations[i].offset).setI32(
          PL.compressedPageSize,
          out.pageLocations[i].size,
        )
      );
      const bytes = await this.#protect(p, encodeStruct(oi), ModuleType.OffsetIndex, rg, col);
      out.chunk.setI64(CC.offsetIndexOffset, this.#sink.position).setI32(CC.offsetIndexLength, bytes.length);
      await this.#sink.write(bytes);
    });
  }

  async #bloomFilters() {
    await this.#eachChunk(async (p, out, rg, col) => {
      const bf = await this.#reader.bloomFilter(rg, p.input);
      out.cmd.delete(CMD.bloomFilterOffset);
      out.cmd.delete(CMD.bloomFilterLength);
      if (!bf) return;
      const at = this.#sink.position;
      await this.#sink.write(await this.#protect(p, bf.header, ModuleType.BloomFilterHeader, rg, col));
      await this.#sink.write(await this.#protect(p, bf.bitset, ModuleType.BloomFilterBitset, rg, col));
      out.cmd.setI64(CMD.bloomFilterOffset, at).setI32(CMD.bloomFilterLength, this.#sink.position - at);
    });
  }

  /** Column chunk metadata per Encryption.md §5, row groups, schema. */
  async #metadata(): Promise<TStruct> {
    const plaintextFooter = this.#crypto?.enc.plaintextFooter ?? false;
    const subset = this.#plans.length !== this.#reader.columns.length;
    const groups: TStruct[] = [];
    for (let rg = 0; rg < this.#out.length; rg++) {
      const chunks: TStruct[] = [];
      for (let col = 0; col < this.#plans.length; col++) {
        const p = this.#plans[col];
        const { cmd, chunk } = this.#out[rg][col];
        chunks.push(chunk);
        if (!p.key) {
          chunk.setStruct(CC.metaData, cmd);
          continue;
        }
        const ccm = new TStruct();
        if (p.withColumnKey) {
          const ewck = new TStruct().set(EWCK.pathInSchema, CT.LIST, stringList(p.path));
          if (p.keyMetadata) ewck.setBin(EWCK.keyMetadata, p.keyMetadata);
          ccm.setStruct(CCM.withColumnKey, ewck);
        } else {
          ccm.setStruct(CCM.withFooterKey, new TStruct());
        }
        chunk.setStruct(CC.cryptoMetadata, ccm);
        if (plaintextFooter) chunk.setStruct(CC.metaData, redact(cmd));
        else if (!p.withColumnKey) chunk.setStruct(CC.metaData, cmd);
        if (plaintextFooter || p.withColumnKey) {
          chunk.setBin(
            CC.encryptedColumnMetadata,
            await this.#protect(p, encodeStruct(cmd), ModuleType.ColumnMetaData, rg, col),
          );
        }
      }
      const group = this.#groups[rg].clone();
      group.set(RG.columns, CT.LIST, structList(chunks));
      let compressed = 0;
      let uncompressed = 0;
      for (const { cmd } of this.#out[rg]) {
        compressed += cmd.reqInt(CMD.totalCompressedSize, "total_compressed_size");
        uncompressed += cmd.reqInt(CMD.totalUncompressedSize, "total_uncompressed_size");
      }
      group.setI64(RG.totalByteSize, uncompressed);
      group.setI64(RG.totalCompressedSize, compressed);
      group.setI64(RG.fileOffset, chunks[0].int(CC.fileOffset)!);
      group.setI16(RG.ordinal, rg); // always written: parquet-java derives AADs from it (P5)
      if (subset) group.delete(RG.sortingColumns);
      groups.push(group);
    }
    const fmd = this.#reader.metadata.clone();
    fmd.delete(FMD.encryptionAlgorithm);
    fmd.delete(FMD.footerSigningKeyMetadata);
    fmd.set(FMD.rowGroups, CT.LIST, structList(groups));
    if (subset) {
      const keep = new Set(this.#plans.map((p) => p.input));
      fmd.set(FMD.schema, CT.LIST, pruneSchema(this.#reader.metadata, keep));
      const orders = fmd.list(FMD.columnOrders);
      if (orders) {
        fmd.set(FMD.columnOrders, CT.LIST, {
          ...orders,
          items: orders.items.filter((_, i) => keep.has(i)),
        } as TList);
      }
    }
    return fmd;
  }

  async #footer(fmd: TStruct) {
    const sink = this.#sink;
    const c = this.#crypto;
    try {
      if (!c) {
        const bytes = encodeStruct(fmd);
        await sink.write(bytes);
        await sink.write(u32le(bytes.length));
        await sink.write(te.encode("PAR1"));
        return;
      }
      const aad = moduleAad(c.fileAad, ModuleType.Footer);
      const keyMetadata = c.enc.footerKeyMetadata;
      if (c.enc.plaintextFooter) {
        fmd.setStruct(FMD.encryptionAlgorithm, algorithmStruct(c.algorithm)); // the true algorithm (P1)
        if (keyMetadata?.length) fmd.setBin(FMD.footerSigningKeyMetadata, keyMetadata);
        const bytes = encodeStruct(fmd);
        const sig = await signFooter(c.footerKey, bytes, aad);
        await sink.write(bytes);
        await sink.write(sig);
        await sink.write(u32le(bytes.length + sig.length));
        await sink.write(te.encode("PAR1"));
        return;
      }
      const fcm = new TStruct().setStruct(FCM.encryptionAlgorithm, algorithmStruct(c.algorithm));
      if (keyMetadata?.length) fcm.setBin(FCM.keyMetadata, keyMetadata);
      const fcmBytes = encodeStruct(fcm);
      const footerModule = await encryptModule(c.footerKey, "gcm", encodeStruct(fmd), aad);
      await sink.write(fcmBytes);
      await sink.write(footerModule);
      await sink.write(u32le(fcmBytes.length + footerModule.length));
      await sink.write(te.encode("PARE"));
    } catch (e) {
      throw e instanceof PmeError ? e.at({ module: "footer" }) : e;
    }
  }
}

/**
 * Transcodes `reader`'s file into `sink`. Nothing is decoded or re-compressed; pages are
 * decrypted and/or encrypted as modules. Options and keys are checked before anything is written.
 */
export async function transcode(
  reader: ParquetReader,
  sink: ByteSink,
  options: TranscodeOptions = {},
): Promise<TranscodeResult> {
  const plan = await planColumns(reader, options);
  const out = outputCrypto(options.encryption, plan.footerKey);
  const transcoder = new Transcoder(reader, sink, options, plan.columns, out);
  await transcoder.run();
  return {
    rows: reader.numRows,
    rowGroups: reader.numRowGroups,
    columns: plan.columns.map((p) => p.dotted),
    skippedColumns: plan.skipped,
    decryptedColumns: plan.decrypted,
    bytesWritten: sink.position,
  };
}
