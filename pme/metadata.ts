/**
 * Field ids and helpers for the Parquet metadata structures (parquet.thrift) that the engine
 * reads and rewrites. Structures stay generic {@link TStruct}s so that unknown fields survive.
 *
 * @module
 */

import { CT, TList, TStruct } from "./thrift.ts";
import type { PmeAlgorithm } from "./cipher.ts";
import { PmeFormatError, PmeUnsupportedError } from "./errors.ts";

/** FileMetaData field ids. */
export const FMD = {
  version: 1,
  schema: 2,
  numRows: 3,
  rowGroups: 4,
  keyValueMetadata: 5,
  createdBy: 6,
  columnOrders: 7,
  encryptionAlgorithm: 8,
  footerSigningKeyMetadata: 9,
} as const;

/** SchemaElement field ids. */
export const SE = { type: 1, typeLength: 2, repetition: 3, name: 4, numChildren: 5 } as const;

/** RowGroup field ids. */
export const RG = {
  columns: 1,
  totalByteSize: 2,
  numRows: 3,
  sortingColumns: 4,
  fileOffset: 5,
  totalCompressedSize: 6,
  ordinal: 7,
} as const;

/** ColumnChunk field ids. */
export const CC = {
  filePath: 1,
  fileOffset: 2,
  metaData: 3,
  offsetIndexOffset: 4,
  offsetIndexLength: 5,
  columnIndexOffset: 6,
  columnIndexLength: 7,
  cryptoMetadata: 8,
  encryptedColumnMetadata: 9,
} as const;

/** ColumnMetaData field ids. */
export const CMD = {
  type: 1,
  encodings: 2,
  pathInSchema: 3,
  codec: 4,
  numValues: 5,
  totalUncompressedSize: 6,
  totalCompressedSize: 7,
  keyValueMetadata: 8,
  dataPageOffset: 9,
  indexPageOffset: 10,
  dictionaryPageOffset: 11,
  statistics: 12,
  encodingStats: 13,
  bloomFilterOffset: 14,
  bloomFilterLength: 15,
  sizeStatistics: 16,
  geospatialStatistics: 17,
} as const;

/** PageHeader field ids. */
export const PH = {
  type: 1,
  uncompressedPageSize: 2,
  compressedPageSize: 3,
  crc: 4,
  dataPageHeader: 5,
  indexPageHeader: 6,
  dictionaryPageHeader: 7,
  dataPageHeaderV2: 8,
} as const;

/** DataPageHeaderV2 field ids used here. */
export const DPH2 = {
  definitionLevelsByteLength: 5,
  repetitionLevelsByteLength: 6,
  isCompressed: 7,
} as const;

/** Page types. */
export enum PageType {
  DataPage = 0,
  IndexPage = 1,
  DictionaryPage = 2,
  DataPageV2 = 3,
}

/** OffsetIndex / PageLocation field ids. */
export const OI = { pageLocations: 1 } as const;
/** PageLocation field ids. */
export const PL = { offset: 1, compressedPageSize: 2, firstRowIndex: 3 } as const;

/** BloomFilterHeader field ids. */
export const BFH = { numBytes: 1 } as const;

/** Crypto structures. */
export const ALG = { gcmV1: 1, gcmCtrV1: 2 } as const;
/** AesGcmV1 / AesGcmCtrV1 field ids. */
export const AES = { aadPrefix: 1, aadFileUnique: 2, supplyAadPrefix: 3 } as const;
/** FileCryptoMetaData field ids. */
export const FCM = { encryptionAlgorithm: 1, keyMetadata: 2 } as const;
/** ColumnCryptoMetaData union members. */
export const CCM = { withFooterKey: 1, withColumnKey: 2 } as const;
/** EncryptionWithColumnKey field ids. */
export const EWCK = { pathInSchema: 1, keyMetadata: 2 } as const;

/** Parameters carried by an EncryptionAlgorithm union. */
export interface AlgorithmInfo {
  algorithm: PmeAlgorithm;
  aadPrefix?: Uint8Array;
  aadFileUnique: Uint8Array;
  supplyAadPrefix: boolean;
}

