/**
 * The local keystore: the embedded default KMS's master keys, with versions, in one JSON file that
 * only its owner may read.
 *
 * ## File format (version 1)
 *
 * UTF-8 JSON, written pretty-printed with a trailing newline:
 *
 * ```json
 * {
 *   "format": "fhir-pme-keystore",
 *   "version": 1,
 *   "keys": {
 *     "<master key id>": {
 *       "minDecryptionVersion": 1,
 *       "versions": [
 *         { "version": 1, "key": "<standard base64 of 16, 24 or 32 bytes>", "created": "<ISO 8601>" }
 *       ]
 *     }
 *   }
 * }
 * ```
 *
 * - `format` and `version` are required and must be exactly these values; unknown fields anywhere are
 *   refused (a newer writer's data would otherwise be dropped on the next save).
 * - A master key id is a non-empty, well-formed string of at most {@link MAX_KEY_ID_LENGTH} UTF-16 code
 *   units without control characters: its UTF-8 bytes are the AAD of every wrap (parquet-java
 *   `InMemoryKMS`), so it is used exactly as written (no Unicode normalization).
 * - `versions` is non-empty, in strictly increasing `version` order (positive integers); the last one is
 *   the current version, used for new wraps.
 * - `minDecryptionVersion` (Vault's `min_decryption_version`): versions below it no longer unwrap. It lies
 *   in 1..latest version. Raising it is the explicit last step of a rotation; it may be lowered again
 *   (old versions are never deleted).
 * - New keys are 32 random bytes from the CSPRNG unless imported; a rotation's new version is random and
 *   as long as the version before it. All-zero keys are refused.
 *
 * ## Files and locking
 *
 * - The keystore file has mode 0600. {@link LocalKeystore.open} refuses a file with any group or other
 *   permission bit (with the `chmod` to run), a symbolic link (every save replaces the file by rename,
 *   which would silently replace the link, not its target) and anything but a regular file. On systems
 *   without POSIX modes (Windows) the mode check is skipped. A file the process may not read gives
 *   {@link KmsAccessDeniedError}; other problems {@link KmsConfigError}.
 * - Every write is atomic: a temporary file `.<name>.tmp-<uuid>` (mode 0600, same directory) is written,
 *   fsynced and renamed over the keystore, then the directory is fsynced. {@link LocalKeystore.create}
 *   links the temporary file into place instead, so it never replaces an existing file.
 * - Read-modify-write operations ({@link LocalKeystore.addKey}, {@link LocalKeystore.rotate},
 *   {@link LocalKeystore.setMinDecryptionVersion}, {@link LocalKeystore.save}, and creation) hold an
 *   exclusive lock file `<path>.lock` (created with `createNew`, holding the owner's pid, host and time,
 *   removed afterwards) and re-read the keystore under it, so concurrent processes never lose an update.
 *   A busy lock is retried until the lock timeout ({@link KmsUnavailableError}, retryable); a lock left
 *   by a process that no longer runs on this host is reported at once ({@link KmsConfigError} telling
 *   which file to remove). Stale locks are never removed automatically: two processes breaking the same
 *   stale lock could both believe they hold it.
 * - Reads take no lock: the file is only ever replaced whole, by rename (a read that races with a rename
 *   is repeated).
 *
 * Raw key bytes stay inside this module; {@link LocalKeystore.list} returns ids, versions and dates
 * only, and key use goes through non-extractable `CryptoKey`s ({@link LocalKeystore.currentKey},
 * {@link LocalKeystore.keysNewestFirst}). Error messages name the file and the master key, never key
 * bytes (JSON syntax errors are reported without the parser's message, which quotes the text).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { basename, dirname, join, resolve } from "node:path";
import { KmsAccessDeniedError, KmsConfigError, KmsKeyNotFoundError, KmsUnavailableError } from "./errors.ts";

/** The `format` field of a keystore file. */
export const KEYSTORE_FORMAT = "fhir-pme-keystore";
/** The `version` field of a keystore file this module reads and writes. */
export const KEYSTORE_VERSION = 1;
/** Longest master key id accepted (UTF-16 code units). */
export const MAX_KEY_ID_LENGTH = 256;
/** Default time to wait for the keystore lock. */
export const DEFAULT_LOCK_TIMEOUT_MS = 10_000;

