/**
 * The module-level transcoder: reads a Parquet file (plaintext or PME) through {@link ParquetReader}
 * and writes it again — encrypted with new keys, algorithm and footer mode, or as plaintext — without
 * decoding or re-compressing a single page. Page headers and payloads become encrypted modules,
 * column metadata is encrypted per column, offsets and sizes are recomputed, page indexes and bloom
 * filters are re-framed, and the footer is encrypted or signed. Memory is bounded by one column chunk.
 *
 * @module
 */

import { crc32 } from "node:zlib";
import { CT, encodeStruct, stringList, structList, type TList, TStruct } from "./thrift.ts";
import {
  AesKey,
  encryptModule,
  encryptModuleParts,
  type ModuleCipher,
  type PmeAlgorithm,
  signFooter,
  validateKey,
} from "./cipher.ts";
import { AAD_FILE_UNIQUE_LENGTH, fileAad, MAX_ORDINAL, moduleAad, ModuleType } from "./aad.ts";
import {
  PmeConfigError,
  PmeError,
  PmeFormatError,
  PmeKeyMissingError,
  PmeUnsupportedError,
} from "./errors.ts";
import type { ByteSink } from "./io.ts";
import { locate, type Page, type ParquetReader } from "./reader.ts";
import {
  type AlgorithmInfo,
  algorithmStruct,
  CC,
  CCM,
  CMD,
  columnChunks,
  DPH2,
  EWCK,
  FCM,
  FMD,
  OI,
  PageType,
  PH,
  PL,
  pruneSchema,
  RG,
  rowGroups,
} from "./metadata.ts";

/** A column key and the key metadata to store with it. */
export interface ColumnKey {
  key: Uint8Array;
  /** Opaque bytes stored in the file so a reader's key retriever can find the key. */
  keyMetadata?: Uint8Array;
}

/** Writer-side encryption options. */
export interface EncryptionOptions {
  /** Footer key: encrypts (or signs) the footer, and every column in uniform encryption. */
  footerKey: Uint8Array;
  /** Key metadata of the footer key. */
  footerKeyMetadata?: Uint8Array;
  /**
   * Column keys by dotted column path (a leaf such as `a.list.element`, or a parent such as `a`
   * meaning all its leaves). Omitted: every column is encrypted with the footer key (uniform
   * encryption). Given: the listed columns get their keys, the others stay plaintext.
   */
  columnKeys?: Record<string, ColumnKey>;
  /** Default AES_GCM_V1. */
  algorithm?: PmeAlgorithm;
  /** Plaintext footer with a GCM signature ("PAR1") instead of an encrypted one ("PARE"). */
  plaintextFooter?: boolean;
  /** AAD prefix (for example a file identity that readers must confirm). */
  aadPrefix?: Uint8Array;
  /** Store the AAD prefix in the file (default true); false means readers must supply it. */
  storeAadPrefix?: boolean;
  /**
   * Data page V2 framing: "whole-body" (default; Arrow C++, arrow-rs, DuckDB) encrypts levels and
   * values as one module; "levels-plaintext" (parquet-java) leaves the level bytes in clear.
   */
  pageV2Framing?: "whole-body" | "levels-plaintext";
  /** Unique part of the file AAD (tests only; default 8 random bytes). */
  aadFileUnique?: Uint8Array;
}

/** Options of a transcode. */
export interface TranscodeOptions {
  /** Encrypt the output; omitted: write plaintext Parquet. */
  encryption?: EncryptionOptions;
  /**
   * Columns to keep (dotted leaf or parent paths). Omitted: every column whose key is available;
   * columns whose key is missing are skipped and reported.
   */
  columns?: string[];
  /** Write page CRCs on every page (default: keep CRCs where the input had them). */
  pageChecksums?: boolean;
  /** Progress callback: bytes of column chunks done / total. */
  onProgress?: (done: number, total: number) => void;
}

/** What a transcode did. */
export interface TranscodeResult {
  rows: number;
  rowGroups: number;
  columns: string[];
  /** Columns left out because their key was not available. */
  skippedColumns: string[];
  bytesWritten: number;
}

interface ColumnPlan {
  /** Input column index. */
  input: number;
  dotted: string;
  path: string[];
  /** Output protection. */
  key?: AesKey;
  withColumnKey: boolean;
  keyMetadata?: Uint8Array;
}

