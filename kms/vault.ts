/**
 * HashiCorp Vault / OpenBao Transit as the KMS of the key tools, through the npm package `node-vault`.
 *
 * Conventions of parquet-java's sample `VaultClient`: the KMS instance URL is the Vault address, the
 * KMS instance id is the transit mount unless it is `DEFAULT` (then `transit`), the master key id is
 * the transit key name, and the token is the principal's `X-Vault-Token`. Wrapping is
 * `POST <mount>/encrypt/<key>` with `plaintext` = base64(key bytes); the whole `vault:vN:…`
 * ciphertext is the wrapped key. Unwrapping is `POST <mount>/decrypt/<key>`. Rotation support:
 * `rewrapKey` (`POST <mount>/rewrap/<key>`, the key never leaves Vault), `isCurrent`, and the admin
 * helpers `rotateMasterKey`, `readKey`, `setMinDecryptionVersion`, `createKey`, `listKeys`.
 *
 * Errors are mapped by HTTP status (message text is only consulted to tell "key not found" and
 * ciphertext problems apart within a 400/404): 401/403 → {@link KmsAccessDeniedError}; a missing key
 * → {@link KmsKeyNotFoundError}; bad, tampered or too-old ciphertext → {@link KmsUnwrapError};
 * 412/429/5xx (sealed) and network failures (refused, timeout, DNS) → {@link KmsUnavailableError},
 * retried a few times with backoff first. Messages and causes never carry the token, key bytes or
 * wrapped keys; node-vault's debug output (which would log request bodies) is switched off.
 *
 * `node-vault` (CommonJS) runs under Deno's Node compatibility layer; importing it needs `--allow-env`
 * (its `debug` dependency enumerates the environment at load). node-vault builds the paths, headers and
 * errors; its axios transport works under Deno but is replaced, through node-vault's `request-promise`
 * hook, by Deno's `fetch`: axios follows redirects through `follow-redirects`, which logs the request
 * options, `X-Vault-Token` included, whenever `DEBUG` matches (e.g. `DEBUG=*`) and would send the token
 * wherever a redirect points (node-vault cannot turn redirects off), and any `node:http` transport prints
 * the token under `NODE_DEBUG=http`. `fetch` logs nothing; redirects are not followed (a 3xx is a
 * configuration error: point the address at the active node).
 *
 * @module
 */

import vaultFactory from "node-vault";
import { KMS_DEFAULT, type KmsClient, type KmsClientFactory } from "./client.ts";
import {
  KeyMaterialError,
  KmsAccessDeniedError,
  KmsConfigError,
  KmsError,
  KmsKeyNotFoundError,
  KmsUnavailableError,
  KmsUnwrapError,
} from "./errors.ts";

/** The default transit mount (parquet-java's sample uses `/v1/transit/` for instance id DEFAULT). */
export const DEFAULT_TRANSIT_MOUNT = "transit";

/** How to reach Vault Transit as one principal. */
export interface VaultKmsClientOptions {
  /** Vault address, e.g. `https://vault.example:8200` (no `/v1`). */
  address: string;
  /** The principal's Vault token (sent as `X-Vault-Token`). */
  token: string;
  /** Transit mount path; default `transit`. */
  mount?: string;
  /** Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`); none by default. */
  namespace?: string;
  /** Per-request timeout in milliseconds; default 10 000. */
  timeoutMs?: number;
  /** Extra attempts after a retryable failure (sealed, 429, 5xx, network); default 2. */
  retries?: number;
  /** First backoff delay in milliseconds (doubles per attempt, with jitter); default 100. */
  retryDelayMs?: number;
  /** Upper bound of one backoff delay in milliseconds; default 1 000. */
  retryMaxDelayMs?: number;
}

/** A transit key as `GET <mount>/keys/<name>` describes it (key material is never returned). */
export interface VaultKeyInfo {
  /** Key name (the master key id). */
  name: string;
  /** Key type, e.g. `aes256-gcm96`. */
  type: string;
  /** Versions present, ascending. */
  versions: number[];
  /** Newest version; encryption and rewrap use it. */
  latestVersion: number;
  /** Ciphertexts below this version no longer decrypt (reversible until trimmed). */
  minDecryptionVersion: number;
  /** Lowest version allowed for encryption (0 = latest only). */
  minEncryptionVersion: number;
  /** Versions below this were trimmed away for good (0 = none). */
  minAvailableVersion: number;
  /** Whether the key is derived (needs a context; unusable for Parquet key tools). */
  derived: boolean;
  /** Whether the key may be exported. */
  exportable: boolean;
  /** Whether the key may be deleted. */
  deletionAllowed: boolean;
}

