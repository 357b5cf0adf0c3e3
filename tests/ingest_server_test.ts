/**
 * fhir/server: the ingest server answers every kind of bad input with the right status and an
 * OperationOutcome naming the element (or NDJSON line), and keeps every valid resource sent alongside.
 */

import assert from "node:assert/strict";
import { generatedResources } from "./fixtures/generated.ts";
import { loadValidator } from "../fhir/validate.ts";
import {
  createIngestHandler,
  type IngestSink,
  MemorySink,
  splitLines,
  startIngestServer,
} from "../fhir/server/mod.ts";
import { GroupCommitSink } from "../fhir/server/group_commit.ts";

type Obj = Record<string, unknown>;
type OO = {
  resourceType: string;
  issue: { severity: string; code: string; expression?: string[]; diagnostics?: string }[];
};

loadValidator();
const gen = await generatedResources({ patients: 4, days: 3, seed: "ingest-server-test" });

const TOKEN = "test-token-app-0123456789";
const OBS_ONLY = "test-token-obs-only-0123456789";
const BASE = "http://ingest.test/fhir";

async function setup(
  extra: {
    maxBodyBytes?: number;
    maxLineBytes?: number;
    importBatchLines?: number;
    maxConcurrentImports?: number;
  } = {},
) {
  const sink = new MemorySink();
  const handler = await createIngestHandler({
    sink,
    clients: { [TOKEN]: "app", [OBS_ONLY]: { name: "obs-writer", types: ["Observation"] } },
    maxBodyBytes: extra.maxBodyBytes ?? 256 * 1024,
    maxLineBytes: extra.maxLineBytes,
    importBatchLines: extra.importBatchLines,
    maxConcurrentImports: extra.maxConcurrentImports,
    onError: () => {},
  });
  return { sink, handler };
}

