/**
 * The Vault Transit KMS client (`kms/vault.ts`) against the Transit double (`tests/fixtures/vault_double.ts`)
 * or, when `VAULT_ADDR` and `VAULT_TOKEN` are set, against a real Vault or OpenBao dev server. The same
 * steps run in both modes; steps that need the double's switches (seal, injected failures, stall, call
 * counts) are skipped on a real server with the reason printed. On a real server every key, policy and
 * token is uniquely named and removed afterwards; the transit mount is `VAULT_TRANSIT_MOUNT` (default
 * `transit`, which must be enabled: `vault secrets enable transit`).
 *
 * @module
 */

import assert from "node:assert";
import { KMS_DEFAULT } from "../kms/client.ts";
import {
  KeyMaterialError,
  KmsAccessDeniedError,
  KmsConfigError,
  KmsError,
  KmsKeyNotFoundError,
  KmsUnavailableError,
  KmsUnwrapError,
} from "../kms/errors.ts";
import {
  vaultCiphertextVersion,
  VaultKmsClient,
  vaultKmsClientFactory,
  type VaultKmsClientOptions,
} from "../kms/vault.ts";
import {
  grantsToRules,
  type KeyGrant,
  rulesToHcl,
  startVaultDouble,
  type VaultDouble,
} from "./fixtures/vault_double.ts";

const REAL_ADDR = Deno.env.get("VAULT_ADDR");
const REAL_TOKEN = Deno.env.get("VAULT_TOKEN");
const REAL = Boolean(REAL_ADDR && REAL_TOKEN);
const MODE = REAL ? "real Vault/OpenBao" : "double";

/** Where the suite runs: the double, or a real server. */
interface Target {
  address: string;
  rootToken: string;
  mount: string;
  double?: VaultDouble;
  keys: { name: string; namespace?: string }[];
  policies: string[];
  tokens: string[];
  namespaces: string[];
}

interface HttpReply {
  status: number;
  // deno-lint-ignore no-explicit-any
  body: any;
}

const RUN = crypto.randomUUID().slice(0, 8);
let seq = 0;
const unique = (what: string) => `pme-test-${RUN}-${what}-${++seq}`;

/** Every error the steps provoked, checked at the end for secrets. */
const seenErrors: unknown[] = [];
/** Every secret the steps used (tokens, key bytes in base64/hex, wrapped keys). */
const secrets = new Set<string>();

function remember(...values: string[]): void {
  for (const v of values) if (v.length >= 8) secrets.add(v);
}

function rememberKey(bytes: Uint8Array): void {
  remember(b64(bytes), Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""));
}

function b64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

function randomKey(n: number): Uint8Array {
  const k = crypto.getRandomValues(new Uint8Array(n));
  rememberKey(k);
  return k;
}

