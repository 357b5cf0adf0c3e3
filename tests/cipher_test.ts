/**
 * Ciphers and AADs: module framing, agreement with an independent AES implementation (node:crypto,
 * WebCrypto), all key sizes, AAD layout, signatures, typed errors for wrong keys, wrong AADs and bad
 * keys, and the node:crypto/WebCrypto hybrid: both paths give the same bytes and the same errors,
 * around the size thresholds too.
 *
 * @module
 */

import assert from "node:assert";
import { type CipherGCM, createCipheriv } from "node:crypto";
import {
  AesKey,
  CTR_OVERHEAD,
  decryptModule,
  encryptModule,
  GCM_OVERHEAD,
  setSyncThresholds,
  signFooter,
  type SyncThresholds,
  syncThresholds,
  verifyFooterSignature,
} from "../pme/cipher.ts";
import { fileAad, moduleAad, ModuleType } from "../pme/aad.ts";
import { PmeAuthError, PmeConfigError, PmeFormatError, PmeUnsupportedError } from "../pme/errors.ts";

const te = new TextEncoder();
const KEYS = [16, 24, 32].map((n) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff));
const AAD = te.encode("file-aad\x02\x00\x00\x05\x00\x03\x00");

function u32(b: Uint8Array): number {
  return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
}

Deno.test("GCM modules: framing, node:crypto agreement, all key sizes", async () => {
  const plaintext = Uint8Array.from({ length: 1000 }, (_, i) => i % 251);
  for (const raw of KEYS) {
    const key = await AesKey.import(raw);
    const module = await encryptModule(key, "gcm", plaintext, AAD);
    assert.strictEqual(module.length, plaintext.length + GCM_OVERHEAD);
    assert.strictEqual(u32(module), 12 + plaintext.length + 16);
    // An independent implementation with the module's nonce must give the same ciphertext and tag
    // (Deno's node:crypto has no aes-192-gcm; 192-bit GCM is cross-checked against pyarrow instead).
    if (raw.length !== 24) {
      const c = createCipheriv(`aes-${raw.length * 8}-gcm`, raw, module.subarray(4, 16)) as CipherGCM;
      c.setAAD(AAD);
      const expected = new Uint8Array([...c.update(plaintext), ...c.final(), ...c.getAuthTag()]);
      assert.deepStrictEqual(module.subarray(16), expected);
    }
    assert.deepStrictEqual(await decryptModule(key, "gcm", module, AAD), plaintext);
  }
});

Deno.test("CTR modules: framing and keystream with counter nonce||00000001", async () => {
  const plaintext = Uint8Array.from({ length: 70000 }, (_, i) => (i * 13) & 0xff); // > one 2^12-block run
  for (const raw of KEYS) {
    const key = await AesKey.import(raw);
    const module = await encryptModule(key, "ctr", plaintext, new Uint8Array(0));
    assert.strictEqual(module.length, plaintext.length + CTR_OVERHEAD);
    assert.strictEqual(u32(module), 12 + plaintext.length);
    const iv = new Uint8Array(16);
    iv.set(module.subarray(4, 16));
    iv[15] = 1;
    const c = createCipheriv(`aes-${raw.length * 8}-ctr`, raw, iv);
    assert.deepStrictEqual(module.subarray(16), new Uint8Array([...c.update(plaintext), ...c.final()]));
    assert.deepStrictEqual(await decryptModule(key, "ctr", module, new Uint8Array(0)), plaintext);
  }
});

Deno.test("nonces are fresh per module", async () => {
  const key = await AesKey.import(KEYS[0]);
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const m = await encryptModule(key, "gcm", new Uint8Array(8), AAD);
    seen.add(Array.from(m.subarray(4, 16)).join(","));
  }
  assert.strictEqual(seen.size, 200);
});

Deno.test("wrong key, wrong AAD, flipped bytes and bad framing are typed errors", async () => {
  const key = await AesKey.import(KEYS[0]);
  const other = await AesKey.import(KEYS[2]);
  const module = await encryptModule(key, "gcm", te.encode("secret page"), AAD);
  await assert.rejects(() => decryptModule(other, "gcm", module, AAD), PmeAuthError);
  await assert.rejects(() => decryptModule(key, "gcm", module, te.encode("other aad")), PmeAuthError);
  for (let i = 4; i < module.length; i++) {
    const bad = module.slice();
    bad[i] ^= 0x01;
    await assert.rejects(() => decryptModule(key, "gcm", bad, AAD), PmeAuthError, `flip at ${i}`);
  }
  const longer = module.slice();
  longer[0] += 1;
  await assert.rejects(() => decryptModule(key, "gcm", longer, AAD), PmeFormatError);
  await assert.rejects(() => decryptModule(key, "gcm", module.subarray(0, 20), AAD), PmeFormatError);
});

