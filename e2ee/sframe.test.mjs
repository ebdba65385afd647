// Tests for sframe.js and vectors.js. Run from the repository root:
//   node --test e2ee/
// Node's own test runner and WebCrypto only; no npm packages.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { hkdfSync } from 'node:crypto';

import {
  SUITES, SFrameError, SFrameKey, SFrameReceiver, SFrameSender, DEFAULT_MAX_COUNTER, REPLAY_WINDOW,
  AES_128_GCM_SHA256_128, AES_256_GCM_SHA512_128, AES_128_CTR_HMAC_SHA256_80,
  AES_128_CTR_HMAC_SHA256_64, AES_128_CTR_HMAC_SHA256_32,
  encodeHeader, parseHeader, deriveKeySalt, ratchet, makeKid, splitKid, getSuite,
} from './sframe.js';
import { listVectors, runVectors, parseVectorsJson, hexToBytes, bytesToHex } from './vectors.js';

// ---------------------------------------------------------------------------
// Vector files

/** The first of `candidates` that exists, or null. */
function firstExisting(...candidates) {
  for (const p of candidates) if (existsSync(p)) return p;
  return null;
}

const here = (rel) => fileURLToPath(new URL(rel, import.meta.url));

// The project copy (e2ee/testdata) is preferred; the shared copy is the
// fallback while it is being added.
const RFC_VECTORS = firstExisting(
  here('./testdata/rfc9605-test-vectors.json'),
  '/work/shared/testvectors/sframe/rfc9605-test-vectors.json',
);
const PARLEY_VECTORS = firstExisting(here('./testdata/parley-ratchet-vectors.json'));

