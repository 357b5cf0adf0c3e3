/**
 * Random-access reader of plaintext and PME-encrypted Parquet files at the module level: it finds
 * and authenticates the footer, resolves keys lazily through an async key retriever, and yields
 * decrypted page headers and page payloads (still compressed and encoded), column indexes, offset
 * indexes and bloom filters of the column chunks asked for. Pages are never decoded.
 *
 * @module
 */

import { crc32 } from "node:zlib";
import { decodeStruct, TStruct } from "./thrift.ts";
import {
  AesKey,
  decryptModule,
  GCM_OVERHEAD,
  type ModuleCipher,
  moduleSize,
  type PmeAlgorithm,
  SIGNATURE_LENGTH,
  verifyFooterSignature,
} from "./cipher.ts";
import { fileAad, MODULE_NAMES, moduleAad, ModuleType } from "./aad.ts";
import {
  PmeAadPrefixError,
  PmeAuthError,
  PmeError,
  PmeFormatError,
  PmeKeyMissingError,
  type PmeLocation,
  PmeUnsupportedError,
} from "./errors.ts";
import type { ByteSource } from "./io.ts";
import {
  type AlgorithmInfo,
  BFH,
  CC,
  CCM,
  CMD,
  columnChunks,
  DPH2,
  EWCK,
  FCM,
  FMD,
  type LeafColumn,
  leafColumns,
  PageType,
  parseAlgorithm,
  PH,
  RG,
  rowGroups,
} from "./metadata.ts";

/** What a key retriever is asked for. */
export interface KeyRequest {
  kind: "footer" | "column";
  /** Dotted column path, for column keys. */
  column?: string;
  /** Source name of the file. */
  file: string;
}

/**
 * Maps key metadata (opaque bytes stored in the file) to key bytes. Returns null/undefined when
 * the key is not available to this caller; may throw to report KMS errors.
 */
export type KeyRetriever = (
  keyMetadata: Uint8Array,
  request: KeyRequest,
) => Promise<Uint8Array | null | undefined>;

/** Reader-side decryption options. */
export interface DecryptionOptions {
  /** Explicit footer key (takes precedence over the retriever). */
  footerKey?: Uint8Array;
  /** Explicit column keys by dotted leaf path (take precedence over the retriever). */
  columnKeys?: Record<string, Uint8Array>;
  /** Resolves key metadata to keys. */
  keyRetriever?: KeyRetriever;
  /** AAD prefix for files written without storing it (or to check a stored one). */
  aadPrefix?: Uint8Array;
  /** Verify plaintext-footer signatures (default true). */
  checkFooterIntegrity?: boolean;
  /** Verify page CRCs when present (default true). */
  checkPageCrc?: boolean;
  /**
   * Decrypt page payloads with AES-CTR although the footer says AES_GCM_V1. Arrow C++ up to
   * pyarrow 25 wrote AES_GCM_V1 into plaintext footers of AES_GCM_CTR_V1 files (pitfall P1); such
   * files need this. Off by default: guessing would weaken GCM files.
   */
  assumeCtrPages?: boolean;
  /**
   * Refuse files encrypted with another algorithm. In encrypted-footer files the algorithm is
   * stored outside the authenticated footer, so a GCM file could be relabelled as CTR (whose pages
   * are unauthenticated); readers that know what their writers use should set this.
   */
  requireAlgorithm?: PmeAlgorithm;
}

/** Footer modes. */
export type FooterMode = "plaintext" | "encrypted" | "signed";

/** How a column is protected. */
export type ColumnEncryption = "none" | "footer-key" | "column-key";

/** A leaf column and its protection, as declared by the first row group. */
export interface ColumnInfo extends LeafColumn {
  encryption: ColumnEncryption;
  /** Key metadata of a column key, when the file stores one. */
  keyMetadata?: Uint8Array;
}

/** A page as stored, decrypted: header struct and payload bytes (compressed as in the file). */
export interface Page {
  type: PageType;
  header: TStruct;
  /** Payload: for V2 the whole body (levels then values), plaintext. */
  payload: Uint8Array;
  /** Data-page ordinal within the chunk; -1 for the dictionary page. */
  ordinal: number;
}

/** A bloom filter: exact header struct bytes and bitset, plaintext. */
export interface BloomFilter {
  header: Uint8Array;
  bitset: Uint8Array;
}

interface ChunkCrypto {
  key?: AesKey;
  /** Why the key is not available, when the retriever said. */
  reason?: string;
  encryption: ColumnEncryption;
}

/** How many pages ahead payloads are decrypted concurrently. */
const PAGE_WINDOW = 4;
const MAGIC_PLAIN = "PAR1";
const MAGIC_ENC = "PARE";
const textDecoder = new TextDecoder();

