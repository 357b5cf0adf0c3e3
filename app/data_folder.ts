/**
 * The data folder of fhir-pme: `DIR/landing/` (encrypted landing zone), `DIR/lake/` (encrypted Parquet)
 * and the record `DIR/fhir-pme.json`, which says which KMS holds the folder's master keys and which
 * master key ids protect it. The record holds no secret: with the embedded local keystore it names the
 * keystore file, which lives **outside** the folder (by default under the user's configuration folder),
 * so that a copy or backup of the data folder never carries the keys that protect it.
 *
 * - {@link openDataFolder} opens an existing folder and refuses one that does not exist, is not a data
 *   folder, or keeps its keystore inside; with `create` it makes a new folder on first use (and says
 *   so through `onEvent`). Every master key the caller needs is probed (wrap + unwrap) before it returns.
 * - {@link initDataFolder} is the explicit initialisation (`fhir-pme init`), which also adopts a folder
 *   written by an older version once its keystore has been moved out.
 *
 * @module
 */

import { dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { KmsUnavailableError } from "../kms/errors.ts";
import { LocalKeystore } from "../kms/local_keystore.ts";
import { probeMasterKeys } from "../kms/probe.ts";
import { writeFileAtomic } from "../kms/atomic_file.ts";
import { connectKms, type KmsSelection, type KmsSpec } from "./kms_selection.ts";
import { DataFolderError } from "./errors.ts";

/** Name of the data folder's record. */
export const DATA_FOLDER_FILE = "fhir-pme.json";
/** `format` of the record. */
export const DATA_FOLDER_FORMAT = "fhir-pme-data-folder";

/** Master key ids of a new data folder, by role. */
export const DEFAULT_MASTER_KEYS = {
  landing: "landing",
  footer: "footer",
  "direct-identifier": "identity",
  "quasi-identifier": "quasi",
  clinical: "clinical",
} as const;

/** What a master key protects: the landing zone, the lake's footers, or a sensitivity class of columns. */
export type MasterKeyRole = keyof typeof DEFAULT_MASTER_KEYS;

/** Every role. */
export const MASTER_KEY_ROLES = Object.keys(DEFAULT_MASTER_KEYS) as MasterKeyRole[];
/** The roles a conversion (landing → lake) uses. */
export const CONVERSION_ROLES: readonly MasterKeyRole[] = MASTER_KEY_ROLES;
/** The roles the ingest server uses. */
export const INGEST_ROLES: readonly MasterKeyRole[] = ["landing"];

/** The KMS of a data folder as its record stores it (no token: Vault tokens come from the environment). */
export type RecordedKms =
  | { kind: "local"; keystore: string }
  | { kind: "vault"; address: string; mount?: string; namespace?: string };

/** Contents of `DIR/fhir-pme.json`. */
export interface DataFolderRecord {
  format: typeof DATA_FOLDER_FORMAT;
  version: 1;
  /** Random id of the folder (names its default keystore). */
  id: string;
  created: string;
  kms: RecordedKms;
  masterKeys: Record<MasterKeyRole, string>;
}

/** Something worth telling the user while a folder is opened (all of it safe to print). */
export type DataFolderEvent =
  | { kind: "folder-created"; dir: string }
  | { kind: "keystore-created"; keystore: string }
  | { kind: "master-keys-created"; masterKeyIds: string[]; where: string }
  | { kind: "folder-adopted"; dir: string };

/** An open data folder. */
export interface DataFolder {
  /** Absolute path of the folder. */
  dir: string;
  landingDir: string;
  lakeDir: string;
  /** Its record (absent for a folder used with an explicit KMS and no record). */
  record?: DataFolderRecord;
  /** The KMS holding its master keys. */
  kms: KmsSelection;
  /** Master key ids by role. */
  masterKeys: Record<MasterKeyRole, string>;
}

/** Options of {@link openDataFolder}. */
export interface OpenDataFolderOptions {
  /** An explicit KMS choice; overrides the record's. */
  kms?: KmsSpec;
  /**
   * Make a new data folder when `dir` does not exist or is empty (the ingest server and the demo on first
   * use): the record, and with the local keystore a new keystore with random master keys.
   */
  create?: boolean;
  /**
   * With `create` and an explicit `kms`: create the master keys missing from it (explicit initialisation
   * only). Without an explicit `kms` a new folder always gets a new keystore with new keys.
   */
  createKeys?: boolean;
  /** Master keys to probe (wrap + unwrap) before returning; default none. */
  needs?: readonly MasterKeyRole[];
  /** Master key ids that replace the record's for this use (e.g. `serve --landing-master-key`). */
  masterKeys?: Partial<Record<MasterKeyRole, string>>;
  /** Where default keystores live (default {@link defaultConfigDir}). */
  configDir?: string;
  signal?: AbortSignal;
  /** Told what was created. */
  onEvent?: (e: DataFolderEvent) => void;
}

/**
 * The folder holding fhir-pme's own configuration: `FHIR_PME_CONFIG_DIR`, else
 * `$XDG_CONFIG_HOME/fhir-pme`, else `$HOME/.config/fhir-pme`.
 */
export function defaultConfigDir(): string {
  const explicit = Deno.env.get("FHIR_PME_CONFIG_DIR");
  if (explicit) return resolve(explicit);
  const xdg = Deno.env.get("XDG_CONFIG_HOME");
  if (xdg && isAbsolute(xdg)) return join(xdg, "fhir-pme");
  const home = Deno.env.get("HOME");
  if (!home) {
    throw new DataFolderError("cannot place the default keystore: HOME is not set", {
      hint:
        "set FHIR_PME_CONFIG_DIR to a private folder outside the data folder, or pass --kms local --keystore FILE",
    });
  }
  return join(home, ".config", "fhir-pme");
}

/** Path of the default keystore of the data folder with id `folderId`. */
export function defaultKeystorePath(folderId: string, configDir = defaultConfigDir()): string {
  return join(configDir, "keystores", `${folderId}.json`);
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/** The real path of `path`, resolving the deepest existing ancestor (the rest need not exist). */
async function realPathLoose(path: string): Promise<string> {
  const abs = resolve(path);
  const rest: string[] = [];
  let cur = abs;
  for (;;) {
    try {
      return join(await Deno.realPath(cur), ...rest.reverse());
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      const parent = dirname(cur);
      if (parent === cur) return abs;
      rest.push(cur.slice(parent.length + (parent.endsWith(sep) ? 0 : 1)));
      cur = parent;
    }
  }
}

/** Whether `child` is `parent` or inside it, after resolving symbolic links. */
export async function isInside(child: string, parent: string): Promise<boolean> {
  const rel = relative(await realPathLoose(parent), await realPathLoose(child));
  return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
}

/** Refuses a keystore inside the data folder (its landing zone and lake included). */
export async function refuseKeystoreInside(keystore: string, dir: string): Promise<void> {
  if (await isInside(keystore, dir)) {
    throw new DataFolderError(
      `keystore ${resolve(keystore)} is inside the data folder ${resolve(dir)}: a copy or backup of the ` +
        "folder would carry the master keys that protect it",
      {
        hint: `move the keystore out (e.g. mv ${resolve(keystore)} ${
          join(defaultConfigDir(), "keystores", "")
        }) and pass its new path with --kms local --keystore FILE`,
      },
    );
  }
}

function parseRecord(text: string, path: string): DataFolderRecord {
  const bad = (what: string) =>
    new DataFolderError(`${path} is not a valid data folder record: ${what}`, {
      hint: "restore it from backup, or move it away and run fhir-pme init again with the folder's KMS",
    });
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    throw bad("not JSON");
  }
  const r = o as Partial<DataFolderRecord>;
  if (!r || typeof r !== "object" || r.format !== DATA_FOLDER_FORMAT) {
    throw bad(`format is not ${DATA_FOLDER_FORMAT}`);
  }
  if (r.version !== 1) {
    throw bad(`version ${JSON.stringify(r.version)} is not supported (this version reads 1)`);
  }
  if (typeof r.id !== "string" || !/^[0-9a-f]{16,64}$/.test(r.id)) throw bad("id is missing");
  const k = r.kms as RecordedKms | undefined;
  if (
    !k ||
    (k.kind === "local"
      ? typeof k.keystore !== "string" || !isAbsolute(k.keystore)
      : k.kind === "vault"
      ? typeof k.address !== "string"
      : true)
  ) throw bad("kms is missing or malformed");
  const mk = r.masterKeys as Record<string, unknown> | undefined;
  if (!mk || MASTER_KEY_ROLES.some((role) => typeof mk[role] !== "string" || mk[role] === "")) {
    throw bad("masterKeys must name a master key id for each of " + MASTER_KEY_ROLES.join(", "));
  }
  return r as DataFolderRecord;
}

/** Reads `DIR/fhir-pme.json`; null when there is none. */
export async function readDataFolderRecord(dir: string): Promise<DataFolderRecord | null> {
  const path = join(dir, DATA_FOLDER_FILE);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new DataFolderError(`cannot read ${path}: ${(e as Error).message}`);
  }
  return parseRecord(text, path);
}

