/**
 * KMS-wide commands that work with either KMS (`--kms local|vault`):
 * - `kms rotate DIR` — re-wrap the external key material of every file under DIR with the newest
 *   master-key versions (optionally rotating master keys first);
 * - `kms reencrypt FILE ...` — new data keys for files (a compromised key), atomically;
 * - `kms min-decryption-version ID VERSION` — retire old master-key versions, refusing while key
 *   material under `--check DIR` still needs them.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { checkAllCurrent, rotateMasterKeys } from "../kms/rotation.ts";
import { reencryptFile } from "../kms/reencrypt.ts";
import { KmsConfigError } from "../kms/errors.ts";
import type { PmeAlgorithm } from "../pme/mod.ts";
import { UsageError } from "./keys.ts";
import {
  encryptionConfiguration,
  KEY_TOOL_OPTIONS,
  KEY_TOOL_USAGE,
  KMS_OPTIONS,
  KMS_OPTIONS_USAGE,
  type KmsSelection,
  selectKms,
} from "./kms_connect.ts";

/** Usage of the KMS-wide commands. */
export const KMS_OPS_USAGE = `Usage: deno task cli kms <command> KMS
  rotate DIR KMS [--rotate-master-keys ID,ID]   re-wrap external key material under DIR with the newest
                                                master-key versions (first rotating the listed master keys)
  reencrypt FILE... KMS ${KEY_TOOL_USAGE.split("\n")[0]}
            [--algorithm A] [--plaintext-footer]   fresh data keys for each file (atomic replacement)
  min-decryption-version ID VERSION KMS [--check DIR]
                                                versions of ID below VERSION no longer unwrap
${KMS_OPTIONS_USAGE}`;

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
        options: {
          ...KMS_OPTIONS,
          ...KEY_TOOL_OPTIONS,
          algorithm: { type: "string" },
          "plaintext-footer": { type: "boolean" },
        },
      });
      if (positionals.length === 0) throw new UsageError("kms reencrypt expects FILE...");
      const algorithm = values.algorithm;
      if (algorithm !== undefined && algorithm !== "AES_GCM_V1" && algorithm !== "AES_GCM_CTR_V1") {
        throw new UsageError("--algorithm must be AES_GCM_V1 or AES_GCM_CTR_V1");
      }
      const kms = requireKms(values);
      const config = encryptionConfiguration(values, {
        encryptionAlgorithm: algorithm as PmeAlgorithm | undefined,
        plaintextFooter: values["plaintext-footer"] ?? false,
      });
      for (const file of positionals) {
        const r = await reencryptFile(kms.factory, kms.connection, file, config);
        console.log(`re-encrypted ${file}: ${r.rows} rows with fresh data keys`);
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
