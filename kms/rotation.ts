/**
 * Master-key rotation without rewriting data (key tools `rotateMasterKeys`): after the master keys
 * were rotated in the KMS, every external key material file under a folder is re-wrapped with the
 * newest master-key versions. With a KMS that re-wraps inside itself (Vault `rewrap`) no DEK or KEK
 * reaches this process; otherwise keys are unwrapped and wrapped again here.
 *
 * Each file is replaced atomically (temporary file, fsync, rename) and verified readable first, so a
 * crash at any point leaves every file readable with the versions the KMS still accepts. A second
 * run resumes: files whose keys are already current are skipped. Raising the KMS's minimum
 * decryption version is a separate, explicit step ({@link checkAllCurrent} tells when it is safe).
 *
 * @module
 */

import { basename, join } from "node:path";
import type { KmsClient } from "./client.ts";
import { type KeyMaterial, parseKeyMetadata } from "./key_material.ts";
import { type DecryptionOptions, fileSource, openParquetFile, peekFooter } from "../pme/mod.ts";
import {
  KEY_MATERIAL_PREFIX,
  KeyMaterialStore,
  parquetPathOf,
  TMP_KEY_MATERIAL_PREFIX,
} from "./key_material_store.ts";
import { KeyMaterialError, KmsError } from "./errors.ts";
import { syncDir } from "./atomic_file.ts";

/** Outcome of a rotation. */
export interface RotationReport {
  rotated: string[];
  /** Already wrapped by the newest versions (e.g. by an interrupted earlier run). */
  current: string[];
  failed: { file: string; error: string }[];
  /** Wrapped keys re-wrapped per file, summed (DEKs with single wrapping, KEKs with double wrapping; a KEK shared by several files is re-wrapped by the KMS once). */
  keysRewrapped: number;
  /** KMS calls made (rewrap, unwrap, wrap, verification). */
  kmsCalls: number;
}

/** Lists key material files under `dir` (recursively); removes stale temporary ones. */
export async function keyMaterialFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      const path = join(d, e.name);
      if (e.isDirectory) await walk(path);
      else if (e.isFile && e.name.startsWith(TMP_KEY_MATERIAL_PREFIX)) {
        await Deno.remove(path).catch(() => {});
      } else if (e.isFile && e.name.startsWith(KEY_MATERIAL_PREFIX) && e.name.endsWith(".json")) {
        out.push(path);
      }
    }
  };
  await walk(dir);
  return out.sort();
}

/** The KMS-wrapped strings of a material: the wrapped DEK (single) or wrapped KEK (double). */
function kmsWrapped(m: KeyMaterial): string {
  return m.doubleWrapping ? m.wrappedKek! : m.wrappedDek;
}

function withKmsWrapped(m: KeyMaterial, wrapped: string): KeyMaterial {
  return m.doubleWrapping ? { ...m, wrappedKek: wrapped } : { ...m, wrappedDek: wrapped };
}

/** Counts KMS calls of a client. */
function counting(kms: KmsClient): { kms: KmsClient; calls: () => number } {
  let n = 0;
  const wrapped: KmsClient = {
    wrapKey: (k, id) => (n++, kms.wrapKey(k, id)),
    unwrapKey: (w, id) => (n++, kms.unwrapKey(w, id)),
    rewrapKey: kms.rewrapKey && ((w, id) => (n++, kms.rewrapKey!(w, id))),
    isCurrent: kms.isCurrent && ((w, id) => (n++, kms.isCurrent!(w, id))),
  };
  return { kms: wrapped, calls: () => n };
}

async function isCurrent(kms: KmsClient, m: KeyMaterial): Promise<boolean> {
  return kms.isCurrent ? await kms.isCurrent(kmsWrapped(m), m.masterKeyId) : false;
}

/** Re-wraps one KMS-wrapped key under the newest master-key version. */
async function rewrap(kms: KmsClient, wrapped: string, masterKeyId: string): Promise<string> {
  if (kms.rewrapKey) return await kms.rewrapKey(wrapped, masterKeyId);
  const key = await kms.unwrapKey(wrapped, masterKeyId);
  try {
    return await kms.wrapKey(key, masterKeyId);
  } finally {
    key.fill(0);
  }
}

/** Checks that a re-wrapped key still yields the same key (or, with rewrap, that the KMS accepts it). */
async function verify(kms: KmsClient, before: string, after: string, masterKeyId: string): Promise<void> {
  if (kms.rewrapKey) {
    // Rewrapping decrypts inside the KMS: success proves readability without exposing the key.
    await kms.rewrapKey(after, masterKeyId);
    return;
  }
  const [a, b] = await Promise.all([kms.unwrapKey(before, masterKeyId), kms.unwrapKey(after, masterKeyId)]);
  const same = a.length === b.length && a.every((x, i) => x === b[i]);
  a.fill(0);
  b.fill(0);
  if (!same) {
    throw new KeyMaterialError(`re-wrapped key of master key ${masterKeyId} differs from the original`);
  }
}

/**
 * Memory of one rotation run: KEKs are shared by many files (one KEK per master key and cache
 * lifetime), so each distinct wrapped key is checked, re-wrapped and verified once per run.
 */
export class RotationMemo {
  readonly current = new Map<string, Promise<boolean>>();
  readonly rewrapped = new Map<string, Promise<string>>();
}