function req(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Request {
  return new Request(`${BASE}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/fhir+json", ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
}

/** Asserts status, FHIR content type and an OperationOutcome with an error issue (code, expression). */
async function expectOutcome(res: Response, status: number, code: string, expression?: string): Promise<OO> {
  const body = await res.json() as OO;
  assert.equal(res.status, status, JSON.stringify(body));
  assert.match(res.headers.get("content-type") ?? "", /^application\/fhir\+json/);
  assert.equal(body.resourceType, "OperationOutcome");
  const hit = body.issue.find((i) =>
    i.severity === "error" && i.code === code &&
    (expression === undefined || (i.expression ?? []).includes(expression))
  );
  assert.ok(hit, `no ${code} issue at ${expression}: ${JSON.stringify(body.issue)}`);
  return body;
}

const food = () => structuredClone(gen.Observation.find((o) => JSON.stringify(o.code).includes("9052-2"))!);
const patient = () => structuredClone(gen.Patient[0]);

Deno.test("metadata: CapabilityStatement without a token", async () => {
  const { handler } = await setup();
  const res = await handler(new Request(`${BASE}/metadata`));
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type")!, /application\/fhir\+json/);
  const cs = await res.json();
  assert.equal(cs.resourceType, "CapabilityStatement");
  assert.equal(cs.fhirVersion, "4.0.1");
  assert.ok(cs.rest[0].resource.some((r: Obj) => r.type === "Observation"));
});

Deno.test("create: 201, Location, new server id, meta set, stored once", async () => {
  const { sink, handler } = await setup();
  const obs = food();
  const res = await handler(req("POST", "/Observation", obs));
  assert.equal(res.status, 201);
  const body = await res.json();
  assert.notEqual(body.id, obs.id);
  assert.match(res.headers.get("location")!, new RegExp(`^${BASE}/Observation/${body.id}/_history/\\d+$`));
  assert.equal(res.headers.get("etag"), `W/"${body.meta.versionId}"`);
  assert.match(body.meta.lastUpdated, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.deepEqual(sink.resources("Observation"), [body]);
  // Prefer: return=minimal → no body.
  const min = await handler(req("POST", "/Observation", obs, { prefer: "return=minimal" }));
  assert.equal(min.status, 201);
  assert.equal(await min.text(), "");
  assert.equal(sink.count, 2);
});

Deno.test("update: PUT keeps the id, checks it against the body", async () => {
  const { sink, handler } = await setup();
  const p = patient();
  const res = await handler(req("PUT", `/Patient/${p.id}`, p));
  assert.equal(res.status, 200);
  assert.match(res.headers.get("location")!, new RegExp(`/Patient/${p.id}/_history/`));
  assert.equal((await res.json()).id, p.id);
  await expectOutcome(await handler(req("PUT", `/Patient/other-id`, p)), 400, "invalid", "Patient.id");
  await expectOutcome(
    await handler(req("PUT", `/Patient/bad_id`, { ...p, id: "bad_id" })),
    400,
    "value",
    "Patient.id",
  );
  assert.equal(sink.count, 1);
});

Deno.test("bad single resources: status and OperationOutcome with the element path", async (t) => {
  const { sink, handler } = await setup();
  const post = (b: unknown, path = "/Observation") => handler(req("POST", path, b));
  await t.step("invalid JSON → 400 structure, saying where", async () => {
    const oo = await expectOutcome(await post('{"resourceType": "Observation", '), 400, "structure");
    assert.ok(
      oo.issue.some((i) =>
        i.diagnostics ===
          "The request body is not valid JSON: unexpected end of input (byte 32)"
      ),
      JSON.stringify(oo.issue),
    );
  });
  await t.step("not an object → 400", async () => {
    await expectOutcome(await post("[1,2]"), 400, "structure");
  });
  await t.step("unknown resourceType → 400 at resourceType", async () => {
    await expectOutcome(await post({ ...food(), resourceType: "Foo" }), 400, "structure", "resourceType");
  });
  await t.step("resourceType not matching the URL → 400 at resourceType", async () => {
    await expectOutcome(await post(patient()), 400, "invalid", "resourceType");
  });
  await t.step("type not on the allow-list → 422 not-supported", async () => {
    await expectOutcome(
      await post({ resourceType: "Medication", status: "active" }, "/Medication"),
      422,
      "not-supported",
      "resourceType",
    );
  });
  await t.step("unknown type in the URL → 404", async () => {
    await expectOutcome(await post(food(), "/Foo"), 404, "not-found");
  });
  await t.step("missing required element → 400 at Observation.status", async () => {
    const o = food();
    delete o.status;
    await expectOutcome(await post(o), 400, "structure", "Observation.status");
  });
  await t.step("wrong JSON type → 400 at the element", async () => {
    const o = food();
    o.status = 5;
    const body = await (await post(o)).json() as OO;
    assert.ok(
      body.issue.some((i) => (i.expression ?? []).includes("Observation.status")),
      JSON.stringify(body),
    );
  });
  await t.step("invalid code where bound → 422 code-invalid", async () => {
    await expectOutcome(
      await post({ ...food(), status: "bogus" }),
      422,
      "code-invalid",
      "Observation.status",
    );
  });
  await t.step("wrong content type → 415", async () => {
    await expectOutcome(
      await handler(req("POST", "/Observation", food(), { "content-type": "text/plain" })),
      415,
      "not-supported",
    );
  });
  await t.step("wrong method → 405", async () => {
    await expectOutcome(await handler(req("GET", "/Observation")), 405, "not-supported");
  });
  assert.equal(sink.count, 0);
});

Deno.test("oversize body → 413 too-long (declared and streamed)", async () => {
  const { sink, handler } = await setup({ maxBodyBytes: 2000 });
  const big = { ...food(), note: [{ text: "x".repeat(5000) }] };
  await expectOutcome(await handler(req("POST", "/Observation", big)), 413, "too-long");
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < 10; i++) c.enqueue(new Uint8Array(500).fill(32));
      c.close();
    },
  });
  const r = new Request(`${BASE}/Observation`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/fhir+json" },
    body: stream,
  });
  await expectOutcome(await handler(r), 413, "too-long");
  assert.equal(sink.count, 0);
});

Deno.test("authentication: 401 without/with a bad token, 403 for a type the client may not write", async () => {
  const { sink, handler } = await setup();
  const noAuth = new Request(`${BASE}/Observation`, {
    method: "POST",
    headers: { "content-type": "application/fhir+json" },
    body: JSON.stringify(food()),
  });
  const r1 = await handler(noAuth);
  assert.match(r1.headers.get("www-authenticate")!, /^Bearer/);
  await expectOutcome(r1, 401, "login");
  const r2 = await handler(
    req("POST", "/Observation", food(), { authorization: "Bearer wrong-token-0123456789" }),
  );
  assert.match(r2.headers.get("www-authenticate")!, /invalid_token/);
  await expectOutcome(r2, 401, "login");
  await expectOutcome(
    await handler(req("POST", "/Observation", food(), { authorization: "Basic abc" })),
    401,
    "login",
  );
  await expectOutcome(
    await handler(req("POST", "/Patient", patient(), { authorization: `Bearer ${OBS_ONLY}` })),
    403,
    "forbidden",
    "resourceType",
  );
  assert.equal(
    (await handler(req("POST", "/Observation", food(), { authorization: `Bearer ${OBS_ONLY}` }))).status,
    201,
  );
  assert.equal(sink.count, 1);
});

function entry(method: "POST" | "PUT", resource: Obj, fullUrl?: string): Obj {
  const url = method === "POST" ? resource.resourceType : `${resource.resourceType}/${resource.id}`;
  return { ...(fullUrl ? { fullUrl } : {}), resource, request: { method, url } };
}

Deno.test("batch: each entry on its own; valid ones kept", async () => {
  const { sink, handler } = await setup();
  const good1 = food();
  const bad = { ...food(), status: "bogus" };
  const good2 = patient();
  const res = await handler(req("POST", "", {
    resourceType: "Bundle",
    type: "batch",
    entry: [entry("POST", good1), entry("POST", bad), entry("PUT", good2)],
  }));
  assert.equal(res.status, 200);
  const b = await res.json();
  assert.equal(b.type, "batch-response");
  assert.equal(b.entry.length, 3);
  assert.equal(b.entry[0].response.status, "201 Created");
  assert.match(b.entry[0].response.location, /^Observation\/[0-9a-f-]{36}\/_history\/\d+$/);
  assert.match(b.entry[1].response.status, /^422/);
  const oo = b.entry[1].response.outcome as OO;
  assert.ok(
    oo.issue.some((i) =>
      i.code === "code-invalid" && i.expression?.includes("Bundle.entry[1].resource.status")
    ),
  );
  assert.equal(b.entry[2].response.status, "200 OK");
  assert.equal(sink.resources("Observation").length, 1);
  assert.equal(sink.resources("Patient")[0].id, good2.id);
});

Deno.test("conditional requests: log-entry conditional create accepted; every other condition refused, never ignored", async () => {
  const { sink, handler } = await setup();
  const cs = await (await handler(new Request(`${BASE}/metadata`))).json();
  assert.equal(cs.rest[0].resource[0].conditionalCreate, true);
  assert.equal(cs.rest[0].resource[0].conditionalUpdate, false);
  const obs = food();
  const entryId = (obs.identifier as { value: string }[])[0].value;
  const logEntry = `identifier=https://fhir-pme.example/identifier/log-entry|${entryId}`;
  // The supported form: a create naming the resource's own log-entry identifier (resolved at conversion).
  const ok = await handler(req("POST", "/Observation", obs, { "If-None-Exist": logEntry }));
  assert.equal(ok.status, 201);
  await ok.body?.cancel();
  assert.equal(sink.count, 1);
  for (
    const [method, path, header, value, why] of [
      ["POST", "/Observation", "If-None-Exist", `${logEntry}x`, /does not carry/],
      ["POST", "/Observation", "If-None-Exist", "identifier=https://other.example|1", /only the log-entry/],
      ["POST", "/Observation", "If-None-Exist", `${logEntry}&status=final`, /exactly one/],
      ["PUT", `/Observation/${obs.id}`, "If-None-Exist", logEntry, /needs POST/],
      ["PUT", `/Observation/${obs.id}`, "If-Match", 'W/"1"', /If-Match: not supported/],
      ["PUT", `/Observation/${obs.id}`, "If-None-Match", "*", /If-None-Match: not supported/],
      ["POST", "/Observation", "If-Modified-Since", "Sat, 28 Nov 2026 10:00:00 GMT", /If-Modified-Since/],
    ] as const
  ) {
    const oo = await expectOutcome(
      await handler(req(method, path, obs, { [header]: value })),
      400,
      "not-supported",
    );
    assert.match(JSON.stringify(oo.issue), why);
  }
  assert.equal(sink.count, 1, "refused requests stored nothing");
  // In a batch: a refused entry alone fails; in a transaction: the whole transaction.
  const cond = (resource: Obj, field: string, value: string) => ({
    ...entry("POST", resource),
    request: { method: "POST", url: "Observation", [field]: value },
  });
  const other = food();
  const otherId = crypto.randomUUID();
  other.identifier = [{ system: "https://fhir-pme.example/identifier/log-entry", value: otherId }];
  const otherQuery = `identifier=https://fhir-pme.example/identifier/log-entry|${otherId}`;
  const b = await (await handler(req("POST", "", {
    resourceType: "Bundle",
    type: "batch",
    entry: [cond(other, "ifNoneExist", otherQuery), cond(food(), "ifMatch", 'W/"1"')],
  }))).json();
  assert.equal(b.entry[0].response.status, "201 Created");
  assert.match(b.entry[1].response.status, /^400/);
  assert.ok(
    (b.entry[1].response.outcome as OO).issue.some((i) =>
      i.code === "not-supported" && i.expression?.includes("Bundle.entry[1].request.ifMatch")
    ),
  );
  await expectOutcome(
    await handler(req("POST", "", {
      resourceType: "Bundle",
      type: "transaction",
      entry: [cond(food(), "ifNoneExist", otherQuery)],
    })),
    400,
    "not-supported",
    "Bundle.entry[0].request.ifNoneExist",
  );
  assert.equal(sink.count, 2, "the two accepted creates only");
});

Deno.test("transaction: all or nothing, duplicates, urn:uuid references", async (t) => {
  const { sink, handler } = await setup();
  await t.step("one invalid entry → error status, nothing written", async () => {
    const res = await handler(req("POST", "", {
      resourceType: "Bundle",
      type: "transaction",
      entry: [entry("PUT", patient()), entry("POST", { ...food(), status: "bogus" })],
    }));
    await expectOutcome(res, 422, "code-invalid", "Bundle.entry[1].resource.status");
    assert.equal(sink.count, 0);
  });
  await t.step("duplicate ids → 400 duplicate, nothing written", async () => {
    const p = patient();
    const res = await handler(req("POST", "", {
      resourceType: "Bundle",
      type: "transaction",
      entry: [entry("PUT", p), entry("POST", food()), entry("PUT", p)],
    }));
    await expectOutcome(res, 400, "duplicate", "Bundle.entry[2].request.url");
    assert.equal(sink.count, 0);
  });
  await t.step("duplicate fullUrl → 400", async () => {
    const res = await handler(req("POST", "", {
      resourceType: "Bundle",
      type: "transaction",
      entry: [entry("POST", food(), "urn:uuid:1"), entry("POST", food(), "urn:uuid:1")],
    }));
    await expectOutcome(res, 400, "duplicate", "Bundle.entry[1].fullUrl");
    assert.equal(sink.count, 0);
  });
  await t.step("valid → transaction-response, everything written, urn:uuid rewritten", async () => {
    const p = patient();
    const urn = "urn:uuid:6a2f41a3-c54c-fce8-32d2-0324e1c32e22";
    const o = food();
    (o.subject as Obj).reference = urn;
    const res = await handler(req("POST", "", {
      resourceType: "Bundle",
      type: "transaction",
      entry: [
        entry("POST", { ...p, id: undefined }, urn),
        entry("POST", o),
        entry("PUT", gen.Practitioner[0]),
      ],
    }));
    const b = await res.json();
    assert.equal(res.status, 200, JSON.stringify(b));
    assert.equal(b.type, "transaction-response");
    assert.deepEqual(b.entry.map((e: { response: { status: string } }) => e.response.status), [
      "201 Created",
      "201 Created",
      "200 OK",
    ]);
    const [storedP] = sink.resources("Patient");
    assert.equal((sink.resources("Observation")[0].subject as Obj).reference, `Patient/${storedP.id}`);
    assert.equal(sink.count, 3);
    assert.equal(sink.appendCalls, 3); // one per type
  });
  await t.step("sink failure → 500 exception", async () => {
    sink.failWith = new Error("disk full");
    const res = await handler(
      req("POST", "", { resourceType: "Bundle", type: "transaction", entry: [entry("POST", food())] }),
    );
    await expectOutcome(res, 500, "exception");
    sink.failWith = undefined;
  });
  await t.step("not a batch/transaction → 400", async () => {
    await expectOutcome(
      await handler(req("POST", "", { resourceType: "Bundle", type: "collection" })),
      400,
      "value",
      "Bundle.type",
    );
  });
});

function ndjsonReq(body: string | ReadableStream<Uint8Array>, headers: Record<string, string> = {}): Request {
  return new Request(`${BASE}/$import`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/fhir+ndjson", ...headers },
    body,
  });
}

