/**
 * `pme` commands: inspect, encrypt, decrypt and rekey Parquet files with explicit keys.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Buffer } from "node:buffer";
import {
  type ColumnKey,
  type DecryptionOptions,
  type EncryptionOptions,
  fileSource,
  ParquetReader,
  peekFooter,
  type PmeAlgorithm,
  PmeKeyMissingError,
  PmeProtectionError,
  transcodeFile,
  type TranscodeResult,
} from "../pme/mod.ts";
import { type CliKey, parseColumnKey, parseKey, retrieverFor, UsageError } from "./keys.ts";
import { progressReporter } from "./progress.ts";
import {
  encryptionConfiguration,
  KEY_TOOL_OPTIONS,
  KEY_TOOL_USAGE,
  KMS_OPTIONS,
  KMS_OPTIONS_USAGE,
  refuseMixedKeys,
  selectKms,
} from "./kms_connect.ts";
import { encryptFileWithKms } from "../kms/files.ts";

const te = new TextEncoder();

/** Usage text of the pme commands. */
export const PME_USAGE = `Usage: deno task cli pme <command>
  inspect FILE [--key ID=KEY ...] [--aad-prefix TEXT] [--json]
  decrypt IN OUT --key ID=KEY ... [--aad-prefix TEXT] [--columns a,b.c]
  encrypt IN OUT --footer-key ID=KEY [--column-key PATH:ID=KEY ...]
          [--algorithm AES_GCM_V1|AES_GCM_CTR_V1] [--plaintext-footer]
          [--aad-prefix TEXT] [--no-store-aad-prefix]
          [--page-v2-framing whole-body|levels-plaintext] [--page-checksums]
  rekey IN OUT [--key ID=KEY ...] [--aad-prefix TEXT]
          --new-footer-key ID=KEY [--new-column-key PATH:ID=KEY ...] [--decrypt-column PATH ...]
          [--new-algorithm ...] [--new-plaintext-footer] [--new-aad-prefix TEXT] [--new-no-store-aad-prefix]
        Without --new-column-key every column is encrypted with the new footer key. With them, a column
        encrypted in IN that gets no new key is refused (nothing is written) unless named with
        --decrypt-column PATH (a leaf or parent path; repeatable), which writes it in plaintext (also
        next to the footer key without --new-column-key).
A key is ID=HEX (32/48/64 hex digits) or ID=base64:B64; its key metadata is the UTF-8 bytes of ID.
With a KMS (keys are fresh data keys wrapped by master keys; see also "kms"):
  encrypt IN OUT KMS ${KEY_TOOL_USAGE}
  decrypt IN OUT KMS [--columns a,b.c]      inspect FILE KMS
${KMS_OPTIONS_USAGE}
inspect, decrypt and rekey also take --footer-key ID=KEY and --column-key PATH:ID=KEY to use a key
whatever the file's key metadata says (files written without key metadata), and
--assume-ctr-pages for AES_GCM_CTR_V1 files whose plaintext footer says AES_GCM_V1 (pyarrow <= 25), and
--require-algorithm ALG to refuse files whose (unauthenticated) algorithm field says otherwise.`;

function algorithmOf(v: string | undefined, option: string): PmeAlgorithm | undefined {
  if (v === undefined) return undefined;
  if (v !== "AES_GCM_V1" && v !== "AES_GCM_CTR_V1") {
    throw new UsageError(`${option} must be AES_GCM_V1 or AES_GCM_CTR_V1`);
  }
  return v;
}

function positionals(args: string[], n: number, names: string): string[] {
  if (args.length !== n) throw new UsageError(`expected ${names}, got ${args.length} argument(s)`);
  return args;
}

/** Options that open an input: keys by key metadata, explicit footer/column keys, AAD prefix. */
const DECRYPT_OPTIONS = {
  key: { type: "string", multiple: true },
  "footer-key": { type: "string" },
  "column-key": { type: "string", multiple: true },
  "aad-prefix": { type: "string" },
  "assume-ctr-pages": { type: "boolean" },
  "require-algorithm": { type: "string" },
  ...KMS_OPTIONS,
} as const;

