/**
 * Tests of the landing zone (`fhir/landing/`):
 *
 * - append / seal / read round trip with the exact lines, several types, the manifest's counts;
 * - rolling by size and by age (fake clock, `rollExpired`, the background timer);
 * - the fsync-before-ack contract: every `append` writes, then fdatasyncs, then resolves (a spy on
 *   `Deno.FsFile`), one fdatasync per batch, and a fresh reader sees every acknowledged line;
 * - crash safety: a subprocess appends batches and prints "ack N" after each resolves; it is killed
 *   with SIGKILL at random moments (12 rounds) and the zone is reopened: every acknowledged batch is
 *   there exactly once and complete, nothing else is corrupt; plus deterministic torn tails
 *   (incomplete chunk, zeros, torn header), a crash between final chunk and rename, and between
 *   rename and manifest update;
 * - tampering: a flipped byte (sealed and open segments), swapped chunks, a chunk spliced from another
 *   segment, a dropped final chunk, a cut chunk, a relabelled header, a renamed file, bytes after
 *   the final chunk — each a typed error naming segment and chunk;
 * - no clear PHI: distinctive names and identifiers (and their base64 and hex) appear in no byte
 *   under the landing directory, while open, after sealing and after recovery;
 * - publication: only published segments are deleted, their header (wrapped DEK) is zeroed before
 *   unlinking, the manifest is updated; missing files are detected on reopen;
 * - KMS failures: wrong master key, unknown or denied key (not retryable), KMS down (retryable, nothing
 *   written); a failed fdatasync (segment set aside, retry to a new segment, recovered on reopen); a
 *   failed manifest update (typed, retried with the next one); input validation and the directory lock;
 * - append throughput with an fsync per batch (100 and 1 000 resources per batch), printed.
 *
 * @module
 */
import assert from "node:assert";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { withTempDir } from "./fixtures/tmp.ts";
import { MemoryKms } from "./fixtures/memory_kms.ts";
import { KmsKeyNotFoundError, KmsUnavailableError, KmsUnwrapError } from "../kms/errors.ts";
import {
  LandingAuthError,
  LandingError,
  LandingFormatError,
  LandingInputError,
  LandingKmsError,
  LandingMissingSegmentError,
  LandingStateError,
  LandingTruncatedError,
  LandingZone,
  type LandingZoneOptions,
  MANIFEST_FILE,
  readHeader,
  readSegment,
  segmentFileName,
  verifySegment,
} from "../fhir/landing/mod.ts";

const MASTER = "landing";
const MASTER_KEY_HEX = "5a".repeat(16) + "c3".repeat(16);

function hexBytes(hex: string): Uint8Array {
  return Uint8Array.from(hex.match(/../g)!.map((h) => parseInt(h, 16)));
}

function newKms(hex = MASTER_KEY_HEX): MemoryKms {
  return new MemoryKms({ [MASTER]: hexBytes(hex), other: crypto.getRandomValues(new Uint8Array(32)) });
}

async function rejects<E extends Error>(
  p: Promise<unknown> | (() => Promise<unknown>),
  cls: abstract new (...a: never[]) => E,
  ...patterns: RegExp[]
): Promise<E> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    assert(e instanceof cls, `expected ${cls.name}, got ${(e as Error)?.name}: ${(e as Error)?.message}`);
    for (const pat of patterns) assert.match(e.message, pat);
    return e;
  }
  assert.fail(`expected ${cls.name}, but it resolved`);
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const l of it) out.push(l);
  return out;
}

function resource(type: string, id: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ resourceType: type, id, meta: { versionId: "1" }, ...extra });
}

function batch(type: string, prefix: string, n: number): string[] {
  return Array.from(
    { length: n },
    (_, i) => resource(type, `${prefix}-${i}`, { note: "é€😀".repeat(i % 3) }),
  );
}

/** All lines of all sealed segments of a type, in manifest (sealing) order. */
async function readAll(zone: LandingZone, type?: string): Promise<string[]> {
  const out: string[] = [];
  for (const s of zone.sealedSegments(type)) out.push(...await collect(zone.read(s.segmentId)));
  return out;
}

function segFiles(dir: string, suffix: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(suffix)).sort();
}

/** Byte ranges [start, end) of the chunks of a segment file. */
function chunkRanges(bytes: Uint8Array): { header: number; chunks: [number, number][] } {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const header = 9 + dv.getUint32(5);
  const chunks: [number, number][] = [];
  for (let pos = header; pos < bytes.length;) {
    const end = pos + 4 + 12 + dv.getUint32(pos);
    chunks.push([pos, end]);
    pos = end;
  }
  return { header, chunks };
}

/** Reassembles a segment file from its header and a list of chunk byte arrays. */
function assemble(bytes: Uint8Array, header: number, chunks: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat([bytes.subarray(0, header), ...chunks]));
}

async function withZone<T>(
  fn: (zone: LandingZone, dir: string, kms: MemoryKms) => Promise<T>,
  options: LandingZoneOptions = {},
): Promise<T> {
  return await withTempDir(async (root) => {
    const dir = join(root, "landing");
    const kms = newKms();
    const zone = await LandingZone.open(dir, kms, MASTER, options);
    try {
      return await fn(zone, dir, kms);
    } finally {
      await zone.close({ seal: false });
    }
  }, "landing-test-");
}

/** A sealed segment (3 data chunks) of `type`; returns its path. */
async function sealedSegment(
  zone: LandingZone,
  type: string,
  tag: string,
): Promise<{ path: string; id: string }> {
  for (let b = 0; b < 3; b++) await zone.append(type, batch(type, `${tag}${b}`, 2 + b));
  const [s] = await zone.seal(type);
  return { path: zone.segmentPath(s.segmentId), id: s.segmentId };
}

