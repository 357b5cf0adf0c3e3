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

const USAGE = `Usage: deno task cli <area> <command> [options]
Areas:
  pme   Parquet Modular Encryption: inspect, encrypt, decrypt, rekey
  kms   Key management: the local keystore of master keys
  views SQL on FHIR ViewDefinitions: run the conformance test suite
  generate  Synthetic Food Coach data as FHIR NDJSON
  serve The FHIR ingest server over the encrypted landing zone
  convert  Landing zone → encrypted Parquet lake (views, dedupe, column keys by sensitivity)

${PME_USAGE}

${KMS_USAGE}

${GENERATE_USAGE}

${VIEWS_USAGE}

${SERVE_USAGE}

${CONVERT_USAGE}`;

/** Runs the CLI; returns the exit code. Errors become one line on stderr. */
export async function main(argv: string[]): Promise<number> {
  const [area, ...rest] = argv;
  try {
    switch (area) {
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
          `unknown area ${JSON.stringify(area)}; try "pme", "kms", "views", "generate", "serve" or "convert"`,
        );
    }
  } catch (e) {
    if (
      e instanceof UsageError ||
      (e instanceof TypeError && "code" in e && String(e.code).startsWith("ERR_PARSE_ARGS"))
    ) {
      console.error(`usage error: ${e.message.split("\n")[0]}`);
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