/** Options of {@link LocalKeystore.create} and {@link LocalKeystore.open}. */
export interface LocalKeystoreOptions {
  /** How long read-modify-write operations wait for `<path>.lock` (default 10 s). */
  lockTimeoutMs?: number;
}

/** One version of a master key as {@link LocalKeystore.list} shows it (no key bytes). */
export interface KeystoreVersionInfo {
  version: number;
  /** ISO 8601 creation time. */
  created: string;
}

/** A master key as {@link LocalKeystore.list} shows it (no key bytes). */
export interface KeystoreKeyInfo {
  id: string;
  versions: KeystoreVersionInfo[];
  latestVersion: number;
  minDecryptionVersion: number;
}

/** A master-key version ready for use: a non-extractable AES-GCM `CryptoKey`. */
export interface MasterKeyVersion {
  version: number;
  key: CryptoKey;
}

interface VersionEntry {
  version: number;
  key: Uint8Array;
  created: string;
}

interface KeyEntry {
  minDecryptionVersion: number;
  versions: VersionEntry[];
}

type State = Map<string, KeyEntry>;

/** Identity of the file version a keystore was loaded from (every save creates a new inode). */
interface Fingerprint {
  dev: number | null;
  ino: number | null;
  mtimeMs: number | null;
  size: number;
}

const te = new TextEncoder();
const KEY_LENGTHS = [16, 24, 32];

// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/**
 * Checks a master key id (non-empty, well-formed, no control characters, bounded length); throws
 * {@link KmsConfigError} otherwise.
 */
export function validateMasterKeyId(id: string, where = "master key id"): void {
  if (typeof id !== "string" || id.length === 0) throw new KmsConfigError(`${where} is empty`);
  if (id.length > MAX_KEY_ID_LENGTH) {
    throw new KmsConfigError(`${where} is longer than ${MAX_KEY_ID_LENGTH} characters`);
  }
  if (CONTROL.test(id)) {
    throw new KmsConfigError(`${where} ${JSON.stringify(id)} contains a control character`, {
      hint: "ids are used as AAD and printed; use visible characters",
    });
  }
  if (!id.isWellFormed()) {
    throw new KmsConfigError(`${where} ${JSON.stringify(id)} contains an unpaired surrogate`, {
      hint: "its UTF-8 AAD would differ between implementations",
    });
  }
}

/** What is wrong with master-key bytes (16, 24 or 32 bytes, not all zero), or null. */
function keyBytesProblem(key: Uint8Array): string | null {
  if (!KEY_LENGTHS.includes(key.length)) return `a master key has 16, 24 or 32 bytes, got ${key.length}`;
  if (key.every((b) => b === 0)) return "the key is all zero bytes";
  return null;
}

function modeString(mode: number): string {
  return "0" + (mode & 0o777).toString(8).padStart(3, "0");
}

function fingerprintOf(st: Deno.FileInfo): Fingerprint {
  return { dev: st.dev, ino: st.ino, mtimeMs: st.mtime?.getTime() ?? null, size: st.size };
}

function sameFingerprint(a: Fingerprint, b: Fingerprint): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.mtimeMs === b.mtimeMs && a.size === b.size;
}