function memo<T>(map: Map<string, Promise<T>>, key: string, fn: () => Promise<T>): Promise<T> {
  let p = map.get(key);
  if (!p) {
    p = fn();
    map.set(key, p);
    p.catch(() => map.get(key) === p && map.delete(key));
  }
  return p;
}

/** Rotates one key material file; returns the number of keys re-wrapped, 0 when already current. */
export async function rotateKeyMaterialFile(
  kms: KmsClient,
  file: string,
  run = new RotationMemo(),
): Promise<number> {
  const parquet = parquetPathOf(file);
  if (!parquet) throw new KeyMaterialError(`${file} is not a key material file`);
  const store = await KeyMaterialStore.load(parquet, file);
  const refs = store.refs();
  const materials = refs.map((r) => store.get(r));
  const current = await Promise.all(
    materials.map((m) => memo(run.current, kmsWrapped(m), () => isCurrent(kms, m))),
  );
  if (current.every(Boolean)) return 0;
  const next = KeyMaterialStore.empty(parquet);
  const distinct = new Set<string>();
  for (const [i, m] of materials.entries()) {
    const w = kmsWrapped(m);
    distinct.add(w);
    const rewrapped = await memo(run.rewrapped, w, async () => {
      const after = await rewrap(kms, w, m.masterKeyId);
      await verify(kms, w, after, m.masterKeyId);
      return after;
    });
    next.set(refs[i], withKmsWrapped(m, rewrapped));
  }
  await next.save(file, `${TMP_KEY_MATERIAL_PREFIX}${basename(file).slice(KEY_MATERIAL_PREFIX.length)}`);
  return distinct.size;
}

/**
 * Rotates every key material file under `dir`. Files that fail are reported and the others still
 * rotated; re-running after a crash or failure resumes.
 */
export async function rotateMasterKeys(
  kmsClient: KmsClient,
  dir: string,
  onProgress?: (done: number, total: number, file: string) => void,
): Promise<RotationReport> {
  const { kms, calls } = counting(kmsClient);
  const files = await keyMaterialFiles(dir);
  const report: RotationReport = { rotated: [], current: [], failed: [], keysRewrapped: 0, kmsCalls: 0 };
  const run = new RotationMemo();
  for (const [i, file] of files.entries()) {
    try {
      const n = await rotateKeyMaterialFile(kms, file, run);
      if (n === 0) report.current.push(file);
      else {
        report.rotated.push(file);
        report.keysRewrapped += n;
      }
    } catch (e) {
      if (!(e instanceof KmsError)) throw e;
      report.failed.push({ file, error: e.message });
    }
    onProgress?.(i + 1, files.length, file);
  }
  await syncDir(dir);
  report.kmsCalls = calls();
  return report;
}

/** Parquet files under `dir` (recursively), hidden and temporary files excluded. */
async function parquetFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      const path = join(d, e.name);
      if (e.name.startsWith(".") || e.name.startsWith("_")) continue;
      if (e.isDirectory) await walk(path);
      else if (e.isFile && e.name.endsWith(".parquet")) out.push(path);
    }
  };
  await walk(dir);
  return out.sort();
}

/** Key material kept inside a Parquet file (footer and, when readable, column keys). */
async function internalMaterials(
  path: string,
  open: (path: string) => DecryptionOptions,
): Promise<KeyMaterial[]> {
  const source = await fileSource(path);
  let footerMeta: Uint8Array | undefined;
  try {
    footerMeta = (await peekFooter(source)).footerKeyMetadata;
  } finally {
    source.close();
  }
  const parse = (meta: Uint8Array | undefined) => {
    if (!meta) return undefined;
    try {
      const m = parseKeyMetadata(meta);
      return m.internal ? m.material : undefined;
    } catch {
      return undefined; // not written by the key tools
    }
  };
  const footer = parse(footerMeta);
  if (!footer) return [];
  const reader = await openParquetFile(path, open(path));
  try {
    return [footer, ...reader.columns.map((c) => parse(c.keyMetadata)).filter((m): m is KeyMaterial => !!m)];
  } finally {
    reader.close();
  }
}

/**
 * Lists what still needs older master-key versions under `dir` (requires a KMS client with
 * `isCurrent`): external key material files not yet rotated, and Parquet files that keep key
 * material internally (they cannot be rotated; re-encrypt them). When both lists are empty the
 * minimum decryption version can be raised. `open` gives the decryption options to read footers.
 */
export async function checkAllCurrent(
  kms: KmsClient,
  dir: string,
  open?: (path: string) => DecryptionOptions,
): Promise<{ stale: string[]; staleInternal: string[] }> {
  if (!kms.isCurrent) throw new KeyMaterialError("this KMS cannot tell whether a wrapped key is current");
  const stale: string[] = [];
  for (const file of await keyMaterialFiles(dir)) {
    const store = await KeyMaterialStore.load(parquetPathOf(file)!, file);
    for (const r of store.refs()) {
      if (!(await isCurrent(kms, store.get(r)))) {
        stale.push(file);
        break;
      }
    }
  }
  const staleInternal: string[] = [];
  if (open) {
    for (const file of await parquetFiles(dir)) {
      for (const m of await internalMaterials(file, open)) {
        if (!(await isCurrent(kms, m))) {
          staleInternal.push(file);
          break;
        }
      }
    }
  }
  return { stale, staleInternal };
}
