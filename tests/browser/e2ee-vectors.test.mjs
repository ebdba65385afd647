// The browser side of e2ee/ in real Chromium, loaded from the running Parley
// (so under its CSP, from /e2ee/sframe.js and /e2ee/vectors.js):
// - every RFC 9605 vector and every Parley ratchet vector passes runVectors;
// - frames sealed by Go (e2ee/interop_test.go TestInteropWrite) open with
//   SFrameReceiver, and frames sealed with SFrameSender / SFrameKey.sealAt
//   open with the Go Receiver (TestInteropRead); in both directions a
//   frame with one flipped bit, or opened under altered metadata, is
//   rejected as an authentication failure.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startParley, launchBrowser, repo } from './harness.mjs';

const RFC_FILE = join(repo, 'e2ee/testdata/rfc9605-test-vectors.json');
const RATCHET_FILE = join(repo, 'e2ee/testdata/parley-ratchet-vectors.json');

/** @type {Awaited<ReturnType<typeof startParley>>} */
let parley;
/** @type {Awaited<ReturnType<typeof launchBrowser>>} */
let browser;
/** @type {import('playwright-core').Page} */
let page;
let dir = '';

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'parley-interop-'));
  parley = await startParley();
  browser = await launchBrowser();
  page = browser.page;
  await page.goto(`${parley.base}/`);
});
after(async () => {
  await browser?.close();
  await parley?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Prints the page console and the server log tail if the test fails. */
function withLogs(/** @type {() => Promise<void>} */ fn) {
  return async () => {
    try {
      await fn();
    } catch (e) {
      console.log('--- browser console ---\n' + (browser?.consoleLines.slice(-30).join('\n') ?? ''));
      console.log('--- parley log (tail) ---\n' + (parley?.logs.split('\n').slice(-20).join('\n') ?? ''));
      throw e;
    }
  };
}

/**
 * Number of vectors in a vector file, counted here in node and not by the
 * runner under test: one per entry of each top-level array, except the
 * "vectors" section (ratchet chains), which has one per step. JSON.parse
 * loses precision on the 64-bit integers of the RFC file, which does not
 * matter for counting.
 * @param {string} text
 */
function countVectors(text) {
  const doc = JSON.parse(text);
  /** @type {Record<string, number>} */
  const bySection = {};
  let total = 0;
  for (const [section, list] of Object.entries(doc)) {
    if (!Array.isArray(list)) continue;
    const n = section === 'vectors' ? list.reduce((k, chain) => k + chain.steps.length, 0) : list.length;
    bySection[section] = n;
    total += n;
  }
  return { total, bySection };
}

/**
 * Runs runVectors on the JSON text inside the page.
 * @param {string} text
 * @returns {Promise<{passed: number, failed: number, failures: {name: string, message: string}[], listed: number}>}
 */
function runVectorsInPage(text) {
  return page.evaluate(async (t) => {
    const m = await import(new URL('/e2ee/vectors.js', location.href).href);
    const res = await m.runVectors(t);
    return { ...res, listed: m.listVectors(t).length };
  }, text);
}

/**
 * Runs `go test ./e2ee/ -run '^name$' -count=1 -v` at the repository root.
 * @param {string} name
 * @param {Record<string, string>} env
 */
function goTest(name, env) {
  const r = spawnSync('go', ['test', './e2ee/', '-run', `^${name}$`, '-count=1', '-v'], {
    cwd: repo, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 300_000,
  });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  assert.equal(r.error, undefined, `go test ${name}: ${r.error}\n${out}`);
  assert.equal(r.status, 0, `go test ${name} exited ${r.status}:\n${out}`);
  assert.match(out, new RegExp(`--- PASS: ${name} `), `go test ${name} did not pass (skipped?):\n${out}`);
  return out;
}

/** The file's frames contain what the interop tests promise to cover. */
function assertCoverage(/** @type {any[]} */ frames, /** @type {string} */ who) {
  const sizes = new Set(frames.map((f) => f.plaintext.length / 2));
  assert.deepEqual([...new Set(frames.map((f) => f.suite))].sort(), [4, 5], `${who}: suites`);
  for (const n of [1, 100, 1200]) assert.ok(sizes.has(n), `${who}: a ${n}-byte payload`);
  assert.ok(frames.some((f) => f.metadata === ''), `${who}: empty metadata`);
  assert.ok(frames.some((f) => f.metadata !== ''), `${who}: non-empty metadata`);
  assert.ok(frames.some((f) => BigInt(f.ctr) >= 1n << 40n), `${who}: a counter >= 2^40`);
  assert.ok(frames.some((f) => BigInt(f.ctr) < 8n) && frames.some((f) => BigInt(f.kid) < 8n), `${who}: KID and CTR in the config byte`);
  assert.ok(frames.some((f) => f.parent_key), `${who}: a ratcheted key`);
}

test('every RFC 9605 vector passes in the browser', { timeout: 120_000 }, withLogs(async () => {
  const text = readFileSync(RFC_FILE, 'utf8');
  const want = countVectors(text);
  // The file is a verbatim copy of the working group's (testdata/README.md):
  // 289 header, 3 + 3 AES-CTR+HMAC and 5 full SFrame vectors.
  assert.deepEqual(want.bySection, { header: 289, aes_ctr_hmac: 3, aes_256_ctr_hmac: 3, sframe: 5 });
  const res = await runVectorsInPage(text);
  assert.deepEqual(res.failures, []);
  assert.equal(res.failed, 0);
  assert.equal(res.listed, want.total, 'listVectors lists every vector');
  assert.equal(res.passed, want.total, 'every vector ran and passed');
  console.log(`browser: ${res.passed}/${want.total} RFC 9605 vectors passed`);
}));

test('every Parley ratchet vector passes in the browser', { timeout: 120_000 }, withLogs(async () => {
  const text = readFileSync(RATCHET_FILE, 'utf8');
  const want = countVectors(text);
  assert.ok(want.total >= 8, `at least 2 chains of 4 steps, got ${JSON.stringify(want.bySection)}`);
  const res = await runVectorsInPage(text);
  assert.deepEqual(res.failures, []);
  assert.equal(res.failed, 0);
  assert.equal(res.passed, want.total, 'every step ran and passed');
  console.log(`browser: ${res.passed}/${want.total} Parley ratchet vectors passed`);
}));

test('the browser runner fails a corrupted vector (it does check)', { timeout: 60_000 }, withLogs(async () => {
  const doc = JSON.parse(readFileSync(RATCHET_FILE, 'utf8')); // all numbers < 2^53 in this file
  const frame = doc.vectors[0].steps[1].frame;
  frame.ct = frame.ct.slice(0, -1) + (frame.ct.endsWith('0') ? '1' : '0');
  const text = JSON.stringify(doc);
  const total = countVectors(text).total;
  const res = await runVectorsInPage(text);
  assert.equal(res.failed, 1, JSON.stringify(res.failures));
  assert.equal(res.passed, total - 1);
  assert.match(res.failures[0].name, /step 1/);
}));

test('frames sealed by Go open in the browser; tampered ones do not', { timeout: 300_000 }, withLogs(async () => {
  const path = join(dir, 'go-frames.json');
  goTest('TestInteropWrite', { PARLEY_INTEROP_OUT: path });
  const text = readFileSync(path, 'utf8');
  const frames = JSON.parse(text).frames;
  assertCoverage(frames, 'Go frames');

  const res = await page.evaluate(async (t) => {
    const sf = await import(new URL('/e2ee/sframe.js', location.href).href);
    const { hexToBytes, bytesToHex } = await import(new URL('/e2ee/vectors.js', location.href).href);
    const frames = JSON.parse(t).frames; // kid and ctr are decimal strings
    /** @type {Map<number, any>} */
    const receivers = new Map();
    const out = { opened: 0, flipRejected: 0, metadataRejected: 0, replayRejected: 0, errors: /** @type {string[]} */ ([]), stats: /** @type {Record<string, any>} */ ({}) };
    for (const [i, f] of frames.entries()) {
      const err = (/** @type {string} */ m) => out.errors.push(`${f.name}: ${m}`);
      const kid = BigInt(f.kid);
      const ctr = BigInt(f.ctr);
      if (sf.makeKid(f.index, f.generation, f.step) !== kid) { err('kid is not makeKid(index, generation, step)'); continue; }
      const key = hexToBytes(f.base_key);
      if (f.parent_key && bytesToHex(await sf.ratchet(f.suite, hexToBytes(f.parent_key))) !== f.base_key) { err('ratchet(parent_key) != base_key'); continue; }
      const md = hexToBytes(f.metadata);
      const sealed = hexToBytes(f.sealed);
      const h = sf.parseHeader(sealed);
      if (h.kid !== kid || h.ctr !== ctr) { err(`header kid ${h.kid} ctr ${h.ctr}`); continue; }
      let rx = receivers.get(f.suite);
      if (!rx) { rx = new sf.SFrameReceiver(f.suite); receivers.set(f.suite, rx); }
      if (!rx.hasKey(kid)) await rx.addKey(kid, key);

      // One bit flipped after the header (same choice as interopFlip in Go).
      const bad = Uint8Array.from(sealed);
      bad[h.length + ((i * 131 + 7) % (sealed.length - h.length))] ^= 1 << (i % 8);
      let auth = rx.stats.auth;
      if ((await rx.open(md, bad)) !== null) err('a frame with a flipped bit opened');
      else if (rx.stats.auth !== auth + 1) err(`stats.auth ${auth} -> ${rx.stats.auth} after a flipped bit`);
      else out.flipRejected++;
      // Altered metadata (the AAD) must not open either.
      let otherMd;
      if (md.length) { otherMd = Uint8Array.from(md); otherMd[i % md.length] ^= 0x80; } else otherMd = Uint8Array.of(0);
      auth = rx.stats.auth;
      if ((await rx.open(otherMd, sealed)) !== null) err('opened under altered metadata');
      else if (rx.stats.auth !== auth + 1) err(`stats.auth ${auth} -> ${rx.stats.auth} after altered metadata`);
      else out.metadataRejected++;

      const pt = await rx.open(md, sealed);
      if (pt === null) { err('did not open'); continue; }
      if (bytesToHex(pt) !== f.plaintext) { err('plaintext differs'); continue; }
      out.opened++;
      const replay = rx.stats.replay;
      if ((await rx.open(md, sealed)) === null && rx.stats.replay === replay + 1) out.replayRejected++;
      else err('a replay was not rejected');
    }
    for (const [suite, rx] of receivers) out.stats[suite] = { ...rx.stats };
    return out;
  }, text);

  assert.deepEqual(res.errors, []);
  const n = frames.length;
  assert.equal(res.opened, n, 'every Go frame opened');
  assert.equal(res.flipRejected, n, 'every flipped frame rejected as auth');
  assert.equal(res.metadataRejected, n, 'every altered-metadata open rejected as auth');
  assert.equal(res.replayRejected, n, 'every replay rejected');
  for (const suite of [4, 5]) {
    const k = frames.filter((/** @type {any} */ f) => f.suite === suite).length;
    assert.deepEqual(res.stats[suite], { opened: k, short: 0, badHeader: 0, unknownKid: 0, auth: 2 * k, replay: k }, `suite ${suite} receiver stats`);
  }
  console.log(`interop Go -> browser: ${res.opened} frames opened, ${res.flipRejected} flipped + ${res.metadataRejected} altered-metadata rejected`);
}));

test('frames sealed in the browser open in Go; tampered ones do not', { timeout: 300_000 }, withLogs(async () => {
  const frames = await page.evaluate(async () => {
    const sf = await import(new URL('/e2ee/sframe.js', location.href).href);
    const { bytesToHex } = await import(new URL('/e2ee/vectors.js', location.href).href);
    const rand = (/** @type {number} */ n) => crypto.getRandomValues(new Uint8Array(n));
    const label = new TextEncoder().encode('parley/1 media');
    /** @type {any[]} */
    const out = [];
    for (const suite of [sf.AES_128_GCM_SHA256_128, sf.AES_256_GCM_SHA512_128]) {
      const root = rand(32);
      const step1 = await sf.ratchet(suite, root); // Nh bytes: 32, or 64 for suite 5
      const specs = [
        { index: 0x0042, generation: 3, step: 0, key: root, parent: null },
        { index: 0x0042, generation: 3, step: 1, key: step1, parent: root },
        { index: 0, generation: 0, step: 6, key: rand(32), parent: null }, // KID 6: in the config byte
      ];
      for (const sp of specs) {
        const kid = sf.makeKid(sp.index, sp.generation, sp.step);
        const add = (/** @type {bigint} */ ctr, /** @type {Uint8Array} */ md, /** @type {Uint8Array} */ pt, /** @type {Uint8Array} */ sealed) => out.push({
          name: `js suite ${suite} kid 0x${kid.toString(16)} ctr ${ctr} pt ${pt.length} md ${md.length}`,
          suite, index: sp.index, generation: sp.generation, step: sp.step, kid: kid.toString(), ctr: ctr.toString(),
          ...(sp.parent ? { parent_key: bytesToHex(sp.parent) } : {}),
          base_key: bytesToHex(sp.key), metadata: bytesToHex(md), plaintext: bytesToHex(pt), sealed: bytesToHex(sealed),
        });
        const metadata = (/** @type {number} */ kind, /** @type {number} */ extra) => new Uint8Array([...label, kind, sp.step, ...rand(extra)]);
        const sender = new sf.SFrameSender(suite, kid, sp.key);
        for (const size of [1, 100, 1200]) {
          for (const withMd of [false, true]) {
            const md = withMd ? metadata(size % 3, size % 5) : new Uint8Array(0);
            const pt = rand(size);
            const ctr = sender.nextCounter;
            add(ctr, md, pt, await sender.seal(md, pt));
          }
        }
        if (sender.nextCounter !== 6n) throw new Error(`nextCounter ${sender.nextCounter} after 6 seals`);
        // SFrameSender always starts at 0; a sender that got to 2^40 runs
        // the same sealAt under its reserved counter.
        const key = await sf.SFrameKey.derive(suite, kid, sp.key);
        const big = [1n << 40n, (1n << 40n) + 1n, sf.DEFAULT_MAX_COUNTER];
        for (const [j, ctr] of big.entries()) {
          const md = j === 1 ? new Uint8Array(0) : metadata(1, 3);
          const pt = rand([1200, 1, 100][j]);
          add(ctr, md, pt, await key.sealAt(ctr, md, pt));
        }
      }
    }
    return out;
  });
  assertCoverage(frames, 'browser frames');
  const path = join(dir, 'js-frames.json');
  writeFileSync(path, JSON.stringify({ source: 'SFrame frames sealed in Chromium by tests/browser/e2ee-vectors.test.mjs', frames }, null, 2) + '\n');

  const out = goTest('TestInteropRead', { PARLEY_INTEROP_IN: path });
  const m = /interop: opened (\d+) frames, rejected (\d+) tampered/.exec(out);
  assert.ok(m, `go test did not report its count:\n${out}`);
  assert.equal(Number(m[1]), frames.length, 'Go opened every browser frame');
  assert.equal(Number(m[2]), frames.length, 'Go rejected every flipped browser frame with ErrAuth');
  console.log(`interop browser -> Go: ${m[1]} frames opened, ${m[2]} flipped rejected (ErrAuth)`);
}));