test('RFC 9605 vectors (one subtest per vector)', async (t) => {
  assert.ok(RFC_VECTORS, 'rfc9605-test-vectors.json not found in e2ee/testdata/ nor /work/shared/testvectors/sframe/');
  const text = readFileSync(RFC_VECTORS, 'utf8');
  const cases = listVectors(text);
  const sections = new Set(cases.map((c) => c.name.replace(/\[.*$/, '')));
  for (const s of ['header', 'aes_ctr_hmac', 'aes_256_ctr_hmac', 'sframe']) assert.ok(sections.has(s), `section ${s} present`);
  for (const c of cases) await t.test(c.name, c.run);
});

test('runVectors summary on the RFC 9605 file', async () => {
  assert.ok(RFC_VECTORS);
  const text = readFileSync(RFC_VECTORS, 'utf8');
  const r = await runVectors(text);
  assert.deepEqual(r.failures, []);
  assert.equal(r.failed, 0);
  assert.equal(r.passed, listVectors(text).length);
  assert.ok(r.passed >= 300, `expected the full RFC set, ran ${r.passed}`);
});

test('runVectors reports a corrupted vector as a failure', async () => {
  assert.ok(RFC_VECTORS);
  const doc = parseVectorsJson(readFileSync(RFC_VECTORS, 'utf8'));
  const v = doc.sframe[3];
  v.ct = v.ct.slice(0, -2) + (v.ct.slice(-2) === '00' ? '01' : '00');
  const r = await runVectors({ sframe: [v], bogus: [] });
  assert.equal(r.passed, 0);
  assert.equal(r.failed, 2);
  assert.match(r.failures[0].message, /sealAt/);
  assert.match(r.failures[1].message, /unknown vector section/);
});

test('parseVectorsJson keeps 64-bit integers exact', () => {
  const doc = parseVectorsJson('{"a":[{"kid":18446744073709551615,"ctr":7,"s":"x\\"18446744073709551615"}]}');
  assert.equal(doc.a[0].kid, '18446744073709551615');
  assert.equal(doc.a[0].ctr, 7);
  assert.equal(doc.a[0].s, 'x"18446744073709551615');
});

test('Parley ratchet vectors (Go <-> JS)', { skip: PARLEY_VECTORS ? false : 'e2ee/testdata/parley-ratchet-vectors.json does not exist yet' }, async (t) => {
  const text = readFileSync(PARLEY_VECTORS, 'utf8');
  const doc = parseVectorsJson(text);
  if (doc.ratchet_label_hex !== undefined) assert.equal(doc.ratchet_label_hex, bytesToHex(enc.encode('SFrame 1.0 Ratchet')));
  const cases = listVectors(text);
  assert.ok(cases.length > 0, 'no vectors in the file');
  for (const c of cases) await t.test(c.name, c.run);
});

// ---------------------------------------------------------------------------
// Helpers

const enc = new TextEncoder();
const META = enc.encode('parley/1 media\x01\x00');
const BASE = hexToBytes('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f');
const OTHER = hexToBytes('1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100');

/** A sender and a receiver sharing BASE under `kid`. */
async function pair(suite = AES_128_GCM_SHA256_128, kid = makeKid(1, 2, 0), opts = {}) {
  const tx = new SFrameSender(suite, kid, BASE, opts);
  const rx = new SFrameReceiver(suite);
  await rx.addKey(kid, BASE);
  return { tx, rx, kid };
}

const zeroStats = { opened: 0, short: 0, badHeader: 0, unknownKid: 0, auth: 0, replay: 0 };

/** Asserts the receiver's stats equal zero except for `expect`. */
function assertStats(rx, expect) {
  assert.deepEqual({ ...rx.stats }, { ...zeroStats, ...expect });
}

const flip = (bytes, i, bit = 1) => {
  const c = Uint8Array.from(bytes);
  c[i] ^= bit;
  return c;
};

// ---------------------------------------------------------------------------
// Header

test('header: encode/parse round trip at every length boundary', () => {
  const values = [0n, 1n, 7n, 8n, 255n, 256n, 65535n, 65536n, (1n << 48n) - 1n, 1n << 48n, (1n << 53n) + 1n, (1n << 64n) - 1n];
  for (const kid of values) {
    for (const ctr of values) {
      const h = encodeHeader(kid, ctr);
      const p = parseHeader(h);
      assert.equal(p.kid, kid);
      assert.equal(p.ctr, ctr);
      assert.equal(p.length, h.length);
    }
  }
  assert.deepEqual(encodeHeader(3, 5), Uint8Array.of(0x35));
  assert.deepEqual(encodeHeader(0x1234n, 0xabn), Uint8Array.of(0x98, 0x12, 0x34, 0xab));
});

test('header: malformed input throws a typed SFrameError', () => {
  const bad = [
    [],                       // empty
    [0x80],                   // X=1, KID byte missing
    [0x98, 0x12],             // KLEN=2 but 1 byte
    [0x0f, 0, 0, 0, 0, 0, 0], // CLEN=8 but 6 bytes
    [0x80, 0x05],             // KID 5 must be in the config byte
    [0x90, 0x00, 0x09],       // leading zero byte in KID
    [0x08, 0x07],             // CTR 7 must be in the config byte
    [0x09, 0x00, 0xff],       // leading zero byte in CTR
  ];
  for (const b of bad) {
    assert.throws(() => parseHeader(Uint8Array.from(b)), (e) => e instanceof SFrameError && e.code === 'bad-header', `header ${bytesToHex(Uint8Array.from(b))}`);
  }
  assert.throws(() => encodeHeader(-1n, 0n), { code: 'bad-argument' });
  assert.throws(() => encodeHeader(0n, 1n << 64n), { code: 'bad-argument' });
  assert.throws(() => encodeHeader(2 ** 53, 0), { code: 'bad-argument' });
  assert.throws(() => parseHeader('00'), { code: 'bad-argument' });
});

// ---------------------------------------------------------------------------
// Key schedule and ratchet, cross-checked against node:crypto's HKDF

test('ratchet = HKDF(ikm=k, salt="", info="SFrame 1.0 Ratchet", Nh) for suites 4 and 5', async () => {
  for (const [suite, hash, nh] of [[4, 'sha256', 32], [5, 'sha512', 64]]) {
    const want = new Uint8Array(hkdfSync(hash, BASE, new Uint8Array(0), enc.encode('SFrame 1.0 Ratchet'), nh));
    const got = await ratchet(suite, BASE);
    assert.equal(bytesToHex(got), bytesToHex(want), `suite ${suite}`);
    assert.equal(got.length, nh);
    // A chain: each step feeds the next.
    const want2 = new Uint8Array(hkdfSync(hash, want, new Uint8Array(0), enc.encode('SFrame 1.0 Ratchet'), nh));
    assert.equal(bytesToHex(await ratchet(suite, got)), bytesToHex(want2));
  }
});

test('key schedule matches node:crypto HKDF for a Parley KID', async () => {
  const kid = makeKid(0xbeef, 0x1234, 0x56);
  for (const suite of [4, 5]) {
    const s = getSuite(suite);
    const hash = s.hash === 'SHA-256' ? 'sha256' : 'sha512';
    const m = await deriveKeySalt(suite, kid, BASE);
    const kidBytes = hexToBytes(kid.toString(16).padStart(16, '0'));
    const suiteBytes = Uint8Array.of(0, suite);
    const keyInfo = Buffer.concat([enc.encode('SFrame 1.0 Secret key '), kidBytes, suiteBytes]);
    const saltInfo = Buffer.concat([enc.encode('SFrame 1.0 Secret salt '), kidBytes, suiteBytes]);
    assert.equal(bytesToHex(m.keyLabel), bytesToHex(keyInfo));
    assert.equal(bytesToHex(m.key), bytesToHex(new Uint8Array(hkdfSync(hash, BASE, new Uint8Array(0), keyInfo, s.Nk))));
    assert.equal(bytesToHex(m.salt), bytesToHex(new Uint8Array(hkdfSync(hash, BASE, new Uint8Array(0), saltInfo, s.Nn))));
  }
});

test('SUITES table', () => {
  assert.deepEqual(Object.keys(SUITES).map(Number), [1, 2, 3, 4, 5]);
  assert.deepEqual([1, 2, 3, 4, 5].map((i) => SUITES[i].Nt), [10, 8, 4, 16, 16]);
  assert.deepEqual([1, 2, 3, 4, 5].map((i) => SUITES[i].Nk), [48, 48, 48, 16, 32]);
  assert.deepEqual([1, 2, 3, 4, 5].map((i) => SUITES[i].Nh), [32, 32, 32, 32, 64]);
  assert.ok([1, 2, 3, 4, 5].every((i) => SUITES[i].Nn === 12 && SUITES[i].id === i));
  assert.ok(Object.isFrozen(SUITES) && Object.isFrozen(SUITES[4]));
  assert.throws(() => getSuite(6), { code: 'unknown-suite' });
  assert.throws(() => new SFrameReceiver(0), { code: 'unknown-suite' });
});

// ---------------------------------------------------------------------------
// Parley KIDs

test('makeKid / splitKid', () => {
  assert.equal(makeKid(0, 0, 0), 0n);
  assert.equal(makeKid(1, 2, 3), 0x01000203n);
  assert.equal(makeKid(0xffff, 0xffff, 0xff), (1n << 40n) - 1n);
  assert.deepEqual(splitKid(makeKid(0xabcd, 0x1234, 0x56)), { index: 0xabcd, generation: 0x1234, step: 0x56 });
  assert.deepEqual(splitKid(0x01000203), { index: 1, generation: 2, step: 3 });
  assert.deepEqual(splitKid((1n << 40n) - 1n), { index: 0xffff, generation: 0xffff, step: 0xff });
  assert.throws(() => makeKid(0x10000, 0, 0), { code: 'bad-argument' });
  assert.throws(() => makeKid(0, -1, 0), { code: 'bad-argument' });
  assert.throws(() => makeKid(0, 0, 256), { code: 'bad-argument' });
  assert.throws(() => makeKid(0, 0, 1.5), { code: 'bad-argument' });
  assert.throws(() => splitKid(1n << 40n), { code: 'bad-argument' });
});

// ---------------------------------------------------------------------------
// Sender and receiver

test('round trip for every suite, empty and large plaintexts', async () => {
  for (const suite of [AES_128_CTR_HMAC_SHA256_80, AES_128_CTR_HMAC_SHA256_64, AES_128_CTR_HMAC_SHA256_32, AES_128_GCM_SHA256_128, AES_256_GCM_SHA512_128]) {
    const { tx, rx } = await pair(suite);
    const big = new Uint8Array(200_000).map((_, i) => i * 7);
    for (const pt of [new Uint8Array(0), enc.encode('hello'), big]) {
      const frame = await tx.seal(META, pt);
      assert.equal(frame.length, encodeHeader(tx.kid, tx.nextCounter - 1n).length + pt.length + SUITES[suite].Nt);
      assert.deepEqual(await rx.open(META, frame), pt);
    }
    assertStats(rx, { opened: 3 });
  }
});

test('ArrayBuffer inputs (what encoded frames carry) are accepted', async () => {
  const { tx, rx } = await pair();
  const frame = await tx.seal(META.slice().buffer, enc.encode('x').buffer);
  assert.deepEqual(await rx.open(META.slice().buffer, frame.slice().buffer), enc.encode('x'));
  // A view into a larger buffer.
  const frame2 = await tx.seal(META, enc.encode('y'));
  const big = new Uint8Array(frame2.length + 10);
  big.set(frame2, 5);
  assert.deepEqual(await rx.open(META, big.subarray(5, 5 + frame2.length)), enc.encode('y'));
});

test('counters start at 0 and count up; KID is in the header', async () => {
  const { tx } = await pair();
  await tx.ready();
  assert.equal(tx.nextCounter, 0n);
  for (let i = 0n; i < 10n; i++) {
    const h = parseHeader(await tx.seal(META, enc.encode('f')));
    assert.equal(h.ctr, i);
    assert.equal(h.kid, makeKid(1, 2, 0));
  }
});

test('malformed frames: null and the right stats counter, never a throw', async () => {
  const kid = makeKid(1, 2, 0); // 4-byte KID: header = config || KID(4) || CTR
  const { tx, rx } = await pair(AES_128_GCM_SHA256_128, kid);
  const frames = [];
  for (let i = 0; i < 10; i++) frames.push(await tx.seal(META, enc.encode(`frame ${i}`)));
  const f = frames[9]; // ctr 9: config 0xb8 || 01 00 02 00 || 09
  const hl = parseHeader(f).length;
  assert.equal(hl, 6);

  /** [name, metadata, frame, expected stats key] */
  const cases = [
    ['empty', META, new Uint8Array(0), 'short'],
    ['1 byte: header only', META, Uint8Array.of(0x00), 'short'],
    ['1 byte: KID bytes missing', META, Uint8Array.of(0x80), 'badHeader'],
    ['truncated header', META, f.subarray(0, hl - 1), 'badHeader'],
    ['header + less than a tag', META, f.subarray(0, hl + 15), 'short'],
    ['non-minimal header', META, Uint8Array.of(0x88, 0x05, ...f.subarray(hl)), 'badHeader'],
    ['not bytes', META, 'frame', 'badHeader'],
    ['metadata not bytes', null, f, 'badHeader'],
    ['unknown KID', META, (async () => new SFrameSender(4, makeKid(9, 9, 9), BASE).seal(META, enc.encode('x')))(), 'unknownKid'],
    ['flipped bit in header KID', META, flip(f, 4), 'unknownKid'],
    ['flipped bit in header CTR', META, flip(f, hl - 1, 0x02), 'auth'],
    ['flipped Y bit in config byte', META, flip(f, 0, 0x08), 'auth'],
    ['flipped X bit in config byte', META, flip(f, 0, 0x80), 'badHeader'], // reads as KID 3, CTR 0x01: non-minimal
    ['flipped bit in ciphertext', META, flip(f, hl + 2), 'auth'],
    ['flipped bit in tag', META, flip(f, f.length - 1, 0x80), 'auth'],
    ['flipped bit in metadata', flip(META, 0), f, 'auth'],
    ['missing metadata', new Uint8Array(0), f, 'auth'],
    ['wrong key for the KID', META, (async () => new SFrameSender(4, kid, OTHER).seal(META, enc.encode('x')))(), 'auth'],
  ];
  let expect = {};
  for (const [name, md, fr, reason] of cases) {
    const got = await rx.open(md, await fr);
    assert.equal(got, null, name);
    expect = { ...expect, [reason]: (expect[reason] ?? 0) + 1 };
    assertStats(rx, expect);
  }
  // None of the failures moved the window: every genuine frame still opens, once.
  for (const fr of frames) assert.notEqual(await rx.open(META, fr), null);
  expect = { ...expect, opened: 10 };
  assertStats(rx, expect);
  assert.equal(await rx.open(META, frames[3]), null, 'replayed counter');
  assertStats(rx, { ...expect, replay: 1 });
});

test('replay window: out of order within 1024, below the window rejected', async () => {
  const { tx, rx } = await pair();
  const frames = [];
  for (let i = 0; i < 1100; i++) frames.push(await tx.seal(META, Uint8Array.of(i & 0xff)));
  assert.equal(REPLAY_WINDOW, 1024);
  assert.notEqual(await rx.open(META, frames[1099]), null); // highest = 1099
  assert.equal(await rx.open(META, frames[0]), null, 'far below the window');
  assert.equal(await rx.open(META, frames[1099 - 1024]), null, 'exactly 1024 behind: outside');
  assert.notEqual(await rx.open(META, frames[1099 - 1023]), null, '1023 behind: inside');
  assert.equal(await rx.open(META, frames[1099 - 1023]), null, 'and only once');
  assert.notEqual(await rx.open(META, frames[500]), null);
  assert.notEqual(await rx.open(META, frames[1098]), null);
  assert.equal(await rx.open(META, frames[1099]), null, 'replay of the highest');
  assertStats(rx, { opened: 4, replay: 4 });
});

test('replay window is BigInt-safe near 2^64', async () => {
  const kid = 0x1234n;
  const key = await SFrameKey.derive(4, kid, BASE);
  const rx = new SFrameReceiver(4);
  await rx.addKey(kid, BASE);
  const top = (1n << 64n) - 1n;
  const ctrs = [(1n << 53n) + 1n, (1n << 53n) + 2n, top - 5000n, top, top - 1n, top - 1023n, top - 1024n, top - 1n, 3n];
  const want = [true, true, true, true, true, true, false, false, false];
  for (let i = 0; i < ctrs.length; i++) {
    const frame = await key.sealAt(ctrs[i], META, enc.encode('z'));
    assert.equal(parseHeader(frame).ctr, ctrs[i]);
    assert.equal((await rx.open(META, frame)) !== null, want[i], `ctr ${ctrs[i]}`);
  }
  assertStats(rx, { opened: 6, replay: 3 });
});

test('the window moves only after authentication', async () => {
  const { tx, rx } = await pair();
  const f0 = await tx.seal(META, enc.encode('a'));
  // A forged frame with a huge counter (bad tag) must not push the window past f0.
  const forged = new Uint8Array([...encodeHeader(tx.kid, 1n << 40n), ...new Uint8Array(32)]);
  assert.equal(await rx.open(META, forged), null);
  assert.notEqual(await rx.open(META, f0), null);
  assertStats(rx, { auth: 1, opened: 1 });
});

test('concurrent opens of the same frame: exactly one succeeds', async () => {
  const { tx, rx } = await pair();
  const f = await tx.seal(META, enc.encode('once'));
  const got = await Promise.all(Array.from({ length: 10 }, () => rx.open(META, f)));
  assert.equal(got.filter((x) => x !== null).length, 1);
  assertStats(rx, { opened: 1, replay: 9 });
});

test('counter cap: seals up to and including maxCounter, then throws counter-exhausted', async () => {
  assert.equal(DEFAULT_MAX_COUNTER, 2n ** 48n - 1n);
  assert.equal(new SFrameSender(4, 1n, BASE).maxCounter, DEFAULT_MAX_COUNTER);
  const { tx, rx } = await pair(4, 7n, { maxCounter: 3n });
  for (let i = 0n; i <= 3n; i++) {
    const f = await tx.seal(META, enc.encode('c'));
    assert.equal(parseHeader(f).ctr, i);
    assert.notEqual(await rx.open(META, f), null);
  }
  assert.equal(tx.exhausted, true);
  for (let i = 0; i < 3; i++) {
    await assert.rejects(tx.seal(META, enc.encode('c')), (e) => e instanceof SFrameError && e.code === 'counter-exhausted');
  }
  assert.equal(tx.nextCounter, 4n, 'the counter does not move (or wrap) once exhausted');
  assert.throws(() => new SFrameSender(4, 1n, BASE, { maxCounter: -1n }), { code: 'bad-argument' });
  assert.throws(() => new SFrameSender(4, 1n, BASE, { maxCounter: 5 }), { code: 'bad-argument' });
});

test('counter cap at a large value (BigInt past 2^53)', async () => {
  // maxCounter cannot be reached by sealing 2^53 frames; use a sender whose
  // cap is 0 to prove the boundary and SFrameKey.sealAt for the big counter.
  const tx = new SFrameSender(4, 1n, BASE, { maxCounter: 0n });
  assert.equal(parseHeader(await tx.seal(META, enc.encode('a'))).ctr, 0n);
  await assert.rejects(tx.seal(META, enc.encode('b')), { code: 'counter-exhausted' });
});

test('100 concurrent seals get 100 distinct counters, all decryptable', async () => {
  const { tx, rx } = await pair();
  const frames = await Promise.all(Array.from({ length: 100 }, (_, i) => tx.seal(META, enc.encode(`p${i}`))));
  const ctrs = frames.map((f) => parseHeader(f).ctr);
  assert.equal(new Set(ctrs).size, 100);
  assert.deepEqual([...ctrs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)), Array.from({ length: 100 }, (_, i) => BigInt(i)));
  // Promise.all keeps call order, and counters were reserved in call order.
  assert.deepEqual(ctrs, Array.from({ length: 100 }, (_, i) => BigInt(i)));
  const opened = await Promise.all(frames.map((f) => rx.open(META, f)));
  assert.deepEqual(opened.map((p) => new TextDecoder().decode(p)), Array.from({ length: 100 }, (_, i) => `p${i}`));
});