function decryptionOptions(
  values: {
    key?: string[];
    "footer-key"?: string;
    "column-key"?: string[];
    "aad-prefix"?: string;
    "assume-ctr-pages"?: boolean;
    "require-algorithm"?: string;
    kms?: string;
    keystore?: string;
    "vault-addr"?: string;
    "vault-mount"?: string;
    "vault-namespace"?: string;
  },
  file: string,
): DecryptionOptions {
  const aadPrefix = values["aad-prefix"] !== undefined ? te.encode(values["aad-prefix"]) : undefined;
  const common = {
    assumeCtrPages: values["assume-ctr-pages"],
    requireAlgorithm: algorithmOf(values["require-algorithm"], "--require-algorithm"),
  };
  const kms = selectKms(values);
  if (kms) {
    refuseMixedKeys(values, ["key", "footer-key", "column-key"]);
    return { ...kms.factory.fileDecryptionProperties(kms.connection, { aadPrefix }, file), ...common };
  }
  const parsed: CliKey[] = (values.key ?? []).map((k) => parseKey(k, "--key"));
  const columnKeys: Record<string, Uint8Array> = {};
  for (const spec of values["column-key"] ?? []) {
    const ck = parseColumnKey(spec, "--column-key");
    columnKeys[ck.column] = ck.key;
  }
  return {
    keyRetriever: parsed.length ? retrieverFor(parsed) : undefined,
    footerKey: values["footer-key"] ? parseKey(values["footer-key"], "--footer-key").key : undefined,
    columnKeys,
    aadPrefix,
    ...common,
  };
}

function encryptionOptions(v: {
  footerKey?: string;
  columnKeys?: string[];
  algorithm?: string;
  plaintextFooter?: boolean;
  aadPrefix?: string;
  noStore?: boolean;
  framing?: string;
  prefix: string;
}): EncryptionOptions {
  const p = v.prefix;
  if (!v.footerKey) throw new UsageError(`--${p}footer-key is required`);
  const footer = parseKey(v.footerKey, `--${p}footer-key`);
  let columnKeys: Record<string, ColumnKey> | undefined;
  if (v.columnKeys?.length) {
    columnKeys = {};
    for (const spec of v.columnKeys) {
      const ck = parseColumnKey(spec, `--${p}column-key`);
      if (columnKeys[ck.column]) throw new UsageError(`--${p}column-key given twice for ${ck.column}`);
      columnKeys[ck.column] = { key: ck.key, keyMetadata: te.encode(ck.id) };
    }
  }
  if (v.noStore && v.aadPrefix === undefined) {
    throw new UsageError(`--${p}no-store-aad-prefix needs --${p}aad-prefix`);
  }
  if (v.framing !== undefined && v.framing !== "whole-body" && v.framing !== "levels-plaintext") {
    throw new UsageError("--page-v2-framing must be whole-body or levels-plaintext");
  }
  return {
    footerKey: footer.key,
    footerKeyMetadata: te.encode(footer.id),
    columnKeys,
    algorithm: algorithmOf(v.algorithm, `--${p}algorithm`),
    plaintextFooter: v.plaintextFooter ?? false,
    aadPrefix: v.aadPrefix !== undefined ? te.encode(v.aadPrefix) : undefined,
    storeAadPrefix: !v.noStore,
    pageV2Framing: v.framing as EncryptionOptions["pageV2Framing"],
  };
}

function refuseKeyToolOptions(values: Record<string, unknown>) {
  for (const n of Object.keys(KEY_TOOL_OPTIONS)) {
    if (values[n] !== undefined) throw new UsageError(`--${n} needs --kms`);
  }
}

function showMeta(meta: Uint8Array | undefined): string | null {
  if (!meta) return null;
  const text = new TextDecoder("utf-8", { fatal: false }).decode(meta);
  return /^[\x20-\x7e]*$/.test(text) ? text : `base64:${Buffer.from(meta).toString("base64")}`;
}

function report(result: TranscodeResult, out: string, what: string) {
  const skipped = result.skippedColumns.length
    ? `; skipped (no key): ${result.skippedColumns.join(", ")}`
    : "";
  console.error(
    `${what} ${out}: ${result.rows} rows, ${result.rowGroups} row groups, ${result.columns.length} columns${skipped}`,
  );
}

