/**
 * `deno task cli generate --patients N --days D --seed S --out DIR`: synthetic Food Coach data as FHIR
 * NDJSON (fhir/generator.ts). Progress on a terminal; one summary line with the counts per type.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { GeneratorOptionsError } from "../fhir/errors.ts";
import { generate, GENERATED_RESOURCE_TYPES, type GenerateProgress } from "../fhir/generator.ts";
import { UsageError } from "./keys.ts";

/** Usage text of the generate area. */
export const GENERATE_USAGE =
  `Usage: fhir-pme generate --patients N --days D --seed S --out DIR [--start YYYY-MM-DD]
          [--patients-per-dietitian K]
  Synthetic Food Coach data (no real person): writes DIR/<Type>.ndjson (FHIR R4 NDJSON) and
  DIR/identifiers.txt (identifying strings of the patients, one a line, for leak scans); the same seed
  gives identical files.`;

function positiveInt(value: string | undefined, option: string): number {
  if (value === undefined) throw new UsageError(`${option} is required`);
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new UsageError(`${option} expects a positive integer`);
  return Number(value);
}

/** Runs `generate ...`; returns the exit code. */
export async function generateCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      patients: { type: "string" },
      days: { type: "string" },
      seed: { type: "string" },
      out: { type: "string" },
      start: { type: "string" },
      "patients-per-dietitian": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(GENERATE_USAGE);
    return 0;
  }
  if (positionals.length) {
    throw new UsageError(`unexpected argument(s); ${GENERATE_USAGE.split("\n")[0]}`);
  }
  const patients = positiveInt(values.patients, "--patients");
  const days = positiveInt(values.days, "--days");
  if (values.seed === undefined || values.seed === "") throw new UsageError("--seed is required");
  if (!values.out) throw new UsageError("--out is required");
  const perDietitian = values["patients-per-dietitian"] === undefined
    ? undefined
    : positiveInt(values["patients-per-dietitian"], "--patients-per-dietitian");

  const progress = progressLine();
  let summary;
  try {
    summary = await generate({
      patients,
      days,
      seed: values.seed,
      outDir: values.out,
      startDate: values.start,
      patientsPerDietitian: perDietitian,
      onProgress: progress?.update,
    });
  } catch (e) {
    if (e instanceof GeneratorOptionsError) throw new UsageError(e.message);
    throw e;
  } finally {
    progress?.done();
  }
  const counts = GENERATED_RESOURCE_TYPES.map((t) => `${t} ${summary.lines[t]}`).join(", ");
  const mb = summary.bytes / 1e6;
  console.log(
    `generated ${patients} patients × ${days} days into ${values.out}: ${counts} lines ` +
      `(food entries ${summary.foodEntries}, body weights ${summary.bodyWeights}, entered-in-error ` +
      `${summary.enteredInError}, re-uploads ${summary.reuploads}, redelivered ${summary.redelivered}, ` +
      `dietitian changes ${summary.dietitianChanges}); identifiers.txt ${summary.identifiers} lines; ` +
      `${mb.toFixed(1)} MB in ${summary.seconds.toFixed(1)} s (${
        (mb / Math.max(summary.seconds, 1e-3)).toFixed(0)
      } MB/s)`,
  );
  return 0;
}

/** A single updating progress line on stderr when it is a terminal. */
function progressLine(): { update: (p: GenerateProgress) => void; done: () => void } | undefined {
  if (!Deno.stderr.isTerminal()) return undefined;
  const te = new TextEncoder();
  const start = performance.now();
  let last = 0;
  let shown = false;
  return {
    update: (p) => {
      const now = performance.now();
      if (now - last < 200 && p.patientsDone < p.patients) return;
      last = now;
      shown = true;
      const mbs = p.bytes / 1e6 / Math.max((now - start) / 1000, 1e-3);
      Deno.stderr.writeSync(
        te.encode(
          `\rgenerate: ${p.patientsDone}/${p.patients} patients, ${(p.bytes / 1e6).toFixed(1)} MB (${
            mbs.toFixed(0)
          } MB/s)`,
        ),
      );
    },
    done: () => {
      if (shown) Deno.stderr.writeSync(te.encode("\n"));
    },
  };
}