interface ChunkOut {
  cmd: TStruct;
  chunk: TStruct;
  pageLocations: { offset: number; size: number }[];
}

const te = new TextEncoder();

function u32le(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

/** Columns matched by a selector (a leaf path or a parent path). */
function matches(selector: string, dotted: string): boolean {
  return dotted === selector || dotted.startsWith(selector + ".");
}

async function plan(
  reader: ParquetReader,
  options: TranscodeOptions,
): Promise<{ plans: ColumnPlan[]; skipped: string[] }> {
  const enc = options.encryption;
  let selected = reader.columns;
  const skipped: string[] = [];
  if (options.columns) {
    for (const sel of options.columns) {
      if (!reader.columns.some((c) => matches(sel, c.dotted))) {
        throw new PmeConfigError(
          `column ${sel} is not in the file`,
          { file: reader.name },
          `columns are: ${reader.columns.map((c) => c.dotted).join(", ")}`,
        );
      }
    }
    selected = reader.columns.filter((c) => options.columns!.some((sel) => matches(sel, c.dotted)));
    for (const c of selected) {
      if (!(await reader.canRead(c.index))) {
        throw new PmeKeyMissingError(
          "the key of a selected column is not available",
          { file: reader.name, column: c.dotted },
          "supply its key, or leave the column out of --columns",
        );
      }
    }
  } else {
    const readable: typeof selected = [];
    for (const c of selected) {
      if (await reader.canRead(c.index)) readable.push(c);
      else skipped.push(c.dotted);
    }
    selected = readable;
  }
  if (selected.length === 0) {
    throw new PmeKeyMissingError(
      "no column can be read with the keys given",
      { file: reader.name },
      "supply column keys",
    );
  }
  if (selected.length > MAX_ORDINAL + 1 && enc) {
    throw new PmeUnsupportedError(
      `${selected.length} columns exceed the ${MAX_ORDINAL + 1} an encrypted file can hold`,
    );
  }
  let footerKey: AesKey | undefined;
  if (enc) {
    validateKey(enc.footerKey, "footer key");
    footerKey = await AesKey.import(enc.footerKey, "footer key");
  }
  const keyed = new Map<string, AesKey>();
  if (enc?.columnKeys) {
    for (const [sel, ck] of Object.entries(enc.columnKeys)) {
      if (!selected.some((c) => matches(sel, c.dotted))) {
        throw new PmeConfigError(
          `column key given for ${sel}, which is not a column of the output`,
          { file: reader.name },
          `columns are: ${selected.map((c) => c.dotted).join(", ")}`,
        );
      }
      keyed.set(sel, await AesKey.import(ck.key, `key of column ${sel}`));
    }
  }
  const plans = selected.map((c): ColumnPlan => {
    const base = { input: c.index, dotted: c.dotted, path: c.path, withColumnKey: false };
    if (!enc) return base;
    if (!enc.columnKeys) return { ...base, key: footerKey };
    const sels = Object.keys(enc.columnKeys).filter((sel) => matches(sel, c.dotted));
    if (sels.length > 1) {
      throw new PmeConfigError(`column ${c.dotted} is matched by several column keys: ${sels.join(", ")}`);
    }
    if (sels.length === 0) return base;
    const meta = enc.columnKeys[sels[0]].keyMetadata;
    return { ...base, key: keyed.get(sels[0]), withColumnKey: true, keyMetadata: meta };
  });
  return { plans, skipped };
}

function redact(cmd: TStruct): TStruct {
  const r = cmd.clone();
  // Statistics, encoding stats, size statistics and geospatial statistics describe the data; keep
  // them only inside the encrypted copy.
  for (const id of [CMD.statistics, CMD.encodingStats, CMD.sizeStatistics, CMD.geospatialStatistics]) {
    r.delete(id);
  }
  return r;
}

/** How many pages are framed (encrypted) concurrently. */
const PAGE_WINDOW = 4;

/** A page ready to write: header bytes (plain or module) and body parts. */
interface FramedPage {
  type: PageType;
  header: Uint8Array;
  body: Uint8Array[];
  uncompressed: number;
}

interface FrameContext {
  fAad: Uint8Array;
  rg: number;
  col: number;
  pageCipher: ModuleCipher;
  v2Java: boolean;
  checksums?: boolean;
}

/** Encrypts (or passes through) one page and builds its header. */
async function framePage(page: Page, key: AesKey | undefined, ctx: FrameContext): Promise<FramedPage> {
  const header = page.header.clone();
  const { fAad, rg, col } = ctx;
  const isDict = page.type === PageType.DictionaryPage;
  const isData = page.type === PageType.DataPage || page.type === PageType.DataPageV2;
  let body: Uint8Array[];
  if (!key) body = [page.payload];
  else if (isDict) {
    body = await encryptModuleParts(
      key,
      ctx.pageCipher,
      page.payload,
      moduleAad(fAad, ModuleType.DictionaryPage, rg, col),
    );
  } else if (isData) {
    const aad = moduleAad(fAad, ModuleType.DataPage, rg, col, page.ordinal);
    const v2 = header.struct(PH.dataPageHeaderV2);
    const levels = page.type === PageType.DataPageV2 && ctx.v2Java
      ? (v2?.int(DPH2.repetitionLevelsByteLength) ?? 0) + (v2?.int(DPH2.definitionLevelsByteLength) ?? 0)
      : 0;
    body = levels > 0
      ? [
        page.payload.subarray(0, levels),
        ...await encryptModuleParts(key, ctx.pageCipher, page.payload.subarray(levels), aad),
      ]
      : await encryptModuleParts(key, ctx.pageCipher, page.payload, aad);
  } else {
    throw new PmeUnsupportedError(`page type ${page.type} cannot be encrypted`, { page: page.ordinal });
  }
  header.setI32(PH.compressedPageSize, body.reduce((n, b) => n + b.length, 0));
  if (header.has(PH.crc) || ctx.checksums) {
    let c = 0;
    for (const b of body) c = crc32(b, c);
    header.setI32(PH.crc, c | 0);
  }
  const plainHeader = encodeStruct(header);
  const headerType = isDict ? ModuleType.DictionaryPageHeader : ModuleType.DataPageHeader;
  return {
    type: page.type,
    header: key
      ? await encryptModule(
        key,
        "gcm",
        plainHeader,
        moduleAad(fAad, headerType, rg, col, isDict ? 0 : page.ordinal),
      )
      : plainHeader,
    body,
    uncompressed: header.reqInt(PH.uncompressedPageSize, "uncompressed_page_size"),
  };
}

/**
 * Transcodes `reader`'s file into `sink`. Nothing is decoded or re-compressed; pages are
 * decrypted and/or encrypted as modules.
 */
export async function transcode(
  reader: ParquetReader,
  sink: ByteSink,
  options: TranscodeOptions = {},
): Promise<TranscodeResult> {
  const enc = options.encryption;
  const { plans, skipped } = await plan(reader, options);
  const inputGroups = rowGroups(reader.metadata);
  if (enc && inputGroups.length > MAX_ORDINAL + 1) {
    throw new PmeUnsupportedError(
      `${inputGroups.length} row groups exceed the ${MAX_ORDINAL + 1} an encrypted file can hold`,
    );
  }
  const algorithm: PmeAlgorithm = enc?.algorithm ?? "AES_GCM_V1";
  if (algorithm !== "AES_GCM_V1" && algorithm !== "AES_GCM_CTR_V1") {
    throw new PmeConfigError(`unknown algorithm ${algorithm}`, {}, "use AES_GCM_V1 or AES_GCM_CTR_V1");
  }
  const pageCipher: ModuleCipher = algorithm === "AES_GCM_CTR_V1" ? "ctr" : "gcm";
  const store = enc?.storeAadPrefix ?? true;
  const unique = enc?.aadFileUnique ?? crypto.getRandomValues(new Uint8Array(AAD_FILE_UNIQUE_LENGTH));
  const algInfo: AlgorithmInfo | undefined = enc && {
    algorithm,
    aadPrefix: enc.aadPrefix && store ? enc.aadPrefix : undefined,
    aadFileUnique: unique,
    supplyAadPrefix: !!enc.aadPrefix && !store,
  };
  if (enc?.storeAadPrefix === false && !enc.aadPrefix) {
    throw new PmeConfigError("not storing the AAD prefix needs an AAD prefix");
  }
  const fAad = enc ? fileAad(enc.aadPrefix, unique) : new Uint8Array(0);
  const v2Java = enc?.pageV2Framing === "levels-plaintext";
  const plaintextFooter = enc?.plaintextFooter ?? false;
  const subset = plans.length !== reader.columns.length;

  // Total input bytes, for progress.
  let total = 0;
  for (let rg = 0; rg < inputGroups.length; rg++) {
    for (const p of plans) total += (await reader.chunkRange(rg, p.input)).length;
  }
  let done = 0;

  await sink.write(te.encode(enc && !plaintextFooter ? "PARE" : "PAR1"));
  const out: ChunkOut[][] = [];
  for (let rg = 0; rg < inputGroups.length; rg++) {
    const chunks: ChunkOut[] = [];
    for (let col = 0; col < plans.length; col++) {
      const p = plans[col];
      const loc = { file: reader.name, rowGroup: rg, column: p.dotted };
      const next = col + 1 < plans.length
        ? [rg, plans[col + 1].input]
        : rg + 1 < inputGroups.length
        ? [rg + 1, plans[0].input]
        : undefined;
      if (next) reader.prefetch(next[0], next[1]);
      const chunkOut = await locate(loc, async () => {
        const cmd = (await reader.columnMetaData(rg, p.input)).clone();
        const inputChunk = columnChunks(inputGroups[rg])[p.input];
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
        for await (const page of reader.pages(rg, p.input)) {
          const framed = framePage(page, p.key, {
            fAad,
            rg,
            col,
            pageCipher,
            v2Java,
            checksums: options.pageChecksums,
          });
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
        const chunk = new TStruct(
          inputChunk.fields.filter((f) => f.id === CC.fileOffset || f.id > CC.encryptedColumnMetadata),
        )
          .clone();
        chunk.setI64(CC.fileOffset, start);
        return { cmd, chunk, pageLocations };
      });
      chunks.push(chunkOut);
      done += (await reader.chunkRange(rg, p.input)).length;
      options.onProgress?.(done, total);
    }
    out.push(chunks);
  }

  // Page indexes and bloom filters after all row groups: column indexes, offset indexes, blooms.
  const moduleOrPlain = async (p: ColumnPlan, bytes: Uint8Array, type: ModuleType, rg: number, col: number) =>
    p.key ? await encryptModule(p.key, "gcm", bytes, moduleAad(fAad, type, rg, col)) : bytes;
  for (let rg = 0; rg < out.length; rg++) {
    for (let col = 0; col < plans.length; col++) {
      const p = plans[col];
      const ci = await reader.columnIndex(rg, p.input);
      if (!ci) continue;
      const bytes = await moduleOrPlain(p, ci, ModuleType.ColumnIndex, rg, col);
      out[rg][col].chunk.setI64(CC.columnIndexOffset, sink.position).setI32(
        CC.columnIndexLength,
        bytes.length,
      );
      await sink.write(bytes);
    }
  }
  for (let rg = 0; rg < out.length; rg++) {
    for (let col = 0; col < plans.length; col++) {
      const p = plans[col];
      const oi = await reader.offsetIndex(rg, p.input);
      if (!oi) continue;
      const locs = out[rg][col].pageLocations;
      const items = (oi.list(OI.pageLocations)?.items ?? []) as TStruct[];
      if (items.length !== locs.length) {
        throw new PmeFormatError(
          `offset index lists ${items.length} pages but the chunk has ${locs.length} data pages`,
          { file: reader.name, rowGroup: rg, column: p.dotted, module: "offset index" },
        );
      }
      items.forEach((pl, i) =>
        pl.setI64(PL.offset, locs[i].offset).setI32(PL.compressedPageSize, locs[i].size)
      );
      const bytes = await moduleOrPlain(p, encodeStruct(oi), ModuleType.OffsetIndex, rg, col);
      out[rg][col].chunk.setI64(CC.offsetIndexOffset, sink.position).setI32(
        CC.offsetIndexLength,
        bytes.length,
      );
      await sink.write(bytes);
    }
  }
  for (let rg = 0; rg < out.length; rg++) {
    for (let col = 0; col < plans.length; col++) {
      const p = plans[col];
      const { cmd } = out[rg][col];
      const bf = await reader.bloomFilter(rg, p.input);
      cmd.delete(CMD.bloomFilterOffset);
      cmd.delete(CMD.bloomFilterLength);
      if (!bf) continue;
      const at = sink.position;
      await sink.write(await moduleOrPlain(p, bf.header, ModuleType.BloomFilterHeader, rg, col));
      await sink.write(await moduleOrPlain(p, bf.bitset, ModuleType.BloomFilterBitset, rg, col));
      cmd.setI64(CMD.bloomFilterOffset, at).setI32(CMD.bloomFilterLength, sink.position - at);
    }
  }

  // Column chunk metadata, row groups, footer.
  const fmd = reader.metadata.clone();
  fmd.delete(FMD.encryptionAlgorithm);
  fmd.delete(FMD.footerSigningKeyMetadata);
  const groups: TStruct[] = [];
  for (let rg = 0; rg < out.length; rg++) {
    const chunks: TStruct[] = [];
    for (let col = 0; col < plans.length; col++) {
      const p = plans[col];
      const { cmd, chunk } = out[rg][col];
      if (!p.key) chunk.setStruct(CC.metaData, cmd);
      else {
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
            await encryptModule(
              p.key,
              "gcm",
              encodeStruct(cmd),
              moduleAad(fAad, ModuleType.ColumnMetaData, rg, col),
            ),
          );
        }
      }
      chunks.push(chunk);
    }
    const group = inputGroups[rg].clone();
    group.set(RG.columns, CT.LIST, structList(chunks));
    const sizes = out[rg].map((
      c,
    ) => [c.cmd.reqInt(CMD.totalCompressedSize, ""), c.cmd.reqInt(CMD.totalUncompressedSize, "")]);
    group.setI64(RG.totalByteSize, sizes.reduce((n, s) => n + s[1], 0));
    group.setI64(RG.totalCompressedSize, sizes.reduce((n, s) => n + s[0], 0));
    group.setI64(RG.fileOffset, chunks[0].int(CC.fileOffset)!);
    group.setI16(RG.ordinal, rg);
    if (subset) group.delete(RG.sortingColumns);
    groups.push(group);
  }
  fmd.set(FMD.rowGroups, CT.LIST, structList(groups));
  if (subset) {
    const keep = new Set(plans.map((p) => p.input));
    fmd.set(FMD.schema, CT.LIST, pruneSchema(reader.metadata, keep));
    const orders = fmd.list(FMD.columnOrders);
    if (orders) {
      fmd.set(FMD.columnOrders, CT.LIST, {
        ...orders,
        items: orders.items.filter((_, i) => keep.has(i)),
      } as TList);
    }
  }
  await writeFooter(sink, fmd, enc, algInfo, fAad);
  return {
    rows: reader.numRows,
    rowGroups: out.length,
    columns: plans.map((p) => p.dotted),
    skippedColumns: skipped,
    bytesWritten: sink.position,
  };
}