/** Describes a file's encryption and layout as a JSON-able object. */
export async function inspect(path: string, options: DecryptionOptions): Promise<Record<string, unknown>> {
  const source = await fileSource(path);
  try {
    const info = await peekFooter(source);
    const alg = info.algorithm;
    const out: Record<string, unknown> = {
      file: path,
      size: source.size,
      encrypted: info.mode !== "plaintext",
      footer: info.mode === "encrypted"
        ? "encrypted"
        : info.mode === "signed"
        ? "plaintext, signed"
        : "plaintext",
      algorithm: alg?.algorithm ?? null,
      aadPrefix: !alg
        ? null
        : alg.aadPrefix
        ? { stored: true, value: showMeta(alg.aadPrefix) }
        : alg.supplyAadPrefix
        ? { stored: false, required: true }
        : { stored: false, required: false },
      footerKeyMetadata: showMeta(info.footerKeyMetadata),
    };
    let reader: ParquetReader;
    try {
      reader = await ParquetReader.open(source, {
        ...options,
        checkFooterIntegrity: info.mode === "signed" ? false : undefined,
      });
    } catch (e) {
      if (!(e instanceof PmeKeyMissingError)) throw e;
      out.footerReadable = false;
      return out;
    }
    out.footerReadable = true;
    if (info.mode === "signed") {
      // Verify the signature when the footer key is at hand.
      out.signatureVerified = reader.hasFooterKey
        ? (await ParquetReader.open(source, options)).signatureVerified ?? false
        : null;
    }
    out.createdBy = reader.metadata.str(6) ?? null;
    out.rows = reader.numRows;
    out.rowGroups = reader.numRowGroups;
    out.columns = await Promise.all(reader.columns.map(async (c) => ({
      path: c.dotted,
      encrypted: c.encryption !== "none",
      key: c.encryption === "none" ? null : c.encryption === "footer-key" ? "footer" : "column",
      keyMetadata: c.encryption === "footer-key" ? showMeta(info.footerKeyMetadata) : showMeta(c.keyMetadata),
      readable: await reader.canRead(c.index),
    })));
    return out;
  } finally {
    source.close();
  }
}

function printInspect(o: Record<string, unknown>) {
  const aad = o.aadPrefix as { stored: boolean; value?: string; required?: boolean } | null;
  const lines = [
    `file: ${o.file} (${o.size} bytes)`,
    `encrypted: ${o.encrypted ? "yes" : "no"}`,
    `footer: ${o.footer}${
      o.signatureVerified === true
        ? " (signature verified)"
        : o.signatureVerified === null
        ? " (signature not checked: no footer key)"
        : ""
    }`,
  ];
  if (o.encrypted) {
    lines.push(`algorithm: ${o.algorithm}`);
    lines.push(
      `aad prefix: ${
        !aad
          ? "none"
          : aad.stored
          ? `stored (${aad.value})`
          : aad.required
          ? "not stored, must be supplied"
          : "none"
      }`,
    );
    lines.push(`footer key metadata: ${o.footerKeyMetadata ?? "(none)"}`);
  }
  if (o.footerReadable === false) {
    lines.push("footer: not readable without the footer key (pass --key ID=KEY)");
  } else {
    lines.push(
      `rows: ${o.rows} in ${o.rowGroups} row group(s)${o.createdBy ? `, created by ${o.createdBy}` : ""}`,
    );
    lines.push("columns:");
    for (
      const c of o.columns as {
        path: string;
        encrypted: boolean;
        key: string;
        keyMetadata: string;
        readable: boolean;
      }[]
    ) {
      const prot = c.encrypted
        ? `encrypted with ${c.key} key${c.keyMetadata ? ` (key metadata ${c.keyMetadata})` : ""}`
        : "plaintext";
      lines.push(`  ${c.path}: ${prot}${c.encrypted && !c.readable ? " [key not available]" : ""}`);
    }
  }
  console.log(lines.join("\n"));
}

