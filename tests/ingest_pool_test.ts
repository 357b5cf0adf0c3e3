/**
 * fhir/server validation workers: with a pool of 2 workers the ingest server answers and stores exactly
 * what it does validating inline (0 workers) — same statuses, same OperationOutcomes with line numbers,
 * same resources landed once each in line order with increasing versions —, streams a large `$import`
 * with bounded memory (reading the body waits for validation), answers 500 for a request whose worker
 * crashed or hung and keeps serving with a replacement, refuses to start when a worker cannot, and shuts
 * the pool down with the server.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { generatedResources } from "./fixtures/generated.ts";
import {
  createIngestHandler,
  type IngestOptions,
  MemorySink,
  startIngestServer,
  ValidationPool,
  ValidationWorkerError,
} from "../fhir/server/mod.ts";
import type { LineJob } from "../fhir/server/prepare.ts";
import { defaultValidationWorkers, serveCommand } from "../cli/serve.ts";
import { UsageError } from "../cli/keys.ts";
import { IngestConfigError } from "../fhir/server/errors.ts";

type Obj = Record<string, unknown>;
type OO = {
  resourceType: string;
  issue: { severity: string; code: string; diagnostics: string; expression?: string[] }[];
};

const gen = await generatedResources({ patients: 4, days: 3, seed: "ingest-pool-test" });

const TOKEN = "test-token-app-0123456789";
const OBS_ONLY = "test-token-obs-only-0123456789";
const BASE = "http://ingest.test/fhir";
const FAULTY_WORKER = new URL("./fixtures/faulty_validation_worker.ts", import.meta.url);
const BROKEN_WORKER = new URL("./fixtures/broken_validation_worker.ts", import.meta.url);

async function setup(workers: number, extra: Partial<IngestOptions> = {}) {
  const sink = new MemorySink();
  const errors: unknown[] = [];
  const handler = await createIngestHandler({
    sink,
    clients: { [TOKEN]: "app", [OBS_ONLY]: { name: "obs-writer", types: ["Observation"] } },
    maxBodyBytes: 256 * 1024,
    maxLineBytes: 8192,
    validationWorkers: workers,
    onError: (e) => errors.push(e),
    ...extra,
  });
  return { sink, handler, errors };
}

/** Runs `fn` with a handler and closes it (its workers) afterwards. */
async function withHandler<T>(
  workers: number,
  extra: Partial<IngestOptions>,
  fn: (h: Awaited<ReturnType<typeof setup>>) => Promise<T>,
): Promise<T> {
  const h = await setup(workers, extra);
  try {
    return await fn(h);
  } finally {
    await h.handler.close();
  }
}

function ndjsonReq(body: BodyInit, token = TOKEN): Request {
  return new Request(`${BASE}/$import`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/fhir+ndjson" },
    body,
  });
}

