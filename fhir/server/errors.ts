/**
 * Typed errors of the ingest server. An HttpError carries the status and the OperationOutcome issues the
 * client gets; messages and issues never contain resource content or tokens.
 *
 * @module
 */

import { FhirError } from "../errors.ts";
import type { Issue, IssueCode } from "../validate.ts";

/** Issue codes the server adds to those of fhir/validate.ts (http://hl7.org/fhir/issue-type). */
export type ServerIssueCode =
  | IssueCode
  | "login"
  | "forbidden"
  | "not-found"
  | "too-long"
  | "duplicate"
  | "conflict"
  | "transient"
  | "throttled";

/** An issue as the server reports it (OperationOutcome.issue). */
export interface ServerIssue extends Omit<Issue, "code"> {
  code: ServerIssueCode;
}

/** A request failed with an HTTP status and an OperationOutcome. */
export class HttpError extends FhirError {
  /** HTTP status code. */
  readonly status: number;
  /** Issues of the OperationOutcome. */
  readonly issues: ServerIssue[];
  /** Extra response headers (e.g. WWW-Authenticate). */
  readonly headers: Record<string, string>;

  constructor(status: number, issues: ServerIssue[], headers: Record<string, string> = {}) {
    super(`HTTP ${status}: ${issues[0]?.diagnostics ?? ""}`);
    this.name = "HttpError";
    this.status = status;
    this.issues = issues;
    this.headers = headers;
  }

  /** One error issue. */
  static of(
    status: number,
    code: ServerIssueCode,
    diagnostics: string,
    expression?: string[],
    headers?: Record<string, string>,
  ): HttpError {
    return new HttpError(status, [issue(code, diagnostics, expression)], headers);
  }
}

/** Invalid server options (thrown by createIngestHandler). */
export class IngestConfigError extends FhirError {
  constructor(message: string) {
    super(message);
    this.name = "IngestConfigError";
  }
}

/** Why validation in a worker failed (see ValidationWorkerError). */
export type ValidationWorkerFailure = "start" | "crash" | "timeout" | "job" | "closed";

/**
 * Validation in a worker pool failed, not the resource: a worker could not start (`start`: the R4
 * definitions did not load), stopped with an uncaught error (`crash`), did not answer within the job
 * timeout (`timeout`: it is terminated), threw on a job (`job`), or the pool is closed (`closed`). The
 * server answers 500; a crashed or hung worker is replaced. The message names the worker, never data.
 */
export class ValidationWorkerError extends FhirError {
  /** What failed. */
  readonly failure: ValidationWorkerFailure;

  constructor(failure: ValidationWorkerFailure, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ValidationWorkerError";
    this.failure = failure;
  }
}

/** An error-severity issue. */
export function issue(code: ServerIssueCode, diagnostics: string, expression?: string[]): ServerIssue {
  return expression?.length
    ? { severity: "error", code, diagnostics, expression }
    : { severity: "error", code, diagnostics };
}
