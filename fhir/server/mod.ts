/**
 * The FHIR R4 ingest server (see handler.ts for the interactions and the transaction boundary).
 *
 * @module
 */

export {
  createIngestHandler,
  type IngestHandler,
  type IngestOptions,
  outcome,
  startIngestServer,
  type StartOptions,
} from "./handler.ts";
export { type IngestSink, MemorySink } from "./sink.ts";
export { type Client, type ClientConfig } from "./auth.ts";
export { HttpError, IngestConfigError, type ServerIssue, type ServerIssueCode } from "./errors.ts";
export { capabilityStatement } from "./capability.ts";
export { type NdjsonLine, splitLines } from "./body.ts";
