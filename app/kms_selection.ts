/**
 * Which KMS a use case works with: the embedded local keystore or Vault Transit. A {@link KmsSpec} is
 * plain data (safe to log except the Vault token, which it never prints); {@link connectKms} turns it
 * into the key tools' CryptoFactory and connection plus the master-key administration operators need.
 *
 * @module
 */

import type { KmsClient, KmsConnectionConfig } from "../kms/client.ts";
import { CryptoFactory } from "../kms/crypto_factory.ts";
import { LocalKeystore } from "../kms/local_keystore.ts";
import { localKmsClientFactory } from "../kms/local_kms.ts";
import { KmsKeyNotFoundError } from "../kms/errors.ts";
import { DEFAULT_TRANSIT_MOUNT, VaultKmsClient, vaultKmsClientFactory } from "../kms/vault.ts";

/** The embedded default: master keys in a local keystore file (mode 0600). */
export interface LocalKmsSpec {
  kind: "local";
  /** Path of the keystore file. */
  keystore: string;
}

/** Vault (or OpenBao) Transit; the token is the principal's own. */
export interface VaultKmsSpec {
  kind: "vault";
  address: string;
  /** Vault token (never stored, printed or logged). */
  token: string;
  /** Transit mount (default `transit`). */
  mount?: string;
  /** Vault Enterprise / OpenBao namespace. */
  namespace?: string;
}

/** A KMS choice. */
export type KmsSpec = LocalKmsSpec | VaultKmsSpec;

/** A connected KMS: key tools, connection, and master-key administration. */
export interface KmsSelection {
  kind: "local" | "vault";
  /** Where the master keys are, for messages (keystore path or Vault address and mount; no token). */
  where: string;
  factory: CryptoFactory;
  connection: KmsConnectionConfig;
  /** The KMS client of the connection. */
  client(): Promise<KmsClient>;
  /** Adds a new version of a master key; returns the new current version. */
  rotateMasterKey(id: string): Promise<number>;
  /** Versions below `version` of `id` no longer unwrap. */
  setMinDecryptionVersion(id: string, version: number): Promise<void>;
  /**
   * Creates master key `id` (random, 256-bit) unless it exists; returns whether it was created. Used
   * only by explicit initialisation of a data folder.
   */
  createMasterKey(id: string): Promise<boolean>;
  /** The command an operator runs to create master key `id` in this KMS. */
  addKeyCommand(id: string): string;
}

/** Connects the key tools to the KMS `spec` names. Nothing is contacted until a key is used. */
export function connectKms(spec: KmsSpec): KmsSelection {
  if (spec.kind === "local") {
    const path = spec.keystore;
    const factory = new CryptoFactory(localKmsClientFactory(path));
    const withKeystore = async <T>(fn: (ks: LocalKeystore) => Promise<T>) => {
      const ks = await LocalKeystore.open(path);
      try {
        return await fn(ks);
      } finally {
        ks.close();
      }
    };
    return {
      kind: "local",
      where: `local keystore ${path}`,
      factory,
      connection: {},
      client: () => factory.kmsClient({}),
      rotateMasterKey: (id) => withKeystore((ks) => ks.rotate(id)),
      setMinDecryptionVersion: (id, v) =>
        withKeystore(async (ks) => void (await ks.setMinDecryptionVersion(id, v))),
      createMasterKey: (id) =>
        withKeystore(async (ks) => {
          if (ks.has(id)) return false;
          await ks.addKey(id);
          return true;
        }),
      addKeyCommand: (id) => `./fhir-pme kms local add ${shellWord(path)} ${shellWord(id)}`,
    };
  }
  const { address, token, mount, namespace } = spec;
  const factory = new CryptoFactory(vaultKmsClientFactory({ address, mount, namespace }));
  const connection: KmsConnectionConfig = {
    kmsInstanceUrl: address,
    kmsInstanceId: mount,
    keyAccessToken: token,
  };
  const admin = () => new VaultKmsClient({ address, token, mount, namespace });
  const m = mount ?? DEFAULT_TRANSIT_MOUNT;
  return {
    kind: "vault",
    where: `Vault ${address} (transit mount ${m}${namespace ? `, namespace ${namespace}` : ""})`,
    factory,
    connection,
    client: () => factory.kmsClient(connection),
    rotateMasterKey: async (id) => (await admin().rotateMasterKey(id)).latestVersion,
    setMinDecryptionVersion: async (id, v) => void (await admin().setMinDecryptionVersion(id, v)),
    createMasterKey: async (id) => {
      const client = admin();
      try {
        await client.readKey(id);
        return false;
      } catch (e) {
        if (!(e instanceof KmsKeyNotFoundError)) throw e;
      }
      await client.createKey(id);
      return true;
    },
    addKeyCommand: (id) => `vault write -f ${shellWord(`${m}/keys/${id}`)} type=aes256-gcm96`,
  };
}

/** A word as a POSIX shell reads it back (quoted only when needed). */
function shellWord(s: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}