function b2hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Adds location facts to engine errors; leaves others unchanged. */
export async function locate<T>(loc: PmeLocation, fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw e instanceof PmeError ? e.at(loc) : e;
  }
}

/** What a file says about its encryption before any key is used. */
export interface FooterInfo {
  mode: FooterMode;
  algorithm?: AlgorithmInfo;
  footerKeyMetadata?: Uint8Array;
}

/**
 * Reads a file's magic and crypto metadata without keys: footer mode, algorithm, AAD-prefix
 * storage and footer key metadata.
 */
export async function peekFooter(source: ByteSource): Promise<FooterInfo> {
  return await locate({ file: source.name }, async () => {
    const { magic, footer } = await readTail(source);
    if (magic === MAGIC_ENC) {
      const fcm = locateFooter(() => decodeStruct(footer, 0, "FileCryptoMetaData")).struct;
      const alg = fcm.struct(FCM.encryptionAlgorithm);
      if (!alg) {
        throw new PmeFormatError("FileCryptoMetaData has no encryption algorithm", { module: "footer" });
      }
      return {
        mode: "encrypted",
        algorithm: parseAlgorithm(alg),
        footerKeyMetadata: fcm.bin(FCM.keyMetadata),
      };
    }
    const fmd = locateFooter(() => decodeStruct(footer, 0, "footer FileMetaData")).struct;
    const alg = fmd.struct(FMD.encryptionAlgorithm);
    if (!alg) return { mode: "plaintext" };
    return {
      mode: "signed",
      algorithm: parseAlgorithm(alg),
      footerKeyMetadata: fmd.bin(FMD.footerSigningKeyMetadata),
    };
  });
}

async function readTail(source: ByteSource): Promise<{ magic: string; footer: Uint8Array }> {
  if (source.size < 12) {
    throw new PmeFormatError(
      `file has ${source.size} bytes, too short for Parquet`,
      {},
      "the file is truncated or not Parquet",
    );
  }
  const head = textDecoder.decode(await source.read(0, 4));
  const tail = await source.read(source.size - 8, 8);
  const footerLen = new DataView(tail.buffer, tail.byteOffset, 8).getUint32(0, true);
  const magic = textDecoder.decode(tail.subarray(4));
  if (magic !== MAGIC_PLAIN && magic !== MAGIC_ENC) {
    throw new PmeFormatError(
      `file does not end with PAR1 or PARE (found ${JSON.stringify(magic)})`,
      {},
      "the file is truncated or not Parquet",
    );
  }
  if (head !== magic) {
    throw new PmeFormatError(
      `file starts with ${JSON.stringify(head)} but ends with ${magic}`,
      {},
      "the file is damaged",
    );
  }
  if (footerLen + 12 > source.size) {
    throw new PmeFormatError(
      `footer length ${footerLen} exceeds the file size ${source.size}`,
      {},
      "the file is truncated",
    );
  }
  return { magic, footer: await source.read(source.size - 8 - footerLen, footerLen) };
}

/** A Parquet file opened for module-level reading. */
export class ParquetReader {
  /** Footer mode. */
  readonly mode: FooterMode;
  /** Algorithm parameters (encrypted files only). */
  readonly algorithm?: AlgorithmInfo;
  /** FileMetaData as stored (column metadata of column-key columns still encrypted). */
  readonly metadata: TStruct;
  /** The FileMetaData's exact Thrift bytes (decrypted, without parquet-java's zero padding). */
  readonly footerBytes: Uint8Array;
  /** Leaf columns. */
  readonly columns: ColumnInfo[];
  /** Key metadata of the footer key (encrypted files), if stored. */
  readonly footerKeyMetadata?: Uint8Array;
  /** Whether the plaintext-footer signature was verified (signed mode only). */
  readonly signatureVerified?: boolean;
  /** Total size of the file. */
  readonly size: number;

  #source: ByteSource;
  #options: DecryptionOptions;
  #fileAad?: Uint8Array;
  #footerKey?: AesKey;
  #keys = new Map<string, Promise<RetrievedKey>>();
  #cmd = new Map<string, Promise<TStruct>>();
  #prefetched = new Map<string, Promise<Uint8Array>>();