/** Safe details of a failed Vault call, attached as an error's `cause` (no token, no key bytes). */
export interface VaultFailure {
  /** What the client was doing, e.g. `decrypt`. */
  operation: string;
  /** HTTP status, when Vault answered. */
  status?: number;
  /** Vault's `errors` texts (sanitised), when Vault answered. */
  vaultErrors?: string[];
  /** Network error code (`ECONNREFUSED`, `ECONNABORTED`, `ENOTFOUND`, …), when it did not. */
  code?: string;
}

/** Vault key names (`framework.GenericNameRegex`). */
const KEY_NAME = /^\w(?:[\w.-]*\w)?$/;
/** Mount and namespace paths: name segments separated by `/`. */
const PATH = /^[\w.-]+(?:\/[\w.-]+)*$/;
/** `vault:v<N>:<base64>`. */
const CIPHERTEXT = /^vault:v(\d+):./;
/** Network failures after which the request was certainly not processed (safe to retry anything). */
const NOT_SENT = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH"]);

/** The key version in a `vault:vN:…` wrapped key; throws {@link KeyMaterialError} for anything else. */
export function vaultCiphertextVersion(wrappedKey: string): number {
  const m = CIPHERTEXT.exec(wrappedKey);
  if (!m) throw new KeyMaterialError("wrapped key is not a Vault Transit ciphertext (expected vault:vN:…)");
  return Math.max(1, Number(m[1])); // Vault reads v0 as v1
}

interface Call {
  /** Operation name for messages and hints (`encrypt`, `read key`, …). */
  op: string;
  /** Vault path below the mount, e.g. `encrypt/clinical`. */
  path: string;
  /** The master key, when one is involved. */
  keyId?: string;
  /** Safe to repeat after an ambiguous failure (timeout, 5xx). */
  idempotent: boolean;
  /** Request texts that must never appear in an error (base64 key, wrapped key). */
  secrets?: string[];
}

interface NodeVaultLike {
  write(path: string, data: unknown): Promise<unknown>;
  read(path: string): Promise<unknown>;
  list(path: string): Promise<unknown>;
}

/**
 * {@link KmsClient} on Vault / OpenBao Transit for one principal (token), mount and namespace.
 */
export class VaultKmsClient implements KmsClient {
  /** Vault address without trailing slash. */
  readonly address: string;
  /** Transit mount path. */
  readonly mount: string;
  /** Namespace, if any. */
  readonly namespace?: string;
  readonly #token: string;
  readonly #vault: NodeVaultLike;
  readonly #retries: number;
  readonly #retryDelayMs: number;
  readonly #retryMaxDelayMs: number;
  readonly #timeoutMs: number;
  /** Highest version seen per key (from reads and ciphertexts). */
  readonly #latest = new Map<string, number>();
  readonly #reading = new Map<string, Promise<VaultKeyInfo>>();

