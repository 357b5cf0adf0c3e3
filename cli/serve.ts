/**
 * `serve`: the FHIR ingest server over the encrypted landing zone.
 *
 * `deno task cli serve --data DIR --port N [--kms local --keystore FILE | --kms vault ...]
 * [--clients FILE] [--landing-master-key ID]` — landing zone under `DIR/landing/` (lake under
 * `DIR/lake/` once converted). Without `--kms` the KMS recorded in the data folder is used; a new folder
 * (missing or empty) is created on first use with a new local keystore outside it, and says so. `--clients FILE` is a JSON object
 * mapping bearer tokens to client names; without it a token is generated and printed once.
 * `--validation-workers N` validates in N worker threads (default defaultValidationWorkers(): one per
 * core; 0 = on the main thread); the server listens once they have loaded the definitions.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { availableParallelism } from "node:os";
import { LandingZone } from "../fhir/landing/mod.ts";
import { startIngestServer } from "../fhir/server/mod.ts";
import { UsageError } from "./keys.ts";
import { KMS_OPTIONS, KMS_OPTIONS_USAGE, kmsSpecFromOptions } from "./kms_connect.ts";
import { printDataFolderEvent } from "./data_dir.ts";
import { INGEST_ROLES, openDataFolder } from "../app/data_folder.ts";

/**
 * Validation workers when `--validation-workers` is not given: one per core (measured best on 2 cores,
 * with the load generator on the same machine; see README.md), at most 8.
 */
export function defaultValidationWorkers(cores = availableParallelism()): number {
  return Math.max(1, Math.min(8, cores));
}

/** Usage of serve. */
export const SERVE_USAGE = `Usage: fhir-pme serve --data DIR [--port 8080] [--clients FILE] [KMS options]
          [--landing-master-key ID] [--max-body-mb 32] [--validation-workers N] [--max-imports 4]
  FHIR R4 ingest server on 127.0.0.1: POST /fhir/{type}, PUT /fhir/{type}/{id}, POST /fhir (batch or
  transaction Bundle), POST /fhir/$import (NDJSON), GET /fhir/metadata. Accepted resources are validated,
  encrypted and fsync'd into DIR/landing/ before the response. Stops on SIGINT/SIGTERM (drains requests,
  seals open segments).
  --data DIR                the data folder; a new (missing or empty) folder is created on first use with
                            a new local keystore OUTSIDE it (path printed; back it up separately)
  --port N                  TCP port on 127.0.0.1 (default 8080; 0 picks a free port)
  --clients FILE            JSON object {"<bearer token>": "<client name>"}; without it one token is
                            generated and printed
  --landing-master-key ID   master key of the landing zone (default: the folder's, normally "landing")
  --max-body-mb N           largest request body (default 32)
  --validation-workers N    validate in N worker threads (default one per core, here ${defaultValidationWorkers()};
                            0 validates on the main thread)
  --max-imports N           $import requests served at once (default 4); more get 429 with Retry-After
  ${KMS_OPTIONS_USAGE}
  Without --kms the KMS recorded in DIR/fhir-pme.json is used. The server refuses to start when a master
  key it needs is missing or denied.`;

async function readClients(path: string): Promise<Record<string, string>> {
  let o: unknown;
  try {
    o = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new UsageError(
      `--clients ${path}: ${e instanceof SyntaxError ? "not JSON" : (e as Error).message}`,
    );
  }
  if (
    !o || typeof o !== "object" || Array.isArray(o) || Object.values(o).some((v) => typeof v !== "string")
  ) {
    throw new UsageError(`--clients ${path} must be a JSON object mapping bearer tokens to client names`);
  }
  return o as Record<string, string>;
}

/** Runs the server until SIGINT/SIGTERM; returns the exit code. */
export async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      data: { type: "string" },
      port: { type: "string" },
      clients: { type: "string" },
      "landing-master-key": { type: "string" },
      "max-body-mb": { type: "string" },
      "validation-workers": { type: "string" },
      "max-imports": { type: "string" },
      ...KMS_OPTIONS,
    },
  });
  if (!values.data) throw new UsageError(`--data DIR is required\n${SERVE_USAGE}`);
  const port = Number(values.port ?? 8080);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError("--port must be 0..65535");
  const maxBodyBytes = Number(values["max-body-mb"] ?? 32) * 1024 * 1024;
  if (!(maxBodyBytes > 0)) throw new UsageError("--max-body-mb must be positive");
  const workersArg = values["validation-workers"];
  const validationWorkers = workersArg === undefined
    ? defaultValidationWorkers()
    : /^\d{1,2}$/.test(workersArg)
    ? Number(workersArg)
    : NaN;
  if (!Number.isInteger(validationWorkers) || validationWorkers < 0 || validationWorkers > 64) {
    throw new UsageError("--validation-workers must be an integer 0..64 (0: validate on the main thread)");
  }
  const importsArg = values["max-imports"] ?? "4";
  const maxImports = /^\d{1,4}$/.test(importsArg) ? Number(importsArg) : NaN;
  if (!(maxImports >= 1 && maxImports <= 1000)) {
    throw new UsageError("--max-imports must be an integer 1..1000");
  }
  const folder = await openDataFolder(values.data, {
    kms: kmsSpecFromOptions(values),
    create: true,
    needs: INGEST_ROLES,
    masterKeys: values["landing-master-key"] ? { landing: values["landing-master-key"] } : undefined,
    onEvent: printDataFolderEvent,
  });
  const kms = folder.kms;
  let clients: Record<string, string>;
  let generated: string | undefined;
  if (values.clients) clients = await readClients(values.clients);
  else {
    generated = Array.from(crypto.getRandomValues(new Uint8Array(24)), (b) => b.toString(16).padStart(2, "0"))
      .join("");
    clients = { [generated]: "default" };
  }

  const zone = await LandingZone.open(folder.landingDir, await kms.client(), folder.masterKeys.landing, {
    autoRollIntervalMs: 10_000,
    onBackgroundError: (e) =>
      console.error(`landing zone: ${e instanceof Error ? e.name : "error"} while rolling`),
  });
  const stop = new AbortController();
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = await startIngestServer({
      sink: zone,
      clients,
      maxBodyBytes,
      validationWorkers,
      maxConcurrentImports: maxImports,
      port,
      hostname: "127.0.0.1",
      signal: stop.signal,
    });
  } catch (e) {
    await zone.close();
    throw e;
  }
  console.log(
    `fhir-pme ingest listening on http://127.0.0.1:${server.addr.port}/fhir (landing: ${folder.landingDir}; validation workers: ${
      validationWorkers || "none, inline"
    })`,
  );
  if (generated) console.log(`bearer token for client "default": ${generated}`);
  const shutdown = () => stop.abort();
  Deno.addSignalListener("SIGINT", shutdown);
  Deno.addSignalListener("SIGTERM", shutdown);
  await server.finished;
  await zone.close({ seal: true });
  console.error("ingest server stopped; open segments sealed");
  return 0;
}
