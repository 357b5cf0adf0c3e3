/**
 * The CapabilityStatement of the ingest server (`GET /fhir/metadata`).
 *
 * @module
 */

import type { CapabilityStatement, CapabilityStatementRestResource } from "@medplum/fhirtypes";

/** What the server supports, for the resource types it accepts. */
export function capabilityStatement(allowedTypes: readonly string[], baseUrl: string): CapabilityStatement {
  return {
    resourceType: "CapabilityStatement",
    status: "active",
    date: "2026-01-01",
    kind: "instance",
    software: { name: "fhir-pme ingest server" },
    implementation: { description: "Food Coach FHIR R4 ingest (write-only subset)", url: baseUrl },
    fhirVersion: "4.0.1",
    format: ["application/fhir+json"],
    rest: [{
      mode: "server",
      documentation: "Write-only: create, update (as create), batch/transaction of POST/PUT, bulk NDJSON " +
        "$import. No read or search.",
      security: {
        description: "Bearer token per client (Authorization: Bearer <token>); 401 without a valid token, " +
          "403 when the client may not write the resource type.",
      },
      resource: allowedTypes.map((type) => ({
        type: type as CapabilityStatementRestResource["type"],
        interaction: [{ code: "create" }, { code: "update" }],
        versioning: "versioned",
        updateCreate: true,
        // Only a conditional create on the log-entry identifier (resolved at conversion); other
        // conditions are refused with 400 not-supported (fhir/server/conditional.ts).
        conditionalCreate: true,
        conditionalUpdate: false,
        conditionalRead: "not-supported",
        conditionalDelete: "not-supported",
      })),
      interaction: [{ code: "transaction" }, { code: "batch" }],
      operation: [{
        name: "import",
        definition: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/import",
        documentation: "POST /fhir/$import with an application/fhir+ndjson body, one resource per line " +
          "(any size, streamed); answers 200 with an OperationOutcome of accepted/rejected counts and one " +
          "issue per rejected line (expression `line N`).",
      }],
    }],
  };
}