Deno.test("$import: bad lines amid good ones reported by line number; good lines kept", async () => {
  const { sink, handler } = await setup({ importBatchLines: 7, maxLineBytes: 8192 });
  const good = [...gen.Patient, ...gen.Observation.slice(0, 40)];
  const lines = good.map((r) => JSON.stringify(r));
  // Insert bad lines at known 1-based positions.
  lines.splice(4, 0, "{not json"); // line 5
  lines.splice(9, 0, JSON.stringify({ ...food(), status: "bogus" })); // line 10
  lines.splice(16, 0, JSON.stringify({ resourceType: "Foo" })); // line 17
  lines.splice(19, 0, ""); // line 20 blank: skipped
  lines.splice(22, 0, JSON.stringify({ ...food(), note: [{ text: "y".repeat(10000) }] })); // line 23 too long
  const res = await handler(ndjsonReq(lines.join("\r\n") + "\n"));
  const body = await res.json() as OO & { issue: { diagnostics: string }[] };
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-accepted-count"), String(good.length));
  assert.equal(res.headers.get("x-rejected-count"), "4");
  assert.match(body.issue[0].diagnostics, new RegExp(`accepted ${good.length}, rejected 4`));
  const at = (n: number, code: string) =>
    assert.ok(
      body.issue.some((i) => i.code === code && i.expression?.[0] === `line ${n}`),
      `line ${n} ${code}`,
    );
  at(5, "structure");
  const diag = (n: number) => body.issue.find((i) => i.expression?.[0] === `line ${n}`)?.diagnostics;
  assert.equal(
    diag(5),
    "line 5: The line is not valid JSON: expected a property name in double quotes (byte 1)",
  );
  at(10, "code-invalid");
  assert.ok(
    body.issue.some((i) => i.expression?.[0] === "line 10" && i.expression.includes("Observation.status")),
  );
  at(17, "structure");
  at(23, "too-long");
  assert.equal(sink.count, good.length);
  assert.deepEqual(sink.resources("Patient").map((p) => p.id), gen.Patient.map((p) => p.id));
  assert.ok(sink.resources("Observation").every((o) => typeof (o.meta as Obj).versionId === "string"));
  await expectOutcome(
    await handler(ndjsonReq("x", { "content-type": "application/fhir+json" })),
    415,
    "not-supported",
  );
});

