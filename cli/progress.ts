/**
 * Progress display for long runs: a single updating line on stderr when it is a terminal, nothing
 * otherwise.
 *
 * @module
 */

/** Returns a progress callback (bytes done / total) or undefined when stderr is not a TTY. */
export function progressReporter(label: string): ((done: number, total: number) => void) | undefined {
  if (!Deno.stderr.isTerminal()) return undefined;
  const te = new TextEncoder();
  const start = performance.now();
  let last = 0;
  return (done, total) => {
    const now = performance.now();
    if (now - last < 200 && done < total) return;
    last = now;
    const pct = total ? ((100 * done) / total).toFixed(1) : "100";
    const mbs = done / 1e6 / Math.max((now - start) / 1000, 1e-3);
    const line = `\r${label}: ${pct}% (${(done / 1e6).toFixed(1)} of ${(total / 1e6).toFixed(1)} MB, ${
      mbs.toFixed(0)
    } MB/s)`;
    Deno.stderr.writeSync(te.encode(done >= total ? line + "\n" : line));
  };
}
