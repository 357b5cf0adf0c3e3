/**
 * Page framing for the transcoder: turns a decrypted page into the bytes to write — encrypted page
 * module(s) and encrypted header module, or plaintext — with the header's sizes and CRC updated.
 *
 * @module
 */

import { crc32 } from "node:zlib";
import { encodeStruct } from "./thrift.ts";
import { type AesKey, encryptModule, encryptModuleParts, type ModuleCipher } from "./cipher.ts";
import { moduleAad, ModuleType } from "./aad.ts";
import { PmeUnsupportedError } from "./errors.ts";
import { DPH2, PageType, PH } from "./metadata.ts";
import type { Page } from "./reader.ts";

/** A page ready to write: header bytes (plain or module) and body parts, back to back. */
export interface FramedPage {
  type: PageType;
  header: Uint8Array;
  body: Uint8Array[];
  /** uncompressed_page_size from the header. */
  uncompressed: number;
}

/** What framing needs to know about the output file and chunk. */
export interface FrameContext {
  fileAad: Uint8Array;
  rowGroup: number;
  column: number;
  pageCipher: ModuleCipher;
  /** parquet-java's V2 framing: level bytes in clear. */
  v2LevelsPlaintext: boolean;
  /** Write a CRC on every page (else only where the input had one). */
  checksums?: boolean;
}

/** Encrypts (with `key`) or passes through one page and builds its header. */
export async function framePage(page: Page, key: AesKey | undefined, ctx: FrameContext): Promise<FramedPage> {
  const header = page.header.clone();
  const { fileAad, rowGroup: rg, column: col } = ctx;
  const isDict = page.type === PageType.DictionaryPage;
  const isData = page.type === PageType.DataPage || page.type === PageType.DataPageV2;
  let body: Uint8Array[];
  if (!key) body = [page.payload];
  else if (isDict) {
    body = await encryptModuleParts(
      key,
      ctx.pageCipher,
      page.payload,
      moduleAad(fileAad, ModuleType.DictionaryPage, rg, col),
    );
  } else if (isData) {
    const aad = moduleAad(fileAad, ModuleType.DataPage, rg, col, page.ordinal);
    const v2 = header.struct(PH.dataPageHeaderV2);
    const levels = page.type === PageType.DataPageV2 && ctx.v2LevelsPlaintext
      ? (v2?.int(DPH2.repetitionLevelsByteLength) ?? 0) + (v2?.int(DPH2.definitionLevelsByteLength) ?? 0)
      : 0;
    body = levels > 0
      ? [
        page.payload.subarray(0, levels),
        ...await encryptModuleParts(key, ctx.pageCipher, page.payload.subarray(levels), aad),
      ]
      : await encryptModuleParts(key, ctx.pageCipher, page.payload, aad);
  } else {
    throw new PmeUnsupportedError(`page type ${page.type} cannot be encrypted`);
  }
  header.setI32(PH.compressedPageSize, body.reduce((n, b) => n + b.length, 0));
  if (header.has(PH.crc) || ctx.checksums) {
    // CRC over the page bytes as written (after encryption), as parquet-java and Arrow C++ do.
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
        moduleAad(fileAad, headerType, rg, col, isDict ? 0 : page.ordinal),
      )
      : plainHeader,
    body,
    uncompressed: header.reqInt(PH.uncompressedPageSize, "uncompressed_page_size"),
  };
}
