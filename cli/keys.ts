/**
 * Parsing of keys given on the command line: `ID=HEX` (32, 48 or 64 hex digits) or
 * `ID=base64:B64`. The key metadata of such a key is the UTF-8 bytes of ID (the "key retriever"
 * convention of the parquet-testing files).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { KeyRetriever } from "../pme/mod.ts";

/** A key given on the command line. */
export interface CliKey {
  id: string;
  key: Uint8Array;
}

/** Error in command-line usage. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * Parses key bytes: 32/48/64 hex digits or `base64:B64` of 16/24/32 bytes. `label` starts error
 * messages (e.g. `--key kf`).
 */
export function parseKeyBytes(value: string, label: string): Uint8Array {
  let key: Uint8Array;
  if (value.startsWith("base64:")) {
    const b64 = value.slice(7);
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || b64.length % 4 !== 0) {
      throw new UsageError(`${label}: the base64 key is not valid base64`);
    }
    key = new Uint8Array(Buffer.from(b64, "base64"));
  } else {
    if (!/^[0-9a-fA-F]*$/.test(value)) {
      throw new UsageError(`${label}: the key is not hexadecimal (or prefix it with base64:)`);
    }
    if (![32, 48, 64].includes(value.length)) {
      throw new UsageError(`${label}: a hex key has 32, 48 or 64 digits, got ${value.length}`);
    }
    key = new Uint8Array(Buffer.from(value, "hex"));
  }
  if (![16, 24, 32].includes(key.length)) {
    key.fill(0);
    throw new UsageError(`${label}: keys are 16, 24 or 32 bytes, got ${key.length}`);
  }
  return key;
}

/** Parses `ID=HEX` or `ID=base64:B64`. The option name is used in error messages. */
export function parseKey(spec: string, option: string): CliKey {
  const eq = spec.indexOf("=");
  if (eq <= 0) throw new UsageError(`${option} expects ID=HEX or ID=base64:B64, got a value without "ID="`);
  const id = spec.slice(0, eq);
  return { id, key: parseKeyBytes(spec.slice(eq + 1), `${option} ${id}`) };
}

/** Parses `PATH:ID=KEY` (a column key). */
export function parseColumnKey(spec: string, option: string): CliKey & { column: string } {
  const colon = spec.indexOf(":");
  const eq = spec.indexOf("=");
  if (colon <= 0 || (eq >= 0 && colon > eq)) throw new UsageError(`${option} expects COLUMN:ID=KEY`);
  return { column: spec.slice(0, colon), ...parseKey(spec.slice(colon + 1), option) };
}

/** A key retriever over CLI keys: key metadata = UTF-8 key id. */
export function retrieverFor(keys: CliKey[]): KeyRetriever {
  const byId = new Map(keys.map((k) => [k.id, k.key]));
  const td = new TextDecoder("utf-8", { fatal: false });
  return (meta) => Promise.resolve(byId.get(td.decode(meta)) ?? null);
}