function zeroState(state: State): void {
  for (const e of state.values()) for (const v of e.versions) v.key.fill(0);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Parses and validates keystore text; `file` names the file in errors. */
function parseKeystore(bytes: Uint8Array, file: string): State {
  const bad = (detail: string, masterKeyId?: string) =>
    new KmsConfigError(`keystore ${file}: ${detail}`, { masterKeyId });
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw bad("is not valid UTF-8");
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    // The parser's message quotes the text around the error, which may be key material.
    throw bad("is not valid JSON");
  }
  const unknownFields = (o: Record<string, unknown>, allowed: string[], where: string) => {
    const extra = Object.keys(o).filter((k) => !allowed.includes(k));
    if (extra.length) {
      throw bad(`unknown field(s) ${extra.map((k) => JSON.stringify(k)).join(", ")} in ${where}`);
    }
  };
  if (!isPlainObject(doc)) throw bad("is not a JSON object");
  if (doc.format !== KEYSTORE_FORMAT) {
    throw bad(`"format" is ${JSON.stringify(doc.format) ?? "missing"}, expected "${KEYSTORE_FORMAT}"`);
  }
  if (doc.version !== KEYSTORE_VERSION) {
    throw bad(
      `"version" is ${
        JSON.stringify(doc.version) ?? "missing"
      }; this fhir-pme reads version ${KEYSTORE_VERSION}`,
    );
  }
  unknownFields(doc, ["format", "version", "keys"], "the top level");
  if (!isPlainObject(doc.keys)) throw bad(`"keys" must be an object`);
  const state: State = new Map();
  try {
    for (const [id, raw] of Object.entries(doc.keys)) {
      const where = `master key ${JSON.stringify(id)}`;
      try {
        validateMasterKeyId(id);
      } catch (e) {
        throw bad((e as Error).message);
      }
      if (!isPlainObject(raw)) throw bad(`${where} is not an object`, id);
      unknownFields(raw, ["minDecryptionVersion", "versions"], where);
      if (!Array.isArray(raw.versions) || raw.versions.length === 0) {
        throw bad(`${where}: "versions" must be a non-empty array`, id);
      }
      const versions: VersionEntry[] = [];
      try {
        for (const [i, v] of raw.versions.entries()) {
          const vw = `${where} versions[${i}]`;
          if (!isPlainObject(v)) throw bad(`${vw} is not an object`, id);
          unknownFields(v, ["version", "key", "created"], vw);
          if (!Number.isSafeInteger(v.version) || (v.version as number) < 1) {
            throw bad(`${vw}: "version" must be a positive integer`, id);
          }
          const version = v.version as number;
          const previous = versions.at(-1)?.version;
          if (previous !== undefined && version <= previous) {
            throw bad(`${where}: versions must be strictly increasing (${version} after ${previous})`, id);
          }
          if (typeof v.key !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(v.key) || v.key.length % 4 !== 0) {
            throw bad(`${where} version ${version}: "key" must be standard base64`, id);
          }
          if (typeof v.created !== "string" || Number.isNaN(Date.parse(v.created))) {
            throw bad(`${where} version ${version}: "created" must be an ISO 8601 date`, id);
          }
          const key = new Uint8Array(Buffer.from(v.key, "base64"));
          versions.push({ version, key, created: v.created });
          const problem = keyBytesProblem(key);
          if (problem) throw bad(`${where} version ${version}: ${problem}`, id);
        }
        const latest = versions[versions.length - 1].version;
        const min = raw.minDecryptionVersion;
        if (!Number.isSafeInteger(min) || (min as number) < 1 || (min as number) > latest) {
          throw bad(`${where}: "minDecryptionVersion" must be an integer in 1..${latest}`, id);
        }
      } catch (e) {
        for (const v of versions) v.key.fill(0);
        throw e;
      }
      state.set(id, { minDecryptionVersion: raw.minDecryptionVersion as number, versions });
    }
  } catch (e) {
    zeroState(state);
    throw e;
  }
  return state;
}

/** Serializes a state to keystore bytes. */
function serializeKeystore(state: State): Uint8Array {
  const keys = Object.fromEntries(
    [...state].map(([id, e]) => [id, {
      minDecryptionVersion: e.minDecryptionVersion,
      versions: e.versions.map((v) => ({
        version: v.version,
        key: Buffer.from(v.key).toString("base64"),
        created: v.created,
      })),
    }]),
  );
  return te.encode(
    JSON.stringify({ format: KEYSTORE_FORMAT, version: KEYSTORE_VERSION, keys }, null, 2) + "\n",
  );
}

function cloneState(state: State): State {
  return new Map(
    [...state].map(([id, e]) => [id, {
      minDecryptionVersion: e.minDecryptionVersion,
      versions: e.versions.map((v) => ({ ...v, key: v.key.slice() })),
    }]),
  );
}

async function sha256(bytes: Uint8Array): Promise<string> {
  return Buffer.from(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>)).toString("hex");
}

/** Whether a process runs on this host: true/false when knowable, undefined otherwise. */
async function processAlive(pid: number): Promise<boolean | undefined> {
  if (Deno.build.os !== "linux" || !Number.isSafeInteger(pid) || pid <= 0) return undefined;
  try {
    await Deno.stat(`/proc/${pid}`);
    return true;
  } catch (e) {
    return e instanceof Deno.errors.NotFound ? false : undefined;
  }
}

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "unknown";
  }
}