Deno.test("$import: streams a large body in bounded batches", async () => {
  const { sink, handler } = await setup({ importBatchLines: 500 });
  const src = gen.Observation.map((r) => JSON.stringify(r) + "\n");
  const total = 3000;
  let i = 0;
  const enc = new TextEncoder();
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (i >= total) return c.close();
      // Chunks that cut lines anywhere.
      let s = "";
      for (let k = 0; k < 7 && i < total; k++) s += src[i++ % src.length];
      const b = enc.encode(s);
      c.enqueue(b.subarray(0, 100));
      c.enqueue(b.subarray(100));
    },
  });
  const res = await handler(ndjsonReq(stream));
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-accepted-count"), String(total));
  assert.equal(sink.count, total);
  assert.ok(sink.appendCalls >= total / 500 && sink.appendCalls <= total / 500 + 1);
});

Deno.test("$import: more imports at once than allowed → 429 throttled with Retry-After; others unaffected", async () => {
  const { sink, handler } = await setup({ maxConcurrentImports: 1 });
  const enc = new TextEncoder();
  // The first import's body stays open until the test closes it.
  let feed!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({ start: (c) => void (feed = c) });
  const first = handler(ndjsonReq(body));
  feed.enqueue(enc.encode(JSON.stringify(gen.Patient[0]) + "\n"));
  await new Promise((r) => setTimeout(r, 20));

  const second = await handler(ndjsonReq(JSON.stringify(gen.Patient[1]) + "\n"));
  await expectOutcome(second, 429, "throttled");
  assert.equal(second.headers.get("retry-after"), "5");
  // Other requests go on; the throttled body was not stored.
  assert.equal((await handler(req("POST", "/Patient", patient()))).status, 201);
  assert.equal(sink.count, 1);

  feed.enqueue(enc.encode(JSON.stringify(gen.Patient[2]) + "\n"));
  feed.close();
  const done = await first;
  assert.equal(done.status, 200);
  assert.equal(done.headers.get("x-accepted-count"), "2");
  await done.body?.cancel();
  // The slot is free again, also after an import that failed.
  await expectOutcome(await handler(ndjsonReq("x", { "content-type": "text/plain" })), 415, "not-supported");
  const third = await handler(ndjsonReq(JSON.stringify(gen.Patient[1]) + "\n"));
  assert.equal(third.status, 200);
  assert.equal(third.headers.get("x-accepted-count"), "1");
  assert.equal(sink.count, 4);
  await assert.rejects(
    createIngestHandler({ sink, clients: {}, maxBodyBytes: 1, maxConcurrentImports: 0 }),
    /maxConcurrentImports must be a positive integer/,
  );
});