Deno.test("landing: append, seal and read back the exact lines; manifest counts", async () => {
  await withZone(async (zone, dir, kms) => {
    // The last line resends p-0 (version 2): landing keeps both, in arrival order; conversion dedups.
    const patients = [
      ...batch("Patient", "p", 3),
      resource("Patient", "p-0", { meta: { versionId: "2", lastUpdated: "2026-11-28T12:00:00Z" } }),
    ];
    const obs = batch("Observation", "o", 250);
    const r1 = await zone.append("Patient", patients.slice(0, 3));
    const r2 = await zone.append("Patient", patients.slice(3));
    await zone.append("Observation", obs.slice(0, 100));
    await zone.append("Observation", obs.slice(100));
    assert.strictEqual(r1.segmentId, r2.segmentId);
    assert.deepStrictEqual([r1.chunkIndex, r2.chunkIndex, r1.records], [0, 1, 3]);
    assert.deepStrictEqual(zone.sealedSegments(), [], "nothing sealed yet");
    assert.deepStrictEqual(zone.openSegments().map((s) => [s.resourceType, s.records]), [
      ["Patient", 4],
      ["Observation", 250],
    ]);
    assert.strictEqual(segFiles(dir, ".open").length, 2);

    const sealed = await zone.seal();
    assert.strictEqual(sealed.length, 2);
    assert.deepStrictEqual(segFiles(dir, ".open"), []);
    assert.deepStrictEqual(await readAll(zone, "Patient"), patients);
    assert.deepStrictEqual(await readAll(zone, "Observation"), obs);
    // The bulk form: one verified plaintext per appended batch, whole LF-terminated lines.
    const [obsSegment] = zone.sealedSegments("Observation");
    const chunks = await collect(zone.readChunks(obsSegment.segmentId));
    assert.strictEqual(chunks.length, 2);
    const td = new TextDecoder();
    assert.deepStrictEqual(chunks.map((c) => td.decode(c)), [
      obs.slice(0, 100).join("\n") + "\n",
      obs.slice(100).join("\n") + "\n",
    ]);
    await rejects(() => collect(zone.readChunks("ff".repeat(16))), LandingStateError);

    const m = zone.manifest();
    assert.deepStrictEqual(m.map((e) => [e.resourceType, e.records, e.batches, e.status]), [
      ["Patient", 4, 2, "sealed"],
      ["Observation", 250, 2, "sealed"],
    ]);
    for (const e of m) {
      assert.strictEqual((await Deno.stat(join(dir, e.file))).size, e.bytes);
      assert.strictEqual(e.file, segmentFileName(e.segmentId, "sealed"));
      const h = await readHeader(join(dir, e.file));
      assert.strictEqual(h.segmentId, e.segmentId);
      assert.match(h.segmentId, /^[0-9a-f]{32}$/);
      assert.strictEqual(h.masterKeyId, MASTER);
      const v = await verifySegment(join(dir, e.file), kms);
      assert.deepStrictEqual([v.records, v.batches, v.sealed, v.bytes], [
        e.records,
        e.batches,
        true,
        e.bytes,
      ]);
    }
    const onDisk = JSON.parse(await Deno.readTextFile(join(dir, MANIFEST_FILE)));
    assert.deepStrictEqual(onDisk.segments, m);
    // A fresh reader outside the zone sees the same lines.
    assert.deepStrictEqual(await collect(readSegment(join(dir, m[0].file), kms)), patients);
    // Modes: files 0600, directory 0700.
    assert.strictEqual((await Deno.stat(join(dir, m[0].file))).mode! & 0o777, 0o600);
    assert.strictEqual((await Deno.stat(join(dir, MANIFEST_FILE))).mode! & 0o777, 0o600);
    assert.strictEqual((await Deno.stat(dir)).mode! & 0o777, 0o700);
  });
});

Deno.test("landing: close seals open segments; reopen after a clean close recovers nothing", async () => {
  await withTempDir(async (root) => {
    const dir = join(root, "lz");
    const kms = newKms();
    const z = await LandingZone.open(dir, kms, MASTER);
    await z.append("Patient", batch("Patient", "a", 5));
    await z.close();
    const z2 = await LandingZone.open(dir, kms, MASTER);
    try {
      assert.deepStrictEqual(z2.recovery.files, []);
      assert.deepStrictEqual(await readAll(z2), batch("Patient", "a", 5));
    } finally {
      await z2.close();
    }
  });
});

Deno.test("landing: roll by size", async () => {
  const maxSegmentBytes = 2048;
  await withZone(async (zone, dir) => {
    const all: string[] = [];
    let rolls = 0;
    for (let b = 0; b < 40; b++) {
      const lines = batch("Observation", `s${b}`, 1 + (b % 4));
      all.push(...lines);
      const r = await zone.append("Observation", lines);
      rolls += r.rolled.length;
    }
    // A batch larger than the limit gets a segment of its own.
    const big = [resource("Observation", "big", { pad: "z".repeat(10_000) })];
    all.push(...big);
    rolls += (await zone.append("Observation", big)).rolled.length;
    rolls += (await zone.append("Observation", batch("Observation", "after", 1))).rolled.length;
    all.push(...batch("Observation", "after", 1));
    await zone.seal();
    const segs = zone.sealedSegments();
    assert(rolls >= 5, `rolled ${rolls} times`);
    assert.strictEqual(segs.length, rolls + 1);
    for (const s of segs) {
      if (s.batches > 1) assert(s.bytes <= maxSegmentBytes, `segment of ${s.bytes} bytes`);
      assert.strictEqual((await Deno.stat(join(dir, s.file))).size, s.bytes);
    }
    assert(segs.some((s) => s.batches === 1 && s.bytes > maxSegmentBytes), "the big batch alone");
    assert.deepStrictEqual(await readAll(zone), all, "append order kept across segments");
  }, { maxSegmentBytes });
});

Deno.test("landing: roll by age (fake clock, rollExpired, background timer)", async () => {
  let now = Date.parse("2026-01-01T00:00:00Z");
  await withZone(async (zone) => {
    const a = await zone.append("Encounter", batch("Encounter", "a", 2));
    now += 500;
    const b = await zone.append("Encounter", batch("Encounter", "b", 2));
    assert.strictEqual(a.segmentId, b.segmentId);
    now += 600; // 1 100 ms old
    const c = await zone.append("Encounter", batch("Encounter", "c", 2));
    assert.notStrictEqual(c.segmentId, a.segmentId);
    assert.deepStrictEqual(c.rolled.map((s) => [s.segmentId, s.records]), [[a.segmentId, 4]]);
    await zone.append("Patient", batch("Patient", "p", 1));
    now += 999;
    assert.deepStrictEqual(await zone.rollExpired(), [], "Encounter 999 ms old, Patient 999 ms old");
    now += 1;
    const expired = await zone.rollExpired();
    assert.deepStrictEqual(expired.map((s) => s.resourceType).sort(), ["Encounter", "Patient"]);
    assert.deepStrictEqual(zone.openSegments(), []);
    const m = zone.manifest();
    assert.deepStrictEqual(m.map((s) => s.sealed), [
      "2026-01-01T00:00:01.100Z",
      "2026-01-01T00:00:02.100Z",
      "2026-01-01T00:00:02.100Z",
    ]);
  }, { maxSegmentAgeMs: 1000, now: () => now });

  // Background roll with the real clock.
  await withZone(async (zone) => {
    await zone.append("Patient", batch("Patient", "t", 1));
    const t0 = Date.now();
    while (zone.sealedSegments().length === 0 && Date.now() - t0 < 3000) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.strictEqual(zone.sealedSegments().length, 1);
    assert.deepStrictEqual(zone.openSegments(), []);
  }, { maxSegmentAgeMs: 50, autoRollIntervalMs: 20 });
});

