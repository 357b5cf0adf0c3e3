/**
 * Start-up check of master keys: wrap a random probe key with each master key and unwrap it again, so
 * that a long-running command refuses to start when a key it needs is missing, denied or unusable,
 * instead of failing every request later. The probe key is random, never stored, and zeroed after use.
 *
 * @module
 */

import type { KmsClient } from "./client.ts";
import { KmsAccessDeniedError, KmsError, KmsKeyNotFoundError, KmsUnavailableError } from "./errors.ts";

/** Why a master key failed its probe. */
export type ProbeProblem = "missing" | "denied" | "unavailable" | "broken";

/** One master key that failed its probe. */
export interface ProbeFailure {
  masterKeyId: string;
  problem: ProbeProblem;
  /** The error's message (names the key and KMS, never key bytes). */
  message: string;
}

function problemOf(e: unknown): ProbeProblem {
  if (e instanceof KmsKeyNotFoundError) return "missing";
  if (e instanceof KmsAccessDeniedError) return "denied";
  if (e instanceof KmsUnavailableError) return "unavailable";
  return "broken";
}

/**
 * Wraps and unwraps a random 128-bit probe key with each of `masterKeyIds` (at most 4 at once).
 * Returns the keys that failed, in the order given; an empty array when every key works. A KMS error
 * is reported, any other error (a bug, an aborted signal) is thrown.
 */
export async function probeMasterKeys(
  client: KmsClient,
  masterKeyIds: readonly string[],
  signal?: AbortSignal,
): Promise<ProbeFailure[]> {
  const ids = [...new Set(masterKeyIds)];
  const results: (ProbeFailure | null)[] = new Array(ids.length).fill(null);
  let next = 0;
  const one = async () => {
    for (let i = next++; i < ids.length; i = next++) {
      signal?.throwIfAborted();
      const id = ids[i];
      const probe = crypto.getRandomValues(new Uint8Array(16));
      let back: Uint8Array | undefined;
      try {
        back = await client.unwrapKey(await client.wrapKey(probe, id), id);
        if (back.length !== probe.length || back.some((b, j) => b !== probe[j])) {
          results[i] = {
            masterKeyId: id,
            problem: "broken",
            message: "the unwrapped probe differs from the key",
          };
        }
      } catch (e) {
        if (!(e instanceof KmsError)) throw e;
        results[i] = { masterKeyId: id, problem: problemOf(e), message: e.message };
      } finally {
        probe.fill(0);
        back?.fill(0);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(4, ids.length) }, one));
  return results.filter((r): r is ProbeFailure => r !== null);
}