interface LockInfo {
  pid?: number;
  host?: string;
  created?: string;
  token?: string;
}

/** Reads a lock file's owner (undefined fields when unreadable or still being written). */
async function readLock(lockPath: string): Promise<LockInfo | null> {
  try {
    const info = JSON.parse(await Deno.readTextFile(lockPath));
    return isPlainObject(info) ? info as LockInfo : {};
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    return {};
  }
}

function describeHolder(info: LockInfo): string {
  const parts = [];
  if (info.pid !== undefined) parts.push(`pid ${info.pid}`);
  if (info.host !== undefined) parts.push(`on ${info.host}`);
  if (info.created !== undefined) parts.push(`since ${info.created}`);
  return parts.length ? parts.join(" ") : "an unknown process";
}

/** Holds `<path>.lock` while `fn` runs. */
async function withLock<T>(path: string, timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  const lockPath = `${path}.lock`;
  const token = crypto.randomUUID();
  const host = hostname();
  const deadline = Date.now() + timeoutMs;
  let delay = 5;
  for (;;) {
    let file: Deno.FsFile | undefined;
    try {
      file = await Deno.open(lockPath, { createNew: true, write: true, mode: 0o600 });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new KmsConfigError(`cannot lock keystore ${path}: directory ${dirname(path)} does not exist`);
      }
      if (e instanceof Deno.errors.PermissionDenied) {
        throw new KmsConfigError(`cannot create lock file ${lockPath}: permission denied`, { cause: e });
      }
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
    if (file) {
      try {
        await file.write(
          te.encode(JSON.stringify({ pid: Deno.pid, host, created: new Date().toISOString(), token })),
        );
      } finally {
        file.close();
      }
      break;
    }
    const holder = await readLock(lockPath);
    if (holder === null) continue; // released meanwhile
    if (holder.host === host && holder.pid !== undefined && (await processAlive(holder.pid)) === false) {
      throw new KmsConfigError(
        `keystore ${path} has a stale lock: ${lockPath} was left by ${
          describeHolder(holder)
        }, which is no longer running`,
        {
          hint: `make sure no fhir-pme process uses the keystore, then remove it: rm ${
            JSON.stringify(lockPath)
          }`,
        },
      );
    }
    if (Date.now() >= deadline) {
      throw new KmsUnavailableError(
        `keystore ${path} is locked by ${describeHolder(holder)} (waited ${timeoutMs} ms for ${lockPath})`,
        {
          hint: `retry later; if no fhir-pme process uses the keystore, the lock is stale: rm ${
            JSON.stringify(lockPath)
          }`,
        },
      );
    }
    await new Promise((r) => setTimeout(r, delay + Math.random() * delay));
    delay = Math.min(delay * 2, 100);
  }
  try {
    return await fn();
  } finally {
    const holder = await readLock(lockPath);
    if (holder?.token === token) await Deno.remove(lockPath).catch(() => {});
  }
}

/** Fsyncs a directory (best effort: not every platform can open directories). */
async function syncDir(dir: string): Promise<void> {
  let f: Deno.FsFile | undefined;
  try {
    f = await Deno.open(dir, { read: true });
    await f.sync();
  } catch {
    // Windows and some file systems cannot fsync a directory.
  } finally {
    f?.close();
  }
}

/**
 * Writes `bytes` to a fresh 0600 temporary file next to `path` and fsyncs it; returns its path. The
 * bytes are zeroed afterwards.
 */
