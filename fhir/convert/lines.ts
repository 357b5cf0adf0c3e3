/**
 * Streaming line reader for NDJSON files: memory bounded by the longest line plus one read chunk.
 *
 * @module
 */

/** Yields the lines of a UTF-8 file (without `\n` / `\r\n`). */
export async function* readLines(path: string): AsyncGenerator<string> {
  const file = await Deno.open(path, { read: true });
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let rest = "";
  try {
    const buf = new Uint8Array(1 << 20);
    for (;;) {
      const n = await file.read(buf);
      if (n === null) break;
      rest += decoder.decode(buf.subarray(0, n), { stream: true });
      let start = 0;
      for (let nl = rest.indexOf("\n"); nl >= 0; nl = rest.indexOf("\n", start)) {
        const end = nl > start && rest.charCodeAt(nl - 1) === 13 ? nl - 1 : nl;
        yield rest.slice(start, end);
        start = nl + 1;
      }
      rest = rest.slice(start);
    }
    rest += decoder.decode();
    if (rest !== "") yield rest.endsWith("\r") ? rest.slice(0, -1) : rest;
  } finally {
    file.close();
  }
}