/** Parses an EncryptionAlgorithm union. */
export function parseAlgorithm(s: TStruct): AlgorithmInfo {
  const gcm = s.struct(ALG.gcmV1);
  const ctr = s.struct(ALG.gcmCtrV1);
  const inner = gcm ?? ctr;
  if (!inner) {
    throw new PmeUnsupportedError(
      "unknown encryption algorithm in file",
      { module: "footer" },
      "only AES_GCM_V1 and AES_GCM_CTR_V1 exist; the file is damaged or from a newer format version",
    );
  }
  return {
    algorithm: gcm ? "AES_GCM_V1" : "AES_GCM_CTR_V1",
    aadPrefix: inner.bin(AES.aadPrefix),
    aadFileUnique: inner.bin(AES.aadFileUnique) ?? new Uint8Array(0),
    supplyAadPrefix: inner.bool(AES.supplyAadPrefix) ?? false,
  };
}

/** Builds an EncryptionAlgorithm union (fields 2 and 3 always written, as parquet-java and Arrow do). */
export function algorithmStruct(info: AlgorithmInfo): TStruct {
  const inner = new TStruct();
  if (info.aadPrefix) inner.setBin(AES.aadPrefix, info.aadPrefix);
  inner.setBin(AES.aadFileUnique, info.aadFileUnique);
  inner.setBool(AES.supplyAadPrefix, info.supplyAadPrefix);
  return new TStruct().setStruct(info.algorithm === "AES_GCM_V1" ? ALG.gcmV1 : ALG.gcmCtrV1, inner);
}

/** A leaf column of the schema. */
export interface LeafColumn {
  /** Index among leaves (= column ordinal in row groups). */
  index: number;
  /** Path in schema, e.g. ["a", "list", "element"]. */
  path: string[];
  /** Dotted path. */
  dotted: string;
  /** Index of the leaf's SchemaElement in FileMetaData.schema. */
  elementIndex: number;
}

interface SchemaNode {
  element: TStruct;
  elementIndex: number;
  children: SchemaNode[];
}

function schemaTree(fmd: TStruct): SchemaNode {
  const elements = fmd.list(FMD.schema)?.items as TStruct[] | undefined;
  if (!elements?.length) throw new PmeFormatError("footer has no schema");
  let pos = 0;
  const build = (depth: number): SchemaNode => {
    if (pos >= elements.length) throw new PmeFormatError("schema ends before all children were listed");
    if (depth > 100) throw new PmeFormatError("schema nests too deep");
    const elementIndex = pos++;
    const element = elements[elementIndex];
    const n = element.int(SE.numChildren) ?? 0;
    const children: SchemaNode[] = [];
    for (let i = 0; i < n; i++) children.push(build(depth + 1));
    return { element, elementIndex, children };
  };
  const root = build(0);
  if (pos !== elements.length) throw new PmeFormatError("schema has elements outside its root");
  return root;
}

/** Lists the leaf columns of a FileMetaData's schema in order. */
export function leafColumns(fmd: TStruct): LeafColumn[] {
  const leaves: LeafColumn[] = [];
  const walk = (node: SchemaNode, path: string[]) => {
    if (node.children.length === 0) {
      leaves.push({ index: leaves.length, path, dotted: path.join("."), elementIndex: node.elementIndex });
      return;
    }
    for (const c of node.children) walk(c, [...path, c.element.str(SE.name) ?? ""]);
  };
  walk(schemaTree(fmd), []);
  return leaves;
}

/** Returns a schema list that keeps only the given leaves (and their ancestors). */
export function pruneSchema(fmd: TStruct, keep: Set<number>): TList {
  const out: TStruct[] = [];
  let leaf = 0;
  const walk = (node: SchemaNode): TStruct[] | null => {
    if (node.children.length === 0) return keep.has(leaf++) ? [node.element.clone()] : null;
    const kept: TStruct[] = [];
    let n = 0;
    for (const c of node.children) {
      const sub = walk(c);
      if (sub) {
        kept.push(...sub);
        n++;
      }
    }
    if (n === 0) return null;
    const el = node.element.clone();
    el.set(SE.numChildren, CT.I32, n);
    return [el, ...kept];
  };
  const root = schemaTree(fmd);
  const kept = walk(root);
  if (kept) out.push(...kept);
  else {
    const el = root.element.clone();
    el.set(SE.numChildren, CT.I32, 0);
    out.push(el);
  }
  return { ...fmd.list(FMD.schema)!, items: out };
}

/** Row groups of a FileMetaData. */
export function rowGroups(fmd: TStruct): TStruct[] {
  return (fmd.list(FMD.rowGroups)?.items ?? []) as TStruct[];
}

/** Column chunks of a row group. */
export function columnChunks(rg: TStruct): TStruct[] {
  return (rg.list(RG.columns)?.items ?? []) as TStruct[];
}
