/**
 * The data folder of the ingest/convert commands: `DIR/landing/`, `DIR/lake/`, and — unless a KMS is
 * chosen with `--kms` — the embedded local keystore `DIR/keystore.json`, created on first use with
 * random master keys for the landing zone, the footer and each encrypted sensitivity class.
 *
 * @module
 */

import { join } from "node:path";
import { existsSync } from "node:fs";
import { LocalKeystore } from "../kms/local_keystore.ts";
import { type KmsSelection, type KmsValues, selectKms } from "./kms_connect.ts";

/** Master key ids used by default. */
export const DEFAULT_MASTER_KEYS = {
  landing: "landing",
  footer: "footer",
  "direct-identifier": "identity",
  "quasi-identifier": "quasi",
  clinical: "clinical",
} as const;

/** The KMS of a data folder: the one chosen with `--kms`, else the embedded keystore (created as needed). */
export async function dataDirKms(values: KmsValues, dataDir: string): Promise<KmsSelection> {
  const chosen = selectKms(values);
  if (chosen) return chosen;
  await Deno.mkdir(dataDir, { recursive: true, mode: 0o700 });
  const keystore = join(dataDir, "keystore.json");
  if (!existsSync(keystore)) (await LocalKeystore.create(keystore)).close();
  const ks = await LocalKeystore.open(keystore);
  try {
    for (const id of Object.values(DEFAULT_MASTER_KEYS)) if (!ks.has(id)) await ks.addKey(id);
  } finally {
    ks.close();
  }
  return selectKms({ kms: "local", keystore })!;
}
