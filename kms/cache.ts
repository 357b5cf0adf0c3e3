/**
 * Two-level cache with expiration, as in the key tools (parquet-java
 * `TwoLevelCacheWithExpiration`): the outer key is the access token, each token's inner map expires
 * a fixed lifetime after it was created, and expired tokens are purged at most once per lifetime.
 *
 * @module
 */

interface Entry<V> {
  expires: number;
  map: Map<string, V>;
}

/** A cache keyed by (access token, key), with per-token lifetime. */
export class TwoLevelCache<V> {
  #tokens = new Map<string, Entry<V>>();
  #lastPurge = 0;

  /** `lifetimeMs`: how long a token's entries live; `now`: clock (tests). */
  constructor(readonly lifetimeMs: number, readonly now: () => number = Date.now) {}

  /** The token's inner map, created anew when missing or expired. */
  #inner(token: string): Map<string, V> {
    const t = this.now();
    if (t - this.#lastPurge >= this.lifetimeMs) {
      for (const [k, e] of this.#tokens) if (e.expires <= t) this.#tokens.delete(k);
      this.#lastPurge = t;
    }
    let e = this.#tokens.get(token);
    if (!e || e.expires <= t) {
      e = { expires: t + this.lifetimeMs, map: new Map() };
      this.#tokens.set(token, e);
    }
    return e.map;
  }

  /** Cached value, or the result of `create` (cached; a rejected promise is not kept). */
  getOrCreate(token: string, key: string, create: () => V): V {
    const inner = this.#inner(token);
    if (inner.has(key)) return inner.get(key)!;
    const v = create();
    inner.set(key, v);
    if (v instanceof Promise) v.catch(() => inner.get(key) === v && inner.delete(key));
    return v;
  }

  /** Forgets every entry of a token. */
  removeToken(token: string): void {
    this.#tokens.delete(token);
  }

  /** Forgets everything. */
  clear(): void {
    this.#tokens.clear();
  }
}