function jsonReq(method: string, path: string, body: unknown): Request {
  return new Request(`${BASE}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/fhir+json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

const food = () => structuredClone(gen.Observation.find((o) => JSON.stringify(o.code).includes("9052-2"))!);
const enc = new TextEncoder();

/** Good lines of every generated type, bad lines of every kind at known places; returns the body too. */
function mixedImport(): { body: Uint8Array; good: Obj[]; badLines: Map<number, string> } {
  const good: Obj[] = [
    ...gen.Organization,
    ...gen.Practitioner,
    ...gen.Patient,
    ...gen.NutritionOrder,
    ...gen.Observation.slice(0, 60),
  ];
  const creates = new Set([3, 17, 40]); // lines without an id: the server assigns one
  const parts: Uint8Array[] = good.map((r, i) => {
    const { id: _id, ...rest } = r;
    return enc.encode(JSON.stringify(creates.has(i) ? rest : r));
  });
  const badLines = new Map<number, string>(); // 1-based line number → expected issue code
  const insert = (lineNo: number, bytes: Uint8Array | string, code: string) => {
    parts.splice(lineNo - 1, 0, typeof bytes === "string" ? enc.encode(bytes) : bytes);
    if (code) badLines.set(lineNo, code);
  };
  insert(2, "{not json", "structure");
  insert(6, JSON.stringify({ ...food(), status: "bogus" }), "code-invalid");
  insert(9, JSON.stringify({ resourceType: "Foo" }), "structure");
  insert(11, "", ""); // blank
  insert(12, "   ", ""); // blank (whitespace)
  insert(15, JSON.stringify({ ...food(), note: [{ text: "y".repeat(9000) }] }), "too-long");
  insert(19, new Uint8Array([0xff, 0xfe]), "structure"); // short, not UTF-8
  insert(23, "[1,2]", "structure");
  insert(27, JSON.stringify({ resourceType: "Medication", status: "active" }), "not-supported");
  insert(31, JSON.stringify({ ...food(), id: "bad_id" }), "value");
  insert(35, JSON.stringify((({ status: _s, ...o }) => o)(food())), "structure");
  insert(44, JSON.stringify({ ...food(), effectiveDateTime: "2026-01-01T10:00:00" }), "value");
  insert(71, JSON.stringify({ ...food(), valueQuantity: { value: "x" } }), "structure");
  const body = new Uint8Array(parts.reduce((n, p) => n + p.length + 1, 0));
  let off = 0;
  for (const p of parts) {
    body.set(p, off);
    body[off + p.length] = 0x0a;
    off += p.length + 1;
  }
  return { body, good, badLines };
}

/** The stored lines with server-assigned parts (new ids, meta stamp) replaced, in append order per type. */
function normalized(sink: MemorySink, knownIds: Set<string>): Record<string, Obj[]> {
  const out: Record<string, Obj[]> = {};
  for (const [type, lines] of sink.lines) {
    out[type] = lines.map((l) => {
      const r = JSON.parse(l) as Obj;
      const meta = r.meta as Obj;
      return {
        ...r,
        id: knownIds.has(r.id as string) ? r.id : "(new)",
        meta: { ...meta, versionId: "(v)", lastUpdated: "(t)" },
      };
    });
  }
  return out;
}

Deno.test("pool: $import with 2 workers gives exactly what inline validation gives", async () => {
  const { body, good, badLines } = mixedImport();
  const knownIds = new Set(good.map((r) => r.id as string));
  const run = (workers: number) =>
    withHandler(
      workers,
      { validationBatchLines: 7, importBatchLines: 5 },
      async ({ sink, handler, errors }) => {
        const res = await handler(ndjsonReq(body.slice()));
        const oo = await res.json() as OO;
        assert.deepEqual(errors, []);
        return {
          status: res.status,
          accepted: res.headers.get("x-accepted-count"),
          rejected: res.headers.get("x-rejected-count"),
          oo,
          stored: normalized(sink, knownIds),
          raw: sink,
        };
      },
    );
  const inline = await run(0);
  const pooled = await run(2);
  // Real values first (inline), then identity of the pooled run.
  assert.equal(inline.status, 200);
  assert.equal(inline.accepted, String(good.length));
  assert.equal(inline.rejected, String(badLines.size));
  assert.match(
    inline.oo.issue[0].diagnostics,
    new RegExp(`accepted ${good.length}, rejected ${badLines.size}, blank lines 2`),
  );
  for (const [lineNo, code] of badLines) {
    assert.ok(
      inline.oo.issue.some((i) => i.code === code && i.expression?.[0] === `line ${lineNo}`),
      `line ${lineNo}: ${code} in ${
        JSON.stringify(inline.oo.issue.filter((i) => i.expression?.[0] === `line ${lineNo}`))
      }`,
    );
  }
  const lineNos = inline.oo.issue.slice(1).map((i) => Number(i.expression![0].slice(5)));
  assert.deepEqual(lineNos, [...lineNos].sort((a, b) => a - b), "issues in line order");
  assert.deepEqual(new Set(lineNos), new Set(badLines.keys()));
  // Every good resource stored once, per type in input order.
  const byType = new Map<string, Obj[]>();
  for (const r of good) {
    const t = r.resourceType as string;
    byType.set(t, [...(byType.get(t) ?? []), r]);
  }
  for (const [t, rs] of byType) {
    const stored = inline.stored[t];
    assert.equal(stored.length, rs.length, t);
    stored.forEach((s, i) => {
      const { id: _a, meta: _b, ...want } = rs[i];
      const { id: _c, meta: _d, ...got } = s;
      assert.deepEqual(got, want, `${t} #${i}`);
    });
  }
  assert.equal(Object.values(inline.stored).flat().filter((r) => r.id === "(new)").length, 3);

  assert.equal(pooled.status, inline.status);
  assert.equal(pooled.accepted, inline.accepted);
  assert.equal(pooled.rejected, inline.rejected);
  assert.deepEqual(pooled.oo, inline.oo);
  assert.deepEqual(pooled.stored, inline.stored);
  // Versions increase in line order across types, as inline: sort every stored line by version and
  // compare with the order of the good input (ids known; new ids by position).
  const versions = (sink: MemorySink) =>
    [...sink.lines.values()].flat().map((l) => JSON.parse(l) as Obj)
      .sort((a, b) => Number((a.meta as Obj).versionId) - Number((b.meta as Obj).versionId))
      .map((r) => knownIds.has(r.id as string) ? r.id : `${r.resourceType}:new`);
  const want = good.map((r, i) => [3, 17, 40].includes(i) ? `${r.resourceType}:new` : r.id);
  assert.deepEqual(versions(inline.raw), want);
  assert.deepEqual(versions(pooled.raw), want);
});

