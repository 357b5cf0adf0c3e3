/**
 * fhir-pme command line: `deno task cli <area> <command> ...`.
 *
 * @module
 */

import { PmeError } from "../pme/mod.ts";
import { KmsError } from "../kms/errors.ts";
import { UsageError } from "./keys.ts";
import { KMS_USAGE, kmsCommand } from "./kms.ts";
import { PME_USAGE, pmeCommand } from "./pme.ts";
import { VIEWS_USAGE, viewsCommand } from "./views.ts";
import { GENERATE_USAGE, generateCommand } from "./generate.ts";
import { SERVE_USAGE, serveCommand } from "./serve.ts";
import { CONVERT_USAGE, convertCommand } from "./convert.ts";
import { INIT_USAGE, initCommand } from "./init.ts";
import { DEMO_USAGE, demoCommand } from "./demo.ts";
import { KMS_OPS_USAGE } from "./kms_ops.ts";

const USAGE = `Usage: fhir-pme <area> [<command>] [options]      (or: deno task cli ...)
Areas:
  demo      the main job end to end on synthetic data
  init      create (or check) a data folder and its master keys
  serve     the FHIR ingest server over the encrypted landing zone
  convert   landing zone → encrypted Parquet lake (views, dedupe, column keys by sensitivity)
  generate  synthetic Food Coach data as FHIR NDJSON
  pme       Parquet Modular Encryption: inspect, encrypt, decrypt, rekey
  kms       key management: local keystore, rotation, re-encryption
  views     SQL on FHIR ViewDefinitions: run the conformance test suite
"fhir-pme <area> --help" shows the usage of an area.`;

/** Usage of each area, shown by `--help`/`-h` anywhere on its command line. */
const AREA_USAGE: Record<string, string> = {
  demo: DEMO_USAGE,
  init: INIT_USAGE,
  serve: SERVE_USAGE,
  convert: CONVERT_USAGE,
  generate: GENERATE_USAGE,
  pme: PME_USAGE,
  kms: `${KMS_USAGE}\n\n${KMS_OPS_USAGE}`,
  views: VIEWS_USAGE,
};

/** True when the command line asks for help (`--help` or `-h` as an option, before any `--`). */
function wantsHelp(argv: string[]): boolean {
  for (const a of argv) {
    if (a === "--") return false;
    if (a === "--help" || a === "-h") return true;
  }
  return false;
}

/** Runs the CLI; returns the exit code. Errors become one line on stderr. */
export async function main(argv: string[]): Promise<number> {
  const [area, ...rest] = argv;
  if (wantsHelp(argv)) {
    console.log(AREA_USAGE[area] ?? USAGE);
    return 0;
  }
  try {
    switch (area) {
      case "init":
        return await initCommand(rest);
      case "demo":
        return await demoCommand(rest);
      case "pme":
        return await pmeCommand(rest);
      case "kms":
        return await kmsCommand(rest);
      case "views":
        return await viewsCommand(rest);
      case "generate":
        return await generateCommand(rest);
      case "serve":
        return await serveCommand(rest);
      case "convert":
        return await convertCommand(rest);
      case "help":
      case "--help":
        console.log(USAGE);
        return 0;
      case undefined:
        console.error(`usage error: an area is required\n${USAGE}`);
        return 2;
      default:
        throw new UsageError(
          `unknown area ${JSON.stringify(area)}; try ${Object.keys(AREA_USAGE).join(", ")} (or --help)`,
        );
    }
  } catch (e) {
    if (
      e instanceof UsageError ||
      (e instanceof TypeError && "code" in e && String(e.code).startsWith("ERR_PARSE_ARGS"))
    ) {
      console.error(
        `usage error: ${e.message.split("\n")[0]} (see: fhir-pme ${
          area in AREA_USAGE ? `${area} ` : ""
        }--help)`,
      );
      return 2;
    }
    if (e instanceof PmeError || e instanceof KmsError) {
      console.error(`error: ${e.name}: ${e.message}`);
      return 1;
    }
    if (e instanceof Deno.errors.NotFound) {
      console.error(`error: ${e.message}`);
      return 1;
    }
    console.error(`error: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