function specOf(recorded: RecordedKms, where: string): KmsSpec {
  if (recorded.kind === "local") return recorded;
  const token = Deno.env.get("VAULT_TOKEN");
  if (!token) {
    throw new DataFolderError(
      `${where} keeps its master keys in Vault ${recorded.address}, and VAULT_TOKEN is not set`,
      {
        hint: "export VAULT_TOKEN with a token whose policy allows the folder's transit keys",
      },
    );
  }
  return { ...recorded, token };
}

function recordedOf(spec: KmsSpec): RecordedKms {
  if (spec.kind === "local") return { kind: "local", keystore: resolve(spec.keystore) };
  const { address, mount, namespace } = spec;
  return { kind: "vault", address, ...(mount ? { mount } : {}), ...(namespace ? { namespace } : {}) };
}

function sameKms(a: RecordedKms, b: RecordedKms): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

async function isEmptyDir(dir: string): Promise<boolean> {
  for await (const _ of Deno.readDir(dir)) return false;
  return true;
}

function randomId(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
}

/** Writes a new record (and with a local default, a new keystore) for `dir`, which exists. */
async function createRecord(
  dir: string,
  options: OpenDataFolderOptions,
  kmsSpec: KmsSpec | undefined,
  createKeys: boolean,
): Promise<DataFolderRecord> {
  const id = randomId();
  const spec: KmsSpec = kmsSpec ?? { kind: "local", keystore: defaultKeystorePath(id, options.configDir) };
  if (spec.kind === "local") await refuseKeystoreInside(spec.keystore, dir);
  const kms = connectKms(spec);
  if (spec.kind === "local" && !(await statOrNull(spec.keystore))) {
    await Deno.mkdir(dirname(spec.keystore), { recursive: true, mode: 0o700 });
    (await LocalKeystore.create(spec.keystore)).close();
    options.onEvent?.({ kind: "keystore-created", keystore: resolve(spec.keystore) });
  }
  const created: string[] = [];
  for (const masterKeyId of createKeys ? Object.values(DEFAULT_MASTER_KEYS) : []) {
    options.signal?.throwIfAborted();
    if (await kms.createMasterKey(masterKeyId)) created.push(masterKeyId);
  }
  if (created.length) {
    options.onEvent?.({ kind: "master-keys-created", masterKeyIds: created, where: kms.where });
  }
  const record: DataFolderRecord = {
    format: DATA_FOLDER_FORMAT,
    version: 1,
    id,
    created: new Date().toISOString(),
    kms: recordedOf(spec),
    masterKeys: { ...DEFAULT_MASTER_KEYS },
  };
  return record;
}