test('concurrent seals up to the cap: exactly maxCounter+1 succeed', async () => {
  const tx = new SFrameSender(4, 1n, BASE, { maxCounter: 49n });
  const results = await Promise.allSettled(Array.from({ length: 100 }, () => tx.seal(META, enc.encode('x'))));
  const ok = results.filter((r) => r.status === 'fulfilled');
  assert.equal(ok.length, 50);
  assert.equal(new Set(ok.map((r) => parseHeader(r.value).ctr)).size, 50);
  assert.ok(results.filter((r) => r.status === 'rejected').every((r) => r.reason.code === 'counter-exhausted'));
});

test('one sender shared by two tracks on two peer connections never repeats a counter', async () => {
  const { tx, rx } = await pair();
  const streams = ['pc1/audio', 'pc1/video', 'pc2/audio', 'pc2/video'];
  const frames = await Promise.all(
    Array.from({ length: 200 }, (_, i) => tx.seal(enc.encode(streams[i % 4]), Uint8Array.of(i & 0xff))),
  );
  assert.equal(new Set(frames.map((f) => parseHeader(f).ctr)).size, 200);
  // Metadata binds the stream: a frame opened with another stream's metadata fails.
  assert.equal(await rx.open(enc.encode(streams[1]), frames[0]), null);
  assert.notEqual(await rx.open(enc.encode(streams[0]), frames[0]), null);
});