Deno.test("pool: Bundles, POST and PUT with 2 workers equal inline validation", async () => {
  const entry = (method: "POST" | "PUT", resource: Obj, fullUrl?: string): Obj => ({
    ...(fullUrl ? { fullUrl } : {}),
    resource,
    request: {
      method,
      url: method === "POST" ? resource.resourceType : `${resource.resourceType}/${resource.id}`,
    },
  });
  const urn = "urn:uuid:6a2f41a3-c54c-fce8-32d2-0324e1c32e22";
  const linked = food();
  (linked.subject as Obj).reference = urn;
  const requests = (): Request[] => [
    jsonReq("POST", "", {
      resourceType: "Bundle",
      type: "batch",
      entry: [
        entry("POST", food()),
        entry("POST", { ...food(), status: "bogus" }),
        entry("PUT", gen.Patient[0]),
        entry("POST", { ...food(), resourceType: "Foo" }),
        ...gen.Observation.map((o) => entry("PUT", o)),
      ],
    }),
    jsonReq("POST", "", {
      resourceType: "Bundle",
      type: "transaction",
      entry: [entry("POST", { ...gen.Patient[1], id: undefined }, urn), entry("POST", linked)],
    }),
    jsonReq("POST", "", {
      resourceType: "Bundle",
      type: "transaction",
      entry: [entry("PUT", gen.Patient[2]), entry("POST", { ...food(), status: "bogus" })],
    }),
    jsonReq("POST", "/Observation", food()),
    jsonReq("POST", "/Observation", { ...food(), status: "bogus" }),
    jsonReq("POST", "/Observation", "{not json"),
    jsonReq("PUT", `/Patient/${gen.Patient[3].id}`, gen.Patient[3]),
    jsonReq("PUT", `/Patient/other-id`, gen.Patient[3]),
  ];
  const normalize = (v: unknown): unknown =>
    JSON.parse(
      JSON.stringify(v)
        .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, "(uuid)")
        .replace(/_history\/\d+/g, "_history/(v)")
        .replace(/W\/\\"\d+\\"/g, "(etag)")
        .replace(/"(versionId|lastUpdated|lastModified)":"[^"]*"/g, '"$1":"(x)"'),
    );
  const run = (workers: number) =>
    withHandler(workers, {}, async ({ sink, handler }) => {
      const out = [];
      for (const r of requests()) {
        const res = await handler(r);
        out.push({ status: res.status, body: normalize(await res.json()) });
      }
      const stored = normalize(
        Object.fromEntries([...sink.lines].map(([t, ls]) => [t, ls.map((l) => JSON.parse(l))])),
      );
      return { out, stored, sink };
    });
  const inline = await run(0);
  const pooled = await run(2);
  assert.deepEqual(inline.out.map((o) => o.status), [200, 200, 422, 201, 422, 400, 200, 400]);
  const batch = inline.out[0].body as { entry: { response: { status: string } }[] };
  assert.deepEqual(batch.entry.slice(0, 4).map((e) => e.response.status.slice(0, 3)), [
    "201",
    "422",
    "200",
    "404", // the type of request.url is unknown
  ]);
  assert.equal(batch.entry.length, 4 + gen.Observation.length);
  assert.equal(inline.sink.resources("Observation").length, 1 + gen.Observation.length + 1 + 1);
  // The transaction's Patient got a new id; its Observation's urn:uuid reference was rewritten to it.
  const genIds = new Set(gen.Patient.map((p) => p.id));
  const created = inline.sink.resources("Patient").filter((p) => !genIds.has(p.id as string));
  assert.equal(created.length, 1);
  const refs = inline.sink.resources("Observation").map((o) => (o.subject as Obj).reference);
  assert.equal(refs.filter((r) => r === `Patient/${created[0].id}`).length, 1);
  assert.ok(!refs.includes(urn));
  assert.deepEqual(pooled.out, inline.out);
  assert.deepEqual(pooled.stored, inline.stored);
});

