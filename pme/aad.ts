/**
 * Additional authenticated data (AAD) of PME modules: the file AAD (prefix + unique part) followed by
 * a module type byte and the row-group, column and page ordinals as signed 16-bit little-endian
 * integers (Encryption.md §4.4).
 *
 * @module
 */

import { PmeUnsupportedError } from "./errors.ts";

/** Module types and their AAD type byte. */
export enum ModuleType {
  Footer = 0,
  ColumnMetaData = 1,
  DataPage = 2,
  DictionaryPage = 3,
  DataPageHeader = 4,
  DictionaryPageHeader = 5,
  ColumnIndex = 6,
  OffsetIndex = 7,
  BloomFilterHeader = 8,
  BloomFilterBitset = 9,
}

/** Human-readable module names for error messages. */
export const MODULE_NAMES: Record<ModuleType, string> = {
  [ModuleType.Footer]: "footer",
  [ModuleType.ColumnMetaData]: "column metadata",
  [ModuleType.DataPage]: "data page",
  [ModuleType.DictionaryPage]: "dictionary page",
  [ModuleType.DataPageHeader]: "data page header",
  [ModuleType.DictionaryPageHeader]: "dictionary page header",
  [ModuleType.ColumnIndex]: "column index",
  [ModuleType.OffsetIndex]: "offset index",
  [ModuleType.BloomFilterHeader]: "bloom filter header",
  [ModuleType.BloomFilterBitset]: "bloom filter bitset",
};

/** Largest ordinal a module AAD can carry (signed 16-bit). */
export const MAX_ORDINAL = 32767;

/** Length in bytes of the random unique part of the file AAD that this engine writes. */
export const AAD_FILE_UNIQUE_LENGTH = 8;

/** Concatenates the AAD prefix (possibly empty) and the file-unique part. */
export function fileAad(prefix: Uint8Array | undefined, unique: Uint8Array): Uint8Array {
  const out = new Uint8Array((prefix?.length ?? 0) + unique.length);
  if (prefix) out.set(prefix);
  out.set(unique, prefix?.length ?? 0);
  return out;
}

function checkOrdinal(kind: string, v: number) {
  if (!Number.isInteger(v) || v < 0 || v > MAX_ORDINAL) {
    throw new PmeUnsupportedError(
      `${kind} ordinal ${v} does not fit the 16-bit AAD field`,
      {},
      `encrypted files may have at most ${MAX_ORDINAL + 1} ${kind}s`,
    );
  }
}

/**
 * Builds a module AAD. The footer takes no ordinals; pages and page headers take all three; the
 * other modules take row group and column.
 */
export function moduleAad(
  fileAadBytes: Uint8Array,
  type: ModuleType,
  rowGroup = 0,
  column = 0,
  page = 0,
): Uint8Array {
  const base = fileAadBytes.length;
  if (type === ModuleType.Footer) {
    const out = new Uint8Array(base + 1);
    out.set(fileAadBytes);
    out[base] = type;
    return out;
  }
  const withPage = type === ModuleType.DataPage || type === ModuleType.DataPageHeader;
  checkOrdinal("row group", rowGroup);
  checkOrdinal("column", column);
  if (withPage) checkOrdinal("page", page);
  const out = new Uint8Array(base + (withPage ? 7 : 5));
  out.set(fileAadBytes);
  out[base] = type;
  const view = new DataView(out.buffer);
  view.setInt16(base + 1, rowGroup, true);
  view.setInt16(base + 3, column, true);
  if (withPage) view.setInt16(base + 5, page, true);
  return out;
}
