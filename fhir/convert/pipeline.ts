/**
 * Ordered batch pipelines: batches are submitted as they are read and their results consumed strictly in
 * submission order, with a bounded number in flight, while the input is read ahead in the background.
 *
 * @module
 */

/**
 * Submits every item of `source` to `submit` (which may skip one by returning `undefined`) and hands the
 * results to `consume` in submission order, with at most `inFlight` results pending. A rejected result
 * throws when its turn comes (the later ones are then ignored). When `stopped()` turns true it stops
 * reading and returns.
 */
export async function ordered<B, R>(
  source: AsyncIterable<B>,
  inFlight: number,
  submit: (item: B) => Promise<R> | undefined,
  consume: (result: R) => void | Promise<void>,
  stopped: () => boolean = () => false,
): Promise<void> {
  const queue: Promise<R>[] = [];
  try {
    for await (const item of source) {
      if (stopped()) return;
      const result = submit(item);
      if (result === undefined) continue;
      // Rejections are handled when the result's turn comes; until then they must not be "unhandled".
      result.catch(() => {});
      queue.push(result);
      while (queue.length >= inFlight) await consume(await queue.shift()!);
    }
    while (queue.length > 0) await consume(await queue.shift()!);
  } finally {
    queue.length = 0;
  }
}

/**
 * Reads `source` ahead: up to `depth` items are pulled in the background while the consumer is busy
 * (e.g. waiting for a worker), so that reading (file and decryption waits) overlaps the work. Errors
 * surface in order, when the consumer reaches them; stopping early closes the source.
 */
export async function* readAhead<T>(source: AsyncIterable<T>, depth: number): AsyncGenerator<T> {
  const it = source[Symbol.asyncIterator]();
  const ahead: Promise<IteratorResult<T>>[] = [];
  let done = false;
  const pull = () => {
    const p = it.next();
    p.then((r) => {
      if (r.done) done = true;
    }, () => {
      done = true;
    });
    ahead.push(p);
  };
  try {
    for (;;) {
      // Queued next() calls run one after the other: the source keeps reading until `depth` are ready.
      while (!done && ahead.length < depth) pull();
      const r = await (ahead.shift() ?? it.next());
      if (r.done) return;
      yield r.value;
    }
  } finally {
    for (const p of ahead) p.catch(() => {});
    ahead.length = 0;
    await it.return?.();
  }
}

/**
 * Runs `fn(k)` for k = 0 … count - 1, at most `limit` at a time, started in index order. When some fail,
 * no later one starts, the running later ones are asked to stop (`stopped()`), the earlier ones run to
 * the end, and the failure of the smallest index is thrown: the same error as running them one after
 * the other, whatever the timing.
 */
export async function inIndexOrderOfFailure(
  count: number,
  limit: number,
  fn: (k: number, stopped: () => boolean) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failedAt = Infinity;
  let failure: unknown;
  const lane = async (): Promise<void> => {
    while (next < count && next < failedAt) {
      const k = next++;
      try {
        await fn(k, () => k > failedAt);
      } catch (e) {
        if (k < failedAt) {
          failedAt = k;
          failure = e;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, lane));
  if (failedAt !== Infinity) throw failure;
}