  private constructor(
    source: ByteSource,
    options: DecryptionOptions,
    init: {
      mode: FooterMode;
      algorithm?: AlgorithmInfo;
      metadata: TStruct;
      footerBytes: Uint8Array;
      footerKeyMetadata?: Uint8Array;
      fileAad?: Uint8Array;
      footerKey?: AesKey;
      signatureVerified?: boolean;
    },
  ) {
    this.#source = source;
    this.#options = options;
    this.size = source.size;
    this.mode = init.mode;
    this.algorithm = init.algorithm;
    this.metadata = init.metadata;
    this.footerBytes = init.footerBytes;
    this.footerKeyMetadata = init.footerKeyMetadata;
    this.#fileAad = init.fileAad;
    this.#footerKey = init.footerKey;
    this.signatureVerified = init.signatureVerified;
    const first = rowGroups(this.metadata)[0];
    const chunks = first ? columnChunks(first) : [];
    this.columns = leafColumns(this.metadata).map((leaf) => {
      const ccm = chunks[leaf.index]?.struct(CC.cryptoMetadata);
      const withKey = ccm?.struct(CCM.withColumnKey);
      const keyMetadata = withKey?.bin(EWCK.keyMetadata);
      return {
        ...leaf,
        encryption: !ccm ? "none" : withKey ? "column-key" : "footer-key",
        keyMetadata: keyMetadata?.length ? keyMetadata : undefined,
      };
    });
  }

  /** Name of the source (for messages). */
  get name(): string {
    return this.#source.name;
  }

  /** Number of row groups. */
  get numRowGroups(): number {
    return rowGroups(this.metadata).length;
  }

  /** Number of rows. */
  get numRows(): number {
    return this.metadata.int(FMD.numRows) ?? 0;
  }

  /** The file AAD (encrypted files). */
  get fileAad(): Uint8Array | undefined {
    return this.#fileAad;
  }

  /** True when the footer key is available (always true for plaintext files). */
  get hasFooterKey(): boolean {
    return this.mode === "plaintext" || this.#footerKey !== undefined;
  }

  /** Opens a source; reads and authenticates the footer. */
  static async open(source: ByteSource, options: DecryptionOptions = {}): Promise<ParquetReader> {
    return await locate({ file: source.name }, () => ParquetReader.#open(source, options));
  }

  static async #open(source: ByteSource, options: DecryptionOptions): Promise<ParquetReader> {
    const { magic, footer } = await readTail(source);
    if (magic === MAGIC_ENC) return await ParquetReader.#openEncryptedFooter(source, options, footer);
    const { struct: fmd, length } = locateFooter(() => decodeStruct(footer, 0, "footer FileMetaData"));
    const algStruct = fmd.struct(FMD.encryptionAlgorithm);
    if (!algStruct) {
      if (length !== footer.length) {
        throw new PmeFormatError(`${footer.length - length} unexpected bytes after the footer`, {
          module: "footer",
        });
      }
      return new ParquetReader(source, options, { mode: "plaintext", metadata: fmd, footerBytes: footer });
    }
    // Plaintext footer with signature.
    const footerKeyMetadata = fmd.bin(FMD.footerSigningKeyMetadata);
    const { algorithm, fAad, footerKey, reason } = await footerCrypto(
      source,
      options,
      algStruct,
      footerKeyMetadata,
    );
    const check = options.checkFooterIntegrity ?? true;
    let signatureVerified: boolean | undefined;
    if (check) {
      if (!footerKey) {
        throw new PmeKeyMissingError(
          `the footer signing key is not available${
            reason ? ` (${reason})` : ""
          }, so the plaintext footer cannot be verified`,
          { module: "footer" },
          "supply the footer key, or disable footer integrity checking to read only plaintext columns",
        );
      }
      if (footer.length - length !== SIGNATURE_LENGTH) {
        throw new PmeFormatError(
          `plaintext footer is followed by ${
            footer.length - length
          } bytes instead of a ${SIGNATURE_LENGTH}-byte signature`,
          { module: "footer" },
        );
      }
      const ok = await verifyFooterSignature(
        footerKey,
        footer.subarray(0, length),
        moduleAad(fAad, ModuleType.Footer),
        footer.subarray(length),
      );
      if (!ok) {
        throw new PmeAuthError(
          "plaintext footer signature does not verify",
          { module: "footer" },
          "wrong footer key or AAD prefix, or the footer was modified",
        );
      }
      signatureVerified = true;
    }
    return new ParquetReader(source, options, {
      mode: "signed",
      algorithm,
      metadata: fmd,
      footerBytes: footer.subarray(0, length),
      footerKeyMetadata,
      fileAad: fAad,
      footerKey,
      signatureVerified,
    });
  }