Deno.test("splitLines: CRLF, last line without newline, long line skipped", async () => {
  const enc = new TextEncoder();
  const s = new Blob([enc.encode("ab\r\ncd\n" + "z".repeat(50) + "\nlast")]).stream();
  const out = [];
  for await (const l of splitLines(s, 10)) {
    out.push(
      l.tooLong !== undefined ? `#${l.lineNo}:long` : `#${l.lineNo}:${new TextDecoder().decode(l.bytes)}`,
    );
  }
  assert.deepEqual(out, ["#1:ab", "#2:cd", "#3:long", "#4:last"]);
});

Deno.test("over HTTP: N parallel POSTs each acknowledged and stored exactly once", async () => {
  const sink = new MemorySink();
  const ac = new AbortController();
  const server = await startIngestServer({
    sink,
    clients: { [TOKEN]: "app" },
    maxBodyBytes: 64 * 1024,
    port: 0,
    signal: ac.signal,
  });
  try {
    const base = `http://127.0.0.1:${server.addr.port}/fhir`;
    const N = 200;
    const obs = Array.from({ length: N }, (_, i) => gen.Observation[i % gen.Observation.length]);
    const results = await Promise.all(obs.map(async (o) => {
      const r = await fetch(`${base}/Observation`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/fhir+json" },
        body: JSON.stringify(o),
      });
      const b = await r.json();
      return { status: r.status, id: b.id as string, location: r.headers.get("location") };
    }));
    assert.ok(results.every((r) => r.status === 201));
    assert.ok(results.every((r) => r.location?.startsWith(`${base}/Observation/${r.id}/_history/`)));
    const ids = new Set(results.map((r) => r.id));
    assert.equal(ids.size, N);
    const stored = sink.resources("Observation");
    assert.equal(stored.length, N);
    assert.deepEqual(new Set(stored.map((s) => s.id)), ids);
    const versions = new Set(stored.map((s) => (s.meta as Obj).versionId));
    assert.equal(versions.size, N);
    const unauth = await fetch(`${base}/Observation`, { method: "POST", body: "{}" });
    assert.equal(unauth.status, 401);
    await unauth.body?.cancel();
  } finally {
    ac.abort();
    await server.finished;
  }
});