Deno.test("landing: append resolves only after the batch is written and fdatasync'd", async () => {
  const proto = Deno.FsFile.prototype;
  const origWrite = proto.write;
  const origSyncData = proto.syncData;
  const origSync = proto.sync;
  const events: string[] = [];
  proto.write = function (this: Deno.FsFile, p: Uint8Array) {
    events.push("write");
    return origWrite.call(this, p);
  };
  proto.syncData = async function (this: Deno.FsFile) {
    await origSyncData.call(this);
    events.push("sync");
  };
  proto.sync = async function (this: Deno.FsFile) {
    await origSync.call(this);
    events.push("dirsync"); // the landing code fsyncs only directories with sync()
  };
  try {
    await withZone(async (zone, dir, kms) => {
      const acked: string[] = [];
      const batches = 20;
      for (let b = 0; b < batches; b++) {
        const lines = batch("Observation", `f${b}`, 1 + b);
        events.length = 0;
        const r = await zone.append("Observation", lines);
        events.push("ack");
        acked.push(...lines);
        // Within this append: the writes, then exactly one fdatasync, then the resolution.
        assert.deepStrictEqual(
          events.filter((e, i) => e !== events[i - 1]),
          b === 0 ? ["write", "sync", "dirsync", "ack"] : ["write", "sync", "ack"],
          `append ${b}: ${events.join(",")}`,
        );
        assert.strictEqual(events.filter((e) => e === "sync").length, 1, "one fdatasync per batch");
        // The file on disk covers the chunk, and a fresh reader sees every acknowledged line.
        const open = zone.openSegments()[0];
        const path = join(dir, segmentFileName(r.segmentId, "open"));
        assert.strictEqual((await Deno.stat(path)).size, open.bytes);
        assert.deepStrictEqual(await collect(readSegment(path, kms, { requireFinal: false })), acked);
        // Without the final chunk a sealed-segment read refuses it.
        if (b === 0) await rejects(collect(readSegment(path, kms)), LandingTruncatedError, /no final chunk/);
      }
    });
  } finally {
    proto.write = origWrite;
    proto.syncData = origSyncData;
    proto.sync = origSync;
  }
});

// ---------------------------------------------------------------------------------------------------
// Crash simulation

const CHILD = `
import { LandingZone } from ${JSON.stringify(new URL("../fhir/landing/mod.ts", import.meta.url).href)};
import { MemoryKms } from ${JSON.stringify(new URL("./fixtures/memory_kms.ts", import.meta.url).href)};
const [dir, keyHex, round] = Deno.args;
if (Number(round) % 2 === 1) {
  // Slow writes: every write lands in two halves 10 ms apart, so a kill usually tears a chunk.
  const write = Deno.FsFile.prototype.write;
  Deno.FsFile.prototype.write = async function (p) {
    if (p.length < 64) return await write.call(this, p);
    const n = await write.call(this, p.subarray(0, p.length >> 1));
    await new Promise((r) => setTimeout(r, 10));
    return n;
  };
}
const key = Uint8Array.from(keyHex.match(/../g).map((h) => parseInt(h, 16)));
const zone = await LandingZone.open(dir, new MemoryKms({ ${JSON.stringify(MASTER)}: key }), ${
  JSON.stringify(MASTER)
}, { maxSegmentBytes: 96 * 1024 });
console.log("ready");
const types = ["Patient", "Observation", "Encounter"];
for (let k = 0; ; k++) {
  const type = types[(k * 7 + Number(round)) % 3];
  const n = 1 + ((k * 37 + Number(round) * 11) % 60);
  const big = k % 7 === 3;
  const lines = [];
  for (let i = 0; i < n; i++) {
    lines.push(JSON.stringify({ resourceType: type, id: "r" + round + "-" + k + "-" + i, batch: round + ":" + k + ":" + n,
      pad: big ? "x".repeat(40000) : "y".repeat(i * 13) }));
  }
  await zone.append(type, lines);
  console.log("ack " + k);
  if (k % 11 === 10) await zone.seal(type);
}
`;

async function runAndKill(
  script: string,
  dir: string,
  round: number,
  delayMs: number,
): Promise<{ acked: number[]; ready: boolean }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "--allow-read", "--allow-write", script, dir, MASTER_KEY_HEX, String(round)],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const acked: number[] = [];
  let ready = false;
  let readyResolve!: () => void;
  const readyP = new Promise<void>((r) => readyResolve = r);
  const stdoutDone = (async () => {
    let buf = "";
    for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) {
      buf += text;
      let i;
      while ((i = buf.indexOf("\n")) !== -1) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line === "ready") {
          ready = true;
          readyResolve();
        } else if (line.startsWith("ack ")) acked.push(Number(line.slice(4)));
      }
    }
    readyResolve();
  })();
  const stderrDone = new Response(child.stderr).text();
  await Promise.race([readyP, new Promise((r) => setTimeout(r, 20_000))]);
  await new Promise((r) => setTimeout(r, delayMs));
  try {
    child.kill("SIGKILL");
  } catch {
    // already exited
  }
  const status = await child.status;
  await stdoutDone;
  const err = await stderrDone;
  assert(ready, `child did not start: ${err}`);
  assert.strictEqual(status.signal, "SIGKILL", `child exited on its own: ${err}`);
  return { acked, ready };
}

