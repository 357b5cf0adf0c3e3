/**
 * Column planning for a transcode: which input columns go to the output (selection, columns whose
 * key is missing) and how each is protected there (plaintext, footer key, own key). With
 * encryption, a column encrypted in the input is never planned as plaintext unless the caller named
 * it in `decryptColumns`.
 *
 * @module
 */

import { AesKey, validateWriteKey } from "./cipher.ts";
import { MAX_ORDINAL } from "./aad.ts";
import { PmeConfigError, PmeKeyMissingError, PmeProtectionError, PmeUnsupportedError } from "./errors.ts";
import { CC, columnChunks, rowGroups } from "./metadata.ts";
import type { ParquetReader } from "./reader.ts";
import type { TranscodeOptions } from "./options.ts";

/** How one output column is produced. */
export interface ColumnPlan {
  /** Input column index. */
  input: number;
  dotted: string;
  path: string[];
  /** Output key; undefined for a plaintext column. */
  key?: AesKey;
  /** Encrypted with its own key (EncryptionWithColumnKey) rather than the footer key. */
  withColumnKey: boolean;
  keyMetadata?: Uint8Array;
}

/** The plan of a transcode. */
export interface Plan {
  columns: ColumnPlan[];
  /** Input columns left out because their key is not available. */
  skipped: string[];
  /** Output columns encrypted in the input and written in plaintext. */
  decrypted: string[];
  /** Output footer key (encrypted output only). */
  footerKey?: AesKey;
}

/** True when `selector` names the column (its dotted leaf path) or one of its parents. */
export function matchesColumn(selector: string, dotted: string): boolean {
  return dotted === selector || dotted.startsWith(selector + ".");
}

/** True when the input column is encrypted in any row group. */
function encryptedInInput(reader: ParquetReader, column: number): boolean {
  return rowGroups(reader.metadata).some((g) => columnChunks(g)[column]?.has(CC.cryptoMetadata));
}

/** `column a is` / `columns a, b are`. */
function columnsAre(columns: string[]): string {
  return columns.length === 1 ? `column ${columns[0]} is` : `columns ${columns.join(", ")} are`;
}

/** How many columns' keys are requested from the key retriever at a time. */
const KEY_WINDOW = 4;

/**
 * Runs `fn` over the items, up to {@link KEY_WINDOW} at a time (item i starts when item i − 4 has
 * settled), so that column keys arrive in a few KMS round trips rather than one per column without
 * flooding the KMS. The caller awaits the results in order, so the first failure in column order
 * is the one reported; the others are marked handled.
 */
function concurrently<T, R>(items: T[], fn: (item: T) => Promise<R>): Promise<R>[] {
  const started: Promise<R>[] = [];
  for (const [i, item] of items.entries()) {
    const gate = i >= KEY_WINDOW ? started[i - KEY_WINDOW].then(() => {}, () => {}) : Promise.resolve();
    const p = gate.then(() => fn(item));
    p.catch(() => {});
    started.push(p);
  }
  return started;
}

