/**
 * KMS-wide commands that work with either KMS (`--kms local|vault`):
 * - `kms rotate DIR` — re-wrap the external key material of every file under DIR with the newest
 *   master-key versions (optionally rotating master keys first);
 * - `kms reencrypt FILE ...` — new data keys for files (a compromised key), atomically; each file
 *   keeps its protection except what the options change;
 * - `kms min-decryption-version ID VERSION` — retire old master-key versions, refusing while key
 *   material under `--check DIR` still needs them.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { checkAllCurrent, rotateMasterKeys } from "../kms/rotation.ts";
import { reencryptFile } from "../kms/reencrypt.ts";
import type { EncryptionConfiguration } from "../kms/crypto_factory.ts";
import { KmsConfigError } from "../kms/errors.ts";
import { PmeProtectionError } from "../pme/mod.ts";
import { UsageError } from "./keys.ts";
import {
  encryptionConfiguration,
  KEY_TOOL_OPTIONS,
  KMS_OPTIONS,
  KMS_OPTIONS_USAGE,
  type KmsSelection,
  selectKms,
} from "./kms_connect.ts";

/** Usage of the KMS-wide commands. */
export const KMS_OPS_USAGE = `Usage: deno task cli kms <command> KMS
  rotate DIR KMS [--rotate-master-keys ID,ID]   re-wrap external key material under DIR with the newest
                                                master-key versions (first rotating the listed master keys)
  reencrypt FILE... KMS [--footer-master-key ID] [--column-master-key ID:col1,col2 ...]
            [--decrypt-column PATH ...] [--algorithm AES_GCM_V1|AES_GCM_CTR_V1]
            [--plaintext-footer | --encrypted-footer] [--external-key-material | --internal-key-material]
            [--double-wrapping | --no-double-wrapping] [--data-key-bits 128|192|256]
        fresh data keys for each file (atomic replacement). Each file keeps its protection — master key
        of the footer and of every column, algorithm, footer mode, AAD prefix, internal or external key
        material, wrapping, data key and KEK lengths — except what an option changes; what was kept and
        what changed is printed. --column-master-key replaces all column master keys: a column encrypted
        now that gets none is refused unless named with --decrypt-column PATH (a leaf or parent path;
        repeatable), which writes it in plaintext; --decrypt-column alone takes a column out of the
        file's own column keys.
  min-decryption-version ID VERSION KMS [--check DIR]
                                                versions of ID below VERSION no longer unwrap
${KMS_OPTIONS_USAGE}`;

/** parseArgs options of `kms reencrypt` beyond the key tools' (the other direction of their flags). */
const REENCRYPT_OPTIONS = {
  algorithm: { type: "string" },
  "plaintext-footer": { type: "boolean" },
  "encrypted-footer": { type: "boolean" },
  "internal-key-material": { type: "boolean" },
  "double-wrapping": { type: "boolean" },
  "decrypt-column": { type: "string", multiple: true },
} as const;

/** Placeholder footer master key for parsing the other key-tool options; never used. */
const KEEP_FOOTER = "\u0000keep";

/** What the options of `kms reencrypt` change in a file's configuration (unset fields are kept). */
function reencryptOverrides(
  values: Record<string, string | boolean | string[] | undefined>,
): Partial<EncryptionConfiguration> {
  for (
    const [a, b] of [
      ["plaintext-footer", "encrypted-footer"],
      ["external-key-material", "internal-key-material"],
      ["double-wrapping", "no-double-wrapping"],
    ]
  ) {
    if (values[a] && values[b]) throw new UsageError(`--${a} and --${b} exclude each other`);
  }
  const algorithm = values.algorithm;
  if (algorithm !== undefined && algorithm !== "AES_GCM_V1" && algorithm !== "AES_GCM_CTR_V1") {
    throw new UsageError("--algorithm must be AES_GCM_V1 or AES_GCM_CTR_V1");
  }
  // The key tools' parser checks --column-master-key and --data-key-bits; it needs a footer master
  // key, for which a placeholder stands in when the file's is kept.
  const footer = values["footer-master-key"] as string | undefined;
  const parsed = encryptionConfiguration({ ...values, "footer-master-key": footer ?? KEEP_FOOTER }, {});
  const o: Partial<EncryptionConfiguration> = {};
  if (footer !== undefined) o.footerKey = parsed.footerKey;
  if ((values["column-master-key"] as string[] | undefined)?.length) o.columnKeys = parsed.columnKeys;
  if (algorithm !== undefined) o.encryptionAlgorithm = algorithm;
  if (values["plaintext-footer"]) o.plaintextFooter = true;
  if (values["encrypted-footer"]) o.plaintextFooter = false;
  if (values["external-key-material"]) o.internalKeyMaterial = false;
  if (values["internal-key-material"]) o.internalKeyMaterial = true;
  if (values["no-double-wrapping"]) o.doubleWrapping = false;
  if (values["double-wrapping"]) o.doubleWrapping = true;
  if (values["data-key-bits"] !== undefined) o.dataKeyLengthBits = parsed.dataKeyLengthBits;
  return o;
}