async function writeRecord(dir: string, record: DataFolderRecord): Promise<void> {
  await writeFileAtomic(
    join(dir, DATA_FOLDER_FILE),
    new TextEncoder().encode(JSON.stringify(record, null, 2) + "\n"),
  );
}

/** Refuses to start when a master key the caller needs is missing, denied or broken. */
async function requireMasterKeys(folder: DataFolder, roles: readonly MasterKeyRole[], signal?: AbortSignal) {
  if (roles.length === 0) return;
  const ids = roles.map((r) => folder.masterKeys[r]);
  const failures = await probeMasterKeys(await folder.kms.client(), ids, signal);
  if (failures.length === 0) return;
  const unavailable = failures.find((f) => f.problem === "unavailable");
  if (unavailable) {
    throw new KmsUnavailableError(
      `the KMS of data folder ${folder.dir} (${folder.kms.where}) is unavailable: ${unavailable.message}`,
      { masterKeyId: unavailable.masterKeyId, hint: "start or unseal the KMS, then run the command again" },
    );
  }
  const by = (p: string) => failures.filter((f) => f.problem === p).map((f) => f.masterKeyId);
  const missing = by("missing");
  const denied = by("denied");
  const broken = failures.filter((f) => f.problem === "broken");
  const parts: string[] = [];
  const hints: string[] = [];
  if (missing.length) {
    parts.push(`master key(s) ${missing.join(", ")} missing`);
    hints.push(
      `add ${missing.length > 1 ? "them" : "it"} with: ${
        missing.map((id) => folder.kms.addKeyCommand(id)).join("; ")
      }`,
    );
  }
  if (denied.length) {
    parts.push(`master key(s) ${denied.join(", ")} denied to this principal`);
    hints.push("grant the principal (Vault token policy) encrypt and decrypt on them");
  }
  for (const b of broken) parts.push(`master key ${b.masterKeyId} unusable (${b.message})`);
  throw new DataFolderError(
    `data folder ${folder.dir} needs master keys that do not work in ${folder.kms.where}: ${
      parts.join("; ")
    }`,
    { hint: hints.join("; ") || "check the KMS" },
  );
}

