/**
 * Key-management benchmark, measured in one run against the Vault Transit double (HTTP on
 * loopback; real AES-GCM per key version) and the local keystore:
 * - KMS calls and time for writing 1 000 small encrypted files with single vs double wrapping
 *   (footer key + 3 column keys under 3 master keys), and reading them back;
 * - master-key rotation of 1 000 files with external key material: time and KMS calls per file,
 *   Vault (`rewrap`, no key in the process) vs the local keystore (unwrap + wrap).
 *
 * Usage: deno task bench:kms [--files 1000]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { DuckDBInstance } from "@duckdb/node-api";
import { CryptoFactory, type EncryptionConfiguration } from "../kms/crypto_factory.ts";
import { decryptFileWithKms, encryptFileWithKms } from "../kms/files.ts";
import { rotateMasterKeys } from "../kms/rotation.ts";
import { VaultKmsClient, vaultKmsClientFactory } from "../kms/vault.ts";
import { LocalKeystore } from "../kms/local_keystore.ts";
import { localKmsClientFactory } from "../kms/local_kms.ts";
import { startVaultDouble } from "../tests/fixtures/vault_double.ts";

const { values } = parseArgs({ args: Deno.args, options: { files: { type: "string" } } });
const N = Number(values.files ?? 1000);
const work = await Deno.makeTempDir({ prefix: "fhir-pme-kms-bench-" });
const MASTER_KEYS = ["footer", "identity", "clinical"];
const CONFIG: EncryptionConfiguration = {
  footerKey: "footer",
  columnKeys: { identity: ["patient_id", "name"], clinical: ["kcal"] },
};

async function timed<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = performance.now();
  const r = await fn();
  return [(performance.now() - t0) / 1000, r];
}

try {
  const input = join(work, "small.parquet");
  const db = await DuckDBInstance.create(":memory:");
  const conn = await db.connect();
  await conn.run(
    `COPY (SELECT 'p-' || (i % 50) AS patient_id, 'Name ' || i AS name, (i * 7 % 900)::DOUBLE AS kcal,
      i AS entry FROM range(200) t(i)) TO '${input}' (FORMAT parquet)`,
  );
  conn.disconnectSync();
  db.closeSync();

  await using vault = await startVaultDouble();
  const admin = new VaultKmsClient({ address: vault.url, token: vault.rootToken });
  for (const k of MASTER_KEYS) await admin.createKey(k);
  const connection = { kmsInstanceUrl: vault.url, keyAccessToken: vault.rootToken };

  console.log(
    `${N} files of 200 rows, footer + 3 encrypted columns under ${MASTER_KEYS.length} master keys (Vault double)`,
  );
  console.log("wrapping   write s   KMS calls   read s   KMS calls");
  const results: Record<string, number> = {};
  for (const doubleWrapping of [false, true]) {
    const dir = join(work, doubleWrapping ? "double" : "single");
    await Deno.mkdir(dir);
    const factory = new CryptoFactory(vaultKmsClientFactory({ address: vault.url }));
    vault.calls.reset();
    const [ws] = await timed(async () => {
      for (let i = 0; i < N; i++) {
        await encryptFileWithKms(
          factory,
          connection,
          { ...CONFIG, doubleWrapping },
          input,
          join(dir, `f${i}.parquet`),
          {
            durable: false,
          },
        );
      }
    });
    const writeCalls = vault.calls.total;
    vault.calls.reset();
    const reader = new CryptoFactory(vaultKmsClientFactory({ address: vault.url }));
    const [rs] = await timed(async () => {
      for (let i = 0; i < N; i++) {
        await decryptFileWithKms(reader, connection, join(dir, `f${i}.parquet`), join(work, "out.parquet"), {
          durable: false,
        });
      }
    });
    const readCalls = vault.calls.total;
    const name = doubleWrapping ? "double" : "single";
    results[`${name}.write`] = ws;
    results[`${name}.read`] = rs;
    console.log(
      `${name.padEnd(9)} ${ws.toFixed(2).padStart(7)} ${String(writeCalls).padStart(11)} ${
        rs.toFixed(2).padStart(8)
      } ${String(readCalls).padStart(11)}`,
    );
  }
  console.log(
    `time ratio double/single: write ${(results["double.write"] / results["single.write"]).toFixed(2)}, ` +
      `read ${(results["double.read"] / results["single.read"]).toFixed(2)}`,
  );

  // Rotation: external key material, double wrapping (the default), Vault rewrap vs local keystore.
  const rot = join(work, "rotation-vault");
  await Deno.mkdir(rot);
  const vf = new CryptoFactory(vaultKmsClientFactory({ address: vault.url }));
  for (let i = 0; i < N; i++) {
    await encryptFileWithKms(
      vf,
      connection,
      { ...CONFIG, internalKeyMaterial: false, doubleWrapping: i % 2 === 0 },
      input,
      join(rot, `f${i}.parquet`),
      { durable: false },
    );
  }
  for (const k of MASTER_KEYS) await admin.rotateMasterKey(k);
  vault.calls.reset();
  const [vs, vreport] = await timed(() =>
    rotateMasterKeys(new VaultKmsClient({ address: vault.url, token: vault.rootToken }), rot)
  );
  const decrypts = vault.calls.count({ op: "decrypt" });

  const keystore = join(work, "keystore.json");
  const ks = await LocalKeystore.create(keystore);
  for (const k of MASTER_KEYS) await ks.addKey(k);
  const lrot = join(work, "rotation-local");
  await Deno.mkdir(lrot);
  const lf = new CryptoFactory(localKmsClientFactory(keystore));
  for (let i = 0; i < N; i++) {
    await encryptFileWithKms(
      lf,
      {},
      { ...CONFIG, internalKeyMaterial: false, doubleWrapping: i % 2 === 0 },
      input,
      join(lrot, `f${i}.parquet`),
      { durable: false },
    );
  }
  for (const k of MASTER_KEYS) await ks.rotate(k);
  ks.close();
  const [ls, lreport] = await timed(async () => rotateMasterKeys(await lf.kmsClient({}), lrot));

  console.log(`\nmaster-key rotation of ${N} key material files (half single, half double wrapping)`);
  console.log("KMS                 total s   ms/file   KMS calls/file   keys re-wrapped   decrypt calls");
  console.log(
    `Vault (rewrap)      ${vs.toFixed(2).padStart(7)} ${(1000 * vs / N).toFixed(2).padStart(9)} ${
      (vreport.kmsCalls / N).toFixed(1).padStart(16)
    } ${String(vreport.keysRewrapped).padStart(17)} ${String(decrypts).padStart(15)}`,
  );
  console.log(
    `local keystore      ${ls.toFixed(2).padStart(7)} ${(1000 * ls / N).toFixed(2).padStart(9)} ${
      (lreport.kmsCalls / N).toFixed(1).padStart(16)
    } ${String(lreport.keysRewrapped).padStart(17)} ${"-".padStart(15)}`,
  );
} finally {
  await Deno.remove(work, { recursive: true });
}