Deno.test("group commit: concurrent appends of a type share one sink append; order kept; failures per group", async () => {
  const line = (s: string) => `{"x":"${s}"}`; // 9 characters each
  const calls: { type: string; lines: string[] }[] = [];
  const slow: IngestSink = {
    append: async (type, lines) => {
      calls.push({ type, lines: [...lines] });
      await new Promise((r) => setTimeout(r, 20));
      if (lines.includes(line("b"))) throw new Error("disk full");
    },
  };
  const g = new GroupCommitSink(slow, 30);
  // First call goes out alone; the next three wait and go together (≤ 30 characters); the fifth next.
  const results = await Promise.allSettled([
    g.append("Observation", [line("1")]),
    g.append("Observation", [line("2"), line("3")]),
    g.append("Patient", [line("p")]),
    g.append("Observation", [line("4")]),
    g.append("Observation", [line("5")]),
  ]);
  assert.ok(results.every((r) => r.status === "fulfilled"));
  assert.deepEqual(calls, [
    { type: "Observation", lines: [line("1")] },
    { type: "Patient", lines: [line("p")] },
    { type: "Observation", lines: [line("2"), line("3"), line("4")] },
    { type: "Observation", lines: [line("5")] },
  ]);
  // A failing append fails exactly the callers merged into it.
  calls.length = 0;
  const first = g.append("Observation", [line("a")]); // written at once
  const merged = [g.append("Observation", [line("b")]), g.append("Observation", [line("c")])];
  const later = new Promise((r) => setTimeout(r, 25)).then(() => g.append("Observation", [line("d")]));
  const settled = await Promise.allSettled([first, ...merged, later]);
  assert.deepEqual(settled.map((s) => s.status), ["fulfilled", "rejected", "rejected", "fulfilled"]);
  assert.deepEqual(calls.map((c) => c.lines.length), [1, 2, 1]);
  // An empty append is passed through (the sink's own error).
  await assert.rejects(new GroupCommitSink(new LandingLike(), 100).append("Observation", []), /empty batch/);
});