  /** Validates the options (throws {@link KmsConfigError}) and builds the node-vault client. */
  constructor(options: VaultKmsClientOptions) {
    let url: URL;
    try {
      url = new URL(options.address);
    } catch {
      throw new KmsConfigError("Vault address is not a URL", { hint: "e.g. http://127.0.0.1:8200" });
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new KmsConfigError(`Vault address must be http(s), got ${url.protocol}`);
    }
    if (url.username || url.password || url.search || url.hash) {
      throw new KmsConfigError("Vault address must not carry credentials, a query or a fragment");
    }
    if (typeof options.token !== "string" || options.token === "" || options.token === KMS_DEFAULT) {
      throw new KmsConfigError("no Vault token", { hint: "set the key access token of the principal" });
    }
    if (/[\s\0]/.test(options.token)) throw new KmsConfigError("Vault token contains whitespace");
    const mount = (options.mount ?? DEFAULT_TRANSIT_MOUNT).replace(/^\/+|\/+$/g, "");
    if (!PATH.test(mount)) throw new KmsConfigError(`invalid transit mount path "${mount}"`);
    const namespace = options.namespace?.replace(/^\/+|\/+$/g, "") || undefined;
    if (namespace !== undefined && !PATH.test(namespace)) {
      throw new KmsConfigError(`invalid Vault namespace "${namespace}"`);
    }
    const nonNegative = (v: number | undefined, d: number, name: string) => {
      const x = v ?? d;
      if (!Number.isFinite(x) || x < 0) throw new KmsConfigError(`${name} must be a non-negative number`);
      return x;
    };
    this.address = `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
    this.mount = mount;
    this.namespace = namespace;
    this.#token = options.token;
    this.#timeoutMs = nonNegative(options.timeoutMs, 10_000, "timeoutMs");
    this.#retries = Math.floor(nonNegative(options.retries, 2, "retries"));
    this.#retryDelayMs = nonNegative(options.retryDelayMs, 100, "retryDelayMs");
    this.#retryMaxDelayMs = nonNegative(options.retryMaxDelayMs, 1_000, "retryMaxDelayMs");

    const client = vaultFactory(
      {
        apiVersion: "v1",
        endpoint: this.address,
        token: this.#token,
        namespace,
        pathPrefix: "",
        // node-vault's debug output logs request bodies (plaintext keys): never enabled.
        debug: () => {},
        requestOptions: { timeout: this.#timeoutMs },
        "request-promise": fetchTransport(this.#timeoutMs),
      } as Parameters<typeof vaultFactory>[0],
    );
    // node-vault falls back to VAULT_NAMESPACE / VAULT_PREFIX from the environment: pin ours.
    Object.assign(client, { namespace, pathPrefix: "" });
    this.#vault = client;
  }

  /** Where keys live, for messages: `ns1/transit` or `transit`. */
  get location(): string {
    return this.namespace ? `${this.namespace}/${this.mount}` : this.mount;
  }

  /** Wraps key bytes with the latest version of the transit key; returns the whole `vault:vN:…` text. */
  async wrapKey(keyBytes: Uint8Array, masterKeyId: string): Promise<string> {
    checkKeyLength(keyBytes.length, "key to wrap", KeyMaterialError, masterKeyId);
    const name = this.#keyName(masterKeyId);
    const plaintext = toBase64(keyBytes);
    const body = await this.#call(
      { op: "encrypt", path: `encrypt/${name}`, keyId: masterKeyId, idempotent: true, secrets: [plaintext] },
      (v, p) => v.write(p, { plaintext }),
    );
    return this.#ciphertextOf(body, "encrypt", masterKeyId);
  }

  /** Unwraps a `vault:vN:…` wrapped key (any version at or above the key's `min_decryption_version`). */
  async unwrapKey(wrappedKey: string, masterKeyId: string): Promise<Uint8Array> {
    const name = this.#keyName(masterKeyId);
    if (!CIPHERTEXT.test(wrappedKey)) {
      throw new KmsUnwrapError(
        `wrapped key for master key "${masterKeyId}" is not a Vault Transit ciphertext`,
        {
          masterKeyId,
          hint: "expected vault:vN:…; it was wrapped by another KMS, or the key material was modified",
        },
      );
    }
    const body = await this.#call(
      { op: "decrypt", path: `decrypt/${name}`, keyId: masterKeyId, idempotent: true, secrets: [wrappedKey] },
      (v, p) => v.write(p, { ciphertext: wrappedKey }),
    );
    const plaintext = dataOf(body)?.plaintext;
    if (typeof plaintext !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(plaintext)) {
      throw new KmsError(`unexpected answer from Vault to decrypt with master key "${masterKeyId}"`, {
        masterKeyId,
      });
    }
    const bytes = fromBase64(plaintext);
    checkKeyLength(bytes.length, "unwrapped key", KmsUnwrapError, masterKeyId);
    return bytes;
  }

  /** Re-wraps under the latest key version inside Vault (`rewrap`): the key never reaches this process. */
  async rewrapKey(wrappedKey: string, masterKeyId: string): Promise<string> {
    const name = this.#keyName(masterKeyId);
    if (!CIPHERTEXT.test(wrappedKey)) {
      throw new KmsUnwrapError(
        `wrapped key for master key "${masterKeyId}" is not a Vault Transit ciphertext`,
        {
          masterKeyId,
        },
      );
    }
    const body = await this.#call(
      { op: "rewrap", path: `rewrap/${name}`, keyId: masterKeyId, idempotent: true, secrets: [wrappedKey] },
      (v, p) => v.write(p, { ciphertext: wrappedKey }),
    );
    return this.#ciphertextOf(body, "rewrap", masterKeyId);
  }

  /**
   * Whether the wrapped key uses the key's latest version. Versions only grow, so a version below
   * one seen before is stale without asking; "current" is always confirmed by reading the key
   * (concurrent checks of one key share the read), because rotation safety checks depend on it.
   */
  async isCurrent(wrappedKey: string, masterKeyId: string): Promise<boolean> {
    const version = vaultCiphertextVersion(wrappedKey);
    const seen = this.#latest.get(masterKeyId);
    if (seen !== undefined && version < seen) return false;
    let read = this.#reading.get(masterKeyId);
    if (!read) {
      read = this.readKey(masterKeyId).finally(() => this.#reading.delete(masterKeyId));
      this.#reading.set(masterKeyId, read);
    }
    return version === (await read).latestVersion;
  }

  /** Reads a transit key's versions and policy (`GET <mount>/keys/<id>`; needs `read`). */
  async readKey(masterKeyId: string): Promise<VaultKeyInfo> {
    const name = this.#keyName(masterKeyId);
    const body = await this.#call(
      { op: "read key", path: `keys/${name}`, keyId: masterKeyId, idempotent: true },
      (v, p) => v.read(p),
    );
    return this.#keyInfo(body, masterKeyId);
  }

  /** Lists the transit keys of the mount (`LIST <mount>/keys`; needs `list`); none → `[]`. */
  async listKeys(): Promise<string[]> {
    try {
      const body = await this.#call({ op: "list keys", path: "keys", idempotent: true }, (v, p) => v.list(p));
      const keys = dataOf(body)?.keys;
      return Array.isArray(keys) ? keys.filter((k): k is string => typeof k === "string") : [];
    } catch (e) {
      if (e instanceof KmsKeyNotFoundError) return [];
      throw e;
    }
  }

  /**
   * Adds a new version to the master key (`POST <mount>/keys/<id>/rotate`; needs `update`). New wraps
   * use it; old versions still unwrap until {@link setMinDecryptionVersion} moves past them. Not
   * retried after an ambiguous failure (a repeated rotate would add two versions).
   */
  async rotateMasterKey(masterKeyId: string): Promise<VaultKeyInfo> {
    const name = this.#keyName(masterKeyId);
    this.#latest.delete(masterKeyId);
    const body = await this.#call(
      { op: "rotate", path: `keys/${name}/rotate`, keyId: masterKeyId, idempotent: false },
      (v, p) => v.write(p, {}),
    );
    // Older Vault answers 204 without the key description.
    return dataOf(body) ? this.#keyInfo(body, masterKeyId) : await this.readKey(masterKeyId);
  }

  /**
   * Sets the key's `min_decryption_version` (`POST <mount>/keys/<id>/config`; needs `update`):
   * wrapped keys below it stop unwrapping. Reversible (lower it again) until versions are trimmed.
   */
  async setMinDecryptionVersion(masterKeyId: string, version: number): Promise<VaultKeyInfo> {
    if (!Number.isInteger(version) || version < 1) {
      throw new KmsConfigError(`min_decryption_version must be an integer ≥ 1, got ${version}`, {
        masterKeyId,
      });
    }
    const name = this.#keyName(masterKeyId);
    const body = await this.#call(
      { op: "config", path: `keys/${name}/config`, keyId: masterKeyId, idempotent: true },
      (v, p) => v.write(p, { min_decryption_version: version }),
    );
    return dataOf(body) ? this.#keyInfo(body, masterKeyId) : await this.readKey(masterKeyId);
  }

  /**
   * Creates the master key as Parquet needs it: `aes256-gcm96`, not derived, not exportable, no
   * plaintext backup (`POST <mount>/keys/<id>`). An existing key is kept; it is checked to be usable
   * (symmetric, not derived), else {@link KmsConfigError}.
   */
  async createKey(masterKeyId: string): Promise<VaultKeyInfo> {
    const name = this.#keyName(masterKeyId);
    const body = await this.#call(
      { op: "create key", path: `keys/${name}`, keyId: masterKeyId, idempotent: true },
      (v, p) =>
        v.write(p, {
          type: "aes256-gcm96",
          derived: false,
          exportable: false,
          allow_plaintext_backup: false,
        }),
    );
    const info = dataOf(body) ? this.#keyInfo(body, masterKeyId) : await this.readKey(masterKeyId);
    if (info.derived || !/^(aes128|aes256)-gcm96$|^(x?chacha20)-poly1305$/.test(info.type)) {
      throw new KmsConfigError(
        `master key "${masterKeyId}" exists in Vault at ${this.location} as ${info.type}${
          info.derived ? " (derived)" : ""
        }`,
        { masterKeyId, hint: "Parquet master keys must be non-derived aes256-gcm96 keys" },
      );
    }
    return info;
  }

  #keyName(masterKeyId: string): string {
    if (typeof masterKeyId !== "string" || !KEY_NAME.test(masterKeyId)) {
      throw new KmsConfigError(
        `master key id "${String(masterKeyId).slice(0, 80)}" is not a valid Vault key name`,
        {
          hint: "letters, digits, '_', '-' and '.', starting and ending with a letter, digit or '_'",
        },
      );
    }
    return masterKeyId;
  }

  #ciphertextOf(body: unknown, op: string, masterKeyId: string): string {
    const ct = dataOf(body)?.ciphertext;
    if (typeof ct !== "string" || !CIPHERTEXT.test(ct)) {
      throw new KmsError(`unexpected answer from Vault to ${op} with master key "${masterKeyId}"`, {
        masterKeyId,
      });
    }
    const version = vaultCiphertextVersion(ct);
    if ((this.#latest.get(masterKeyId) ?? 0) < version) this.#latest.set(masterKeyId, version);
    return ct;
  }

  #keyInfo(body: unknown, masterKeyId: string): VaultKeyInfo {
    const d = dataOf(body);
    const int = (v: unknown, dflt = 0) => (typeof v === "number" && Number.isInteger(v) ? v : dflt);
    if (!d || typeof d.latest_version !== "number") {
      throw new KmsError(`unexpected key description from Vault for master key "${masterKeyId}"`, {
        masterKeyId,
      });
    }
    const versions = Object.keys(typeof d.keys === "object" && d.keys ? d.keys : {})
      .map(Number)
      .filter(Number.isInteger)
      .sort((a, b) => a - b);
    const info: VaultKeyInfo = {
      name: typeof d.name === "string" ? d.name : masterKeyId,
      type: typeof d.type === "string" ? d.type : "unknown",
      versions,
      latestVersion: int(d.latest_version),
      minDecryptionVersion: int(d.min_decryption_version, 1),
      minEncryptionVersion: int(d.min_encryption_version),
      minAvailableVersion: int(d.min_available_version),
      derived: d.derived === true,
      exportable: d.exportable === true,
      deletionAllowed: d.deletion_allowed === true,
    };
    if ((this.#latest.get(masterKeyId) ?? 0) < info.latestVersion) {
      this.#latest.set(masterKeyId, info.latestVersion);
    }
    return info;
  }

  /** Runs one Vault call with error mapping and bounded retries with backoff. */
  async #call(call: Call, send: (vault: NodeVaultLike, path: string) => Promise<unknown>): Promise<unknown> {
    const path = `${this.mount}/${call.path}`;
    for (let attempt = 0;; attempt++) {
      try {
        return await send(this.#vault, path);
      } catch (e) {
        const { error, safeToRetry } = this.#mapError(e, call);
        if (!(error instanceof KmsUnavailableError) || attempt >= this.#retries) throw error;
        if (!call.idempotent && !safeToRetry) throw error;
        const cap = Math.min(this.#retryMaxDelayMs, this.#retryDelayMs * 2 ** attempt);
        await new Promise((r) => setTimeout(r, cap / 2 + Math.random() * (cap / 2)));
      }
    }
  }

  /** Turns a node-vault / axios failure into a typed error without secrets. */
  #mapError(e: unknown, call: Call): { error: KmsError; safeToRetry: boolean } {
    if (e instanceof KmsError) return { error: e, safeToRetry: false };
    const masterKeyId = call.keyId;
    const what = masterKeyId === undefined ? call.op : `${call.op} with master key "${masterKeyId}"`;
    const fullPath = `${this.mount}/${call.path}`;
    const err = e as { response?: { statusCode?: unknown; body?: unknown }; code?: unknown };
    const status = typeof err?.response?.statusCode === "number" ? err.response.statusCode : undefined;

    if (status === undefined) {
      const code = typeof err?.code === "string" ? err.code : "unknown";
      const cause: VaultFailure = { operation: call.op, code };
      if (/CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY|^ERR_(INVALID_URL|BLOCKED_PORT)$/i.test(code)) {
        return {
          error: new KmsConfigError(`cannot talk to Vault at ${this.address} (${code}) during ${what}`, {
            masterKeyId,
            cause,
            hint: "check the address (fetch refuses some ports, e.g. 1 and 9) and the TLS setup",
          }),
          safeToRetry: false,
        };
      }
      const timedOut = code === "ECONNABORTED" || code === "ETIMEDOUT" || code === "ESOCKETTIMEDOUT";
      const why = timedOut ? `did not answer within ${this.#timeoutMs} ms` : `is unreachable (${code})`;
      return {
        error: new KmsUnavailableError(`Vault at ${this.address} ${why} during ${what}`, {
          masterKeyId,
          cause,
          hint: "retry later",
        }),
        safeToRetry: NOT_SENT.has(code),
      };
    }

    const errors = this.#vaultErrors(err.response?.body, call.secrets ?? []);
    const reason = errors.join("; ");
    const cause: VaultFailure = { operation: call.op, status, vaultErrors: errors };
    const opts = { masterKeyId, cause };
    const withReason = reason ? `: ${reason}` : "";

    if (status === 401 || status === 403) {
      const caps = call.op === "read key" ? "read" : call.op === "list keys" ? "list" : "update";
      return {
        error: new KmsAccessDeniedError(`Vault denied ${what} (HTTP ${status})`, {
          ...opts,
          hint: `the token needs "${caps}" on ${fullPath}${
            call.op === "encrypt" ? ' (and "create" if the key does not exist yet)' : ""
          }; or the token is expired or revoked`,
        }),
        safeToRetry: false,
      };
    }
    if (status === 412 || status === 429 || status >= 500) {
      const sealed = status === 503 && /sealed/i.test(reason);
      const why = sealed ? "is sealed" : `answered HTTP ${status}${withReason}`;
      return {
        error: new KmsUnavailableError(`Vault at ${this.address} ${why} during ${what}`, {
          ...opts,
          hint: "retry later",
        }),
        safeToRetry: status === 503 || status === 429 || status === 412,
      };
    }
    const keyPath = `${this.mount}/keys/${masterKeyId}`;
    const notFound = new KmsKeyNotFoundError(
      `master key "${masterKeyId}" does not exist in Vault at ${this.location}`,
      { ...opts, hint: `create it (aes256-gcm96) with: vault write -f ${keyPath}` },
    );
    if (status === 404) {
      if (call.op === "list keys" && errors.length === 0) {
        return {
          error: new KmsKeyNotFoundError(`no keys in Vault at ${this.location}`, opts),
          safeToRetry: false,
        };
      }
      if (/no handler for route|unsupported path/i.test(reason) || masterKeyId === undefined) {
        return {
          error: new KmsConfigError(
            `no transit engine at ${this.location} in Vault at ${this.address}${withReason}`,
            {
              ...opts,
              hint: `enable it with: vault secrets enable -path=${this.mount} transit`,
            },
          ),
          safeToRetry: false,
        };
      }
      return { error: notFound, safeToRetry: false };
    }
    if (status === 400 && masterKeyId !== undefined && /not found|could be found/i.test(reason)) {
      return { error: notFound, safeToRetry: false };
    }
    if (status === 400 && /context|not supported for key type|key type/i.test(reason)) {
      return {
        error: new KmsConfigError(`master key "${masterKeyId}" cannot be used for ${call.op}${withReason}`, {
          ...opts,
          hint: "Parquet master keys must be non-derived aes256-gcm96 keys",
        }),
        safeToRetry: false,
      };
    }
    if (status === 400 && (call.op === "decrypt" || call.op === "rewrap")) {
      let hint = "wrong master key, or the key material was modified";
      if (/too old/i.test(reason)) {
        hint = `the key's min_decryption_version is above this wrapped key's version; lower it ` +
          `(vault write ${keyPath}/config min_decryption_version=N) or use a rewrapped copy`;
      } else if (/too new/i.test(reason)) {
        hint =
          "the wrapped key names a version the master key does not have: wrong master key, or it was re-created";
      }
      return {
        error: new KmsUnwrapError(
          `Vault cannot ${
            call.op === "decrypt" ? "unwrap" : "rewrap"
          } with master key "${masterKeyId}"${withReason}`,
          {
            ...opts,
            hint,
          },
        ),
        safeToRetry: false,
      };
    }
    if (status === 400 && call.op === "config") {
      return {
        error: new KmsConfigError(
          `Vault refused the configuration of master key "${masterKeyId}"${withReason}`,
          opts,
        ),
        safeToRetry: false,
      };
    }
    if (status >= 300 && status < 400) {
      return {
        error: new KmsConfigError(`Vault at ${this.address} redirected ${what} (HTTP ${status})`, {
          ...opts,
          hint:
            "redirects are not followed: use the address of the active node (or enable request forwarding)",
        }),
        safeToRetry: false,
      };
    }
    if (status === 405) {
      return {
        error: new KmsConfigError(`Vault does not support ${what} at ${fullPath} (HTTP 405)`, opts),
        safeToRetry: false,
      };
    }
    return {
      error: new KmsError(`Vault refused ${what} (HTTP ${status})${withReason}`, opts),
      safeToRetry: false,
    };
  }