Deno.test("keys must be 16, 24 or 32 bytes", async () => {
  for (const n of [0, 15, 17, 31, 33, 64]) {
    await assert.rejects(() => AesKey.import(new Uint8Array(n).fill(1)), PmeConfigError, `${n} bytes`);
  }
});

Deno.test("module AADs follow Encryption.md: type byte and little-endian 16-bit ordinals", () => {
  const f = fileAad(te.encode("pre"), new Uint8Array([9, 8, 7, 6, 5, 4, 3, 2]));
  assert.deepStrictEqual(f, new Uint8Array([0x70, 0x72, 0x65, 9, 8, 7, 6, 5, 4, 3, 2]));
  assert.deepStrictEqual(moduleAad(f, ModuleType.Footer), new Uint8Array([...f, 0]));
  // Data page header, row group 0, column 5, page 3 (the digest's example).
  assert.deepStrictEqual(
    moduleAad(f, ModuleType.DataPageHeader, 0, 5, 3),
    new Uint8Array([...f, 4, 0, 0, 5, 0, 3, 0]),
  );
  assert.deepStrictEqual(
    moduleAad(f, ModuleType.DataPage, 258, 1, 32767),
    new Uint8Array([...f, 2, 2, 1, 1, 0, 0xff, 0x7f]),
  );
  // Non-page modules take no page ordinal.
  assert.deepStrictEqual(
    moduleAad(f, ModuleType.ColumnMetaData, 1, 2, 99),
    new Uint8Array([...f, 1, 1, 0, 2, 0]),
  );
  assert.deepStrictEqual(
    moduleAad(f, ModuleType.BloomFilterBitset, 0, 0),
    new Uint8Array([...f, 9, 0, 0, 0, 0]),
  );
  assert.throws(() => moduleAad(f, ModuleType.DataPage, 0, 0, 32768), PmeUnsupportedError);
  assert.throws(() => moduleAad(f, ModuleType.ColumnIndex, 40000, 0), PmeUnsupportedError);
});

Deno.test("plaintext-footer signatures verify over the raw bytes only", async () => {
  const key = await AesKey.import(KEYS[1]);
  const footer = te.encode("footer thrift bytes");
  const aad = moduleAad(fileAad(undefined, new Uint8Array(8)), ModuleType.Footer);
  const sig = await signFooter(key, footer, aad);
  assert.strictEqual(sig.length, 28);
  assert.ok(await verifyFooterSignature(key, footer, aad, sig));
  const tampered = footer.slice();
  tampered[3] ^= 1;
  assert.ok(!(await verifyFooterSignature(key, tampered, aad, sig)));
  assert.ok(!(await verifyFooterSignature(await AesKey.import(KEYS[0]), footer, aad, sig)));
  assert.ok(!(await verifyFooterSignature(key, footer, new Uint8Array([...aad.subarray(0, -1), 1]), sig)));
});

// ---- node:crypto / WebCrypto hybrid (modules up to the thresholds are done synchronously) ----

/** Runs `fn` with the given cut-over sizes, then restores the previous ones. */
async function withThresholds(t: Partial<SyncThresholds>, fn: () => Promise<void>): Promise<void> {
  const previous = setSyncThresholds(t);
  try {
    await fn();
  } finally {
    setSyncThresholds(previous);
  }
}

const ALL_NODE = { gcm: Infinity, ctr: Infinity };
const ALL_WEB = { gcm: -1, ctr: -1 };
const PATHS = [["node:crypto", ALL_NODE], ["WebCrypto", ALL_WEB]] as const;

/** The module's body computed independently with WebCrypto from its nonce. */
async function reference(
  raw: Uint8Array,
  cipher: "gcm" | "ctr",
  module: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array> {
  const iv = module.slice(4, 16);
  if (cipher === "gcm") {
    const k = await crypto.subtle.importKey("raw", raw.slice(), "AES-GCM", false, ["encrypt"]);
    return new Uint8Array(
      await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: aad.slice() }, k, plaintext.slice()),
    );
  }
  const counter = new Uint8Array(16);
  counter.set(iv);
  counter[15] = 1;
  const k = await crypto.subtle.importKey("raw", raw.slice(), "AES-CTR", false, ["encrypt"]);
  return new Uint8Array(
    await crypto.subtle.encrypt({ name: "AES-CTR", counter, length: 32 }, k, plaintext.slice()),
  );
}