Deno.test("group commit: concurrent POSTs over a slow sink are stored once each in fewer appends", async () => {
  const sink = new MemorySink();
  const slow: IngestSink = {
    append: async (type, lines) => {
      await new Promise((r) => setTimeout(r, 10));
      return sink.append(type, lines);
    },
  };
  const handler = await createIngestHandler({
    sink: slow,
    clients: { [TOKEN]: "app" },
    maxBodyBytes: 64 * 1024,
  });
  const N = 40;
  const res = await Promise.all(
    Array.from(
      { length: N },
      (_, i) => handler(req("POST", "/Observation", gen.Observation[i % gen.Observation.length])),
    ),
  );
  assert.ok(res.every((r) => r.status === 201));
  const ids = await Promise.all(res.map(async (r) => (await r.json()).id as string));
  assert.equal(new Set(ids).size, N);
  assert.deepEqual(new Set(sink.resources("Observation").map((o) => o.id)), new Set(ids));
  assert.equal(sink.count, N);
  assert.ok(sink.appendCalls < N / 4, `${sink.appendCalls} appends for ${N} POSTs`);
});

/** A sink that refuses empty batches as the landing zone does. */
class LandingLike implements IngestSink {
  append(_type: string, lines: string[]): Promise<void> {
    return lines.length === 0 ? Promise.reject(new Error("empty batch")) : Promise.resolve();
  }
}