async function writeTemp(path: string, bytes: Uint8Array): Promise<string> {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${crypto.randomUUID()}`);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(tmp, { createNew: true, write: true, mode: 0o600 });
  } catch (e) {
    bytes.fill(0);
    if (e instanceof Deno.errors.NotFound) {
      throw new KmsConfigError(`cannot write keystore ${path}: directory ${dirname(path)} does not exist`);
    }
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new KmsConfigError(`cannot write keystore ${path}: permission denied in ${dirname(path)}`);
    }
    throw e;
  }
  try {
    if (Deno.build.os !== "windows") await Deno.chmod(tmp, 0o600); // whatever the umask left
    let off = 0;
    while (off < bytes.length) off += await file.write(bytes.subarray(off));
    await file.sync();
    file.close();
    return tmp;
  } catch (e) {
    try {
      file.close();
    } catch { /* already closed */ }
    await Deno.remove(tmp).catch(() => {});
    throw e;
  } finally {
    bytes.fill(0);
  }
}

/** Loaded keystore contents plus what identifies the file version. */
interface Loaded {
  state: State;
  fingerprint: Fingerprint;
  hash: string;
}

/** Signals that the path was renamed over between lstat and open. */
class Replaced extends Error {}

/**
 * Opens, checks and parses the keystore file. Readers take no lock, so a writer may rename a new
 * version into place between the checks on the path and the open: then it is read again.
 */
async function loadKeystore(path: string): Promise<Loaded> {
  for (let attempt = 1;; attempt++) {
    try {
      return await loadOnce(path);
    } catch (e) {
      if (!(e instanceof Replaced)) throw e;
      if (attempt === 20) {
        throw new KmsConfigError(`keystore ${path} keeps being replaced while it is read; try again`);
      }
      await new Promise((r) => setTimeout(r, attempt));
    }
  }
}

async function loadOnce(path: string): Promise<Loaded> {
  let lst: Deno.FileInfo;
  try {
    lst = await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new KmsConfigError(`keystore ${path} does not exist`, {
        hint: `create it with: deno task cli kms local init ${JSON.stringify(path)}`,
      });
    }
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new KmsAccessDeniedError(`keystore ${path}: permission denied`, { cause: e });
    }
    throw e;
  }
  if (lst.isSymlink) {
    throw new KmsConfigError(`keystore ${path} is a symbolic link`, {
      hint: "point to the real file: saving replaces the keystore by rename, which would replace the link",
    });
  }
  if (!lst.isFile) throw new KmsConfigError(`keystore ${path} is not a regular file`);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new KmsAccessDeniedError(`keystore ${path}: permission denied`, { cause: e });
    }
    throw e;
  }
  let bytes: Uint8Array | undefined;
  try {
    const st = await file.stat(); // the opened file itself: no swap between check and read
    if (st.ino !== lst.ino || st.dev !== lst.dev) {
      throw new Replaced();
    }
    if (st.mode !== null && (st.mode & 0o077) !== 0) {
      throw new KmsConfigError(
        `keystore ${path} has mode ${modeString(st.mode)}: group or others may access it`,
        { hint: `the keystore must be private to its owner; run: chmod 600 ${JSON.stringify(path)}` },
      );
    }
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const buf = new Uint8Array(Math.max(4096, st.size + 1 - total));
      const n = await file.read(buf);
      if (n === null) {
        buf.fill(0);
        break;
      }
      chunks.push(buf.subarray(0, n));
      total += n;
    }
    bytes = new Uint8Array(total);
    let off = 0;
    for (const c of chunks) {
      bytes.set(c, off);
      off += c.length;
      c.fill(0);
    }
    const state = parseKeystore(bytes, path);
    return { state, fingerprint: fingerprintOf(st), hash: await sha256(bytes) };
  } finally {
    bytes?.fill(0);
    file.close();
  }
}

/**
 * A local keystore file (see the module documentation for the format and the locking). Obtain one
 * with {@link LocalKeystore.create} or {@link LocalKeystore.open}.
 */
export class LocalKeystore {
  /** Absolute path of the keystore file. */
  readonly path: string;
  readonly #lockTimeoutMs: number;
  #state: State;
  #fingerprint: Fingerprint;
  #hash: string;
  #cryptoKeys = new Map<string, Promise<CryptoKey>>();
  #closed = false;

  private constructor(path: string, loaded: Loaded, options: LocalKeystoreOptions) {
    this.path = path;
    this.#lockTimeoutMs = options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
    this.#state = loaded.state;
    this.#fingerprint = loaded.fingerprint;
    this.#hash = loaded.hash;
  }

  /**
   * Creates an empty keystore at `path` (mode 0600, written atomically). Fails with
   * {@link KmsConfigError} if the file exists.
   */
  static async create(path: string, options: LocalKeystoreOptions = {}): Promise<LocalKeystore> {
    const abs = resolve(path);
    const timeout = options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
    await withLock(abs, timeout, async () => {
      const exists = () =>
        new KmsConfigError(`keystore ${abs} already exists`, { hint: "open it, or choose another path" });
      try {
        await Deno.lstat(abs);
        throw exists();
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
      const tmp = await writeTemp(abs, serializeKeystore(new Map()));
      try {
        // link() never replaces an existing file, unlike rename().
        await Deno.link(tmp, abs);
      } catch (e) {
        if (e instanceof Deno.errors.AlreadyExists) throw exists();
        if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied) throw e;
        // File systems without hard links: the lock and the check above protect cooperating writers.
        await Deno.rename(tmp, abs);
      } finally {
        await Deno.remove(tmp).catch(() => {});
      }
      await syncDir(dirname(abs));
    });
    return new LocalKeystore(abs, await loadKeystore(abs), options);
  }

  /**
   * Opens an existing keystore: refuses symbolic links, non-regular files and files with any group or
   * other permission bit ({@link KmsConfigError} with the `chmod` to run), and validates the contents.
   */
  static async open(path: string, options: LocalKeystoreOptions = {}): Promise<LocalKeystore> {
    const abs = resolve(path);
    return new LocalKeystore(abs, await loadKeystore(abs), options);
  }

  #check(): void {
    if (this.#closed) throw new KmsConfigError(`keystore ${this.path} is closed`);
  }

  #replaceState(loaded: Loaded): void {
    zeroState(this.#state);
    this.#state = loaded.state;
    this.#fingerprint = loaded.fingerprint;
    this.#hash = loaded.hash;
    this.#cryptoKeys.clear();
  }

  /** Writes `state` atomically (caller holds the lock) and makes it the loaded state. */
  async #write(state: State): Promise<void> {
    const tmp = await writeTemp(this.path, serializeKeystore(state));
    try {
      await Deno.rename(tmp, this.path);
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
    await syncDir(dirname(this.path));
    this.#replaceState(await loadKeystore(this.path));
  }

  /**
   * Read-modify-write under the lock: re-reads the file, applies `change` to a copy and writes it.
   * Nothing is written when `change` throws.
   */
  async #transact<T>(change: (state: State) => T): Promise<T> {
    this.#check();
    return await withLock(this.path, this.#lockTimeoutMs, async () => {
      this.#replaceState(await loadKeystore(this.path));
      const next = cloneState(this.#state);
      let result: T;
      try {
        result = change(next);
      } catch (e) {
        zeroState(next);
        throw e;
      }
      try {
        await this.#write(next);
      } finally {
        zeroState(next);
      }
      return result;
    });
  }

  #entry(id: string, state: State = this.#state): KeyEntry {
    const e = state.get(id);
    if (!e) {
      throw new KmsKeyNotFoundError(`master key ${JSON.stringify(id)} is not in keystore ${this.path}`, {
        masterKeyId: id,
      });
    }
    return e;
  }

  /**
   * Adds master key `id` with version 1: a copy of `key` (16, 24 or 32 bytes, not all zero) or, by
   * default, 32 random bytes from the CSPRNG. Refuses an id that exists. Persists atomically under the
   * lock (no {@link save} needed). Returns the version (1).
   */
  async addKey(id: string, key?: Uint8Array): Promise<number> {
    validateMasterKeyId(id);
    const problem = key === undefined ? null : keyBytesProblem(key);
    if (problem) {
      throw new KmsConfigError(`master key ${JSON.stringify(id)}: ${problem}`, { masterKeyId: id });
    }
    return await this.#transact((state) => {
      if (state.has(id)) {
        throw new KmsConfigError(`master key ${JSON.stringify(id)} already exists in keystore ${this.path}`, {
          masterKeyId: id,
          hint: "use rotate to add a new version",
        });
      }
      const bytes = key ? key.slice() : crypto.getRandomValues(new Uint8Array(32));
      state.set(id, {
        minDecryptionVersion: 1,
        versions: [{ version: 1, key: bytes, created: new Date().toISOString() }],
      });
      return 1;
    });
  }

  /**
   * Adds version N+1 of master key `id` (random, as long as the current version's key) and makes it
   * current. Persists atomically under the lock. Returns the new version.
   */
  async rotate(id: string): Promise<number> {
    return await this.#transact((state) => {
      const e = this.#entry(id, state);
      const last = e.versions[e.versions.length - 1];
      const version = last.version + 1;
      e.versions.push({
        version,
        key: crypto.getRandomValues(new Uint8Array(last.key.length)),
        created: new Date().toISOString(),
      });
      return version;
    });
  }

  /**
   * Sets the minimum decryption version of master key `id` (1..latest version): versions below it no
   * longer unwrap. Persists atomically under the lock.
   */
  async setMinDecryptionVersion(id: string, version: number): Promise<void> {
    await this.#transact((state) => {
      const e = this.#entry(id, state);
      const latest = e.versions[e.versions.length - 1].version;
      if (!Number.isSafeInteger(version) || version < 1 || version > latest) {
        throw new KmsConfigError(
          `minimum decryption version of master key ${
            JSON.stringify(id)
          } must be in 1..${latest}, got ${version}`,
          { masterKeyId: id },
        );
      }
      e.minDecryptionVersion = version;
    });
  }

  /**
   * Writes the loaded state atomically under the lock (mode 0600). Refuses with
   * {@link KmsConfigError} when the file changed on disk since it was loaded, instead of overwriting
   * another process's update. The mutating methods save by themselves.
   */
  async save(): Promise<void> {
    this.#check();
    await withLock(this.path, this.#lockTimeoutMs, async () => {
      let current: string | undefined;
      try {
        const bytes = await Deno.readFile(this.path);
        current = await sha256(bytes);
        bytes.fill(0);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
      if (current !== this.#hash) {
        throw new KmsConfigError(`keystore ${this.path} changed on disk since it was loaded`, {
          hint: "another process modified it; open it again and repeat the change",
        });
      }
      const copy = cloneState(this.#state);
      try {
        await this.#write(copy);
      } finally {
        zeroState(copy);
      }
    });
  }

  /**
   * Re-reads the file when it changed on disk (inode, mtime or size differ from the loaded version).
   * Returns true when it was re-read.
   */
  async refresh(): Promise<boolean> {
    this.#check();
    let st: Deno.FileInfo | undefined;
    try {
      st = await Deno.lstat(this.path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    if (st && sameFingerprint(fingerprintOf(st), this.#fingerprint)) return false;
    this.#replaceState(await loadKeystore(this.path));
    return true;
  }

  /** Master keys with their versions, sorted by id; never key bytes. */
  list(): KeystoreKeyInfo[] {
    this.#check();
    return [...this.#state].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([id, e]) => ({
      id,
      versions: e.versions.map((v) => ({ version: v.version, created: v.created })),
      latestVersion: e.versions[e.versions.length - 1].version,
      minDecryptionVersion: e.minDecryptionVersion,
    }));
  }

  /** Whether master key `id` exists. */
  has(id: string): boolean {
    this.#check();
    return this.#state.has(id);
  }

  #cryptoKey(id: string, v: VersionEntry): Promise<CryptoKey> {
    const k = `${v.version}\u0000${id}`;
    let p = this.#cryptoKeys.get(k);
    if (!p) {
      p = crypto.subtle.importKey("raw", v.key as Uint8Array<ArrayBuffer>, "AES-GCM", false, [
        "encrypt",
        "decrypt",
      ]);
      this.#cryptoKeys.set(k, p);
    }
    return p;
  }

  /**
   * The current (newest) version of master key `id` as a non-extractable AES-GCM key;
   * {@link KmsKeyNotFoundError} when unknown.
   */
  async currentKey(id: string): Promise<MasterKeyVersion> {
    this.#check();
    const e = this.#entry(id);
    const v = e.versions[e.versions.length - 1];
    return { version: v.version, key: await this.#cryptoKey(id, v) };
  }

  /**
   * The versions of master key `id` that may unwrap (≥ its minimum decryption version), newest first,
   * as non-extractable AES-GCM keys; {@link KmsKeyNotFoundError} when unknown.
   */
  async keysNewestFirst(id: string): Promise<MasterKeyVersion[]> {
    this.#check();
    const e = this.#entry(id);
    const usable = e.versions.filter((v) => v.version >= e.minDecryptionVersion).reverse();
    return await Promise.all(
      usable.map(async (v) => ({ version: v.version, key: await this.#cryptoKey(id, v) })),
    );
  }

  /** The minimum decryption version of master key `id`. */
  minDecryptionVersion(id: string): number {
    this.#check();
    return this.#entry(id).minDecryptionVersion;
  }

  /** Zeroes the key bytes held in memory; the keystore cannot be used afterwards. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    zeroState(this.#state);
    this.#state = new Map();
    this.#cryptoKeys.clear();
  }

  /** Same as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