/** Plaintext sizes around both default thresholds and the AES block size. */
function sizesAround(): number[] {
  const { gcm, ctr } = syncThresholds();
  const near = (t: number) => [t - AAD.length - 1, t - AAD.length, t - AAD.length + 1, t - 1, t, t + 1];
  return [0, 1, 15, 16, 17, 1000, ...near(gcm), ...near(ctr)];
}

Deno.test("hybrid: node:crypto and WebCrypto give the same bytes for all key sizes, GCM and CTR, any AAD", async () => {
  for (const [path, t] of PATHS) {
    await withThresholds(t, async () => {
      for (const raw of KEYS) {
        const key = await AesKey.import(raw);
        for (const cipher of ["gcm", "ctr"] as const) {
          for (const aad of [new Uint8Array(0), AAD]) {
            for (const n of [0, 1, 15, 16, 17, 1000, 5000, 20000]) {
              const what = `${path} ${raw.length * 8}-bit ${cipher} aad=${aad.length} n=${n}`;
              const plaintext = Uint8Array.from({ length: n }, (_, i) => (i * 31 + n) & 0xff);
              const module = await encryptModule(key, cipher, plaintext, aad);
              assert.strictEqual(module.length, n + (cipher === "gcm" ? GCM_OVERHEAD : CTR_OVERHEAD), what);
              assert.strictEqual(u32(module), module.length - 4, what);
              assert.deepStrictEqual(
                module.subarray(16),
                await reference(raw, cipher, module, plaintext, aad),
                what,
              );
              // Decrypt on the other path.
              const other = t === ALL_NODE ? ALL_WEB : ALL_NODE;
              await withThresholds(other, async () => {
                assert.deepStrictEqual(await decryptModule(key, cipher, module, aad), plaintext, what);
              });
              assert.deepStrictEqual(await decryptModule(key, cipher, module, aad), plaintext, what);
            }
          }
        }
      }
    });
  }
});

Deno.test("hybrid: sizes around the default thresholds round-trip and match WebCrypto", async () => {
  setSyncThresholds();
  for (const raw of KEYS) {
    const key = await AesKey.import(raw);
    for (const cipher of ["gcm", "ctr"] as const) {
      for (const aad of [new Uint8Array(0), AAD]) {
        for (const n of sizesAround()) {
          const what = `${raw.length * 8}-bit ${cipher} aad=${aad.length} n=${n}`;
          const plaintext = crypto.getRandomValues(new Uint8Array(n));
          const module = await encryptModule(key, cipher, plaintext, aad);
          assert.deepStrictEqual(
            module.subarray(16),
            await reference(raw, cipher, module, plaintext, aad),
            what,
          );
          assert.deepStrictEqual(await decryptModule(key, cipher, module, aad), plaintext, what);
        }
      }
    }
  }
});

Deno.test("hybrid: the threshold picks the implementation (WebCrypto calls counted)", async () => {
  const subtle = crypto.subtle as unknown as Record<string, unknown>;
  const calls = { encrypt: 0, decrypt: 0 };
  for (const op of ["encrypt", "decrypt"] as const) {
    const original = crypto.subtle[op];
    subtle[op] = function (this: SubtleCrypto, ...args: unknown[]) {
      calls[op]++;
      return Reflect.apply(original, crypto.subtle, args);
    };
  }
  try {
    setSyncThresholds();
    const { gcm, ctr } = syncThresholds();
    const key = await AesKey.import(KEYS[0]);
    const key192 = await AesKey.import(KEYS[1]);
    const count = async (fn: () => Promise<unknown>) => {
      calls.encrypt = calls.decrypt = 0;
      await fn();
      return calls.encrypt + calls.decrypt;
    };
    const roundTrip = async (k: AesKey, cipher: "gcm" | "ctr", n: number, aad: Uint8Array) => {
      const m = await encryptModule(k, cipher, new Uint8Array(n), aad);
      await decryptModule(k, cipher, m, aad);
    };
    assert.strictEqual(await count(() => roundTrip(key, "gcm", gcm - AAD.length, AAD)), 0);
    assert.strictEqual(await count(() => roundTrip(key, "gcm", gcm - AAD.length + 1, AAD)), 2);
    assert.strictEqual(await count(() => roundTrip(key, "gcm", gcm, new Uint8Array(0))), 0);
    assert.strictEqual(await count(() => roundTrip(key, "ctr", ctr, AAD)), 0); // CTR has no AAD
    assert.strictEqual(await count(() => roundTrip(key, "ctr", ctr + 1, AAD)), 2);
    // Deno's node:crypto has no aes-192-gcm: 192-bit GCM always uses WebCrypto; CTR does not need it.
    assert.strictEqual(await count(() => roundTrip(key192, "gcm", 10, AAD)), 2);
    assert.strictEqual(await count(() => roundTrip(key192, "ctr", 10, AAD)), 0);
    const aad = moduleAad(fileAad(undefined, new Uint8Array(8)), ModuleType.Footer);
    assert.strictEqual(
      await count(async () => {
        const sig = await signFooter(key, te.encode("footer"), aad);
        assert.ok(await verifyFooterSignature(key, te.encode("footer"), aad, sig));
      }),
      0,
    );
  } finally {
    delete subtle.encrypt;
    delete subtle.decrypt;
    setSyncThresholds();
  }
  assert.strictEqual(typeof crypto.subtle.encrypt, "function");
});

