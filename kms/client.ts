/**
 * The KMS client contract of the Parquet key tools (parquet-java `KmsClient`, Arrow C++
 * `KmsClient`): master keys never leave the KMS; it wraps and unwraps data keys and key-encryption
 * keys. Clients are created per connection (KMS instance id, instance URL, access token).
 *
 * @module
 */

/** The key tools' default for unset instance id, URL and token. */
export const KMS_DEFAULT = "DEFAULT";

/** Wraps and unwraps keys with master keys held by a KMS. */
export interface KmsClient {
  /** Wraps key bytes with the current version of a master key; returns KMS-specific text. */
  wrapKey(keyBytes: Uint8Array, masterKeyId: string): Promise<string>;
  /** Unwraps a wrapped key with the master key (any version the KMS still allows). */
  unwrapKey(wrappedKey: string, masterKeyId: string): Promise<Uint8Array>;
  /**
   * Re-wraps a wrapped key under the newest master-key version inside the KMS, so the key never
   * reaches the caller (Vault `rewrap`). Optional: rotation falls back to unwrap + wrap.
   */
  rewrapKey?(wrappedKey: string, masterKeyId: string): Promise<string>;
  /** True when the wrapped key is wrapped by the newest master-key version. Optional. */
  isCurrent?(wrappedKey: string, masterKeyId: string): Promise<boolean>;
}

/** How to reach a KMS. */
export interface KmsConnectionConfig {
  /** KMS instance id (Vault: the transit mount unless DEFAULT). */
  kmsInstanceId?: string;
  /** KMS instance URL (Vault: its address). */
  kmsInstanceUrl?: string;
  /** Access token of the principal (Vault token); part of every cache key. */
  keyAccessToken?: string;
  /** KMS-specific settings. */
  customKmsConf?: Record<string, string>;
}

/** Creates a KMS client for a connection. */
export type KmsClientFactory = (
  config: Required<Omit<KmsConnectionConfig, "customKmsConf">> & {
    customKmsConf: Record<string, string>;
  },
) => KmsClient | Promise<KmsClient>;

/** Fills the key tools' defaults into a connection config. */
export function withDefaults(c: KmsConnectionConfig): Required<KmsConnectionConfig> {
  return {
    kmsInstanceId: c.kmsInstanceId || KMS_DEFAULT,
    kmsInstanceUrl: c.kmsInstanceUrl || KMS_DEFAULT,
    keyAccessToken: c.keyAccessToken || KMS_DEFAULT,
    customKmsConf: c.customKmsConf ?? {},
  };
}