async function http(
  t: Target,
  method: string,
  path: string,
  body?: unknown,
  opts: { token?: string | null; namespace?: string; bearer?: boolean } = {},
): Promise<HttpReply> {
  const headers: Record<string, string> = {};
  const token = opts.token === undefined ? t.rootToken : opts.token;
  if (token !== null) {
    if (opts.bearer) headers.authorization = `Bearer ${token}`;
    else headers["x-vault-token"] = token;
  }
  if (opts.namespace) headers["x-vault-namespace"] = opts.namespace;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${t.address}/v1/${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

function client(t: Target, options: Partial<VaultKmsClientOptions> = {}): VaultKmsClient {
  return new VaultKmsClient({
    address: t.address,
    token: t.rootToken,
    mount: t.mount,
    retries: 0,
    timeoutMs: 5_000,
    ...options,
  });
}

/** Creates a uniquely named aes256-gcm96 key (remembered for clean-up). */
async function newKey(t: Target, what: string, namespace?: string): Promise<string> {
  const name = unique(what);
  await client(t, { namespace }).createKey(name);
  t.keys.push({ name, namespace });
  return name;
}

/** A token whose policy allows exactly `grants`, made through sys/policies/acl and auth/token/create. */
async function newToken(t: Target, grants: KeyGrant[]): Promise<string> {
  const name = unique("policy");
  const policy = rulesToHcl(grantsToRules(grants, t.mount));
  const p = await http(t, "PUT", `sys/policies/acl/${name}`, { policy });
  assert.ok(p.status === 204 || p.status === 200, `policy write: HTTP ${p.status}`);
  t.policies.push(name);
  const r = await http(t, "POST", "auth/token/create", {
    policies: [name],
    no_default_policy: true,
    ttl: "15m",
  });
  assert.strictEqual(r.status, 200, `token create: HTTP ${r.status}`);
  const token = r.body.auth.client_token as string;
  t.tokens.push(token);
  remember(token);
  return token;
}

/** Creates a namespace with the transit mount enabled, or returns null when the server has none. */
async function newNamespace(t: Target): Promise<string | null> {
  const ns = unique("ns");
  const r = await http(t, "POST", `sys/namespaces/${ns}`, {});
  if (r.status >= 400) return null;
  t.namespaces.push(ns);
  const m = await http(t, "POST", `sys/mounts/${t.mount}`, { type: "transit" }, { namespace: ns });
  assert.ok(m.status === 204 || m.status === 200, `mount in namespace: HTTP ${m.status}`);
  return ns;
}

async function closedPort(): Promise<number> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  await new Promise((r) => setTimeout(r, 10));
  return port;
}

/** Awaits a rejection of class `cls` whose message contains every `parts`; returns the error. */
async function expectError<E extends KmsError>(
  p: Promise<unknown>,
  cls: abstract new (...args: never[]) => E,
  ...parts: string[]
): Promise<E> {
  let error: unknown;
  try {
    await p;
  } catch (e) {
    error = e;
  }
  assert.ok(error !== undefined, `expected ${cls.name}, got success`);
  seenErrors.push(error);
  assert.ok(
    error instanceof cls,
    `expected ${cls.name}, got ${(error as Error)?.name}: ${(error as Error)?.message}`,
  );
  for (const part of parts) assert.ok(error.message.includes(part), `"${error.message}" lacks "${part}"`);
  return error;
}

async function cleanUp(t: Target): Promise<void> {
  if (t.double) return await t.double.close();
  for (const k of t.keys) {
    const opts = { namespace: k.namespace };
    await http(t, "POST", `${t.mount}/keys/${k.name}/config`, { deletion_allowed: true }, opts);
    await http(t, "DELETE", `${t.mount}/keys/${k.name}`, undefined, opts);
  }
  for (const ns of t.namespaces) {
    await http(t, "DELETE", `sys/mounts/${t.mount}`, undefined, { namespace: ns });
    await http(t, "DELETE", `sys/namespaces/${ns}`);
  }
  for (const token of t.tokens) await http(t, "POST", "auth/token/revoke", { token });
  for (const p of t.policies) await http(t, "DELETE", `sys/policies/acl/${p}`);
}

const skipReason = (why: string) => (REAL ? `skipped on a real server: ${why}` : "");

Deno.test(`Vault Transit KMS client (${MODE})`, async (t) => {
  const double = REAL ? undefined : await startVaultDouble();
  const target: Target = {
    address: REAL ? REAL_ADDR!.replace(/\/+$/, "") : double!.url,
    rootToken: REAL ? REAL_TOKEN! : double!.rootToken,
    mount: REAL ? (Deno.env.get("VAULT_TRANSIT_MOUNT") ?? "transit") : double!.mount,
    double,
    keys: [],
    policies: [],
    tokens: [],
    namespaces: [],
  };
  remember(target.rootToken);
  const admin = client(target);

  /** Runs a step that needs the double; on a real server prints why it is skipped. */
  const doubleStep = async (name: string, why: string, fn: (d: VaultDouble) => Promise<void>) => {
    if (REAL) console.log(`${name}: ${skipReason(why)}`);
    await t.step({ name: `${name} (double only)`, ignore: REAL, fn: () => fn(double!) });
  };

  try {
    await t.step(
      "wrap/unwrap round trip for 16/24/32-byte keys; the vault:v1: ciphertext is kept whole",
      async () => {
        const mk = await newKey(target, "roundtrip");
        for (const n of [16, 24, 32]) {
          const key = randomKey(n);
          const wrapped = await admin.wrapKey(key, mk);
          remember(wrapped);
          assert.match(wrapped, /^vault:v1:[A-Za-z0-9+/]+={0,2}$/);
          assert.strictEqual(vaultCiphertextVersion(wrapped), 1);
          assert.deepStrictEqual(await admin.unwrapKey(wrapped, mk), key);
          // The stored text is exactly what Transit decrypts.
          const r = await http(target, "POST", `${target.mount}/decrypt/${mk}`, { ciphertext: wrapped });
          assert.strictEqual(r.status, 200);
          assert.strictEqual(r.body.data.plaintext, b64(key));
          assert.notStrictEqual(await admin.wrapKey(key, mk), wrapped, "fresh nonce per wrap");
        }
        await expectError(admin.wrapKey(new Uint8Array(20), mk), KeyMaterialError, "20 bytes");
        await expectError(admin.unwrapKey("not-a-vault-ciphertext", mk), KmsUnwrapError, mk);
        await expectError(
          admin.wrapKey(randomKey(16), "bad/name"),
          KmsConfigError,
          "not a valid Vault key name",
        );
      },
    );

    await t.step(
      "factory: instance URL → address, instance id → mount (DEFAULT → transit), token required",
      async () => {
        const mk = await newKey(target, "factory");
        const factory = vaultKmsClientFactory({ retries: 0 });
        const kms = await factory({
          kmsInstanceId: target.mount === "transit" ? KMS_DEFAULT : target.mount,
          kmsInstanceUrl: target.address,
          keyAccessToken: target.rootToken,
          customKmsConf: {},
        });
        const key = randomKey(32);
        assert.deepStrictEqual(await kms.unwrapKey(await kms.wrapKey(key, mk), mk), key);
        assert.strictEqual((kms as VaultKmsClient).mount, target.mount);
        assert.throws(
          () =>
            factory({
              kmsInstanceId: KMS_DEFAULT,
              kmsInstanceUrl: target.address,
              keyAccessToken: KMS_DEFAULT,
              customKmsConf: {},
            }),
          KmsConfigError,
        );
        assert.throws(
          () =>
            factory({
              kmsInstanceId: KMS_DEFAULT,
              kmsInstanceUrl: KMS_DEFAULT,
              keyAccessToken: target.rootToken,
              customKmsConf: {},
            }),
          KmsConfigError,
        );
        const other = await factory({
          kmsInstanceId: unique("no-such-mount"),
          kmsInstanceUrl: target.address,
          keyAccessToken: target.rootToken,
          customKmsConf: {},
        });
        await expectError(other.wrapKey(randomKey(16), mk), KmsConfigError, "no transit engine");
      },
    );

    await t.step(
      "rotate: new wraps are v2, v1 still unwraps; rewrapKey moves v1 → v2 inside Vault; isCurrent",
      async () => {
        const mk = await newKey(target, "rotate");
        const key = randomKey(32);
        const v1 = await admin.wrapKey(key, mk);
        assert.strictEqual(await admin.isCurrent(v1, mk), true);
        const info = await admin.rotateMasterKey(mk);
        assert.strictEqual(info.latestVersion, 2);
        assert.deepStrictEqual(info.versions, [1, 2]);
        assert.strictEqual(await admin.isCurrent(v1, mk), false);
        const v2 = await admin.wrapKey(key, mk);
        assert.match(v2, /^vault:v2:/);
        assert.deepStrictEqual(await admin.unwrapKey(v1, mk), key);
        assert.deepStrictEqual(await admin.unwrapKey(v2, mk), key);

        double?.calls.reset();
        const rewrapped = await admin.rewrapKey(v1, mk);
        remember(v1, v2, rewrapped);
        assert.match(rewrapped, /^vault:v2:/);
        if (double) {
          assert.deepStrictEqual(
            double.calls.byOpAndKey(),
            { [`rewrap ${mk}`]: 1 },
            "one rewrap call, no decrypt",
          );
        }
        assert.strictEqual(await admin.isCurrent(rewrapped, mk), true);
        assert.deepStrictEqual(await admin.unwrapKey(rewrapped, mk), key);

        // A second client (another process) sees the rotation once its short cache expires.
        const reader = client(target);
        assert.strictEqual(await reader.isCurrent(v2, mk), true);
        await admin.rotateMasterKey(mk);
        assert.strictEqual(await reader.isCurrent(v2, mk), false);
      },
    );

    await t.step(
      "min_decryption_version: raised → v1 no longer unwraps (policy); lowered → restored",
      async () => {
        const mk = await newKey(target, "mindec");
        const key = randomKey(16);
        const v1 = await admin.wrapKey(key, mk);
        remember(v1);
        await admin.rotateMasterKey(mk);
        const raised = await admin.setMinDecryptionVersion(mk, 2);
        assert.strictEqual(raised.minDecryptionVersion, 2);
        assert.strictEqual((await admin.readKey(mk)).minDecryptionVersion, 2);
        const e = await expectError(
          admin.unwrapKey(v1, mk),
          KmsUnwrapError,
          mk,
          "disallowed by policy (too old)",
        );
        assert.ok(e.message.includes("min_decryption_version"), e.message);
        await expectError(admin.rewrapKey(v1, mk), KmsUnwrapError, "too old");
        await expectError(admin.setMinDecryptionVersion(mk, 9), KmsConfigError, "latest key version is 2");
        await expectError(admin.setMinDecryptionVersion(mk, 0), KmsConfigError);
        await admin.setMinDecryptionVersion(mk, 1);
        assert.deepStrictEqual(await admin.unwrapKey(v1, mk), key);
      },
    );

    await t.step("a token allowed only some keys: KmsAccessDeniedError naming the master key", async () => {
      const allowed = await newKey(target, "allowed");
      const other = await newKey(target, "other");
      const writeOnly = await newKey(target, "writeonly");
      const token = await newToken(target, [
        { key: allowed, ops: ["encrypt", "decrypt"] },
        { key: writeOnly, ops: ["encrypt"] },
      ]);
      const kms = client(target, { token });
      const key = randomKey(32);
      const wrapped = await kms.wrapKey(key, allowed);
      assert.deepStrictEqual(await kms.unwrapKey(wrapped, allowed), key);
      const otherWrapped = await admin.wrapKey(key, other);
      remember(wrapped, otherWrapped);
      await expectError(kms.wrapKey(key, other), KmsAccessDeniedError, `"${other}"`, "encrypt", "403");
      await expectError(kms.unwrapKey(otherWrapped, other), KmsAccessDeniedError, `"${other}"`, "decrypt");
      const w = await kms.wrapKey(key, writeOnly);
      await expectError(kms.unwrapKey(w, writeOnly), KmsAccessDeniedError, `"${writeOnly}"`, "decrypt");
      await expectError(kms.readKey(allowed), KmsAccessDeniedError, `"${allowed}"`, "read key");
      await expectError(kms.rotateMasterKey(allowed), KmsAccessDeniedError, "rotate");
      await expectError(kms.rewrapKey(wrapped, allowed), KmsAccessDeniedError, "rewrap");
      const e = await expectError(kms.setMinDecryptionVersion(allowed, 1), KmsAccessDeniedError, "config");
      assert.strictEqual(e.masterKeyId, allowed);
      assert.strictEqual(e.retryable, false);
    });

    await t.step(
      "encrypt on a missing key: 403 with update only; upsert only with the create capability",
      async () => {
        const missing = unique("upsert");
        const updateOnly = await newToken(target, [{ key: missing, ops: ["encrypt", "read"] }]);
        const e = await expectError(
          client(target, { token: updateOnly }).wrapKey(randomKey(16), missing),
          KmsAccessDeniedError,
          missing,
        );
        assert.ok(e.message.includes("does not exist yet"), e.message);
        await expectError(client(target).readKey(missing), KmsKeyNotFoundError, missing);
        const creator = await newToken(target, [{ key: missing, ops: ["create", "encrypt", "decrypt"] }]);
        const kms = client(target, { token: creator });
        const key = randomKey(32);
        const wrapped = await kms.wrapKey(key, missing);
        target.keys.push({ name: missing });
        assert.match(wrapped, /^vault:v1:/);
        assert.deepStrictEqual(await kms.unwrapKey(wrapped, missing), key);
        assert.strictEqual((await admin.readKey(missing)).type, "aes256-gcm96");
      },
    );

    await t.step("revoked token → denied", async () => {
      const mk = await newKey(target, "revoke");
      const token = await newToken(target, [{ key: mk, ops: ["encrypt", "decrypt"] }]);
      const kms = client(target, { token });
      const wrapped = await kms.wrapKey(randomKey(16), mk);
      remember(wrapped);
      const r = await http(target, "POST", "auth/token/revoke", { token });
      assert.strictEqual(r.status, 204);
      await expectError(kms.unwrapKey(wrapped, mk), KmsAccessDeniedError, mk);
      await expectError(kms.wrapKey(randomKey(16), mk), KmsAccessDeniedError, mk);
      await expectError(
        client(target, { token: "hvs.not-a-token-at-all" }).wrapKey(randomKey(16), mk),
        KmsAccessDeniedError,
      );
    });

    await t.step("missing key: KmsKeyNotFoundError with a clear message", async () => {
      const present = await newKey(target, "present");
      const missing = unique("missing");
      const wrapped = await admin.wrapKey(randomKey(16), present);
      remember(wrapped);
      const where = `does not exist in Vault at ${target.mount}`;
      const e = await expectError(
        admin.unwrapKey(wrapped, missing),
        KmsKeyNotFoundError,
        `"${missing}"`,
        where,
      );
      assert.strictEqual(e.masterKeyId, missing);
      await expectError(admin.readKey(missing), KmsKeyNotFoundError, where);
      await expectError(admin.rewrapKey(wrapped, missing), KmsKeyNotFoundError, where);
      await expectError(admin.rotateMasterKey(missing), KmsKeyNotFoundError, where);
      await expectError(admin.setMinDecryptionVersion(missing, 1), KmsKeyNotFoundError, where);
      assert.ok((await admin.listKeys()).includes(present));
    });

    await t.step("wrong master key or tampered key material: KmsUnwrapError", async () => {
      const a = await newKey(target, "ka");
      const b = await newKey(target, "kb");
      const wrapped = await admin.wrapKey(randomKey(32), a);
      remember(wrapped);
      await expectError(
        admin.unwrapKey(wrapped, b),
        KmsUnwrapError,
        `"${b}"`,
        "message authentication failed",
      );
      const body = wrapped.slice("vault:v1:".length);
      const flipped = `vault:v1:${body[0] === "A" ? "B" : "A"}${body.slice(1)}`;
      await expectError(admin.unwrapKey(flipped, a), KmsUnwrapError, "authentication failed");
      await expectError(
        admin.unwrapKey(wrapped.replace("vault:v1:", "vault:v7:"), a),
        KmsUnwrapError,
        "too new",
      );
      await expectError(admin.unwrapKey("vault:v1:%%%%", a), KmsUnwrapError, "base64");
    });

    const unsealKey = REAL ? Deno.env.get("VAULT_UNSEAL_KEY") : double!.unsealKey;
    if (!unsealKey) {
      console.log(
        "sealed: skipped on a real server: set VAULT_UNSEAL_KEY (printed by the dev server) to run it",
      );
    }
    await t.step({
      name: "sealed → KmsUnavailableError (retryable) for wrap and unwrap; recovery after unseal",
      ignore: !unsealKey,
      fn: async () => {
        const mk = await newKey(target, "sealed");
        const key = randomKey(32);
        const wrapped = await admin.wrapKey(key, mk);
        remember(wrapped);
        const seal = await http(target, "PUT", "sys/seal");
        assert.strictEqual(seal.status, 204);
        try {
          const w = await expectError(admin.wrapKey(key, mk), KmsUnavailableError, "sealed", mk);
          assert.strictEqual(w.retryable, true);
          const u = await expectError(admin.unwrapKey(wrapped, mk), KmsUnavailableError, "sealed", mk);
          assert.strictEqual(u.retryable, true);
          await expectError(admin.readKey(mk), KmsUnavailableError, "sealed");
          const h = await http(target, "GET", "sys/health", undefined, { token: null });
          assert.strictEqual(h.status, 503);
          assert.strictEqual(h.body.sealed, true);
          const r = await http(target, "POST", `${target.mount}/encrypt/${mk}`, { plaintext: b64(key) });
          assert.deepStrictEqual(r, { status: 503, body: { errors: ["Vault is sealed"] } });
          const bad = await http(target, "POST", `${target.mount}/encrypt/${mk}`, {}, { token: "hvs.bogus" });
          assert.strictEqual(bad.status, 503, "sealed is answered before the token is checked");
        } finally {
          const r = await http(target, "PUT", "sys/unseal", { key: unsealKey }, { token: null });
          assert.strictEqual(r.status, 200);
          assert.strictEqual(r.body.sealed, false);
        }
        if (double) {
          double.seal(true); // the JS switch does the same
          await expectError(admin.wrapKey(key, mk), KmsUnavailableError, "sealed");
          double.seal(false);
        }
        assert.deepStrictEqual(await admin.unwrapKey(wrapped, mk), key);
        assert.deepStrictEqual(await admin.unwrapKey(await admin.wrapKey(key, mk), mk), key);
      },
    });

    await doubleStep(
      "bounded retries with backoff: transient 503s recover; rotate is not repeated after a 500",
      "needs injected failures",
      async (d) => {
        const mk = await newKey(target, "retry");
        const key = randomKey(32);
        const kms = client(target, { retries: 2, retryDelayMs: 5 });
        d.calls.reset();
        d.failNext(2, 503);
        const wrapped = await kms.wrapKey(key, mk);
        remember(wrapped);
        assert.strictEqual(d.calls.count({ op: "encrypt", key: mk }), 3);
        d.failNext(3, 503);
        await expectError(kms.unwrapKey(wrapped, mk), KmsUnavailableError, "sealed");
        assert.strictEqual(d.calls.count({ op: "decrypt", key: mk }), 3, "1 try + 2 retries");
        d.calls.reset();
        d.failNext(1, 500, "internal error");
        await expectError(kms.rotateMasterKey(mk), KmsUnavailableError, "HTTP 500");
        assert.strictEqual(d.calls.count({ op: "rotate" }), 1, "an ambiguous rotate is not retried");
        d.failNext(1, 503);
        assert.strictEqual((await kms.rotateMasterKey(mk)).latestVersion, 2, "a sealed rotate is retried");
        d.failNext(1, 429, "rate limit quota exceeded");
        assert.deepStrictEqual(await kms.unwrapKey(wrapped, mk), key);
      },
    );

    await t.step("unreachable address (closed port on 127.0.0.1) → KmsUnavailableError", async () => {
      const port = await closedPort();
      const kms = new VaultKmsClient({
        address: `http://127.0.0.1:${port}`,
        token: target.rootToken,
        retries: 0,
      });
      const e = await expectError(
        kms.wrapKey(randomKey(16), "somekey"),
        KmsUnavailableError,
        "unreachable",
        "ECONNREFUSED",
      );
      assert.strictEqual(e.retryable, true);
      const kms2 = new VaultKmsClient({
        address: `http://127.0.0.1:${port}`,
        token: target.rootToken,
        retries: 1,
        retryDelayMs: 1,
      });
      await expectError(kms2.unwrapKey("vault:v1:AAAA", "somekey"), KmsUnavailableError, "somekey");
    });

    await doubleStep(
      "no answer within the timeout → KmsUnavailableError",
      "needs the stall switch",
      async (d) => {
        const mk = await newKey(target, "stall");
        d.stall(true);
        try {
          const kms = client(target, { timeoutMs: 150 });
          await expectError(
            kms.wrapKey(randomKey(16), mk),
            KmsUnavailableError,
            "did not answer within 150 ms",
          );
        } finally {
          d.stall(false);
        }
      },
    );

    await t.step("namespaces: keys in a namespace are a separate key space", async () => {
      const ns = await newNamespace(target);
      if (ns === null) {
        console.log("namespaces: skipped, the server has no namespaces (Vault Enterprise or OpenBao ≥ 2.3)");
        return;
      }
      const name = unique("nskey");
      const inNs = client(target, { namespace: ns });
      await inNs.createKey(name);
      target.keys.push({ name, namespace: ns });
      await expectError(admin.readKey(name), KmsKeyNotFoundError, `at ${target.mount}`);
      const key = randomKey(32);
      const wrapped = await inNs.wrapKey(key, name);
      remember(wrapped);
      assert.deepStrictEqual(await inNs.unwrapKey(wrapped, name), key);
      await expectError(admin.unwrapKey(wrapped, name), KmsKeyNotFoundError, name);
      // Same name in the root namespace: a different key.
      await admin.createKey(name);
      target.keys.push({ name });
      await expectError(admin.unwrapKey(wrapped, name), KmsUnwrapError, "authentication failed");
      // The namespace as a path prefix means the same as the header.
      const r = await http(target, "POST", `${ns}/${target.mount}/decrypt/${name}`, { ciphertext: wrapped });
      assert.strictEqual(r.status, 200);
      assert.strictEqual(r.body.data.plaintext, b64(key));
      await expectError(client(target, { namespace: unique("nons") }).readKey(name), KmsError);
    });

    await t.step("HTTP: batch encrypt/decrypt/rewrap, references, partial failures", async () => {
      const mk = await newKey(target, "batch");
      const keys = [randomKey(16), randomKey(24), randomKey(32)];
      const enc = await http(target, "POST", `${target.mount}/encrypt/${mk}`, {
        batch_input: keys.map((k, i) => ({ plaintext: b64(k), reference: `r${i}` })),
      });
      assert.strictEqual(enc.status, 200);
      const results = enc.body.data.batch_results as {
        ciphertext: string;
        key_version: number;
        reference: string;
      }[];
      assert.deepStrictEqual(results.map((r) => r.reference), ["r0", "r1", "r2"]);
      assert.ok(results.every((r) => r.key_version === 1 && r.ciphertext.startsWith("vault:v1:")));
      for (const r of results) remember(r.ciphertext);

      const dec = await http(target, "POST", `${target.mount}/decrypt/${mk}`, {
        batch_input: [...results.map((r) => ({ ciphertext: r.ciphertext, reference: r.reference })), {
          ciphertext: "vault:v1:AAAA",
          reference: "bad",
        }],
      });
      assert.strictEqual(dec.status, 400, "a user error in a batch → 400");
      assert.strictEqual(dec.body.errors, undefined, "the normal envelope, not an error envelope");
      const out = dec.body.data.batch_results as { plaintext?: string; error?: string; reference: string }[];
      assert.deepStrictEqual(out.slice(0, 3).map((r) => r.plaintext), keys.map(b64));
      assert.strictEqual(out[3].reference, "bad");
      assert.match(out[3].error!, /invalid ciphertext length|authentication failed/);

      const partial = await http(target, "POST", `${target.mount}/decrypt/${mk}`, {
        batch_input: [{ ciphertext: results[0].ciphertext }, { ciphertext: "nope" }],
        partial_failure_response_code: 200,
      });
      assert.strictEqual(partial.status, 200);
      assert.strictEqual(partial.body.data.batch_results[1].error, "invalid ciphertext: no prefix");
      const allFail = await http(target, "POST", `${target.mount}/decrypt/${mk}`, {
        batch_input: [{ ciphertext: "nope" }],
        partial_failure_response_code: 200,
      });
      assert.strictEqual(allFail.status, 400, "every item failed: still 400");

      await admin.rotateMasterKey(mk);
      const rw = await http(target, "POST", `${target.mount}/rewrap/${mk}`, {
        batch_input: results.map((r) => ({ ciphertext: r.ciphertext, reference: r.reference })),
      });
      assert.strictEqual(rw.status, 200);
      for (const r of rw.body.data.batch_results) {
        assert.strictEqual(r.key_version, 2);
        assert.match(r.ciphertext, /^vault:v2:/);
        remember(r.ciphertext);
      }
      const v1 = await http(target, "POST", `${target.mount}/encrypt/${mk}`, {
        batch_input: [{ plaintext: b64(keys[0]), key_version: 1 }, {
          plaintext: b64(keys[0]),
          key_version: 3,
        }],
      });
      assert.strictEqual(v1.status, 400);
      assert.match(v1.body.data.batch_results[0].ciphertext, /^vault:v1:/);
      assert.strictEqual(
        v1.body.data.batch_results[1].error,
        "requested version for encryption is higher than the latest key version",
      );
      const mixed = await http(target, "POST", `${target.mount}/encrypt/${mk}`, {
        batch_input: [{ plaintext: "AAAA", context: "AAAA" }, { plaintext: "AAAA" }],
      });
      assert.strictEqual(mixed.status, 400);
      assert.deepStrictEqual(mixed.body.errors, [
        "context should be set either in all the request blocks or in none",
      ]);
      const empty = await http(target, "POST", `${target.mount}/encrypt/${mk}`, { batch_input: [] });
      assert.strictEqual(empty.status, 400);
      assert.deepStrictEqual(empty.body.errors, ["missing batch input to process"]);
    });

    await t.step("HTTP: envelopes, key description, list, error catalogue, auth headers", async () => {
      const mk = await newKey(target, "http");
      const read = await http(target, "GET", `${target.mount}/keys/${mk}`);
      assert.strictEqual(read.status, 200);
      for (
        const f of [
          "request_id",
          "lease_id",
          "renewable",
          "lease_duration",
          "data",
          "wrap_info",
          "warnings",
          "auth",
        ]
      ) {
        assert.ok(f in read.body, `envelope field ${f}`);
      }
      const d = read.body.data;
      assert.strictEqual(d.name, mk);
      assert.strictEqual(d.type, "aes256-gcm96");
      assert.strictEqual(d.latest_version, 1);
      assert.strictEqual(d.min_decryption_version, 1);
      assert.strictEqual(d.min_encryption_version, 0);
      assert.strictEqual(d.derived, false);
      assert.strictEqual(d.exportable, false);
      assert.strictEqual(d.deletion_allowed, false);
      assert.deepStrictEqual(Object.keys(d.keys), ["1"]);
      assert.strictEqual(typeof d.keys["1"], "number");
      // Creating an existing key succeeds and changes nothing (Vault adds a warning, OpenBao 2.7 none).
      const again = await http(target, "POST", `${target.mount}/keys/${mk}`, { type: "aes128-gcm96" });
      assert.strictEqual(again.status, 200);
      assert.strictEqual(again.body.data.type, "aes256-gcm96");
      assert.ok(
        again.body.warnings === null ||
          again.body.warnings.some((w: string) => w.includes("already existed")),
      );

      const missing = await http(target, "GET", `${target.mount}/keys/${unique("absent")}`);
      assert.deepStrictEqual(missing, { status: 404, body: { errors: [] } });
      const list = await http(target, "GET", `${target.mount}/keys?list=true`);
      assert.ok(list.body.data.keys.includes(mk));

      const bad = async (ciphertext: string, error: string) => {
        const r = await http(target, "POST", `${target.mount}/decrypt/${mk}`, { ciphertext });
        assert.deepStrictEqual(r, { status: 400, body: { errors: [error] } }, ciphertext);
      };
      await bad("nope", "invalid ciphertext: no prefix");
      await bad("vault:v1", "invalid ciphertext: wrong number of fields");
      await bad("vault:vX:AAAA", "invalid ciphertext: version number could not be decoded");
      await bad("vault:v9:AAAA", "invalid ciphertext: version is too new");
      await bad("vault:v1:!!!!", "invalid ciphertext: could not decode base64");
      await bad("vault:v1:AAAA", "invalid ciphertext length");
      const none = await http(target, "POST", `${target.mount}/decrypt/${unique("absent")}`, {
        ciphertext: "vault:v1:AAAA",
      });
      assert.deepStrictEqual(none, { status: 400, body: { errors: ["encryption key not found"] } });
      const rot = await http(target, "POST", `${target.mount}/keys/${unique("absent")}/rotate`, {});
      assert.deepStrictEqual(rot, { status: 400, body: { errors: ["key not found"] } });
      const neg = await http(target, "POST", `${target.mount}/keys/${mk}/config`, {
        min_decryption_version: -1,
      });
      assert.deepStrictEqual(neg, {
        status: 400,
        body: { errors: ["min decryption version cannot be negative"] },
      });
      const noPlain = await http(target, "POST", `${target.mount}/encrypt/${mk}`, {});
      assert.deepStrictEqual(noPlain, { status: 400, body: { errors: ["missing plaintext to encrypt"] } });

      const enc = await http(target, "POST", `${target.mount}/encrypt/${mk}`, { plaintext: "AAAA" }, {
        bearer: true,
      });
      assert.strictEqual(enc.status, 200, "Authorization: Bearer is accepted");
      assert.strictEqual(enc.body.data.key_version, 1);
      const anon = await http(target, "POST", `${target.mount}/encrypt/${mk}`, { plaintext: "AAAA" }, {
        token: null,
      });
      // The double (like current Vault for a bad token) answers 403 permission denied; some servers
      // answer a request without any token with 400 "missing client token".
      assert.ok(anon.status === 403 || (REAL && anon.status === 400), `no token: HTTP ${anon.status}`);
      assert.match(anon.body.errors[0], /permission denied|missing client token/);
    });

    await doubleStep("calls are counted per operation and key", "needs the double's call log", async (d) => {
      const a = await newKey(target, "count-a");
      const b = await newKey(target, "count-b");
      d.calls.reset();
      const wrapped = [];
      for (let i = 0; i < 3; i++) wrapped.push(await admin.wrapKey(randomKey(16), a));
      wrapped.push(await admin.wrapKey(randomKey(16), b));
      for (const w of wrapped.slice(0, 2)) await admin.unwrapKey(w, a);
      await expectError(
        client(target, { token: "hvs.unknown" }).wrapKey(randomKey(16), b),
        KmsAccessDeniedError,
      );
      assert.deepStrictEqual(d.calls.byOpAndKey(), {
        [`encrypt ${a}`]: 3,
        [`encrypt ${b}`]: 2,
        [`decrypt ${a}`]: 2,
      });
      assert.strictEqual(d.calls.count({ status: 403 }), 1);
      assert.strictEqual(d.calls.total, 7);
      remember(...wrapped);
    });

    await doubleStep(
      "double: JS tokens, request size bound, policy globs and deny",
      "exercises the double's own API",
      async () => {
        const d = await startVaultDouble({ mount: "kms/transit", maxRequestBytes: 4096 });
        try {
          const t2: Target = {
            address: d.url,
            rootToken: d.rootToken,
            mount: d.mount,
            double: d,
            keys: [],
            policies: [],
            tokens: [],
            namespaces: [],
          };
          const k1 = await newKey(t2, "tenant-1");
          const k2 = await newKey(t2, "other");
          const glob = d.createToken([
            { path: `kms/transit/encrypt/pme-test-${RUN}-tenant-*`, capabilities: ["update"] },
            { path: `kms/transit/+/${k2}`, capabilities: ["update"] },
            { path: `kms/transit/decrypt/${k2}`, capabilities: ["deny"] },
          ]);
          remember(glob);
          const kms = client(t2, { token: glob });
          const w = await kms.wrapKey(randomKey(16), k1);
          await expectError(kms.unwrapKey(w, k1), KmsAccessDeniedError, k1);
          const w2 = await kms.wrapKey(randomKey(16), k2);
          remember(w, w2);
          await expectError(kms.unwrapKey(w2, k2), KmsAccessDeniedError, k2, "decrypt");
          d.revokeToken(glob);
          await expectError(kms.wrapKey(randomKey(16), k1), KmsAccessDeniedError);
          const big = await http(t2, "POST", `kms/transit/encrypt/${k1}`, { plaintext: "A".repeat(8000) });
          assert.strictEqual(big.status, 413);
          d.createNamespace("team/a");
          const inNs = client(t2, { namespace: "team/a" });
          await inNs.createKey(k1);
          assert.strictEqual(d.calls.count({ op: "create", key: k1, namespace: "team/a" }), 1);
        } finally {
          await d.close();
        }
      },
    );

    await t.step("redirects are not followed (the token never goes where a 3xx points)", async () => {
      const mk = await newKey(target, "redirect");
      let hits = 0;
      const ac = new AbortController();
      const redirector = Deno.serve(
        { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
        (req) => {
          hits++;
          return new Response(null, {
            status: 307,
            headers: { location: `${target.address}${new URL(req.url).pathname}` },
          });
        },
      );
      try {
        const before = double?.calls.total;
        const kms = client(target, { address: `http://127.0.0.1:${redirector.addr.port}` });
        await expectError(kms.wrapKey(randomKey(16), mk), KmsConfigError, "redirected", "307");
        assert.strictEqual(hits, 1);
        if (double) assert.strictEqual(double.calls.total, before, "the redirect target saw nothing");
      } finally {
        ac.abort();
        await redirector.finished;
      }
    });

    await t.step(
      "DEBUG=* and NODE_DEBUG in the environment print neither the token nor key bytes",
      async () => {
        const mk = await newKey(target, "debugenv");
        const token = await newToken(target, [{ key: mk, ops: ["encrypt", "decrypt"] }]);
        const key = randomKey(32);
        const root = new URL("..", import.meta.url);
        const code = `
        import { VaultKmsClient } from ${JSON.stringify(new URL("kms/vault.ts", root).href)};
        const kms = new VaultKmsClient({ address: Deno.env.get("T_ADDR"), token: Deno.env.get("T_TOKEN"),
          mount: Deno.env.get("T_MOUNT"), retries: 0 });
        const key = Uint8Array.from(atob(Deno.env.get("T_KEY")), (c) => c.charCodeAt(0));
        const w = await kms.wrapKey(key, Deno.env.get("T_MK"));
        const back = await kms.unwrapKey(w, Deno.env.get("T_MK"));
        console.log(back.length === key.length ? "round trip ok" : "mismatch");
        try { await new VaultKmsClient({ address: Deno.env.get("T_ADDR"), token: "hvs.wrong-token-value",
          retries: 0 }).wrapKey(key, Deno.env.get("T_MK")); } catch (e) { console.log(String(e)); }
      `;
        const out = await new Deno.Command(Deno.execPath(), {
          args: ["eval", "--quiet", code],
          cwd: root.pathname,
          env: {
            DEBUG: "*",
            NODE_DEBUG: "http,net,tls,https",
            T_ADDR: target.address,
            T_TOKEN: token,
            T_MOUNT: target.mount,
            T_KEY: b64(key),
            T_MK: mk,
            NO_COLOR: "1",
          },
          stdout: "piped",
          stderr: "piped",
        }).output();
        const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
        assert.ok(out.success, text);
        assert.ok(text.includes("round trip ok"), text);
        assert.ok(text.includes("KmsAccessDeniedError"), text);
        for (const s of [token, b64(key), "hvs.wrong-token-value"]) {
          assert.ok(!text.includes(s), "a secret was printed");
        }
      },
    );

    await t.step("errors never contain the token, key bytes or wrapped keys", () => {
      assert.ok(seenErrors.length >= 30, `only ${seenErrors.length} errors seen`);
      for (const e of seenErrors) {
        const err = e as KmsError;
        const texts = [
          String(err),
          err.message,
          err.stack ?? "",
          JSON.stringify(err.cause ?? null),
          Deno.inspect(err, { depth: 8 }),
        ];
        for (const text of texts) {
          for (const s of secrets) {
            assert.ok(!text.includes(s), `${err.name} leaks a secret: ${err.message}`);
          }
        }
      }
    });
  } finally {
    await cleanUp(target);
  }
});