  static async #openEncryptedFooter(
    source: ByteSource,
    options: DecryptionOptions,
    footer: Uint8Array,
  ): Promise<ParquetReader> {
    const { struct: fcm, length } = locateFooter(() => decodeStruct(footer, 0, "FileCryptoMetaData"));
    const algStruct = fcm.struct(FCM.encryptionAlgorithm);
    if (!algStruct) {
      throw new PmeFormatError("FileCryptoMetaData has no encryption algorithm", { module: "footer" });
    }
    const footerKeyMetadata = fcm.bin(FCM.keyMetadata);
    const { algorithm, fAad, footerKey, reason } = await footerCrypto(
      source,
      options,
      algStruct,
      footerKeyMetadata,
    );
    if (!footerKey) {
      throw new PmeKeyMissingError(
        `the footer key is not available${
          reason ? ` (${reason})` : ""
        }, so the encrypted footer cannot be read`,
        { module: "footer" },
        "supply the footer key (or a key retriever that knows its key metadata)",
      );
    }
    const module = footer.subarray(length);
    const size = locateFooter(() => moduleSize(module, 0, module.length, "gcm"));
    if (size !== module.length) {
      throw new PmeFormatError(`encrypted footer module is ${size} bytes but ${module.length} remain`, {
        module: "footer",
      });
    }
    const plain = await decryptModule(footerKey, "gcm", module, moduleAad(fAad, ModuleType.Footer)).catch(
      (e) => {
        if (e instanceof PmeAuthError) {
          throw new PmeAuthError(
            "encrypted footer does not decrypt",
            { module: "footer" },
            algorithm.supplyAadPrefix || algorithm.aadPrefix
              ? "wrong footer key or AAD prefix, or the file was modified"
              : "wrong footer key, or the file was modified",
          );
        }
        throw e;
      },
    );
    const { struct: fmd, length: fmdLength } = decodeStruct(plain, 0, "footer FileMetaData");
    return new ParquetReader(source, options, {
      mode: "encrypted",
      algorithm,
      metadata: fmd,
      footerBytes: plain.subarray(0, fmdLength),
      footerKeyMetadata,
      fileAad: fAad,
      footerKey,
    });
  }

  /** Location of a chunk for messages. */
  #loc(rg: number, col: number, extra: PmeLocation = {}): PmeLocation {
    return {
      file: this.#source.name,
      rowGroup: rg,
      column: this.columns[col]?.dotted ?? `#${col}`,
      ...extra,
    };
  }

  /**
   * Row-group ordinal used in AADs: the stored RowGroup.ordinal (as parquet-java reads it), else
   * the row group's position (as Arrow C++ does; both agree in files either writes).
   */
  #ordinal(rg: number): number {
    return rowGroups(this.metadata)[rg]?.int(RG.ordinal) ?? rg;
  }

  #chunk(rg: number, col: number): TStruct {
    const group = rowGroups(this.metadata)[rg];
    if (!group) throw new PmeFormatError(`row group ${rg} does not exist`, { file: this.#source.name });
    const chunk = columnChunks(group)[col];
    if (!chunk) throw new PmeFormatError(`column ${col} does not exist`, this.#loc(rg, col));
    if (chunk.has(CC.filePath)) {
      throw new PmeUnsupportedError(
        "column chunk stored in another file",
        this.#loc(rg, col),
        "external column chunks are not supported",
      );
    }
    return chunk;
  }

  /** Key and protection of a column chunk; `key` is undefined if not available. */
  async #crypto(rg: number, col: number): Promise<ChunkCrypto> {
    const ccm = this.#chunk(rg, col).struct(CC.cryptoMetadata);
    if (!ccm) return { encryption: "none" };
    const withKey = ccm.struct(CCM.withColumnKey);
    if (!withKey) return { encryption: "footer-key", key: this.#footerKey };
    const dotted = this.columns[col].dotted;
    const meta = withKey.bin(EWCK.keyMetadata);
    const explicit = this.#options.columnKeys?.[dotted];
    const cacheKey = explicit ? `explicit:${dotted}` : `meta:${meta ? b2hex(meta) : ""}:${dotted}`;
    let p = this.#keys.get(cacheKey);
    if (!p) {
      p = retrieveKey(explicit, meta?.length ? meta : undefined, this.#options, {
        kind: "column",
        column: dotted,
        file: this.#source.name,
      });
      this.#keys.set(cacheKey, p);
    }
    return { encryption: "column-key", ...(await p) };
  }

  /** True when the column's data can be decrypted (its key is available) in every row group. */
  async canRead(col: number): Promise<boolean> {
    return (await this.unreadable(col)) === undefined;
  }

  /**
   * Why a column cannot be decrypted (its key is not available in some row group, with the key
   * retriever's reason when it gave one), or undefined when it can.
   */
  async unreadable(col: number): Promise<string | undefined> {
    for (let rg = 0; rg < this.numRowGroups; rg++) {
      const c = await this.#crypto(rg, col);
      if (c.encryption !== "none" && !c.key) {
        const which = c.encryption === "footer-key" ? "footer key" : "column key";
        return `the ${which} of column ${this.columns[col].dotted} is not available${
          c.reason ? `: ${c.reason}` : ""
        }`;
      }
    }
    return undefined;
  }

  async #requireKey(rg: number, col: number): Promise<ChunkCrypto> {
    const c = await this.#crypto(rg, col);
    if (c.encryption !== "none" && !c.key) {
      const which = c.encryption === "footer-key" ? "footer key" : "column key";
      throw new PmeKeyMissingError(
        `the ${which} of this column is not available${c.reason ? `: ${c.reason}` : ""}`,
        this.#loc(rg, col),
        "supply the key, or leave the column out of the selection",
      );
    }
    return c;
  }

  /** Decrypted ColumnMetaData of a chunk. */
  columnMetaData(rg: number, col: number): Promise<TStruct> {
    const id = `${rg}:${col}`;
    let p = this.#cmd.get(id);
    if (!p) {
      p = locate(this.#loc(rg, col, { module: "column metadata" }), () => this.#readColumnMetaData(rg, col));
      this.#cmd.set(id, p);
      p.catch(() => this.#cmd.delete(id));
    }
    return p;
  }

  async #readColumnMetaData(rg: number, col: number): Promise<TStruct> {
    const chunk = this.#chunk(rg, col);
    const c = await this.#crypto(rg, col);
    const visible = chunk.struct(CC.metaData);
    const encrypted = chunk.bin(CC.encryptedColumnMetadata);
    if (c.encryption === "none" || (c.encryption === "footer-key" && this.mode === "encrypted")) {
      if (!visible) throw new PmeFormatError("column chunk has no metadata");
      return visible;
    }
    if (!encrypted) {
      if (visible && c.encryption === "footer-key") return visible; // writer did not encrypt a copy
      throw new PmeFormatError("encrypted column has no encrypted_column_metadata");
    }
    const { key } = await this.#requireKey(rg, col);
    const plain = await decryptModule(
      key!,
      "gcm",
      encrypted,
      moduleAad(this.#fileAad!, ModuleType.ColumnMetaData, this.#ordinal(rg), col),
    );
    return decodeStruct(plain, 0, "ColumnMetaData").struct;
  }

  /** Byte range [start, start+length) of a chunk's pages. */
  async chunkRange(
    rg: number,
    col: number,
  ): Promise<{ start: number; length: number; hasDictionary: boolean }> {
    const cmd = await this.columnMetaData(rg, col);
    const data = cmd.int(CMD.dataPageOffset);
    const dict = cmd.int(CMD.dictionaryPageOffset);
    const length = cmd.int(CMD.totalCompressedSize);
    if (data === undefined || length === undefined) {
      throw new PmeFormatError(
        "column metadata lacks data_page_offset or total_compressed_size",
        this.#loc(rg, col),
      );
    }
    // A chunk of an empty row group may hold only a dictionary page, with data_page_offset 0
    // (pyarrow writes such chunks).
    const hasDictionary = dict !== undefined && dict > 0 && (dict < data || data === 0);
    const start = hasDictionary ? dict! : data;
    if (length === 0) return { start, length, hasDictionary: false };
    if (start < 4 || length < 0 || start + length > this.#source.size - 8) {
      throw new PmeFormatError(
        `column chunk [${start}, ${start + length}) lies outside the file`,
        this.#loc(rg, col),
        "the file is truncated or damaged",
      );
    }
    return { start, length, hasDictionary };
  }

  /**
   * Starts reading a chunk's bytes so that a later {@link pages} call finds them ready (lets the
   * caller overlap I/O with crypto). At most one chunk should be prefetched at a time.
   */
  prefetch(rg: number, col: number): void {
    const id = `${rg}:${col}`;
    if (this.#prefetched.has(id)) return;
    const p = this.chunkRange(rg, col).then(({ start, length }) => this.#source.read(start, length));
    p.catch(() => {}); // reported by pages() when it awaits the read
    this.#prefetched.set(id, p);
  }

  /** Yields the pages of a column chunk, decrypted. */
  async *pages(rg: number, col: number): AsyncGenerator<Page> {
    const loc = this.#loc(rg, col);
    const { start, length, hasDictionary } = await locate(loc, () => this.chunkRange(rg, col));
    const c = await locate(loc, () => this.#requireKey(rg, col));
    const prefetched = this.#prefetched.get(`${rg}:${col}`);
    this.#prefetched.delete(`${rg}:${col}`);
    const buf = await locate(loc, () => prefetched ?? this.#source.read(start, length));
    const pageCipher: ModuleCipher =
      this.algorithm?.algorithm === "AES_GCM_CTR_V1" || this.#options.assumeCtrPages ? "ctr" : "gcm";
    // Headers are read in order (each gives the next page's position); payloads are decrypted
    // concurrently, up to PAGE_WINDOW pages ahead, and yielded in order.
    const pending: { page: Omit<Page, "payload">; payload: Promise<Uint8Array> }[] = [];
    let pos = 0;
    let ordinal = 0;
    let first = true;
    while (pos < length || pending.length) {
      if (pos < length && pending.length < PAGE_WINDOW) {
        const pageLoc = { ...loc, page: ordinal };
        const dictExpected = first && hasDictionary;
        let header: TStruct;
        ({ header, pos } = await locate(
          pageLoc,
          () => this.#readHeader(c.key, buf, pos, length, dictExpected, rg, col, ordinal),
        ));
        const type = header.reqInt(PH.type, "PageHeader.type") as PageType;
        const raw = await locate(pageLoc, () => this.#pageBytes(buf, pos, length, header));
        pos += raw.length;
        const isData = type === PageType.DataPage || type === PageType.DataPageV2;
        const page = { type, header, ordinal: isData ? ordinal : -1 };
        const payload = locate(
          pageLoc,
          () => this.#decryptPage(c.key, pageCipher, page, raw, dictExpected, rg, col),
        );
        payload.catch(() => {}); // awaited below in order; avoid unhandled-rejection noise meanwhile
        pending.push({ page, payload });
        if (isData) ordinal++;
        first = false;
        continue;
      }
      const next = pending.shift()!;
      yield { ...next.page, payload: await next.payload };
    }
  }

  async #readHeader(
    key: AesKey | undefined,
    buf: Uint8Array,
    pos: number,
    length: number,
    dictExpected: boolean,
    rg: number,
    col: number,
    ordinal: number,
  ): Promise<{ header: TStruct; pos: number }> {
    if (!key) {
      const d = decodeStruct(buf.subarray(0, length), pos, "page header");
      return { header: d.struct, pos: pos + d.length };
    }
    const type = dictExpected ? ModuleType.DictionaryPageHeader : ModuleType.DataPageHeader;
    const size = moduleSize(buf, pos, length - pos, "gcm");
    const plain = await this.#decrypt(key, "gcm", buf.subarray(pos, pos + size), type, rg, col, ordinal);
    return { header: decodeStruct(plain, 0, "page header").struct, pos: pos + size };
  }

  /** The page's stored bytes, CRC-checked. */
  #pageBytes(buf: Uint8Array, pos: number, length: number, header: TStruct): Uint8Array {
    const compressed = header.reqInt(PH.compressedPageSize, "PageHeader.compressed_page_size");
    if (compressed < 0 || pos + compressed > length) {
      throw new PmeFormatError(
        `page of ${compressed} bytes runs past the end of the column chunk`,
        {},
        "the file is truncated or damaged",
      );
    }
    const raw = buf.subarray(pos, pos + compressed);
    const crc = header.int(PH.crc);
    if (crc !== undefined && (this.#options.checkPageCrc ?? true) && (crc32(raw) | 0) !== crc) {
      throw new PmeAuthError("page CRC does not match", {}, "the page bytes were modified or damaged");
    }
    return raw;
  }

  async #decryptPage(
    key: AesKey | undefined,
    cipher: ModuleCipher,
    page: Omit<Page, "payload">,
    raw: Uint8Array,
    dictExpected: boolean,
    rg: number,
    col: number,
  ): Promise<Uint8Array> {
    if (!key) return raw;
    switch (page.type) {
      case PageType.DictionaryPage:
        if (!dictExpected) {
          throw new PmeFormatError("dictionary page found where the metadata announces none");
        }
        return await this.#decrypt(key, cipher, raw, ModuleType.DictionaryPage, rg, col, 0);
      case PageType.DataPage:
        return await this.#decrypt(key, cipher, raw, ModuleType.DataPage, rg, col, page.ordinal);
      case PageType.DataPageV2:
        return await this.#decryptV2(key, cipher, raw, page.header, rg, col, page.ordinal);
      default:
        throw new PmeUnsupportedError(`page type ${page.type} in an encrypted column chunk`);
    }
  }

  async #decrypt(
    key: AesKey,
    cipher: ModuleCipher,
    module: Uint8Array,
    type: ModuleType,
    rg: number,
    col: number,
    page: number,
  ): Promise<Uint8Array> {
    try {
      return await decryptModule(
        key,
        cipher,
        module,
        moduleAad(this.#fileAad!, type, this.#ordinal(rg), col, page),
      );
    } catch (e) {
      if (e instanceof PmeAuthError && this.#maybeMislabelledCtr(type)) {
        throw new PmeAuthError(
          e.what,
          { module: MODULE_NAMES[type] },
          `${e.hint}; or, if this file was written by pyarrow/Arrow C++ ≤ 25 with AES_GCM_CTR_V1 and a plaintext footer (which mislabels the algorithm), read it with assumeCtrPages (CLI: --assume-ctr-pages)`,
        );
      }
      if (e instanceof PmeError) throw e.at({ module: MODULE_NAMES[type] });
      throw e;
    }
  }

  /** A GCM page failure in a file that may be Arrow C++'s mislabelled CTR file (pitfall P1). */
  #maybeMislabelledCtr(type: ModuleType): boolean {
    return (type === ModuleType.DataPage || type === ModuleType.DictionaryPage) && this.mode === "signed" &&
      this.algorithm?.algorithm === "AES_GCM_V1" && !this.#options.assumeCtrPages &&
      (this.metadata.str(FMD.createdBy) ?? "").startsWith("parquet-cpp-arrow");
  }

  /**
   * Data page V2: Arrow C++/arrow-rs encrypt the whole body; parquet-java leaves the level bytes in
   * clear and encrypts only the values. The framing is told apart by the length prefix.
   */
  async #decryptV2(
    key: AesKey,
    cipher: ModuleCipher,
    raw: Uint8Array,
    header: TStruct,
    rg: number,
    col: number,
    ordinal: number,
  ): Promise<Uint8Array> {
    const v2 = header.struct(PH.dataPageHeaderV2);
    const levels = (v2?.int(DPH2.repetitionLevelsByteLength) ?? 0) +
      (v2?.int(DPH2.definitionLevelsByteLength) ?? 0);
    const wholeLen = raw.length >= 4
      ? new DataView(raw.buffer, raw.byteOffset, 4).getUint32(0, true) + 4
      : -1;
    if (levels === 0 || wholeLen === raw.length) {
      return await this.#decrypt(key, cipher, raw, ModuleType.DataPage, rg, col, ordinal);
    }
    if (levels > raw.length) throw new PmeFormatError("V2 page level lengths exceed the page size");
    const values = await this.#decrypt(
      key,
      cipher,
      raw.subarray(levels),
      ModuleType.DataPage,
      rg,
      col,
      ordinal,
    );
    const out = new Uint8Array(levels + values.length);
    out.set(raw.subarray(0, levels));
    out.set(values, levels);
    return out;
  }

  async #indexModule(
    rg: number,
    col: number,
    offset: number | undefined,
    length: number | undefined,
    type: ModuleType,
    what: string,
  ): Promise<Uint8Array | undefined> {
    if (offset === undefined || length === undefined || length === 0) return undefined;
    return await locate(this.#loc(rg, col, { module: what }), async () => {
      const c = await this.#requireKey(rg, col);
      const raw = await this.#source.read(offset, length);
      const plain = c.key ? await this.#decrypt(c.key, "gcm", raw, type, rg, col, 0) : raw;
      const { length: used } = decodeStruct(plain, 0, what);
      return plain.subarray(0, used);
    });
  }

  /** Column index of a chunk as exact Thrift bytes (plaintext), if the file has one. */
  columnIndex(rg: number, col: number): Promise<Uint8Array | undefined> {
    const chunk = this.#chunk(rg, col);
    return this.#indexModule(
      rg,
      col,
      chunk.int(CC.columnIndexOffset),
      chunk.int(CC.columnIndexLength),
      ModuleType.ColumnIndex,
      "column index",
    );
  }

  /** Offset index of a chunk, if the file has one. */
  async offsetIndex(rg: number, col: number): Promise<TStruct | undefined> {
    const chunk = this.#chunk(rg, col);
    const bytes = await this.#indexModule(
      rg,
      col,
      chunk.int(CC.offsetIndexOffset),
      chunk.int(CC.offsetIndexLength),
      ModuleType.OffsetIndex,
      "offset index",
    );
    return bytes ? decodeStruct(bytes, 0, "offset index").struct : undefined;
  }

  /** Bloom filter of a chunk, if the file has one. */
  async bloomFilter(rg: number, col: number): Promise<BloomFilter | undefined> {
    const cmd = await this.columnMetaData(rg, col);
    const offset = cmd.int(CMD.bloomFilterOffset);
    if (offset === undefined) return undefined;
    const declared = cmd.int(CMD.bloomFilterLength);
    return await locate(this.#loc(rg, col, { module: "bloom filter" }), async () => {
      const c = await this.#requireKey(rg, col);
      const avail = this.#source.size - 8 - offset;
      const first = await this.#source.read(offset, Math.min(declared ?? 4096, avail));
      if (c.key) {
        const hsize = moduleSize(first, 0, first.length, "gcm");
        const hplain = await this.#decrypt(
          c.key,
          "gcm",
          first.subarray(0, hsize),
          ModuleType.BloomFilterHeader,
          rg,
          col,
          0,
        );
        const { struct, length } = decodeStruct(hplain, 0, "bloom filter header");
        const numBytes = struct.reqInt(BFH.numBytes, "BloomFilterHeader.numBytes");
        const bitsetModule = await this.#source.read(offset + hsize, numBytes + GCM_OVERHEAD);
        const bitset = await this.#decrypt(
          c.key,
          "gcm",
          bitsetModule,
          ModuleType.BloomFilterBitset,
          rg,
          col,
          0,
        );
        if (bitset.length !== numBytes) {
          throw new PmeFormatError(`bloom filter bitset has ${bitset.length} bytes, header says ${numBytes}`);
        }
        return { header: hplain.subarray(0, length), bitset };
      }
      const { struct, length } = decodeStruct(first, 0, "bloom filter header");
      const numBytes = struct.reqInt(BFH.numBytes, "BloomFilterHeader.numBytes");
      const bitset = await this.#source.read(offset + length, numBytes);
      return { header: first.slice(0, length), bitset };
    });
  }

  /** Releases the source. */
  close(): void {
    this.#source.close();
  }
}

