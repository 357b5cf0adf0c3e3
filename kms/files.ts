/**
 * File-level operations with KMS-managed keys: encrypt a Parquet file (fresh data keys, key
 * material internal or beside the file), and decrypt one. External key material is saved before
 * the data file appears, so a data file is never without its keys.
 *
 * @module
 */

import { type ByteSource, transcodeFile, type TranscodeOptions, type TranscodeResult } from "../pme/mod.ts";
import type { KmsConnectionConfig } from "./client.ts";
import type { CryptoFactory, DecryptionConfiguration, EncryptionConfiguration } from "./crypto_factory.ts";

/**
 * Encrypts `input` (a path, or a source such as plaintext Parquet bytes in memory, which then never
 * touch the disk) into `output` with data keys wrapped by the configured master keys.
 */
export async function encryptFileWithKms(
  factory: CryptoFactory,
  connection: KmsConnectionConfig,
  config: EncryptionConfiguration,
  input: string | ByteSource,
  output: string,
  options: Omit<TranscodeOptions, "encryption"> & { durable?: boolean } = {},
): Promise<TranscodeResult> {
  const { encryption, keyMaterialStore } = await factory.fileEncryptionProperties(connection, config, output);
  try {
    await keyMaterialStore?.save();
    return await transcodeFile(input, output, {}, { ...options, encryption });
  } finally {
    encryption.footerKey.fill(0);
    for (const ck of Object.values(encryption.columnKeys ?? {})) ck.key.fill(0);
  }
}

/** Decrypts `input` into plaintext `output`; columns whose key is unavailable are skipped unless asked for. */
export async function decryptFileWithKms(
  factory: CryptoFactory,
  connection: KmsConnectionConfig,
  input: string,
  output: string,
  options: Omit<TranscodeOptions, "encryption"> & {
    durable?: boolean;
    decryption?: DecryptionConfiguration;
  } = {},
): Promise<TranscodeResult> {
  const decryption = factory.fileDecryptionProperties(connection, options.decryption, input);
  return await transcodeFile(input, output, decryption, options);
}