Deno.test("pool: a large $import streams with bounded memory (reading waits for validation)", async () => {
  const batchLines = 40;
  const importBatchLines = 100;
  await withHandler(2, { validationBatchLines: batchLines, importBatchLines }, async ({ sink, handler }) => {
    const src = gen.Observation.map((r) => JSON.stringify(r) + "\n");
    const total = 4000;
    let produced = 0;
    let maxAhead = 0;
    let pulls = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        pulls++;
        // Lines read by the server but not yet stored: in flight (≤ 2·workers batches), in the batch being
        // built, in the per-type append buffer, in the chunk being split.
        maxAhead = Math.max(maxAhead, produced - sink.count);
        if (produced >= total) return c.close();
        let s = "";
        for (let k = 0; k < 5 && produced < total; k++) s += src[produced++ % src.length];
        c.enqueue(enc.encode(s));
      },
    }, { highWaterMark: 0 });
    const res = await handler(ndjsonReq(stream));
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal(res.headers.get("x-accepted-count"), String(total));
    assert.equal(sink.count, total);
    // Stored in input order.
    const ids = sink.resources("Observation").map((o) => o.id);
    assert.deepEqual(
      ids,
      Array.from({ length: total }, (_, i) => gen.Observation[i % gen.Observation.length].id),
    );
    const bound = 4 * batchLines + batchLines + importBatchLines + 5;
    assert.ok(pulls > total / 5, `the body was pulled chunk by chunk (${pulls})`);
    assert.ok(maxAhead <= bound, `at most ${bound} lines read ahead of the sink, saw ${maxAhead}`);
    assert.ok(maxAhead >= 2 * batchLines, `several batches were in flight (${maxAhead})`);
  });
});