Deno.test("landing: SIGKILL at random moments loses no acknowledged batch and corrupts nothing", async () => {
  await withTempDir(async (root) => {
    const dir = join(root, "lz");
    const script = join(root, "child.ts");
    await Deno.writeTextFile(script, CHILD);
    const kms = newKms();
    const ackedByRound = new Map<number, number[]>();
    const rounds = 12;
    let torn = 0;
    let inFlightKept = 0;
    const actions = new Map<string, number>();
    for (let round = 0; round < rounds; round++) {
      const delay = Math.floor(Math.random() * 400);
      const { acked } = await runAndKill(script, dir, round, delay);
      ackedByRound.set(round, acked);
      assert.deepStrictEqual(acked, acked.map((_, i) => i), "acks in order");

      const zone = await LandingZone.open(dir, kms, MASTER);
      try {
        for (const f of zone.recovery.files) {
          if (f.truncatedBytes > 0) torn++;
          actions.set(f.action, (actions.get(f.action) ?? 0) + 1);
          assert(
            ["sealed", "seal-completed", "removed-empty", "registered", "removed-temp"].includes(f.action),
            f.action,
          );
        }
        assert.deepStrictEqual(segFiles(dir, ".open"), [], "every open segment recovered");
        // Every sealed segment verifies completely; count each batch's lines.
        const seen = new Map<string, number>();
        const ids = new Set<string>();
        for (const s of zone.sealedSegments()) {
          for await (const line of zone.read(s.segmentId)) {
            const r = JSON.parse(line);
            assert.strictEqual(r.resourceType, s.resourceType);
            assert(!ids.has(r.id), `duplicate line ${r.id}`);
            ids.add(r.id);
            seen.set(r.batch, (seen.get(r.batch) ?? 0) + 1);
          }
        }
        for (const [key, count] of seen) {
          const [r, k, n] = key.split(":").map(Number);
          assert.strictEqual(count, n, `batch ${key} complete`);
          const acks = ackedByRound.get(r)!;
          // A batch not acknowledged may be present only if it was the one in flight at the kill.
          assert(k < acks.length || k === acks.length, `batch ${key} beyond the in-flight one`);
          if (k === acks.length && r === round) inFlightKept++;
        }
        for (const [r, acks] of ackedByRound) {
          for (const k of acks) {
            assert(
              [...seen.keys()].some((key) => key.startsWith(`${r}:${k}:`)),
              `acked batch ${r}:${k} present`,
            );
          }
        }
      } finally {
        await zone.close();
      }
    }
    assert(torn > 0, "slow-write rounds tear at least one chunk");
    const total = [...ackedByRound.values()].reduce((a, b) => a + b.length, 0);
    console.log(
      `crash simulation: ${rounds} SIGKILL rounds, ${total} acknowledged batches all present, ` +
        `${torn} torn tails truncated, ${inFlightKept} unacknowledged in-flight batches found durable, ` +
        `recovery actions ${JSON.stringify(Object.fromEntries(actions))}`,
    );
  });
});

Deno.test("landing: recovery truncates torn tails and reports them", async (t) => {
  const kms = newKms();
  const setup = async (dir: string) => {
    const z = await LandingZone.open(dir, kms, MASTER);
    await z.append("Patient", batch("Patient", "a", 3));
    await z.append("Patient", batch("Patient", "b", 2));
    const id = z.openSegments()[0].segmentId;
    await z.close({ seal: false });
    return join(dir, segmentFileName(id, "open"));
  };
  const expected = [...batch("Patient", "a", 3), ...batch("Patient", "b", 2)];

  for (
    const [name, tail, reason] of [
      ["incomplete chunk", crypto.getRandomValues(new Uint8Array(700)), "incomplete"],
      ["length field only", new Uint8Array([0, 0, 1]), "incomplete"],
      ["zero-filled blocks", new Uint8Array(8192), "zeros"],
    ] as const
  ) {
    await t.step(name, async () => {
      await withTempDir(async (dir) => {
        const path = await setup(dir);
        const before = (await Deno.stat(path)).size;
        const f = await Deno.open(path, { append: true });
        // A plausible torn chunk: a length larger than what follows.
        if (reason === "incomplete" && tail.length > 4) new DataView(tail.buffer).setUint32(0, 5000);
        await f.write(tail);
        f.close();
        const z = await LandingZone.open(dir, kms, MASTER);
        try {
          const [f0] = z.recovery.files;
          assert.strictEqual(f0.action, "sealed");
          assert.strictEqual(f0.truncatedBytes, tail.length);
          assert.strictEqual(f0.tail, reason);
          assert.strictEqual(f0.records, 5);
          assert.deepStrictEqual(await readAll(z), expected);
          assert.strictEqual(z.manifest()[0].bytes, before + 32, "truncated, then the final chunk");
        } finally {
          await z.close();
        }
      });
    });
  }

  await t.step("torn header (crash while creating a segment)", async () => {
    await withTempDir(async (dir) => {
      const path = await setup(dir);
      const bytes = await Deno.readFile(path);
      await Deno.writeFile(join(dir, segmentFileName("ab".repeat(16), "open")), bytes.subarray(0, 100));
      await Deno.writeFile(join(dir, segmentFileName("cd".repeat(16), "open")), bytes.subarray(0, 3));
      // Header complete, no chunk: nothing was acknowledged.
      const { header } = chunkRanges(bytes);
      const empty = bytes.slice(0, header);
      const h = await readHeader(path);
      await Deno.remove(path);
      await Deno.writeFile(join(dir, segmentFileName(h.segmentId, "open")), empty);
      const z = await LandingZone.open(dir, kms, MASTER);
      try {
        assert.deepStrictEqual(z.recovery.files.map((f) => f.action), [
          "removed-empty",
          "removed-empty",
          "removed-empty",
        ]);
        assert.deepStrictEqual(segFiles(dir, ".open"), []);
        assert.deepStrictEqual(z.manifest(), []);
      } finally {
        await z.close();
      }
    });
  });

  await t.step("crash after the final chunk, before the rename", async () => {
    await withTempDir(async (dir) => {
      const z = await LandingZone.open(dir, kms, MASTER);
      const [s] = await (async () => {
        await z.append("Patient", batch("Patient", "a", 3));
        return await z.seal();
      })();
      await z.close();
      await Deno.rename(join(dir, s.segmentId + ".seg"), join(dir, s.segmentId + ".open"));
      await Deno.remove(join(dir, MANIFEST_FILE));
      const z2 = await LandingZone.open(dir, kms, MASTER);
      try {
        assert.deepStrictEqual(z2.recovery.files.map((f) => [f.action, f.records, f.truncatedBytes]), [[
          "seal-completed",
          3,
          0,
        ]]);
        assert.deepStrictEqual(await readAll(z2), batch("Patient", "a", 3));
      } finally {
        await z2.close();
      }
    });
  });

  await t.step("crash after the rename, before the manifest update", async () => {
    await withTempDir(async (dir) => {
      const z = await LandingZone.open(dir, kms, MASTER);
      await z.append("Patient", batch("Patient", "a", 3));
      await z.seal();
      await z.close();
      await Deno.writeTextFile(join(dir, `.${MANIFEST_FILE}.tmp-0123456789ab`), "{ half");
      await Deno.remove(join(dir, MANIFEST_FILE));
      const z2 = await LandingZone.open(dir, kms, MASTER);
      try {
        assert.deepStrictEqual(z2.recovery.files.map((f) => f.action).sort(), ["registered", "removed-temp"]);
        assert.deepStrictEqual(await readAll(z2), batch("Patient", "a", 3));
        assert.strictEqual(z2.manifest()[0].records, 3);
      } finally {
        await z2.close();
      }
    });
  });
});