test('addKey replacement resets the window; re-adding the same key keeps it; removeKey', async () => {
  const kid = makeKid(3, 1, 0);
  const rx = new SFrameReceiver(4);
  await rx.addKey(kid, BASE);
  const tx = new SFrameSender(4, kid, BASE);
  const f0 = await tx.seal(META, enc.encode('a'));
  assert.notEqual(await rx.open(META, f0), null);

  await rx.addKey(kid, BASE); // same key again: window kept
  assert.equal(await rx.open(META, f0), null);
  assertStats(rx, { opened: 1, replay: 1 });

  await rx.addKey(kid, OTHER); // different key: fresh window, old frames fail auth
  assert.equal(await rx.open(META, f0), null);
  assertStats(rx, { opened: 1, replay: 1, auth: 1 });
  const tx2 = new SFrameSender(4, kid, OTHER);
  const g0 = await tx2.seal(META, enc.encode('b')); // counter 0 again, under the new key
  assert.notEqual(await rx.open(META, g0), null);

  assert.equal(rx.removeKey(kid), true);
  assert.equal(rx.removeKey(kid), false);
  assert.equal(rx.hasKey(kid), false);
  assert.equal(await rx.open(META, await tx2.seal(META, enc.encode('c'))), null);
  assertStats(rx, { opened: 2, replay: 1, auth: 1, unknownKid: 1 });
});