Deno.test("pool: a crashed or hung worker → 500 for its request; replaced; the server keeps serving", async (t) => {
  await withHandler(
    2,
    { validationWorkerUrl: FAULTY_WORKER, validationBatchLines: 10, validationTimeoutMs: 1500 },
    async ({ sink, handler, errors }) => {
      const good = gen.Observation.slice(0, 30).map((r) => JSON.stringify(r));
      const expect500 = async (res: Response) => {
        const oo = await res.json() as OO;
        assert.equal(res.status, 500, JSON.stringify(oo));
        assert.equal(oo.resourceType, "OperationOutcome");
        assert.equal(oo.issue[0].code, "exception");
        assert.match(oo.issue[0].diagnostics, /Validation failed unexpectedly/);
        assert.doesNotMatch(JSON.stringify(oo), /VALIDATION-WORKER|test crash/);
      };
      const importAll = async () => {
        const res = await handler(ndjsonReq(good.join("\n")));
        assert.equal(res.status, 200);
        assert.equal(res.headers.get("x-accepted-count"), String(good.length));
        await res.body?.cancel();
      };
      for (
        const [marker, failure] of [["CRASH", "crash"], ["HANG", "timeout"], ["EXIT", "timeout"]] as const
      ) {
        await t.step(`${marker} in a $import batch`, async () => {
          errors.length = 0;
          const before = sink.count;
          const lines = [...good];
          lines.splice(15, 0, JSON.stringify({ ...food(), note: [{ text: `${marker}-VALIDATION-WORKER` }] }));
          await expect500(await handler(ndjsonReq(lines.join("\n"))));
          assert.ok(sink.count - before <= 15, "nothing after the failed batch was stored");
          const failures = errors.filter((e): e is ValidationWorkerError =>
            e instanceof ValidationWorkerError
          );
          assert.deepEqual(failures.map((e) => e.failure), [failure]);
          assert.doesNotMatch(failures[0].message, /VALIDATION-WORKER|test crash/);
          await importAll(); // a replacement worker serves
        });
      }
      await t.step("CRASH in a Bundle entry", async () => {
        errors.length = 0;
        const before = sink.count;
        const res = await handler(jsonReq("POST", "", {
          resourceType: "Bundle",
          type: "batch",
          entry: [food(), { ...food(), note: [{ text: "CRASH-VALIDATION-WORKER" }] }].map((resource) => ({
            resource,
            request: { method: "POST", url: "Observation" },
          })),
        }));
        await expect500(res);
        assert.equal(sink.count, before, "nothing of the Bundle was stored");
        assert.deepEqual(errors.map((e) => (e as ValidationWorkerError).failure), ["crash"]);
        const ok = await handler(jsonReq("POST", "/Observation", food()));
        assert.equal(ok.status, 201);
        await ok.body?.cancel();
        await importAll();
      });
    },
  );
});

Deno.test("pool: the job a crashed worker ran fails; the job waiting behind it runs on the replacement", async () => {
  const errors: ValidationWorkerError[] = [];
  const pool = await ValidationPool.start({
    size: 1,
    allowedTypes: ["Observation"],
    workerUrl: FAULTY_WORKER,
    onError: (e) => errors.push(e),
  });
  const job = (resource: Obj): LineJob => {
    const data = enc.encode(JSON.stringify(resource));
    return {
      data,
      ends: Uint32Array.of(data.length),
      long: Uint8Array.of(0),
      versionBase: 1000,
      lastUpdated: "2026-01-01T00:00:00.000Z",
    };
  };
  try {
    // Both go to the one worker at once (one running, one waiting).
    const crashing = pool.lines(job({ ...food(), note: [{ text: "CRASH-VALIDATION-WORKER" }] }));
    const behind = pool.lines(job(food()));
    await assert.rejects(
      crashing,
      (e: unknown) => e instanceof ValidationWorkerError && e.failure === "crash",
    );
    const [r] = await behind;
    assert.equal(r.k, "ok");
    const stored = JSON.parse((r as { text: string }).text);
    assert.equal(stored.id, food().id);
    assert.deepEqual(stored.meta.versionId, "1000");
    assert.equal(pool.restarts, 1);
    assert.deepEqual(errors.map((e) => e.failure), ["crash"]);
  } finally {
    pool.close();
  }
  await assert.rejects(
    pool.lines(job(food())),
    (e: unknown) => e instanceof ValidationWorkerError && e.failure === "closed",
  );
});