Deno.test("landing: a tampered chunk in an open segment stops recovery with the chunk named", async () => {
  const kms = newKms();
  await withTempDir(async (dir) => {
    const z = await LandingZone.open(dir, kms, MASTER);
    for (let b = 0; b < 4; b++) await z.append("Patient", batch("Patient", `t${b}`, 2));
    const id = z.openSegments()[0].segmentId;
    await z.close({ seal: false });
    const path = join(dir, segmentFileName(id, "open"));
    const good = await Deno.readFile(path);
    const { chunks } = chunkRanges(good);

    const bad = good.slice();
    bad[chunks[1][0] + 30] ^= 1;
    await Deno.writeFile(path, bad);
    const e = await rejects(LandingZone.open(dir, kms, MASTER), LandingAuthError, /chunk 1/);
    assert.strictEqual(e.segmentId, id);
    assert.strictEqual(e.chunkIndex, 1);
    assert.deepStrictEqual(await Deno.readFile(path), bad, "nothing truncated or dropped");

    // The last chunk modified: still an error by default...
    const lastBad = good.slice();
    lastBad[chunks[3][0] + 20] ^= 0x80;
    await Deno.writeFile(path, lastBad);
    await rejects(LandingZone.open(dir, kms, MASTER), LandingAuthError, /chunk 3/);
    // ...and a reported torn tail only when the operator asks for it.
    const z2 = await LandingZone.open(dir, kms, MASTER, { dropUnverifiableTail: true });
    try {
      assert.deepStrictEqual(z2.recovery.files.map((f) => [f.action, f.tail, f.records]), [[
        "sealed",
        "unverifiable",
        6,
      ]]);
      assert.strictEqual((await readAll(z2)).length, 6);
    } finally {
      await z2.close();
    }
  });
});

Deno.test("landing: tampering with sealed segments is detected", async (t) => {
  const kms = newKms();
  await withZone(async (zone, dir) => {
    const a = await sealedSegment(zone, "Patient", "a");
    const b = await sealedSegment(zone, "Patient", "b");
    const c = await sealedSegment(zone, "Account", "c");
    const good = await Deno.readFile(a.path);
    const { header, chunks } = chunkRanges(good);
    assert.strictEqual(chunks.length, 4, "3 data chunks and the final chunk");
    const parts = chunks.map(([s, e]) => good.slice(s, e));
    const tampered = join(dir, "tampered");
    await Deno.mkdir(tampered);
    const target = join(tampered, segmentFileName(a.id, "sealed"));
    const read = async (bytes: Uint8Array) => {
      await Deno.writeFile(target, bytes);
      return collect(readSegment(target, kms));
    };
    assert.strictEqual((await read(good)).length, 9);

    await t.step("flipped byte in each chunk", async () => {
      for (let i = 0; i < chunks.length; i++) {
        for (const off of [4, 4 + 12, chunks[i][1] - chunks[i][0] - 1]) { // nonce, ciphertext, tag
          const bad = good.slice();
          bad[chunks[i][0] + off] ^= 0x04;
          const e = await rejects(read(bad), LandingAuthError, new RegExp(`segment ${a.id}, chunk ${i}`));
          assert.strictEqual(e.chunkIndex, i);
          assert.match(e.hint!, /reordered|spliced/);
        }
      }
    });
    await t.step("swapped chunks", async () => {
      await rejects(
        read(assemble(good, header, [parts[0], parts[2], parts[1], parts[3]])),
        LandingAuthError,
        /chunk 1/,
      );
      await rejects(
        read(assemble(good, header, [parts[1], parts[0], parts[2], parts[3]])),
        LandingAuthError,
        /chunk 0/,
      );
      // The final chunk moved forward (a truncation disguised as a seal).
      await rejects(read(assemble(good, header, [parts[0], parts[3]])), LandingAuthError, /chunk 1/);
    });
    await t.step("chunk spliced from another segment", async () => {
      const other = await Deno.readFile(b.path);
      const o = chunkRanges(other).chunks.map(([s, e]) => other.slice(s, e));
      // Same type, same position, same data key? No: another segment has another DEK and id.
      await rejects(
        read(assemble(good, header, [parts[0], o[1], parts[2], parts[3]])),
        LandingAuthError,
        /chunk 1/,
      );
      await rejects(
        read(assemble(good, header, [parts[0], parts[1], parts[2], o[3]])),
        LandingAuthError,
        /chunk 3/,
      );
      // An appended chunk from elsewhere after the final one.
      await rejects(
        read(assemble(good, header, [...parts, o[1]])),
        LandingFormatError,
        /after the final chunk/,
      );
    });
    await t.step("truncation", async () => {
      await rejects(read(assemble(good, header, parts.slice(0, 3))), LandingTruncatedError, /no final chunk/);
      await rejects(
        read(assemble(good, header, [parts[0], parts[2], parts[3]])),
        LandingAuthError,
        /chunk 1/,
      );
      await rejects(read(good.slice(0, chunks[2][0] + 50)), LandingTruncatedError, /chunk 2/);
      await rejects(read(good.slice(0, header)), LandingTruncatedError, /no final chunk/);
      await rejects(read(good.slice(0, 40)), LandingTruncatedError, /inside its header/);
    });
    await t.step("header relabelled, file renamed, not a segment", async () => {
      // "Patient" → "Account": same length, valid type; the AAD binds the resource type.
      const json = new TextDecoder().decode(good.subarray(9, header));
      const relabelled = good.slice();
      relabelled.set(
        new TextEncoder().encode(json.replace('"resourceType":"Patient"', '"resourceType":"Account"')),
        9,
      );
      assert.notDeepStrictEqual(relabelled, good);
      await rejects(read(relabelled), LandingAuthError, /chunk 0/);
      // Another segment's file under this segment's name.
      await rejects(read(await Deno.readFile(c.path)), LandingFormatError, /renamed or copied/);
      const notSeg = good.slice();
      notSeg[0] = 0x7b;
      await rejects(read(notSeg), LandingFormatError, /bad magic/);
      const v2 = good.slice();
      v2[4] = 2;
      await rejects(read(v2), LandingFormatError, /version 2/);
    });
    await t.step("the zone's reader checks the manifest's resource type", async () => {
      await Deno.copyFile(c.path, join(tampered, segmentFileName(c.id, "sealed")));
      await rejects(
        collect(
          readSegment(join(tampered, segmentFileName(c.id, "sealed")), kms, {
            expectedResourceType: "Patient",
          }),
        ),
        LandingFormatError,
        /holds Account, expected Patient/,
      );
    });
  }, {});
});