/**
 * Opens the data folder `dir` (see the module documentation). Throws {@link DataFolderError} when `dir`
 * does not exist (without `create`), is not a data folder, keeps its keystore inside, or lacks a master
 * key of `needs`; KmsUnavailableError (retryable) when the KMS cannot answer.
 */
export async function openDataFolder(dir: string, options: OpenDataFolderOptions = {}): Promise<DataFolder> {
  const abs = resolve(dir);
  let info = await statOrNull(abs);
  let createdDir = false;
  if (info && !info.isDirectory) throw new DataFolderError(`data folder ${abs} is not a directory`);
  if (!info) {
    if (!options.create) {
      throw new DataFolderError(`data folder ${abs} does not exist`, {
        hint: "check the path (--data DIR), or create a data folder with: ./fhir-pme init --data DIR",
      });
    }
    await Deno.mkdir(abs, { recursive: true, mode: 0o700 });
    info = await Deno.stat(abs);
    createdDir = true;
  }
  try {
    const { newRecord, ...folder } = await openExisting(abs, options);
    if (newRecord) {
      await writeRecord(abs, folder.record!);
      if (createdDir) options.onEvent?.({ kind: "folder-created", dir: abs });
    }
    return folder;
  } catch (e) {
    // A folder this call made and could not finish is removed again (it is still empty).
    if (createdDir) await Deno.remove(abs).catch(() => {});
    throw e;
  }
}

async function openExisting(
  abs: string,
  options: OpenDataFolderOptions,
): Promise<DataFolder & { newRecord: boolean }> {
  let newRecord = false;
  if (options.kms?.kind === "local") await refuseKeystoreInside(options.kms.keystore, abs);
  const landingDir = join(abs, "landing");
  const lakeDir = join(abs, "lake");
  let record = await readDataFolderRecord(abs);
  if (!record) {
    const hasData = !!(await statOrNull(landingDir)) || !!(await statOrNull(lakeDir));
    if (hasData && !options.kms) {
      const legacy = await statOrNull(join(abs, "keystore.json"));
      throw new DataFolderError(
        `data folder ${abs} has no ${DATA_FOLDER_FILE}` +
          (legacy ? " and keeps its keystore inside (keystore.json, written by an older fhir-pme)" : ""),
        {
          hint: legacy
            ? `move the keystore out of the folder (mv ${join(abs, "keystore.json")} ${
              join(defaultConfigDir(), "keystores", "")
            }), then adopt the folder with: ./fhir-pme init --data ${abs} --kms local --keystore NEW_PATH`
            : `adopt it with: ./fhir-pme init --data ${abs} --kms local --keystore FILE (or --kms vault)`,
        },
      );
    }
    if (!hasData) {
      if (!options.create) {
        throw new DataFolderError(
          `${abs} is not a fhir-pme data folder (no ${DATA_FOLDER_FILE}, landing/ or lake/)`,
          {
            hint: "check the path (--data DIR), or create a data folder with: ./fhir-pme init --data DIR",
          },
        );
      }
      if (!(await isEmptyDir(abs))) {
        throw new DataFolderError(`${abs} is not empty and not a fhir-pme data folder`, {
          hint: "choose a new or empty folder for --data",
        });
      }
      // Master keys are created in the new default keystore, or in a given KMS by an explicit init only:
      // a key missing from a KMS the user chose is a mistake to report, not to paper over.
      record = await createRecord(abs, options, options.kms, !options.kms || options.createKeys === true);
      newRecord = true;
    }
  }
  if (record && options.kms && !sameKms(recordedOf(options.kms), record.kms)) {
    const recorded = record.kms.kind === "local"
      ? `keystore ${record.kms.keystore}`
      : `Vault ${record.kms.address}`;
    throw new DataFolderError(
      `data folder ${abs} records its master keys in ${recorded}, not in the KMS given`,
      {
        hint: `omit --kms to use the recorded KMS (see ${join(abs, DATA_FOLDER_FILE)})`,
      },
    );
  }
  const spec = options.kms ?? specOf(record!.kms, `data folder ${abs}`);
  if (spec.kind === "local") {
    await refuseKeystoreInside(spec.keystore, abs);
    if (!(await statOrNull(spec.keystore))) {
      throw new DataFolderError(
        `the keystore ${resolve(spec.keystore)} of data folder ${abs} does not exist`,
        {
          hint:
            "restore it from your key backup (see README: Keys and backups); new keys cannot decrypt this folder",
        },
      );
    }
  }
  const folder: DataFolder = {
    dir: abs,
    landingDir,
    lakeDir,
    record: record ?? undefined,
    kms: connectKms(spec),
    masterKeys: { ...(record?.masterKeys ?? DEFAULT_MASTER_KEYS), ...options.masterKeys },
  };
  await requireMasterKeys(folder, options.needs ?? [], options.signal);
  return { ...folder, newRecord };
}