Deno.test("pool: a worker that cannot start fails the handler's creation; bad sizes are refused", async () => {
  await assert.rejects(
    createIngestHandler({
      sink: new MemorySink(),
      clients: { [TOKEN]: "app" },
      maxBodyBytes: 1024,
      validationWorkers: 2,
      validationWorkerUrl: BROKEN_WORKER,
      onError: () => {},
    }),
    (e: unknown) =>
      e instanceof ValidationWorkerError && e.failure === "start" && /validation-\d/.test(e.message),
  );
  for (const n of [-1, 1.5, NaN]) {
    await assert.rejects(
      createIngestHandler({
        sink: new MemorySink(),
        clients: { [TOKEN]: "app" },
        maxBodyBytes: 1024,
        validationWorkers: n,
      }),
      IngestConfigError,
    );
  }
  await assert.rejects(
    createIngestHandler({
      sink: new MemorySink(),
      clients: { [TOKEN]: "app" },
      maxBodyBytes: 1024,
      validationWorkers: 1,
      allowedTypes: ["Observation", "NotAType"],
    }),
    /not an R4 resource type: NotAType/,
  );
  const dir = await Deno.makeTempDir({ prefix: "serve-usage-" });
  try {
    for (const n of ["-1", "x", "2.5", "65", "", " 2"]) {
      await assert.rejects(
        serveCommand(["--data", join(dir, "d"), `--validation-workers=${n}`]),
        (e: unknown) => e instanceof UsageError && /--validation-workers/.test(e.message),
      );
    }
    for (const n of ["0", "x", "1.5", "1001", "", " 2"]) {
      await assert.rejects(
        serveCommand(["--data", join(dir, "d"), `--max-imports=${n}`]),
        (e: unknown) =>
          e instanceof UsageError && /--max-imports must be an integer 1\.\.1000/.test(e.message),
      );
    }
    assert.equal((await Array.fromAsync(Deno.readDir(dir))).length, 0, "nothing created");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(defaultValidationWorkers(1), 1);
  assert.equal(defaultValidationWorkers(2), 2);
  assert.equal(defaultValidationWorkers(64), 8);
});

Deno.test("pool: close() stops the workers; later pooled requests get 500, single resources still work", async () => {
  const { handler, errors } = await setup(1);
  await handler.close();
  await handler.close(); // idempotent
  const res = await handler(ndjsonReq(JSON.stringify(food())));
  assert.equal(res.status, 500);
  await res.body?.cancel();
  assert.ok(errors.some((e) => e instanceof ValidationWorkerError && e.failure === "closed"));
  const meta = await handler(new Request(`${BASE}/metadata`));
  assert.equal(meta.status, 200);
  await meta.body?.cancel();
  const single = await handler(jsonReq("POST", "/Observation", food())); // checked inline
  assert.equal(single.status, 201);
  assert.equal((await single.json()).resourceType, "Observation");
});

Deno.test("pool: graceful shutdown over HTTP — a streaming $import under way completes; new requests 503", async () => {
  // The shutdown starts once the server stored the first lines, while the client is still sending.
  const sink = new MemorySink();
  const ac = new AbortController();
  let shutdownStarted!: () => void;
  const started = new Promise<void>((r) => shutdownStarted = r);
  const server = await startIngestServer({
    sink: {
      append: (type, lines) => {
        if (!ac.signal.aborted) {
          ac.abort();
          shutdownStarted();
        }
        return sink.append(type, lines);
      },
    },
    clients: { [TOKEN]: "app" },
    maxBodyBytes: 64 * 1024,
    validationWorkers: 2,
    validationBatchLines: 20,
    importBatchLines: 50,
    port: 0,
    signal: ac.signal,
  });
  const base = `http://127.0.0.1:${server.addr.port}/fhir`;
  const total = 600;
  let sent = 0;
  let during: { status: number; code: string; retryAfter: string | null } | undefined;
  const body = new ReadableStream<Uint8Array>({
    async pull(c) {
      if (sent >= total) return c.close();
      if (sent === 300) {
        await started;
        const r = await fetch(`${base}/metadata`);
        during = {
          status: r.status,
          code: ((await r.json()) as OO).issue[0].code,
          retryAfter: r.headers.get("retry-after"),
        };
      }
      c.enqueue(enc.encode(JSON.stringify(gen.Observation[sent % gen.Observation.length]) + "\n"));
      sent++;
    },
  });
  const res = await fetch(`${base}/$import`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/fhir+ndjson" },
    body,
  });
  const oo = await res.json() as OO;
  assert.equal(res.status, 200, JSON.stringify(oo));
  assert.ok(ac.signal.aborted, "the shutdown started while the body was being sent");
  assert.deepEqual(during, { status: 503, code: "transient", retryAfter: "5" });
  assert.equal(res.headers.get("x-accepted-count"), String(total));
  assert.equal(sink.count, total);
  await server.finished;
  await assert.rejects(fetch(`${base}/metadata`)); // no longer listening
});