Deno.test("landing: no clear PHI in any byte of the landing zone", async () => {
  const secrets = [
    "Zebulon Quixotewaffle",
    "Quixotewaffle",
    "Zebulon",
    "MRN-8675309-XYZZY",
    "8675309",
    "1961-07-04",
    "Frobnitz Lane 42",
    "Hyperbolic Grapefruit Custard",
  ];
  const patient = (i: number) =>
    JSON.stringify({
      resourceType: "Patient",
      id: `pat-${i}`,
      identifier: [{ system: "urn:mrn", value: "MRN-8675309-XYZZY" }],
      name: [{ family: "Quixotewaffle", given: ["Zebulon"], text: "Zebulon Quixotewaffle" }],
      birthDate: "1961-07-04",
      address: [{ line: ["Frobnitz Lane 42"] }],
    });
  const food = (i: number) =>
    JSON.stringify({
      resourceType: "Observation",
      id: `obs-${i}`,
      status: "final",
      subject: { reference: "Patient/pat-1", display: "Zebulon Quixotewaffle" },
      valueString: "Hyperbolic Grapefruit Custard",
    });
  // Every encoding an accidental leak could take: UTF-8, UTF-16LE, hex, and base64 at each alignment.
  const needles: Uint8Array[] = [];
  for (const s of secrets) {
    const b = Buffer.from(s, "utf8");
    needles.push(b, Buffer.from(s, "utf16le"), Buffer.from(b.toString("hex")));
    for (let shift = 0; shift < 3; shift++) {
      const b64 = Buffer.concat([Buffer.alloc(shift, 0x20), b]).toString("base64");
      // Drop the characters that depend on neighbouring bytes.
      const start = shift === 0 ? 0 : shift === 1 ? 2 : 3;
      const core = b64.slice(start, b64.length - 4);
      if (core.length >= 8) needles.push(Buffer.from(core));
    }
  }
  const scan = async (dir: string, when: string) => {
    let files = 0;
    for await (const e of Deno.readDir(dir)) {
      if (!e.isFile) continue;
      const bytes = Buffer.from(await Deno.readFile(join(dir, e.name)));
      files++;
      for (const n of needles) {
        assert.strictEqual(bytes.indexOf(n), -1, `${when}: a PHI needle found in ${e.name}`);
      }
    }
    return files;
  };
  await withTempDir(async (dir) => {
    const kms = newKms();
    const z = await LandingZone.open(dir, kms, MASTER);
    for (let b = 0; b < 5; b++) {
      await z.append("Patient", Array.from({ length: 20 }, (_, i) => patient(b * 20 + i)));
      await z.append("Observation", Array.from({ length: 20 }, (_, i) => food(b * 20 + i)));
    }
    assert((await scan(dir, "open segments")) >= 3);
    await z.seal("Patient");
    await scan(dir, "one sealed");
    await z.close({ seal: false });
    // A torn write: the first 100 bytes of a chunk.
    const openPath = join(dir, segFiles(dir, ".open")[0]);
    const bytes = await Deno.readFile(openPath);
    const [c0] = chunkRanges(bytes).chunks;
    const f = await Deno.open(openPath, { append: true });
    await f.write(bytes.subarray(c0[0], c0[0] + 100));
    f.close();
    const z2 = await LandingZone.open(dir, kms, MASTER);
    try {
      assert.strictEqual(z2.recovery.files[0].truncatedBytes, 100);
      assert.strictEqual(await scan(dir, "after recovery"), 4); // 2 segments, manifest, lock
      // The data is really there, encrypted.
      const lines = await readAll(z2);
      assert.strictEqual(lines.length, 200);
      assert(lines.every((l) => l.includes("Zebulon Quixotewaffle")));
    } finally {
      await z2.close();
    }
  });
});

Deno.test("landing: many published segments are all deleted (several at once)", async () => {
  const kms = newKms();
  await withTempDir(async (dir) => {
    const z = await LandingZone.open(dir, kms, MASTER);
    const ids: string[] = [];
    for (let i = 0; i < 19; i++) {
      await z.append("Observation", batch("Observation", `o${i}`, 2));
      ids.push(...(await z.seal("Observation")).map((s) => s.segmentId));
    }
    await z.markPublished(ids.slice(0, 17));
    assert.deepStrictEqual((await z.deletePublished()).sort(), ids.slice(0, 17).sort());
    assert.deepStrictEqual(segFiles(dir, ".seg").sort(), ids.slice(17).map((id) => id + ".seg").sort());
    assert.deepStrictEqual(z.manifest().map((s) => s.segmentId), ids.slice(17));
    assert.deepStrictEqual(await readAll(z, "Observation"), [
      ...batch("Observation", "o17", 2),
      ...batch("Observation", "o18", 2),
    ]);
    await z.close();
  });
});

Deno.test("landing: manifest lifecycle — only published segments are deleted", async () => {
  const kms = newKms();
  await withTempDir(async (dir) => {
    const z = await LandingZone.open(dir, kms, MASTER);
    const ids: string[] = [];
    for (const type of ["Patient", "Observation", "Encounter"]) {
      await z.append(type, batch(type, type, 3));
      ids.push(...(await z.seal(type)).map((s) => s.segmentId));
    }
    await z.append("Patient", batch("Patient", "open", 1)); // stays open
    assert.deepStrictEqual(z.sealedSegments().map((s) => s.segmentId), ids, "open segments are not listed");

    await rejects(z.markPublished([ids[0], "ff".repeat(16)]), LandingStateError, /no such sealed segment/);
    await rejects(z.markPublished([z.openSegments()[0].segmentId]), LandingStateError);
    assert(z.manifest().every((s) => s.status === "sealed"), "nothing marked after a failed call");
    assert.deepStrictEqual(await z.deletePublished(), [], "nothing published, nothing deleted");

    // Hard link to observe what deletion does to the bytes before unlinking.
    const witness = join(dir, "witness");
    await Deno.link(z.segmentPath(ids[0]), witness);
    await z.markPublished([ids[0], ids[1]]);
    await z.markPublished([ids[0]]); // idempotent
    assert.deepStrictEqual(z.manifest().map((s) => s.status), ["published", "published", "sealed"]);
    assert.match(z.manifest()[0].published!, /^\d{4}-\d\d-\d\dT/);
    assert.deepStrictEqual(await z.deletePublished(), [ids[0], ids[1]]);
    assert.deepStrictEqual(z.manifest().map((s) => s.segmentId), [ids[2]]);
    assert.deepStrictEqual(segFiles(dir, ".seg"), [ids[2] + ".seg"]);
    const w = await Deno.readFile(witness);
    const { header } = chunkRanges(w);
    assert(w.subarray(9, header).every((x) => x === 0), "header and wrapped DEK zeroed before unlink");
    await rejects(collect(readSegment(witness, kms, { expectedSegmentId: ids[0] })), LandingFormatError);
    await Deno.remove(witness);
    await rejects(() => collect(z.read(ids[0])), LandingStateError);
    await z.close();

    const m = JSON.parse(await Deno.readTextFile(join(dir, MANIFEST_FILE)));
    // On disk: the unpublished segment, then the one sealed by close.
    assert.deepStrictEqual(
      m.segments.map((s: { segmentId: string; resourceType: string; status: string }) => [
        s.segmentId === ids[2] ? "ids[2]" : "new",
        s.resourceType,
        s.status,
      ]),
      [["ids[2]", "Encounter", "sealed"], ["new", "Patient", "sealed"]],
    );

    // A published entry whose file is gone (crash between unlink and manifest update) is forgotten;
    const z2 = await LandingZone.open(dir, kms, MASTER);
    await z2.markPublished([ids[2]]);
    await z2.close();
    await Deno.remove(join(dir, ids[2] + ".seg"));
    const z3 = await LandingZone.open(dir, kms, MASTER);
    assert.deepStrictEqual(z3.recovery.files.map((f) => f.action), ["forgotten-published"]);
    const last = z3.sealedSegments()[0].segmentId;
    await z3.close();
    // a sealed (unpublished) entry whose file is gone is acknowledged data lost: an error.
    await Deno.remove(join(dir, last + ".seg"));
    const e = await rejects(LandingZone.open(dir, kms, MASTER), LandingMissingSegmentError, /have no file/);
    assert.strictEqual(e.segmentId, last);
  });
});