async function writeFooter(
  sink: ByteSink,
  fmd: TStruct,
  enc: EncryptionOptions | undefined,
  algInfo: AlgorithmInfo | undefined,
  fAad: Uint8Array,
) {
  try {
    if (!enc || !algInfo) {
      const bytes = encodeStruct(fmd);
      await sink.write(bytes);
      await sink.write(u32le(bytes.length));
      await sink.write(te.encode("PAR1"));
      return;
    }
    const footerKey = await AesKey.import(enc.footerKey, "footer key");
    const aad = moduleAad(fAad, ModuleType.Footer);
    if (enc.plaintextFooter) {
      fmd.setStruct(FMD.encryptionAlgorithm, algorithmStruct(algInfo));
      if (enc.footerKeyMetadata?.length) fmd.setBin(FMD.footerSigningKeyMetadata, enc.footerKeyMetadata);
      const bytes = encodeStruct(fmd);
      const sig = await signFooter(footerKey, bytes, aad);
      await sink.write(bytes);
      await sink.write(sig);
      await sink.write(u32le(bytes.length + sig.length));
      await sink.write(te.encode("PAR1"));
      return;
    }
    const fcm = new TStruct().setStruct(FCM.encryptionAlgorithm, algorithmStruct(algInfo));
    if (enc.footerKeyMetadata?.length) fcm.setBin(FCM.keyMetadata, enc.footerKeyMetadata);
    const fcmBytes = encodeStruct(fcm);
    const footerModule = await encryptModule(footerKey, "gcm", encodeStruct(fmd), aad);
    await sink.write(fcmBytes);
    await sink.write(footerModule);
    await sink.write(u32le(fcmBytes.length + footerModule.length));
    await sink.write(te.encode("PARE"));
  } catch (e) {
    throw e instanceof PmeError ? e.at({ module: "footer" }) : e;
  }
}
