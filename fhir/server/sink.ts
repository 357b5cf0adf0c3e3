/**
 * Where the ingest server puts accepted resources. The server depends only on this interface, not on the
 * landing zone's internals; `fhir/landing`'s `LandingZone` fits it (its `append` resolves after fsync).
 *
 * @module
 */

/** Durable, append-only destination of accepted resources, one NDJSON line per resource. */
export interface IngestSink {
  /**
   * Appends lines (each one complete resource of `resourceType`, no newline). Must be durable when the
   * promise resolves: the server acknowledges the client only then. A rejection means nothing of this call
   * may be assumed stored (the server answers 500 for it). The resolved value is ignored (so that
   * `LandingZone`, whose append resolves to a receipt, is an IngestSink as it is).
   */
  append(resourceType: string, ndjsonLines: string[]): Promise<unknown>;
}

/** In-memory IngestSink for tests and benchmarks ("durable" as soon as the lines are in the array). */
export class MemorySink implements IngestSink {
  /** Lines per resource type, in append order. */
  readonly lines: Map<string, string[]> = new Map();
  /** Number of append calls. */
  appendCalls = 0;
  /** When set, append rejects with this error (to test failure handling), once per call. */
  failWith: Error | undefined;

  /** Appends the lines (copies them) unless `failWith` is set. */
  append(resourceType: string, ndjsonLines: string[]): Promise<void> {
    this.appendCalls++;
    if (this.failWith) return Promise.reject(this.failWith);
    let arr = this.lines.get(resourceType);
    if (!arr) this.lines.set(resourceType, arr = []);
    for (const l of ndjsonLines) arr.push(l);
    return Promise.resolve();
  }

  /** Parsed resources of one type. */
  resources(resourceType: string): Record<string, unknown>[] {
    return (this.lines.get(resourceType) ?? []).map((l) => JSON.parse(l));
  }

  /** Total number of lines over all types. */
  get count(): number {
    let n = 0;
    for (const a of this.lines.values()) n += a.length;
    return n;
  }
}