Deno.test("landing: a failed manifest update is typed and retried with the next one", async () => {
  await withZone(async (zone, dir) => {
    const rename = Deno.rename;
    let fail = 1;
    Object.defineProperty(Deno, "rename", {
      configurable: true,
      writable: true,
      value: (from: string | URL, to: string | URL) =>
        String(from).includes(`.${MANIFEST_FILE}.tmp-`) && fail-- > 0
          ? Promise.reject(new Deno.errors.Busy("simulated"))
          : rename(from, to),
    });
    try {
      await zone.append("Patient", batch("Patient", "m", 2));
      const e = await rejects(zone.seal("Patient"), LandingError, /updating manifest.json failed/);
      assert(e.retryable);
      assert.deepStrictEqual(segFiles(dir, ".seg").length, 1, "the segment itself is sealed");
      assert.deepStrictEqual(zone.sealedSegments(), []);
      await zone.append("Patient", batch("Patient", "n", 1));
      await zone.seal("Patient");
      assert.deepStrictEqual(
        zone.sealedSegments().map((s) => s.records),
        [2, 1],
        "the pending one registered",
      );
      assert.deepStrictEqual(await readAll(zone), [...batch("Patient", "m", 2), ...batch("Patient", "n", 1)]);
    } finally {
      Object.defineProperty(Deno, "rename", { configurable: true, writable: true, value: rename });
    }
  });
});

Deno.test("landing: a failed fdatasync sets the segment aside; the retry goes to a new segment", async () => {
  await withTempDir(async (dir) => {
    const kms = newKms();
    const zone = await LandingZone.open(dir, kms, MASTER);
    const proto = Deno.FsFile.prototype;
    const syncData = proto.syncData;
    let fail = 0;
    let firstId = "";
    proto.syncData = function (this: Deno.FsFile) {
      return fail-- > 0 ? Promise.reject(new Deno.errors.Interrupted("simulated EIO")) : syncData.call(this);
    };
    try {
      const a = await zone.append("Patient", batch("Patient", "a", 2));
      firstId = a.segmentId;
      fail = 1;
      const e = await rejects(zone.append("Patient", batch("Patient", "b", 2)), LandingError, /not stored/);
      assert.strictEqual(e.name, "LandingIoError");
      assert(e.retryable);
      assert.strictEqual(e.segmentId, a.segmentId);
      assert.deepStrictEqual(zone.openSegments(), [], "the failed segment takes no more batches");
      const c = await zone.append("Patient", batch("Patient", "b", 2)); // the client's retry
      assert.notStrictEqual(c.segmentId, a.segmentId);
      // A failure on a new segment's first batch removes that segment altogether.
      fail = 1;
      await rejects(zone.append("Observation", batch("Observation", "o", 1)), LandingError, /not stored/);
      await zone.close();
    } finally {
      proto.syncData = syncData;
    }
    assert.strictEqual(segFiles(dir, ".open").length, 1, "set aside for recovery");
    const z2 = await LandingZone.open(dir, kms, MASTER);
    try {
      assert.deepStrictEqual(z2.recovery.files.map((f) => [f.segmentId, f.action]), [[
        firstId,
        "sealed",
      ]]);
      // The unacknowledged batch reached the disk anyway: at-least-once, resolved at conversion.
      const lines = await readAll(z2);
      assert.deepStrictEqual(
        lines.sort(),
        [...batch("Patient", "a", 2), ...batch("Patient", "b", 2), ...batch("Patient", "b", 2)].sort(),
      );
    } finally {
      await z2.close();
    }
  });
});

