/**
 * `views` commands: SQL on FHIR v2 ViewDefinitions (`fhir/views/`).
 *
 * `views test DIR --report FILE [--strict] [--engine js|closures]` runs a conformance test-suite folder (the specification's
 * `tests/*.json`), writes the standard test report JSON to FILE, prints one line per failed test
 * (`FAIL file :: test name: reason`) and finally `N passed, N failed`. The exit status is 0 when the run
 * itself worked, even with failed tests (some tests are known to be unsupported); with `--strict` any
 * failed test makes it 1. `--engine` picks the FHIRPath engine (default `js`, generated code; `closures`
 * the closure trees — both must pass the same tests).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { runTestSuite } from "../fhir/views/test_suite.ts";
import { UsageError } from "./keys.ts";

/** Usage text of the views commands. */
export const VIEWS_USAGE = `Usage: deno task cli views <command>
  test DIR --report FILE [--strict] [--engine js|closures]
                                         run a SQL on FHIR v2 test-suite folder (*.json test files),
                                         write the standard test report JSON to FILE, print each
                                         failure and "N passed, N failed"; exit 0 when the run worked,
                                         or 1 with --strict when any test failed; --engine picks the
                                         FHIRPath engine (default js: generated code)`;

/** One line, whatever the reason text contains. */
function oneLine(s: string): string {
  return s.replace(/\s+/g, " ").trim();
}

async function testCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      report: { type: "string" },
      strict: { type: "boolean", default: false },
      engine: { type: "string", default: "js" },
    },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) {
    throw new UsageError(`views test expects one folder DIR, got ${positionals.length} argument(s)`);
  }
  if (values.report === undefined || values.report === "") {
    throw new UsageError("views test needs --report FILE (where to write the test report JSON)");
  }
  if (values.engine !== "js" && values.engine !== "closures") {
    throw new UsageError(`--engine must be js or closures, got ${values.engine}`);
  }
  const run = await runTestSuite(positionals[0], { engine: values.engine });
  await Deno.writeTextFile(values.report, `${JSON.stringify(run.report, null, 2)}\n`);
  for (const f of run.failures) console.log(`FAIL ${f.file} :: ${f.name}: ${oneLine(f.reason)}`);
  console.log(`${run.passed} passed, ${run.failed} failed`);
  return values.strict && run.failed > 0 ? 1 : 0;
}

/** Runs `views <command> ...`; returns the exit code. Throws UsageError for bad arguments. */
export async function viewsCommand(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "test":
      return await testCommand(rest);
    case "help":
    case "--help":
    case undefined:
      if (command === undefined) {
        console.error(`usage error: a views command is required\n${VIEWS_USAGE}`);
        return 2;
      }
      console.log(VIEWS_USAGE);
      return 0;
    default:
      throw new UsageError(`unknown views command ${JSON.stringify(command)}; try "test"`);
  }
}
