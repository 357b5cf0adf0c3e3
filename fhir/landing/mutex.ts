/**
 * A promise-chain mutex: callbacks run one at a time, in call order.
 *
 * @module
 */

/** Serializes async callbacks. */
export class Mutex {
  #tail: Promise<unknown> = Promise.resolve();

  /** Runs `fn` after every previously queued callback has settled; resolves with its result. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#tail.then(fn);
    this.#tail = p.then(() => {}, () => {});
    return p;
  }
}