/** Runs a pme command; returns the exit code. */
export async function pmeCommand(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "inspect": {
      const { values, positionals: pos } = parseArgs({
        args: rest,
        allowPositionals: true,
        options: { ...DECRYPT_OPTIONS, json: { type: "boolean" } },
      });
      const [file] = positionals(pos, 1, "FILE");
      const o = await inspect(file, decryptionOptions(values, file));
      if (values.json) console.log(JSON.stringify(o, null, 2));
      else printInspect(o);
      return 0;
    }
    case "decrypt": {
      const { values, positionals: pos } = parseArgs({
        args: rest,
        allowPositionals: true,
        options: { ...DECRYPT_OPTIONS, columns: { type: "string" } },
      });
      const [input, output] = positionals(pos, 2, "IN OUT");
      const columns = values.columns?.split(",").map((c) => c.trim()).filter(Boolean);
      if (columns?.length === 0) throw new UsageError("--columns needs at least one column name");
      const result = await transcodeFile(input, output, decryptionOptions(values, input), {
        columns,
        onProgress: progressReporter("decrypt"),
      });
      report(result, output, "decrypted");
      return 0;
    }
    case "encrypt": {
      const { values, positionals: pos } = parseArgs({
        args: rest,
        allowPositionals: true,
        options: {
          "footer-key": { type: "string" },
          "column-key": { type: "string", multiple: true },
          algorithm: { type: "string" },
          "plaintext-footer": { type: "boolean" },
          "aad-prefix": { type: "string" },
          "no-store-aad-prefix": { type: "boolean" },
          "page-v2-framing": { type: "string" },
          "page-checksums": { type: "boolean" },
          ...KMS_OPTIONS,
          ...KEY_TOOL_OPTIONS,
        },
      });
      const [input, output] = positionals(pos, 2, "IN OUT");
      const options = { pageChecksums: values["page-checksums"], onProgress: progressReporter("encrypt") };
      const kms = selectKms(values);
      let result: TranscodeResult;
      if (kms) {
        refuseMixedKeys(values, ["footer-key", "column-key", "page-v2-framing"]);
        if (values["no-store-aad-prefix"] && values["aad-prefix"] === undefined) {
          throw new UsageError("--no-store-aad-prefix needs --aad-prefix");
        }
        const config = encryptionConfiguration(values, {
          encryptionAlgorithm: algorithmOf(values.algorithm, "--algorithm"),
          plaintextFooter: values["plaintext-footer"] ?? false,
          aadPrefix: values["aad-prefix"] !== undefined ? te.encode(values["aad-prefix"]) : undefined,
          storeAadPrefix: !values["no-store-aad-prefix"],
        });
        result = await encryptFileWithKms(kms.factory, kms.connection, config, input, output, options);
      } else {
        refuseKeyToolOptions(values);
        const encryption = encryptionOptions({
          footerKey: values["footer-key"],
          columnKeys: values["column-key"],
          algorithm: values.algorithm,
          plaintextFooter: values["plaintext-footer"],
          aadPrefix: values["aad-prefix"],
          noStore: values["no-store-aad-prefix"],
          framing: values["page-v2-framing"],
          prefix: "",
        });
        result = await transcodeFile(input, output, {}, { ...options, encryption });
      }
      report(result, output, "encrypted");
      return 0;
    }
    case "rekey": {
      const { values, positionals: pos } = parseArgs({
        args: rest,
        allowPositionals: true,
        options: {
          ...DECRYPT_OPTIONS,
          "new-footer-key": { type: "string" },
          "new-column-key": { type: "string", multiple: true },
          "new-algorithm": { type: "string" },
          "new-plaintext-footer": { type: "boolean" },
          "new-aad-prefix": { type: "string" },
          "new-no-store-aad-prefix": { type: "boolean" },
          "page-v2-framing": { type: "string" },
          "decrypt-column": { type: "string", multiple: true },
        },
      });
      const [input, output] = positionals(pos, 2, "IN OUT");
      const encryption = encryptionOptions({
        footerKey: values["new-footer-key"],
        columnKeys: values["new-column-key"],
        algorithm: values["new-algorithm"],
        plaintextFooter: values["new-plaintext-footer"],
        aadPrefix: values["new-aad-prefix"],
        noStore: values["new-no-store-aad-prefix"],
        framing: values["page-v2-framing"],
        prefix: "new-",
      });
      const decryption = decryptionOptions(values, input);
      // Re-keying must not drop data: every column of the input has to be readable.
      const reader = await ParquetReader.open(await fileSource(input), decryption);
      try {
        const missing = [];
        for (const c of reader.columns) if (!(await reader.canRead(c.index))) missing.push(c.dotted);
        if (missing.length) {
          throw new PmeKeyMissingError(
            `the keys of columns ${missing.join(", ")} are not available`,
            { file: input },
            "rekey needs every column's key; pass them with --key",
          );
        }
      } finally {
        reader.close();
      }
      const decryptColumns = values["decrypt-column"]?.map((c) => c.trim());
      if (decryptColumns?.some((c) => !c)) throw new UsageError("--decrypt-column needs a column path");
      let result: TranscodeResult;
      try {
        result = await transcodeFile(input, output, decryption, {
          encryption,
          decryptColumns,
          onProgress: progressReporter("rekey"),
        });
      } catch (e) {
        if (!(e instanceof PmeProtectionError)) throw e;
        throw e.withHint(
          "give each a --new-column-key PATH:ID=KEY, or name it with --decrypt-column PATH to write it " +
            "in plaintext on purpose",
        );
      }
      report(result, output, "re-keyed");
      if (result.decryptedColumns.length) {
        console.error(`written in plaintext as asked: ${result.decryptedColumns.join(", ")}`);
      }
      return 0;
    }
    case "help":
    case "--help":
      console.log(PME_USAGE);
      return 0;
    case undefined:
      console.error(`usage error: a pme command is required\n${PME_USAGE}`);
      return 2;
    default:
      throw new UsageError(`unknown pme command ${JSON.stringify(command)}\n${PME_USAGE}`);
  }
}