test('removeKey during a pending addKey wins; the later addKey wins', async () => {
  const rx = new SFrameReceiver(4);
  const p = rx.addKey(5n, BASE);
  rx.removeKey(5n);
  await p;
  assert.equal(rx.hasKey(5n), false);

  const a = rx.addKey(6n, BASE);
  const b = rx.addKey(6n, OTHER);
  await Promise.all([a, b]);
  const f = await new SFrameSender(4, 6n, OTHER).seal(META, enc.encode('k'));
  assert.notEqual(await rx.open(META, f), null);
});

test('a key removed while a frame is being opened: the frame is dropped', async () => {
  const { tx, rx, kid } = await pair();
  const f = await tx.seal(META, enc.encode('late'));
  const p = rx.open(META, f); // runs up to its first await
  rx.removeKey(kid);
  assert.equal(await p, null);
  assertStats(rx, { unknownKid: 1 });
});

test('a sender copies its base key (the caller may zero it)', async () => {
  const key = Uint8Array.from(BASE);
  const tx = new SFrameSender(4, 9n, key);
  key.fill(0);
  const rx = new SFrameReceiver(4);
  await rx.addKey(9n, BASE);
  assert.notEqual(await rx.open(META, await tx.seal(META, enc.encode('s'))), null);
});

test('bad constructor arguments throw SFrameError', () => {
  assert.throws(() => new SFrameSender(4, -1n, BASE), { code: 'bad-argument' });
  assert.throws(() => new SFrameSender(4, 1n, new Uint8Array(0)), { code: 'bad-argument' });
  assert.throws(() => new SFrameSender(4, 1n, 'key'), { code: 'bad-argument' });
  assert.throws(() => new SFrameSender(99, 1n, BASE), { code: 'unknown-suite' });
});