/** Plans the output columns; fails before anything is written. */
export async function planColumns(reader: ParquetReader, options: TranscodeOptions): Promise<Plan> {
  const enc = options.encryption;
  const all = reader.columns;
  const listed = all.map((c) => c.dotted).join(", ");
  let selected = all;
  const skipped: string[] = [];
  const decrypt = options.decryptColumns ?? [];
  for (const sel of decrypt) {
    if (!all.some((c) => matchesColumn(sel, c.dotted))) {
      throw new PmeConfigError(
        `column ${sel}, named to be decrypted, is not in the file`,
        { file: reader.name },
        `columns are: ${listed}`,
      );
    }
  }
  const named = (dotted: string) => decrypt.some((sel) => matchesColumn(sel, dotted));
  if (options.columns) {
    if (options.columns.length === 0) {
      throw new PmeConfigError(
        "the column selection is empty",
        { file: reader.name },
        `name columns among: ${listed}`,
      );
    }
    for (const sel of options.columns) {
      if (!all.some((c) => matchesColumn(sel, c.dotted))) {
        throw new PmeConfigError(
          `column ${sel} is not in the file`,
          { file: reader.name },
          `columns are: ${listed}`,
        );
      }
    }
    selected = all.filter((c) => options.columns!.some((sel) => matchesColumn(sel, c.dotted)));
    const reasons = concurrently(selected, (c) => reader.unreadable(c.index));
    for (const [i, c] of selected.entries()) {
      const why = await reasons[i];
      if (why) {
        throw new PmeKeyMissingError(
          why,
          { file: reader.name, column: c.dotted },
          "supply its key, or leave the column out of the selection",
        );
      }
    }
  } else {
    const readable: typeof selected = [];
    const can = concurrently(selected, (c) => reader.canRead(c.index));
    for (const [i, c] of selected.entries()) {
      if (await can[i]) readable.push(c);
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
  if (!enc) {
    return {
      columns: selected.map((c) => ({
        input: c.index,
        dotted: c.dotted,
        path: c.path,
        withColumnKey: false,
      })),
      skipped,
      decrypted: selected.filter((c) => encryptedInInput(reader, c.index)).map((c) => c.dotted),
    };
  }
  if (selected.length > MAX_ORDINAL + 1) {
    throw new PmeUnsupportedError(
      `${selected.length} columns exceed the ${MAX_ORDINAL + 1} an encrypted file can hold`,
    );
  }
  validateWriteKey(enc.footerKey, "footer key");
  const footerKey = await AesKey.import(enc.footerKey, "footer key");
  const keyed = new Map<string, AesKey>();
  for (const [sel, ck] of Object.entries(enc.columnKeys ?? {})) {
    if (!selected.some((c) => matchesColumn(sel, c.dotted))) {
      throw new PmeConfigError(
        `column key given for ${sel}, which is not a column of the output`,
        { file: reader.name },
        `columns are: ${selected.map((c) => c.dotted).join(", ")}`,
      );
    }
    validateWriteKey(ck.key, `key of column ${sel}`);
    keyed.set(sel, await AesKey.import(ck.key, `key of column ${sel}`));
  }
  const columns = selected.map((c): ColumnPlan => {
    const base = { input: c.index, dotted: c.dotted, path: c.path, withColumnKey: false };
    if (!enc.columnKeys) return named(c.dotted) ? base : { ...base, key: footerKey };
    const sels = Object.keys(enc.columnKeys).filter((sel) => matchesColumn(sel, c.dotted));
    if (sels.length > 1) {
      throw new PmeConfigError(`column ${c.dotted} is matched by several column keys: ${sels.join(", ")}`);
    }
    if (sels.length === 1 && named(c.dotted)) {
      throw new PmeConfigError(
        `column ${c.dotted} is given a column key (${sels[0]}) and named to be decrypted`,
        { file: reader.name },
        "give it a key or name it to be decrypted, not both",
      );
    }
    if (sels.length === 0) return base;
    return {
      ...base,
      key: keyed.get(sels[0]),
      withColumnKey: true,
      keyMetadata: enc.columnKeys[sels[0]].keyMetadata,
    };
  });
  const unprotected = columns.filter((p) => !p.key && encryptedInInput(reader, p.input));
  const lowered = unprotected.filter((p) => !named(p.dotted)).map((p) => p.dotted);
  if (lowered.length) {
    throw new PmeProtectionError(
      `${columnsAre(lowered)} encrypted in the input but would be written in plaintext (the new ` +
        `encryption gives ${lowered.length === 1 ? "it" : "them"} no key)`,
      { file: reader.name },
      "give each a column key (columnKeys), or name it in decryptColumns to write it in plaintext on purpose",
      lowered,
    );
  }
  return { columns, skipped, decrypted: unprotected.map((p) => p.dotted), footerKey };
}