function locateFooter<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw e instanceof PmeError ? e.at({ module: "footer" }) : e;
  }
}

/** Algorithm, file AAD and footer key (if available) of an encrypted file. */
async function footerCrypto(
  source: ByteSource,
  options: DecryptionOptions,
  algStruct: TStruct,
  footerKeyMetadata: Uint8Array | undefined,
): Promise<{ algorithm: AlgorithmInfo; fAad: Uint8Array; footerKey?: AesKey; reason?: string }> {
  const algorithm = fileAlgorithm(algStruct, options);
  const fAad = resolveFileAad(algorithm, options.aadPrefix);
  const { key: footerKey, reason } = await retrieveKey(options.footerKey, footerKeyMetadata, options, {
    kind: "footer",
    file: source.name,
  });
  return { algorithm, fAad, footerKey, reason };
}

/** Parses the file's algorithm and applies the caller's algorithm requirement. */
function fileAlgorithm(s: TStruct, options: DecryptionOptions): AlgorithmInfo {
  const algorithm = parseAlgorithm(s);
  if (options.requireAlgorithm && algorithm.algorithm !== options.requireAlgorithm) {
    throw new PmeAuthError(
      `file is encrypted with ${algorithm.algorithm}, but ${options.requireAlgorithm} is required`,
      { module: "footer" },
      "the file was written with other settings, or its crypto metadata was changed (algorithm downgrade)",
    );
  }
  return algorithm;
}

