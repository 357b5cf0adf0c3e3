/**
 * `kms` commands: manage the local keystore of the embedded KMS (`kms/local_keystore.ts`). No command
 * prints key bytes.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type KeystoreKeyInfo, LocalKeystore } from "../kms/local_keystore.ts";
import { parseKeyBytes, UsageError } from "./keys.ts";
import { KMS_OPS_USAGE, kmsOpsCommand } from "./kms_ops.ts";

/** Usage text of the kms commands. */
export const KMS_USAGE = `Usage: deno task cli kms local <command>
  init KEYSTORE                          create an empty keystore (mode 0600; fails if it exists)
  add KEYSTORE ID [--key HEX]            add master key ID, version 1: random 256-bit, or the given
                                         key (32/48/64 hex digits, or base64:B64)
  rotate KEYSTORE ID                     add a new random version of ID; new wraps use it
  list KEYSTORE [--json]                 ids, versions and min decryption versions (never key bytes)
  min-decryption-version KEYSTORE ID VERSION
                                         versions below VERSION of ID no longer unwrap
A keystore must be private to its owner (chmod 600). Wrapping is compatible with parquet-java
InMemoryKMS: AES-GCM with the master key, AAD = the master key id.`;

function positionals(args: string[], names: string[], command: string): string[] {
  if (args.length !== names.length) {
    throw new UsageError(
      `kms local ${command} expects ${names.join(" ")}, got ${args.length} argument(s)`,
    );
  }
  return args;
}

/** `1-3,5` for versions [1,2,3,5]. */
function ranges(versions: number[]): string {
  const out: string[] = [];
  let i = 0;
  while (i < versions.length) {
    let j = i;
    while (j + 1 < versions.length && versions[j + 1] === versions[j] + 1) j++;
    out.push(j === i ? `${versions[i]}` : `${versions[i]}-${versions[j]}`);
    i = j + 1;
  }
  return out.join(",");
}

/** The id as is when it is plain printable ASCII without `:`, else JSON-quoted. */
function showId(id: string): string {
  return /^[\x21-\x39\x3b-\x7e]+$/.test(id) ? id : JSON.stringify(id);
}

/** "versions a-b unwrap", or "only version a unwraps". */
function unwrapping(a: number, b: number): string {
  return a === b ? `only version ${a} unwraps` : `versions ${a}-${b} unwrap`;
}

function listLine(k: KeystoreKeyInfo): string {
  return `${showId(k.id)}: versions ${
    ranges(k.versions.map((v) => v.version))
  }, current ${k.latestVersion}, ` +
    `min decryption version ${k.minDecryptionVersion}`;
}

async function withKeystore<T>(path: string, fn: (ks: LocalKeystore) => Promise<T>): Promise<T> {
  const ks = await LocalKeystore.open(path);
  try {
    return await fn(ks);
  } finally {
    ks.close();
  }
}

/** Runs `kms …` (argv after the area); returns the exit code. Throws UsageError and KMS errors. */
export async function kmsCommand(argv: string[]): Promise<number> {
  const [backend, command, ...rest] = argv;
  if (backend === "help" || backend === "--help" || (backend === "local" && command === "help")) {
    console.log(`${KMS_USAGE}\n\n${KMS_OPS_USAGE}`);
    return 0;
  }
  if (backend === "rotate" || backend === "reencrypt" || backend === "min-decryption-version") {
    return await kmsOpsCommand(backend, argv.slice(1));
  }
  if (backend !== "local") {
    throw new UsageError(
      backend === undefined
        ? "kms expects a command: local, rotate, reencrypt or min-decryption-version"
        : `unknown kms command ${
          JSON.stringify(backend)
        }; try local, rotate, reencrypt or min-decryption-version`,
    );
  }
  switch (command) {
    case "init": {
      const { positionals: p } = parseArgs({ args: rest, allowPositionals: true, strict: true, options: {} });
      const [path] = positionals(p, ["KEYSTORE"], "init");
      const ks = await LocalKeystore.create(path);
      ks.close();
      console.log(`created keystore ${ks.path} (mode 0600, no master keys)`);
      return 0;
    }
    case "add": {
      const { positionals: p, values } = parseArgs({
        args: rest,
        allowPositionals: true,
        strict: true,
        options: { key: { type: "string" } },
      });
      const [path, id] = positionals(p, ["KEYSTORE", "ID"], "add");
      const key = values.key === undefined ? undefined : parseKeyBytes(values.key, "--key");
      try {
        await withKeystore(path, (ks) => ks.addKey(id, key));
      } finally {
        key?.fill(0);
      }
      console.log(
        `added master key ${showId(id)} version 1 (${
          key ? `${key.length * 8}-bit, given` : "256-bit, random"
        })`,
      );
      return 0;
    }
    case "rotate": {
      const { positionals: p } = parseArgs({ args: rest, allowPositionals: true, strict: true, options: {} });
      const [path, id] = positionals(p, ["KEYSTORE", "ID"], "rotate");
      const { version, min } = await withKeystore(path, async (ks) => {
        const version = await ks.rotate(id);
        return { version, min: ks.minDecryptionVersion(id) };
      });
      console.log(
        `rotated master key ${showId(id)}: version ${version} is current; ${unwrapping(min, version)} ` +
          `(raise with min-decryption-version once everything is re-wrapped)`,
      );
      return 0;
    }
    case "list": {
      const { positionals: p, values } = parseArgs({
        args: rest,
        allowPositionals: true,
        strict: true,
        options: { json: { type: "boolean" } },
      });
      const [path] = positionals(p, ["KEYSTORE"], "list");
      const keys = await withKeystore(path, (ks) => Promise.resolve(ks.list()));
      if (values.json) console.log(JSON.stringify(keys, null, 2));
      else if (keys.length === 0) console.log("no master keys");
      else for (const k of keys) console.log(listLine(k));
      return 0;
    }
    case "min-decryption-version": {
      const { positionals: p } = parseArgs({ args: rest, allowPositionals: true, strict: true, options: {} });
      const [path, id, v] = positionals(p, ["KEYSTORE", "ID", "VERSION"], "min-decryption-version");
      if (!/^[1-9][0-9]{0,8}$/.test(v)) {
        throw new UsageError(`VERSION must be a positive integer, got ${JSON.stringify(v)}`);
      }
      const version = Number(v);
      const latest = await withKeystore(path, async (ks) => {
        await ks.setMinDecryptionVersion(id, version);
        return ks.list().find((k) => k.id === id)!.latestVersion;
      });
      console.log(
        `master key ${showId(id)}: min decryption version ${version}; ${unwrapping(version, latest)}`,
      );
      return 0;
    }
    case undefined:
      throw new UsageError("kms local expects a command: init, add, rotate, list or min-decryption-version");
    default:
      throw new UsageError(
        `unknown command kms local ${
          JSON.stringify(command)
        }; try init, add, rotate, list or min-decryption-version`,
      );
  }
}
