/**
 * The FHIR R4 ingest server (see handler.ts for the interactions and the transaction boundary, server.ts
 * for shutdown, validation_pool.ts for the validation workers).
 *
 * @module
 */

export { createIngestHandler, type IngestHandler, type IngestOptions, outcome } from "./handler.ts";
export { startIngestServer, type StartOptions } from "./server.ts";
export { type IngestSink, MemorySink } from "./sink.ts";
export { type Client, type ClientConfig } from "./auth.ts";
export {
  HttpError,
  IngestConfigError,
  type ServerIssue,
  type ServerIssueCode,
  ValidationWorkerError,
  type ValidationWorkerFailure,
} from "./errors.ts";
export { ValidationPool, type ValidationPoolOptions } from "./validation_pool.ts";
export { capabilityStatement } from "./capability.ts";
export { type NdjsonLine, splitLines } from "./body.ts";
