/**
 * External key material: a `_KEY_MATERIAL_FOR_<parquet file name>.json` file beside the Parquet file
 * (parquet-java `HadoopFSKeyMaterialStore`, Arrow C++ `FileSystemKeyMaterialStore`): one JSON object
 * mapping key reference → the key material JSON as a string. Saved atomically.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { KeyMaterialError } from "./errors.ts";
import { type KeyMaterial, keyMaterialJson, parseKeyMaterial } from "./key_material.ts";
import { writeFileAtomic } from "./atomic_file.ts";

/** Prefix of key material files. */
export const KEY_MATERIAL_PREFIX = "_KEY_MATERIAL_FOR_";
/** Prefix of the temporary key material files of a rotation. */
export const TMP_KEY_MATERIAL_PREFIX = "_TMP_KEY_MATERIAL_FOR_";

/** Path of the key material file of a Parquet file. */
export function keyMaterialPath(parquetPath: string): string {
  return join(dirname(parquetPath), `${KEY_MATERIAL_PREFIX}${basename(parquetPath)}.json`);
}

/** The Parquet file a key material file belongs to, or undefined when the name does not match. */
export function parquetPathOf(keyMaterialFile: string): string | undefined {
  const name = basename(keyMaterialFile);
  if (!name.startsWith(KEY_MATERIAL_PREFIX) || !name.endsWith(".json")) return undefined;
  return join(dirname(keyMaterialFile), name.slice(KEY_MATERIAL_PREFIX.length, -".json".length));
}

/** The key material of one Parquet file, by key reference. */
export class KeyMaterialStore {
  #entries: Map<string, KeyMaterial>;

  private constructor(readonly parquetPath: string, entries: Map<string, KeyMaterial>) {
    this.#entries = entries;
  }

  /** An empty store for a Parquet file about to be written. */
  static empty(parquetPath: string): KeyMaterialStore {
    return new KeyMaterialStore(parquetPath, new Map());
  }

  /** Loads the store of a Parquet file; fails clearly when the file is missing or malformed. */
  static async load(parquetPath: string, path = keyMaterialPath(parquetPath)): Promise<KeyMaterialStore> {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new KeyMaterialError(`external key material ${path} is missing`, {
          hint: "it must lie beside the Parquet file under that name",
        });
      }
      throw e;
    }
    let o: unknown;
    try {
      o = JSON.parse(text);
    } catch {
      throw new KeyMaterialError(`external key material ${path} is not JSON`);
    }
    if (!o || typeof o !== "object" || Array.isArray(o)) {
      throw new KeyMaterialError(`external key material ${path} is not a JSON object`);
    }
    const entries = new Map<string, KeyMaterial>();
    for (const [ref, value] of Object.entries(o as Record<string, unknown>)) {
      if (typeof value !== "string") throw new KeyMaterialError(`entry ${ref} of ${path} is not a string`);
      try {
        entries.set(ref, parseKeyMaterial(value));
      } catch (e) {
        throw new KeyMaterialError(`entry ${ref} of ${path}: ${(e as Error).message}`);
      }
    }
    return new KeyMaterialStore(parquetPath, entries);
  }

  /** Key references in the store. */
  refs(): string[] {
    return [...this.#entries.keys()];
  }

  /** The material of a reference. */
  get(ref: string): KeyMaterial {
    const m = this.#entries.get(ref);
    if (!m) {
      throw new KeyMaterialError(`key reference ${ref} is not in ${keyMaterialPath(this.parquetPath)}`, {
        hint: "the key material file does not belong to this Parquet file",
      });
    }
    return m;
  }

  /** Sets the material of a reference. */
  set(ref: string, material: KeyMaterial): void {
    this.#entries.set(ref, material);
  }

  /** Removes a reference. */
  delete(ref: string): void {
    this.#entries.delete(ref);
  }

  /** The store's JSON text. */
  toJson(): string {
    const o: Record<string, string> = {};
    for (const [ref, m] of this.#entries) o[ref] = keyMaterialJson(m);
    return JSON.stringify(o);
  }

  /** Saves atomically to `path` (default: beside the Parquet file). */
  async save(path = keyMaterialPath(this.parquetPath), tmpName?: string): Promise<void> {
    await writeFileAtomic(path, new TextEncoder().encode(this.toJson()), { tmpName });
  }
}