/** Applies the AAD-prefix rules of Encryption.md §4.4 / parquet-java and Arrow C++. */
function resolveFileAad(alg: AlgorithmInfo, supplied: Uint8Array | undefined): Uint8Array {
  if (alg.aadPrefix) {
    if (supplied && !sameBytes(supplied, alg.aadPrefix)) {
      throw new PmeAadPrefixError(
        "the supplied AAD prefix differs from the one stored in the file",
        { module: "footer" },
        "omit the AAD prefix or supply the file's",
      );
    }
    return fileAad(alg.aadPrefix, alg.aadFileUnique);
  }
  if (alg.supplyAadPrefix && !supplied) {
    throw new PmeAadPrefixError(
      "the file was written with an AAD prefix that is not stored in it",
      { module: "footer" },
      "supply the AAD prefix used when the file was written",
    );
  }
  if (!alg.supplyAadPrefix && supplied) {
    throw new PmeAadPrefixError(
      "an AAD prefix was supplied but the file was written without one",
      { module: "footer" },
      "omit the AAD prefix",
    );
  }
  return fileAad(supplied, alg.aadFileUnique);
}

/** A key from explicit options or the retriever; `reason` when the retriever declined. */
interface RetrievedKey {
  key?: AesKey;
  reason?: string;
}

/**
 * Resolves a key: explicit bytes first, else the key retriever. A retriever that throws
 * {@link PmeKeyMissingError} declines (for example a KMS denied access): the key is then not
 * available, with that reason. Any other error propagates.
 */
async function retrieveKey(
  explicit: Uint8Array | undefined,
  keyMetadata: Uint8Array | undefined,
  options: DecryptionOptions,
  request: KeyRequest,
): Promise<RetrievedKey> {
  const what = request.kind === "footer" ? "footer key" : `key of column ${request.column}`;
  if (explicit) return { key: await AesKey.import(explicit, what) };
  if (!options.keyRetriever || !keyMetadata) return {};
  let bytes: Uint8Array | null | undefined;
  try {
    bytes = await options.keyRetriever(keyMetadata, request);
  } catch (e) {
    if (e instanceof PmeKeyMissingError) return { reason: e.what };
    throw e;
  }
  return bytes ? { key: await AesKey.import(bytes, what) } : {};
}