Deno.test("hybrid: tampered bytes, wrong AAD and wrong key are PmeAuthError on both paths", async () => {
  for (const [path, t] of PATHS) {
    await withThresholds(t, async () => {
      for (const raw of KEYS) {
        const key = await AesKey.import(raw);
        const wrong = await AesKey.import(raw.map((b) => b ^ 0x55));
        for (const n of [0, 33, 4096]) {
          const what = `${path} ${raw.length * 8}-bit n=${n}`;
          const module = await encryptModule(key, "gcm", crypto.getRandomValues(new Uint8Array(n)), AAD);
          // Nonce, first/last ciphertext byte, first/last tag byte.
          for (const i of new Set([4, 15, 16, module.length - 17, module.length - 16, module.length - 1])) {
            const bad = module.slice();
            bad[i] ^= 0x80;
            await assert.rejects(
              () => decryptModule(key, "gcm", bad, AAD),
              PmeAuthError,
              `${what} flip ${i}`,
            );
          }
          await assert.rejects(
            () => decryptModule(key, "gcm", module, new Uint8Array(0)),
            PmeAuthError,
            what,
          );
          await assert.rejects(() => decryptModule(wrong, "gcm", module, AAD), PmeAuthError, what);
          const sigAad = te.encode("footer aad");
          const sig = await signFooter(key, module, sigAad);
          assert.ok(await verifyFooterSignature(key, module, sigAad, sig), what);
          const badSig = sig.slice();
          badSig[27] ^= 1;
          assert.ok(!(await verifyFooterSignature(key, module, sigAad, badSig)), what);
          assert.ok(!(await verifyFooterSignature(wrong, module, sigAad, sig)), what);
        }
      }
    });
  }
});

Deno.test("hybrid: signatures made on one path verify on the other", async () => {
  const aad = te.encode("aad");
  for (const raw of KEYS) {
    const key = await AesKey.import(raw);
    for (const n of [0, 100, 10000]) {
      const footer = crypto.getRandomValues(new Uint8Array(n));
      let sig: Uint8Array = new Uint8Array(0);
      await withThresholds(ALL_NODE, async () => void (sig = await signFooter(key, footer, aad)));
      await withThresholds(
        ALL_WEB,
        async () => assert.ok(await verifyFooterSignature(key, footer, aad, sig)),
      );
      await withThresholds(ALL_WEB, async () => void (sig = await signFooter(key, footer, aad)));
      await withThresholds(
        ALL_NODE,
        async () => assert.ok(await verifyFooterSignature(key, footer, aad, sig)),
      );
    }
  }
});

Deno.test("keys: the caller's bytes are copied, not kept or changed, and the key exposes nothing", async () => {
  const bytes = KEYS[2].slice();
  const key = await AesKey.import(bytes);
  assert.deepStrictEqual(bytes, KEYS[2]);
  const module = await encryptModule(key, "gcm", te.encode("x"), AAD);
  bytes.fill(0); // the caller zeroes its copy; the key still works, on both paths
  for (const [, t] of PATHS) {
    await withThresholds(t, async () => {
      assert.deepStrictEqual(await decryptModule(key, "gcm", module, AAD), te.encode("x"));
    });
  }
  assert.deepStrictEqual(Object.getOwnPropertyNames(key), []);
  assert.strictEqual(JSON.stringify(key), "{}");
  assert.throws(() => AesKey.from(new Uint8Array(20).fill(1)), PmeConfigError);
});

Deno.test("setSyncThresholds validates, returns the previous values and restores the defaults", () => {
  const defaults = setSyncThresholds();
  const before = syncThresholds();
  assert.deepStrictEqual(setSyncThresholds({ gcm: 10 }), before);
  assert.deepStrictEqual(syncThresholds(), { ...before, gcm: 10 });
  assert.throws(() => setSyncThresholds({ ctr: NaN }), PmeConfigError);
  assert.deepStrictEqual(syncThresholds(), { ...before, gcm: 10 });
  setSyncThresholds();
  assert.deepStrictEqual(syncThresholds(), before);
  assert.ok(defaults.gcm > 0 && defaults.ctr > 0);
});