/** What {@link initDataFolder} did. */
export interface InitResult {
  folder: DataFolder;
  /** "created": a new folder; "adopted": a folder of an older version got its record; "existing": nothing to do. */
  action: "created" | "adopted" | "existing";
}

/**
 * Explicit initialisation (`fhir-pme init`): makes `dir` a data folder (new or empty: record, and with the
 * default local KMS a new keystore with random master keys outside the folder), adopts a folder written
 * by an older version (landing/ or lake/ without a record: only with an explicit KMS that already holds
 * its keys; no key is created for it), or checks an existing one. Every master key is probed.
 */
export async function initDataFolder(
  dir: string,
  options: Omit<OpenDataFolderOptions, "create" | "createKeys" | "needs"> = {},
): Promise<InitResult> {
  const abs = resolve(dir);
  const info = await statOrNull(abs);
  const existing = info?.isDirectory ? await readDataFolderRecord(abs) : null;
  const legacy = info?.isDirectory && !existing &&
    (!!(await statOrNull(join(abs, "landing"))) || !!(await statOrNull(join(abs, "lake"))));
  if (legacy) {
    if (!options.kms) {
      throw new DataFolderError(
        `${abs} holds data written by an older fhir-pme and has no ${DATA_FOLDER_FILE}`,
        {
          hint:
            "name the KMS that holds its keys: --kms local --keystore FILE (a keystore outside the folder) or --kms vault",
        },
      );
    }
    if (options.kms.kind === "local") {
      await refuseKeystoreInside(options.kms.keystore, abs);
      if (!(await statOrNull(options.kms.keystore))) {
        throw new DataFolderError(`keystore ${resolve(options.kms.keystore)} does not exist`, {
          hint: "adopting a folder needs the keystore that holds its keys; new keys could not decrypt it",
        });
      }
    }
    const folder = await openDataFolder(abs, { ...options, needs: MASTER_KEY_ROLES });
    const record: DataFolderRecord = {
      format: DATA_FOLDER_FORMAT,
      version: 1,
      id: randomId(),
      created: new Date().toISOString(),
      kms: recordedOf(options.kms),
      masterKeys: { ...DEFAULT_MASTER_KEYS },
    };
    await writeRecord(abs, record);
    options.onEvent?.({ kind: "folder-adopted", dir: abs });
    return { folder: { ...folder, record }, action: "adopted" };
  }
  const folder = await openDataFolder(abs, {
    ...options,
    create: true,
    createKeys: true,
    needs: MASTER_KEY_ROLES,
  });
  return { folder, action: existing ? "existing" : "created" };
}