function requireKms(values: Parameters<typeof selectKms>[0]): KmsSelection {
  const kms = selectKms(values);
  if (!kms) throw new UsageError("this command needs --kms local --keystore FILE or --kms vault");
  return kms;
}

/** Runs a KMS-wide command; returns the exit code. */
export async function kmsOpsCommand(command: string, args: string[]): Promise<number> {
  switch (command) {
    case "rotate": {
      const { values, positionals } = parseArgs({
        args,
        allowPositionals: true,
        options: { ...KMS_OPTIONS, "rotate-master-keys": { type: "string" } },
      });
      if (positionals.length !== 1) throw new UsageError("kms rotate expects DIR");
      const kms = requireKms(values);
      for (const id of (values["rotate-master-keys"] ?? "").split(",").map((s) => s.trim()).filter(Boolean)) {
        const v = await kms.rotateMasterKey(id);
        console.error(`master key ${id}: rotated to version ${v}`);
      }
      const tty = Deno.stderr.isTerminal();
      const report = await rotateMasterKeys(await kms.client(), positionals[0], (done, total) => {
        if (tty) Deno.stderr.writeSync(new TextEncoder().encode(`\rrotating key material: ${done}/${total}`));
      });
      if (tty) console.error("");
      console.log(
        `rotated ${report.rotated.length} key material file(s), ${report.current.length} already current, ` +
          `${report.failed.length} failed; ${report.keysRewrapped} wrapped key(s) re-wrapped with ${report.kmsCalls} KMS call(s)`,
      );
      for (const f of report.failed) console.error(`failed: ${f.file}: ${f.error}`);
      return report.failed.length ? 1 : 0;
    }
    case "reencrypt": {
      const { values, positionals } = parseArgs({
        args,
        allowPositionals: true,
        options: { ...KMS_OPTIONS, ...KEY_TOOL_OPTIONS, ...REENCRYPT_OPTIONS },
      });
      if (positionals.length === 0) throw new UsageError("kms reencrypt expects FILE...");
      const overrides = reencryptOverrides(values);
      const decryptColumns = values["decrypt-column"]?.map((c) => c.trim());
      if (decryptColumns?.some((c) => !c)) throw new UsageError("--decrypt-column needs a column path");
      const kms = requireKms(values);
      for (const file of positionals) {
        let r;
        try {
          r = await reencryptFile(kms.factory, kms.connection, file, overrides, { decryptColumns });
        } catch (e) {
          if (!(e instanceof PmeProtectionError)) throw e;
          throw e.withHint(
            "give each a master key with --column-master-key ID:PATH, or name it with --decrypt-column PATH " +
              "to write it in plaintext on purpose",
          );
        }
        console.log(`re-encrypted ${file}: ${r.rows} rows with fresh data keys`);
        if (r.kept.length) console.log(`  kept: ${r.kept.join("; ")}`);
        if (r.changed.length) console.log(`  changed: ${r.changed.join("; ")}`);
        if (r.decryptedColumns.length) {
          console.log(`  written in plaintext as asked: ${r.decryptedColumns.join(", ")}`);
        }
      }
      return 0;
    }
    case "min-decryption-version": {
      const { values, positionals } = parseArgs({
        args,
        allowPositionals: true,
        options: { ...KMS_OPTIONS, check: { type: "string" } },
      });
      if (positionals.length !== 2) throw new UsageError("kms min-decryption-version expects ID VERSION");
      const [id, v] = positionals;
      const version = Number(v);
      if (!Number.isInteger(version) || version < 1) {
        throw new UsageError("VERSION must be a positive integer");
      }
      const kms = requireKms(values);
      if (values.check) {
        const { stale, staleInternal } = await checkAllCurrent(
          await kms.client(),
          values.check,
          (path) => kms.factory.fileDecryptionProperties(kms.connection, {}, path),
        );
        if (stale.length) {
          throw new KmsConfigError(
            `${stale.length} key material file(s) under ${values.check} still use older master-key versions`,
            { hint: `run "kms rotate ${values.check}" first (first: ${stale[0]})` },
          );
        }
        if (staleInternal.length) {
          throw new KmsConfigError(
            `${staleInternal.length} Parquet file(s) under ${values.check} keep key material wrapped by older ` +
              "master-key versions inside the file",
            { hint: `re-encrypt them first with "kms reencrypt" (first: ${staleInternal[0]})` },
          );
        }
      }
      await kms.setMinDecryptionVersion(id, version);
      console.log(`master key ${id}: versions below ${version} no longer unwrap`);
      return 0;
    }
    default:
      throw new UsageError(`unknown kms command ${JSON.stringify(command)}\n${KMS_OPS_USAGE}`);
  }
}
