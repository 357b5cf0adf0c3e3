/**
 * Ciphers and AADs: module framing, agreement with an independent AES implementation (node:crypto),
 * all key sizes, AAD layout, signatures, and typed errors for wrong keys, wrong AADs and bad keys.
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
  signFooter,
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
