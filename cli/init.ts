/**
 * `init --data DIR [KMS options]`: the explicit creation of a data folder (record, and with the default
 * local KMS a new keystore with random master keys outside the folder), the adoption of a folder written
 * by an older version, or a check of an existing one (every master key probed).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { initDataFolder } from "../app/data_folder.ts";
import { UsageError } from "./keys.ts";
import { KMS_OPTIONS, KMS_OPTIONS_USAGE, kmsSpecFromOptions } from "./kms_connect.ts";
import { printDataFolderEvent } from "./data_dir.ts";

/** Usage of init. */
export const INIT_USAGE = `Usage: fhir-pme init --data DIR [KMS options]
  Makes DIR a data folder: DIR/fhir-pme.json records which KMS holds its master keys (landing, footer,
  identity, quasi, clinical). Without --kms a new local keystore with random master keys is created
  OUTSIDE the folder, under FHIR_PME_CONFIG_DIR or ~/.config/fhir-pme/keystores/ (path printed): back it
  up separately from the data. With --kms the given KMS is recorded and missing master keys are created
  in it. On an existing data folder every master key is checked (wrap + unwrap). A folder written by an
  older version (landing/ or lake/ without fhir-pme.json) is adopted with --kms naming the KMS that holds
  its keys (move its keystore.json out of the folder first).
  ${KMS_OPTIONS_USAGE}`;

/** Runs `init`; returns the exit code. */
export async function initCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { data: { type: "string" }, ...KMS_OPTIONS },
  });
  if (positionals.length) {
    throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}\n${INIT_USAGE}`);
  }
  if (!values.data) throw new UsageError(`--data DIR is required\n${INIT_USAGE}`);
  const { folder, action } = await initDataFolder(values.data, {
    kms: kmsSpecFromOptions(values),
    onEvent: printDataFolderEvent,
  });
  const keys = Object.entries(folder.masterKeys).map(([role, id]) => `${role}=${id}`).join(", ");
  console.log(
    `${
      action === "existing" ? "data folder already initialised" : `data folder ${action}`
    }: ${folder.dir}; ` +
      `master keys in ${folder.kms.where} (${keys}), all usable`,
  );
  return 0;
}