  /** Vault's `errors` strings, unwrapped from go-multierror framing, without anything secret. */
  #vaultErrors(body: unknown, secrets: string[]): string[] {
    const raw = (body as { errors?: unknown } | null)?.errors;
    if (!Array.isArray(raw)) return [];
    const out: string[] = [];
    for (const r of raw) {
      if (typeof r !== "string") continue;
      const items = r.includes("error occurred:") ? [...r.matchAll(/\*\s*([^\n]+)/g)].map((m) => m[1]) : [r];
      for (const item of items) {
        let s = item.trim();
        for (const secret of [this.#token, ...secrets]) if (secret) s = s.split(secret).join("[redacted]");
        s = s.replace(/vault:v\d+:[A-Za-z0-9+/=]+/g, "vault:v…");
        if (s) out.push(s.length > 300 ? `${s.slice(0, 300)}…` : s);
      }
    }
    return out;
  }
}

/** Most bytes accepted in one Vault answer (key descriptions and wrapped keys are tiny). */
const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

interface TransportRequest {
  method: string;
  uri: string;
  headers?: Record<string, string>;
  json?: unknown;
}

interface TransportResponse {
  statusCode: number;
  body: unknown;
  request: { path: string };
}

/** A transport failure with a Node-style `code` and no request data (no URL, headers or body). */
function transportError(code: string): Error & { code: string } {
  return Object.assign(new Error(`Vault request failed (${code})`), { code });
}

/** Node-style code for a `fetch` failure (Deno reports the cause only as text). */
function fetchErrorCode(e: unknown): string {
  if (e instanceof DOMException && (e.name === "TimeoutError" || e.name === "AbortError")) return "ETIMEDOUT";
  const text = `${(e as Error)?.message ?? ""} ${String((e as Error)?.cause ?? "")}`;
  if (/connection refused/i.test(text)) return "ECONNREFUSED";
  if (/dns error|failed to lookup|name or service not known|nodename nor servname/i.test(text)) {
    return "ENOTFOUND";
  }
  if (/certificate|invalidcontenttype|corrupt message|handshake|\btls\b/i.test(text)) {
    return "CERT_OR_TLS_ERROR";
  }
  if (/are blocked/i.test(text)) return "ERR_BLOCKED_PORT"; // fetch refuses ports such as 1, 9, 25
  if (/invalid url|relative url/i.test(text)) return "ERR_INVALID_URL";
  if (/network is unreachable/i.test(text)) return "ENETUNREACH";
  if (/no route to host/i.test(text)) return "EHOSTUNREACH";
  return "ECONNRESET";
}

/**
 * node-vault's `request-promise` hook on Deno's `fetch`: JSON in and out, no redirects, TLS verified, a
 * wall-clock timeout, a bounded answer.
 */
function fetchTransport(timeoutMs: number) {
  const send = async (o: TransportRequest): Promise<TransportResponse> => {
    const url = new URL(o.uri);
    const headers = new Headers(o.headers);
    headers.set("accept", "application/json");
    let body: string | undefined;
    if (o.json !== undefined && typeof o.json === "object") {
      body = JSON.stringify(o.json);
      headers.set("content-type", "application/json");
    }
    const signal = timeoutMs > 0 ? AbortSignal.timeout(timeoutMs) : undefined;
    let res: Response;
    try {
      res = await fetch(url, { method: o.method, headers, body, redirect: "manual", signal });
    } catch (e) {
      throw transportError(fetchErrorCode(e));
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    try {
      if (res.body) {
        for await (const chunk of res.body) {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) {
            await res.body.cancel().catch(() => {});
            throw transportError("ERESPONSETOOLARGE");
          }
          chunks.push(chunk);
        }
      }
    } catch (e) {
      throw (e as { code?: string }).code === "ERESPONSETOOLARGE" ? e : transportError(fetchErrorCode(e));
    }
    const bytes = new Uint8Array(size);
    let at = 0;
    for (const c of chunks) {
      bytes.set(c, at);
      at += c.length;
    }
    const text = new TextDecoder().decode(bytes);
    let parsed: unknown = text;
    try {
      parsed = text === "" ? undefined : JSON.parse(text);
    } catch {
      /* not JSON: keep the text for the status mapping */
    }
    return { statusCode: res.status, body: parsed, request: { path: url.pathname } };
  };
  return { defaults: () => send };
}

/** Options of {@link vaultKmsClientFactory}: everything but the per-connection token. */
export type VaultKmsClientFactoryOptions = Partial<Omit<VaultKmsClientOptions, "token">>;

/**
 * A {@link KmsClientFactory} for Vault Transit, as parquet-java's sample: `kmsInstanceUrl` → address
 * (unless DEFAULT, then `options.address`), `keyAccessToken` → token (required, never DEFAULT),
 * `kmsInstanceId` → mount (unless DEFAULT, then `options.mount` or `transit`).
 */
export function vaultKmsClientFactory(options: VaultKmsClientFactoryOptions = {}): KmsClientFactory {
  return (config) => {
    const address = config.kmsInstanceUrl && config.kmsInstanceUrl !== KMS_DEFAULT
      ? config.kmsInstanceUrl
      : options.address;
    if (!address) {
      throw new KmsConfigError("no Vault address", { hint: "set the KMS instance URL to the Vault address" });
    }
    if (!config.keyAccessToken || config.keyAccessToken === KMS_DEFAULT) {
      throw new KmsConfigError("no Vault token", { hint: "set the key access token of the principal" });
    }
    const mount = config.kmsInstanceId && config.kmsInstanceId !== KMS_DEFAULT
      ? config.kmsInstanceId
      : options.mount ?? DEFAULT_TRANSIT_MOUNT;
    return new VaultKmsClient({ ...options, address, token: config.keyAccessToken, mount });
  };
}

function dataOf(body: unknown): Record<string, unknown> | undefined {
  const d = (body as { data?: unknown } | null | undefined)?.data;
  return d && typeof d === "object" ? d as Record<string, unknown> : undefined;
}

function checkKeyLength(
  n: number,
  what: string,
  Err: typeof KeyMaterialError | typeof KmsUnwrapError,
  masterKeyId: string,
): void {
  if (n !== 16 && n !== 24 && n !== 32) {
    throw new Err(`${what} has ${n} bytes, expected 16, 24 or 32`, { masterKeyId });
  }
}

function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return btoa(s);
}

function fromBase64(text: string): Uint8Array {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