Deno.test("landing: KMS failures are typed; KMS down is retryable and writes nothing", async () => {
  await withZone(async (zone, dir, kms) => {
    const s = await sealedSegment(zone, "Patient", "k");

    // Wrong master key: same id, other key bytes.
    const wrong = newKms("11".repeat(32));
    const e1 = await rejects(collect(readSegment(s.path, wrong)), LandingKmsError, /unwrapping/, /"landing"/);
    assert.strictEqual(e1.retryable, false);
    assert(e1.cause instanceof KmsUnwrapError);
    assert.strictEqual(e1.segmentId, s.id);

    // KMS down: reading fails retryably; appending to a new segment fails retryably, writing nothing.
    kms.down = true;
    const e2 = await rejects(collect(readSegment(s.path, kms)), LandingKmsError);
    assert.strictEqual(e2.retryable, true);
    assert(e2.cause instanceof KmsUnavailableError);
    const before = segFiles(dir, "");
    const e3 = await rejects(
      zone.append("Observation", batch("Observation", "x", 2)),
      LandingKmsError,
      /wrapping/,
    );
    assert.strictEqual(e3.retryable, true);
    assert.deepStrictEqual(segFiles(dir, ""), before, "no file created");
    // An open segment keeps its in-memory key: appends to it still succeed while the KMS is down.
    kms.down = false;
    await zone.append("Observation", batch("Observation", "y", 2));
    kms.down = true;
    await zone.append("Observation", batch("Observation", "z", 2));
    kms.down = false;
  });

  // Unknown and denied master keys are not retryable.
  await withTempDir(async (dir) => {
    const kms = newKms();
    const z = await LandingZone.open(dir, kms, "no-such-key");
    try {
      const e = await rejects(z.append("Patient", batch("Patient", "a", 1)), LandingKmsError);
      assert.strictEqual(e.retryable, false);
      assert(e.cause instanceof KmsKeyNotFoundError);
    } finally {
      await z.close();
    }
    kms.denied.add("other");
    const z2 = await LandingZone.open(dir, kms, "other");
    try {
      const e = await rejects(z2.append("Patient", batch("Patient", "a", 1)), LandingKmsError);
      assert.strictEqual(e.retryable, false);
    } finally {
      await z2.close();
    }
  });

  // Recovery needs the KMS: down → retryable error, files untouched; up → recovered.
  await withTempDir(async (dir) => {
    const kms = newKms();
    const z = await LandingZone.open(dir, kms, MASTER);
    await z.append("Patient", batch("Patient", "r", 2));
    await z.close({ seal: false });
    kms.down = true;
    const e = await rejects(LandingZone.open(dir, kms, MASTER), LandingKmsError);
    assert.strictEqual(e.retryable, true);
    assert.strictEqual(segFiles(dir, ".open").length, 1);
    kms.down = false;
    const z2 = await LandingZone.open(dir, kms, MASTER);
    try {
      assert.deepStrictEqual(await readAll(z2), batch("Patient", "r", 2));
    } finally {
      await z2.close();
    }
  });
});

Deno.test("landing: input validation, closed zone, one owner per directory, concurrent appends", async () => {
  await withZone(async (zone, dir) => {
    await rejects(zone.append("patient", ['{"a":1}']), LandingInputError, /resource type/);
    await rejects(zone.append("Patient", []), LandingInputError, /empty batch/);
    await rejects(zone.append("Patient", ['{"a":\n1}']), LandingInputError, /line 0 .*line break/);
    await rejects(zone.append("Patient", ['{"a":1}', "not json"]), LandingInputError, /line 1/);
    const e = await rejects(zone.append("Patient", ['{"name":"Zebulon\r"}']), LandingInputError);
    assert(!e.message.includes("Zebulon"), "errors never quote lines");
    await rejects(LandingZone.open(dir, newKms(), MASTER), LandingStateError, /in use/);

    // Concurrent appends: serialized per type, all stored, chunk indexes in call order.
    const types = ["Patient", "Observation"];
    const receipts = await Promise.all(
      Array.from(
        { length: 40 },
        (_, i) => zone.append(types[i % 2], batch(types[i % 2], `c${i}`, 1 + (i % 5))),
      ),
    );
    for (const t of [0, 1]) {
      assert.deepStrictEqual(receipts.filter((_, i) => i % 2 === t).map((r) => r.chunkIndex), [
        ...Array(20).keys(),
      ]);
    }
    await zone.seal();
    const expect = (t: number) =>
      Array.from({ length: 20 }, (_, j) => 2 * j + t).flatMap((i) => batch(types[t], `c${i}`, 1 + (i % 5)));
    assert.deepStrictEqual(await readAll(zone, "Patient"), expect(0));
    assert.deepStrictEqual(await readAll(zone, "Observation"), expect(1));
  });
  await withTempDir(async (dir) => {
    const z = await LandingZone.open(dir, newKms(), MASTER);
    await z.close();
    await rejects(z.append("Patient", ['{"a":1}']), LandingStateError, /closed/);
    await rejects(z.markPublished([]), LandingStateError, /closed/);
    assert(new LandingStateError("x") instanceof LandingError);
    // The lock is released by close.
    await (await LandingZone.open(dir, newKms(), MASTER)).close();
  });
});

Deno.test("landing: append throughput with an fsync per batch", async () => {
  const observation = (i: number) =>
    JSON.stringify({
      resourceType: "Observation",
      id: `obs-${i}`,
      meta: { versionId: "1", lastUpdated: "2026-11-28T12:00:00.000Z" },
      status: "final",
      category: [{
        coding: [{ system: "http://terminology.hl7.org/CodeSystem/observation-category", code: "survey" }],
      }],
      code: { coding: [{ system: "http://loinc.org", code: "9052-2", display: "Calorie intake total" }] },
      subject: { reference: `Patient/p-${i % 1000}` },
      effectiveDateTime: "2026-11-28T08:15:00+01:00",
      valueQuantity: {
        value: 350 + (i % 400),
        unit: "kcal",
        system: "http://unitsofmeasure.org",
        code: "kcal",
      },
      note: [{ text: `breakfast item ${i}: oat porridge with berries` }],
    });
  const results: string[] = [];
  await withTempDir(async (dir) => {
    for (const per of [100, 1000]) {
      const zone = await LandingZone.open(join(dir, String(per)), newKms(), MASTER);
      try {
        const batches = Array.from(
          { length: 8 },
          (_, b) => Array.from({ length: per }, (_, i) => observation(b * per + i)),
        );
        const bytesPer = batches.map((b) => b.reduce((n, l) => n + l.length + 1, 0));
        await zone.append("Observation", batches[0]); // segment creation and key wrap outside the timing
        let n = 0;
        let bytes = 0;
        const t0 = performance.now();
        while (performance.now() - t0 < 2000 && n < 3000) {
          await zone.append("Observation", batches[n % 8]);
          bytes += bytesPer[n % 8];
          n++;
        }
        const s = (performance.now() - t0) / 1000;
        await zone.seal();
        const r0 = performance.now();
        let readBytes = 0;
        for (const seg of zone.sealedSegments()) {
          for await (const line of zone.read(seg.segmentId)) readBytes += line.length + 1;
        }
        const rs = (performance.now() - r0) / 1000;
        assert.strictEqual(readBytes, bytes + bytesPer[0]);
        results.push(
          `${per} resources/batch (${(bytesPer[0] / 1024).toFixed(0)} KiB): ${n} batches in ${
            s.toFixed(2)
          } s = ` +
            `${(bytes / s / 1e6).toFixed(1)} MB/s, ${Math.round((n * per) / s)} resources/s, ` +
            `${(s * 1000 / n).toFixed(2)} ms/batch; read back ${(readBytes / rs / 1e6).toFixed(0)} MB/s`,
        );
      } finally {
        await zone.close();
      }
    }
  });
  console.log(`landing append throughput (AES-256-GCM + fdatasync per batch):\n  ${results.join("\n  ")}`);
});
