/**
 * Key material (PKMT1) and key metadata of the Parquet key tools, byte-compatible with parquet-java
 * and Arrow C++:
 *
 * - key material: `{"keyMaterialType":"PKMT1",["internalStorage":true,]"isFooterKey":…,
 *   ["kmsInstanceID":…,"kmsInstanceURL":…,]"masterKeyID":…,"wrappedDEK":…,"doubleWrapping":…,
 *   ["keyEncryptionKeyID":…,"wrappedKEK":…]}` (Arrow C++ field order; parsers accept any order);
 * - key metadata stored in the Parquet file: the key material itself plus `"internalStorage":true`
 *   (internal storage), or `{"keyMaterialType":"PKMT1","internalStorage":false,"keyReference":…}`
 *   pointing into an external key material file.
 *
 * @module
 */

import { KeyMaterialError } from "./errors.ts";

/** The only key material type. */
export const KEY_MATERIAL_TYPE = "PKMT1";

/** Wrapped key material of one data key. */
export interface KeyMaterial {
  isFooterKey: boolean;
  /** KMS instance id and URL: footer key only. */
  kmsInstanceId?: string;
  kmsInstanceUrl?: string;
  masterKeyId: string;
  /** Wrapped DEK: KMS text (single wrapping) or local wrapping under the KEK (double wrapping). */
  wrappedDek: string;
  doubleWrapping: boolean;
  /** Base64 of the 16-byte KEK id (double wrapping). */
  kekId?: string;
  /** KEK wrapped by the KMS (double wrapping). */
  wrappedKek?: string;
}

/** Parsed key metadata: the material itself, or a reference into an external store. */
export type KeyMetadata = { internal: true; material: KeyMaterial } | { internal: false; reference: string };

const te = new TextEncoder();

/** Serialises key material as compact JSON; `internalStorage` is set for internal key metadata. */
export function keyMaterialJson(m: KeyMaterial, internalStorage?: boolean): string {
  const o: Record<string, unknown> = { keyMaterialType: KEY_MATERIAL_TYPE };
  if (internalStorage !== undefined) o.internalStorage = internalStorage;
  o.isFooterKey = m.isFooterKey;
  if (m.isFooterKey) {
    o.kmsInstanceID = m.kmsInstanceId;
    o.kmsInstanceURL = m.kmsInstanceUrl;
  }
  o.masterKeyID = m.masterKeyId;
  o.wrappedDEK = m.wrappedDek;
  o.doubleWrapping = m.doubleWrapping;
  if (m.doubleWrapping) {
    o.keyEncryptionKeyID = m.kekId;
    o.wrappedKEK = m.wrappedKek;
  }
  return JSON.stringify(o);
}

/** Key metadata bytes for internally stored key material. */
export function internalKeyMetadata(m: KeyMaterial): Uint8Array {
  return te.encode(keyMaterialJson(m, true));
}

/** Key metadata bytes that reference external key material. */
export function externalKeyMetadata(reference: string): Uint8Array {
  return te.encode(
    JSON.stringify({ keyMaterialType: KEY_MATERIAL_TYPE, internalStorage: false, keyReference: reference }),
  );
}

function field<T>(
  o: Record<string, unknown>,
  name: string,
  type: "string" | "boolean",
  required: boolean,
): T | undefined {
  const v = o[name];
  if (v === undefined || v === null) {
    if (required) throw new KeyMaterialError(`key material lacks "${name}"`);
    return undefined;
  }
  const ok = type === "string" ? typeof v === "string" : typeof v === "boolean";
  if (!ok) throw new KeyMaterialError(`key material field "${name}" is not a ${type}`);
  return v as T;
}

function parseObject(json: string | Record<string, unknown>, what: string): Record<string, unknown> {
  if (typeof json !== "string") return json;
  let o: unknown;
  try {
    o = JSON.parse(json);
  } catch {
    throw new KeyMaterialError(`${what} is not JSON`, {
      hint: "the file was not written with the key tools (PKMT1)",
    });
  }
  if (!o || typeof o !== "object" || Array.isArray(o)) {
    throw new KeyMaterialError(`${what} is not a JSON object`);
  }
  return o as Record<string, unknown>;
}

/** Parses key material (any field order, as parquet-java writes it). */
export function parseKeyMaterial(json: string | Record<string, unknown>): KeyMaterial {
  const o = parseObject(json, "key material");
  const type = field<string>(o, "keyMaterialType", "string", true);
  if (type !== KEY_MATERIAL_TYPE) {
    throw new KeyMaterialError(`unknown key material type ${JSON.stringify(type)}`);
  }
  const isFooterKey = field<boolean>(o, "isFooterKey", "boolean", true)!;
  const doubleWrapping = field<boolean>(o, "doubleWrapping", "boolean", true)!;
  const m: KeyMaterial = {
    isFooterKey,
    masterKeyId: field<string>(o, "masterKeyID", "string", true)!,
    wrappedDek: field<string>(o, "wrappedDEK", "string", true)!,
    doubleWrapping,
  };
  if (isFooterKey) {
    m.kmsInstanceId = field<string>(o, "kmsInstanceID", "string", false);
    m.kmsInstanceUrl = field<string>(o, "kmsInstanceURL", "string", false);
  }
  if (doubleWrapping) {
    m.kekId = field<string>(o, "keyEncryptionKeyID", "string", true);
    m.wrappedKek = field<string>(o, "wrappedKEK", "string", true);
  }
  return m;
}

/** Parses the key metadata bytes stored in a Parquet file. */
export function parseKeyMetadata(bytes: Uint8Array): KeyMetadata {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new KeyMaterialError("key metadata is not UTF-8", {
      hint: "the file was not written with the key tools",
    });
  }
  const o = parseObject(text, "key metadata");
  if (o.keyMaterialType !== KEY_MATERIAL_TYPE) {
    throw new KeyMaterialError(
      `key metadata has key material type ${JSON.stringify(o.keyMaterialType)}, not PKMT1`,
    );
  }
  const internal = field<boolean>(o, "internalStorage", "boolean", true)!;
  if (internal) return { internal: true, material: parseKeyMaterial(o) };
  const reference = field<string>(o, "keyReference", "string", true)!;
  return { internal: false, reference };
}
