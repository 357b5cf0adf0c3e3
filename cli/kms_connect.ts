/**
 * KMS selection on the command line: `--kms local --keystore FILE` (the embedded default) or
 * `--kms vault [--vault-addr URL] [--vault-mount M] [--vault-namespace NS]` with the principal's
 * token in `VAULT_TOKEN` (never on the command line). Builds the key tools' CryptoFactory and the
 * connection, plus the master-key administration the CLI needs.
 *
 * @module
 */

import type { EncryptionConfiguration } from "../kms/crypto_factory.ts";
import { connectKms, type KmsSelection, type KmsSpec } from "../app/kms_selection.ts";
import { UsageError } from "./keys.ts";

export type { KmsSelection };

/** parseArgs options selecting a KMS. */
export const KMS_OPTIONS = {
  kms: { type: "string" },
  keystore: { type: "string" },
  "vault-addr": { type: "string" },
  "vault-mount": { type: "string" },
  "vault-namespace": { type: "string" },
} as const;

/** Usage lines of the KMS options. */
export const KMS_OPTIONS_USAGE =
  `KMS: --kms local --keystore FILE | --kms vault [--vault-addr URL] [--vault-mount transit]
     [--vault-namespace NS]; the Vault token is read from VAULT_TOKEN (address also from VAULT_ADDR).`;

/** Parsed KMS options. */
export interface KmsValues {
  kms?: string;
  keystore?: string;
  "vault-addr"?: string;
  "vault-mount"?: string;
  "vault-namespace"?: string;
}

/** The KMS the options select, or undefined when `--kms` is absent (and no KMS option is given). */
export function kmsSpecFromOptions(values: KmsValues): KmsSpec | undefined {
  if (!values.kms) {
    for (const o of ["keystore", "vault-addr", "vault-mount", "vault-namespace"] as const) {
      if (values[o] !== undefined) throw new UsageError(`--${o} needs --kms`);
    }
    return undefined;
  }
  if (values.kms === "local") {
    if (!values.keystore) throw new UsageError("--kms local needs --keystore FILE");
    for (const o of ["vault-addr", "vault-mount", "vault-namespace"] as const) {
      if (values[o] !== undefined) throw new UsageError(`--${o} needs --kms vault`);
    }
    return { kind: "local", keystore: values.keystore };
  }
  if (values.kms === "vault") {
    if (values.keystore !== undefined) throw new UsageError("--keystore needs --kms local");
    const address = values["vault-addr"] ?? Deno.env.get("VAULT_ADDR");
    if (!address) throw new UsageError("--kms vault needs --vault-addr URL (or VAULT_ADDR)");
    const token = Deno.env.get("VAULT_TOKEN");
    if (!token) throw new UsageError("--kms vault reads the token from VAULT_TOKEN, which is not set");
    return {
      kind: "vault",
      address,
      token,
      mount: values["vault-mount"],
      namespace: values["vault-namespace"],
    };
  }
  throw new UsageError(`--kms must be local or vault, not ${JSON.stringify(values.kms)}`);
}

/** The connected KMS the options select, or undefined when `--kms` is absent. */
export function selectKms(values: KmsValues): KmsSelection | undefined {
  const spec = kmsSpecFromOptions(values);
  return spec && connectKms(spec);
}

/** parseArgs options of the key tools' encryption configuration. */
export const KEY_TOOL_OPTIONS = {
  "footer-master-key": { type: "string" },
  "column-master-key": { type: "string", multiple: true },
  "no-double-wrapping": { type: "boolean" },
  "external-key-material": { type: "boolean" },
  "data-key-bits": { type: "string" },
} as const;

/** Usage lines of the key tools' options. */
export const KEY_TOOL_USAGE =
  `--footer-master-key ID [--column-master-key ID:col1,col2 ...] [--no-double-wrapping]
     [--external-key-material] [--data-key-bits 128|192|256]; without --column-master-key every column is
     encrypted with the footer key (uniform encryption).`;

/** Parsed key-tool options (plus the shared encryption options). */
export interface KeyToolValues {
  "footer-master-key"?: string;
  "column-master-key"?: string[];
  "no-double-wrapping"?: boolean;
  "external-key-material"?: boolean;
  "data-key-bits"?: string;
}

/** Builds the key tools' encryption configuration from the options. */
export function encryptionConfiguration(
  values: KeyToolValues,
  common: Pick<
    EncryptionConfiguration,
    "encryptionAlgorithm" | "plaintextFooter" | "aadPrefix" | "storeAadPrefix"
  >,
): EncryptionConfiguration {
  const footerKey = values["footer-master-key"];
  if (!footerKey) throw new UsageError("--kms needs --footer-master-key ID");
  const columnKeys: Record<string, string[]> = {};
  for (const spec of values["column-master-key"] ?? []) {
    const colon = spec.indexOf(":");
    const columns = spec.slice(colon + 1).split(",").map((c) => c.trim()).filter(Boolean);
    if (colon <= 0 || columns.length === 0) throw new UsageError("--column-master-key expects ID:col1,col2");
    const id = spec.slice(0, colon);
    (columnKeys[id] ??= []).push(...columns);
  }
  const bits = values["data-key-bits"] === undefined ? 128 : Number(values["data-key-bits"]);
  if (![128, 192, 256].includes(bits)) throw new UsageError("--data-key-bits must be 128, 192 or 256");
  const uniform = Object.keys(columnKeys).length === 0;
  return {
    ...common,
    footerKey,
    columnKeys: uniform ? undefined : columnKeys,
    uniformEncryption: uniform,
    doubleWrapping: !values["no-double-wrapping"],
    internalKeyMaterial: !values["external-key-material"],
    dataKeyLengthBits: bits,
  };
}

/** Refuses explicit-key options together with `--kms`. */
export function refuseMixedKeys(values: Record<string, unknown>, names: string[]): void {
  for (const n of names) {
    if (values[n] !== undefined) {
      throw new UsageError(`--${n} cannot be combined with --kms (keys come from the KMS)`);
    }
  }
}
