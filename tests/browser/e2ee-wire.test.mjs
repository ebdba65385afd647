// What the media path sees of an end-to-end encrypted call. The wire
// inspector (tests/inspector) joins a real two-person call as a third
// participant (it takes part in the key agreement, since pages connect only
// to confirmed peers, but records only ciphertext), records every frame the
// two browsers send it, and the test checks that each one is SFrame
// (RFC 9605) with Parley's KID layout and counters, and that the bytes after
// the clear prefix look like random data. Then a browser with the wrong
// link secret tries to join: the server turns it away and its screen says so.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { deflateRawSync } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { startParley, launchBrowser, joinCall, waitForStats, mediaStats, sleep, dumpOnFailure } from './harness.mjs';
import { buildInspector, runInspector } from '../inspector/inspector.mjs';

/** @type {Awaited<ReturnType<typeof startParley>>} */
let parley;
/** @type {Array<Awaited<ReturnType<typeof launchBrowser>>>} */
const open = [];
/** @type {ReturnType<typeof runInspector>|null} */
let inspector = null;

before(async () => {
  buildInspector();
  parley = await startParley();
});
after(async () => {
  inspector?.stop();
  for (const b of open) await b.close();
  await parley?.stop();
});

const decodesVideo = (/** @type {number} */ n) => (/** @type {any[]} */ s) => s.some((c) => c.videoFramesDecoded > n);
/** Sum of remote video frames decoded over a page's connections. @param {import('playwright-core').Page} page */
const decoded = async (page) => (await mediaStats(page)).reduce((n, c) => n + c.videoFramesDecoded, 0);

/** Inbound video counters per connection, with the ones the harness does not read. @param {import('playwright-core').Page} page */
function inboundVideo(page) {
  return page.evaluate(async () => {
    // @ts-ignore
    const pcs = /** @type {RTCPeerConnection[]} */ (window.__pcs || []);
    const out = [];
    for (const pc of pcs) {
      if (pc.connectionState === 'closed') continue;
      const s = { state: pc.connectionState, packetsReceived: 0, bytesReceived: 0, framesReceived: 0, framesDecoded: 0, keyFramesDecoded: 0, framesDropped: 0, pliCount: 0, audioEnergy: 0 };
      (await pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') {
          s.packetsReceived += r.packetsReceived || 0; s.bytesReceived += r.bytesReceived || 0;
          s.framesReceived += r.framesReceived || 0; s.framesDecoded += r.framesDecoded || 0;
          s.keyFramesDecoded += r.keyFramesDecoded || 0; s.framesDropped += r.framesDropped || 0; s.pliCount += r.pliCount || 0;
        }
        if (r.type === 'inbound-rtp' && r.kind === 'audio') s.audioEnergy += r.totalAudioEnergy || 0;
      });
      out.push(s);
    }
    return out;
  });
}

/** @param {import('playwright-core').Page} page */
const badge = (page) => page.evaluate(() => ({
  cls: document.getElementById('e2ee-badge')?.className || '',
  text: document.getElementById('e2ee-title')?.textContent || '',
}));

/** Pearson's chi-square of byte frequencies against uniform (255 degrees of freedom). @param {Buffer} b */
function chiSquare(b) {
  const counts = new Float64Array(256);
  for (const x of b) counts[x]++;
  const e = b.length / 256;
  let chi = 0;
  for (const c of counts) chi += (c - e) ** 2 / e;
  return chi;
}

const onFailure = (fn) => dumpOnFailure(() => open, () => ({
  ...(inspector ? { 'inspector log': inspector.log } : {}),
  'parley log': parley.logs,
}), fn);

test('on the wire every frame is SFrame, random beyond the clear prefix; a wrong-key browser is turned away', { timeout: 120000 }, onFailure(async () => {
  const t0 = Date.now();
  const room = await parley.room();
  const a = await launchBrowser(); open.push(a);
  const b = await launchBrowser(); open.push(b);
  await joinCall(a, room.link('name=Alice&join=1'));
  await joinCall(b, room.link('name=Bob&join=1'));
  for (const p of [a.page, b.page]) await waitForStats(p, decodesVideo(30), 'remote video decoding');
  console.log(`call up after ${Date.now() - t0} ms`);

  // ---- the inspector joins: about 8 s, longer only if a loaded machine
  // makes the browsers send fewer frames (bounded at 30 s) ----
  const beforeA = await decoded(a.page), beforeB = await decoded(b.page);
  const tIn = Date.now();
  const ins = inspector = runInspector({ base: parley.base, room: room.id, secret: room.secret, name: 'Wire Inspector', durationMs: 30000, bodyBytes: -1 });
  const enough = () => {
    const fs = ins.read().frames;
    const peers = [...new Set(fs.map((f) => f.peer))];
    return Date.now() - tIn >= 8000 && peers.length === 2 && peers.every((p) =>
      fs.filter((f) => f.peer === p && f.kind === 'video' && f.complete).length >= 110 &&
      fs.filter((f) => f.peer === p && f.kind === 'audio').length >= 220);
  };
  // Meanwhile the call goes on: the inspector breaks nothing.
  await sleep(5000);
  for (const p of [a.page, b.page]) {
    const s = await badge(p);
    assert.equal(s.cls, 'badge ok', `badge stays green while the inspector is in the call: ${JSON.stringify(s)}`);
    assert.match(s.text, /^End-to-end encrypted/);
  }
  while (!enough() && ins.proc.exitCode === null) await sleep(500);
  ins.stop();
  await ins.done;
  inspector = null;
  const secs = (Date.now() - tIn) / 1000;
  const afterA = await decoded(a.page), afterB = await decoded(b.page);
  console.log(`inspector in the call for ${secs.toFixed(1)} s; meanwhile Alice decoded ${afterA - beforeA} frames, Bob ${afterB - beforeB}`);
  assert.ok(afterA - beforeA > 5 * secs && afterB - beforeB > 5 * secs, 'A and B kept decoding each other (> 5 fps)');
  for (const p of [a.page, b.page]) assert.equal((await badge(p)).cls, 'badge ok', 'badge green after the inspector left');

  const { frames, events } = ins.read();
  const end = events.find((e) => e.event === 'end');
  console.log('inspector counts:', JSON.stringify(end?.counts));
  const senders = [...new Set(frames.map((f) => f.peer))];
  assert.equal(senders.length, 2, `frames from both browsers (got ${senders.length})`);

  /** @type {Buffer[]} */
  const bodies = [];
  /** @type {Record<string, number>} */
  const indexOf = {};
  for (const peer of senders) {
    const mine = frames.filter((f) => f.peer === peer);
    const name = mine[0].name;
    const video = mine.filter((f) => f.kind === 'video');
    const audio = mine.filter((f) => f.kind === 'audio');
    const complete = video.filter((f) => f.complete);
    const incomplete = video.length - complete.length;
    const keyFrames = complete.filter((f) => f.keyFrame);
    console.log(`${name}: ${complete.length} video frames (${keyFrames.length} key frames, ${incomplete} incomplete), ${audio.length} audio frames`);
    assert.ok(complete.length >= 100, `${name}: >= 100 whole video frames (got ${complete.length})`);
    assert.ok(audio.length >= 200, `${name}: >= 200 audio frames (got ${audio.length})`);
    // Constant-bitrate Opus (cbr=1, no DTX): encrypted audio frames all have
    // one size (ciphertext and tag; the header only grows with the counter),
    // so their sizes do not trace the rhythm of speech.
    const sizes = new Map();
    for (const f of audio) sizes.set(f.bodyLen, (sizes.get(f.bodyLen) || 0) + 1);
    const [commonSize, commonCount] = [...sizes.entries()].sort((x, y) => y[1] - x[1])[0];
    console.log(`${name}: audio frame sizes ${JSON.stringify([...sizes.entries()].sort((x, y) => y[1] - x[1]).slice(0, 5))}`);
    assert.ok(commonCount >= 0.9 * audio.length, `${name}: audio frames have one size (${commonCount} of ${audio.length} are ${commonSize} bytes)`);
    assert.ok(incomplete <= complete.length / 50, `${name}: few incomplete video frames (${incomplete})`);
    assert.ok(keyFrames.length >= 2, `${name}: the inspector's PLIs brought key frames (${keyFrames.length})`);

    // 100 % SFrame after the clear prefix.
    const all = [...complete, ...audio];
    const bad = all.filter((f) => !f.sframe);
    assert.equal(bad.length, 0, `${name}: every frame is SFrame after its clear prefix; not: ${JSON.stringify(bad.slice(0, 3).map((f) => ({ kind: f.kind, size: f.size, err: f.err, prefixHex: f.prefixHex, body: f.body.slice(0, 32) })))}`);
    // Clear prefixes: VP8 key frames carry the start code 9d 01 2a in clear; audio has none.
    for (const f of keyFrames) {
      assert.equal(f.prefix, 10);
      assert.equal(f.prefixHex.slice(6, 12), '9d012a', `${name}: VP8 key frame prefix has the start code: ${f.prefixHex}`);
    }
    for (const f of complete.filter((x) => !x.keyFrame)) assert.equal(f.prefix, 3);
    for (const f of audio) assert.equal(f.prefix, 0);

    // KID layout: one index per sender, generation >= 1; in a two-person call
    // each sender ratcheted once (step 1) when the other joined, and once
    // more (step 2) when it confirmed the inspector, which takes part in the
    // key agreement (pages connect only to confirmed peers).
    const kids = [...new Set(all.map((f) => f.kidStr))];
    const idx = new Set(all.map((f) => f.index));
    console.log(`${name}: KIDs ${kids.map((k) => `${k} (index ${all.find((f) => f.kidStr === k)?.index}, gen ${all.find((f) => f.kidStr === k)?.gen}, step ${all.find((f) => f.kidStr === k)?.step})`).join(', ')}`);
    assert.equal(idx.size, 1, `${name}: one KID index`);
    indexOf[peer] = all[0].index;
    for (const f of all) assert.ok(f.gen >= 1, `${name}: generation >= 1`);
    assert.deepEqual(kids.length, 1, `${name}: one KID for the whole capture`);
    assert.equal(all[0].gen, 1, `${name}: generation 1`);
    assert.equal(all[0].step, 2, `${name}: ratchet step 2 (Bob's join after theirs, then the inspector's)`);

    // CTRs strictly increasing per KID per stream (in RTP order).
    for (const kind of ['audio', 'video']) {
      const s = (kind === 'video' ? complete : audio).slice().sort((x, y) => x.seq - y.seq);
      for (let i = 1; i < s.length; i++) {
        if (s[i].kidStr !== s[i - 1].kidStr) continue;
        assert.ok(s[i].ctr > s[i - 1].ctr, `${name} ${kind}: CTR strictly increasing: ${s[i - 1].ctr} then ${s[i].ctr} at seq ${s[i].seq}`);
      }
    }
    // One counter per sender key, shared by audio, video and both of the
    // sender's connections: no (KID, CTR) twice, and the CTRs seen on this
    // one connection leave gaps (the frames for the other connection).
    const ctrs = new Set(all.map((f) => `${f.kidStr}:${f.ctr}`));
    assert.equal(ctrs.size, all.length, `${name}: no (KID, CTR) repeats across audio and video`);
    const maxCtr = Math.max(...all.map((f) => f.ctr)), minCtr = Math.min(...all.map((f) => f.ctr));
    console.log(`${name}: CTR ${minCtr}..${maxCtr} over ${all.length} frames on this connection`);
    assert.ok(maxCtr - minCtr + 1 > all.length * 1.5, `${name}: CTR gaps show the counter is shared with the other connection (range ${maxCtr - minCtr + 1}, frames ${all.length})`);
    assert.ok(maxCtr > all.length, `${name}: max CTR ${maxCtr} > frames seen ${all.length}`);

    for (const f of all) bodies.push(Buffer.from(f.body, 'hex'));
  }
  if (indexOf[senders[0]] === indexOf[senders[1]]) console.log('note: both senders drew the same random KID index (1 in 65536)');

  // Randomness of everything after the clear prefixes and SFrame headers.
  const cipher = Buffer.concat(bodies);
  const chi = chiSquare(cipher);
  const packed = deflateRawSync(cipher, { level: 9 });
  const saved = 1 - packed.length / cipher.length;
  console.log(`ciphertext: ${cipher.length} bytes, chi-square ${chi.toFixed(1)} (255 df), deflate ${cipher.length} -> ${packed.length} (${(saved * 100).toFixed(3)} % saved)`);
  // The same statistics on the clear VP8 prefixes, for contrast.
  const prefixes = Buffer.from(frames.filter((f) => f.kind === 'video').map((f) => f.prefixHex).join(''), 'hex');
  console.log(`clear VP8 prefixes: ${prefixes.length} bytes, chi-square ${chiSquare(prefixes).toFixed(0)}, deflate saves ${((1 - deflateRawSync(prefixes, { level: 9 }).length / prefixes.length) * 100).toFixed(1)} %`);
  assert.ok(cipher.length >= 100_000, `>= 100 KB of ciphertext (got ${cipher.length})`);
  // Mean 255, sd about 22.6: 400 is more than 6 sd out.
  assert.ok(chi < 400, `byte frequencies look uniform: chi-square ${chi}`);
  assert.ok(saved < 0.01, `deflate cannot compress the ciphertext by 1 % (saved ${(saved * 100).toFixed(3)} %)`);

  // ---- a browser with the wrong link secret ----
  // Its join token (derived from the secret) is wrong, so the server turns
  // it away before it learns anything of the call (docs/security.md §2.5),
  // and the page says so in plain words. (A server that let it in anyway
  // would get it no peer connection: tests/browser/access.test.mjs.)
  const c = await launchBrowser(); open.push(c);
  const wrong = randomBytes(16).toString('base64url');
  await c.page.goto(`${parley.base}${room.url}?name=Carol&join=1#k=${wrong}`);
  await c.page.locator('#error-text').filter({ hasText: 'This link is incomplete' }).waitFor({ timeout: 20000 });
  assert.equal(await c.page.locator('#call').isVisible(), false, 'Carol is not in the call');
  assert.equal(await c.page.evaluate(() => /** @type {any} */ (window).__pcs.length), 0, 'Carol made no peer connection');
  const a1 = await decoded(a.page), b1 = await decoded(b.page);
  await sleep(3000);
  const a2 = await decoded(a.page), b2 = await decoded(b.page);
  assert.ok(a2 - a1 > 15 && b2 - b1 > 15, `Alice and Bob still decode each other (${a2 - a1}, ${b2 - b1})`);
  for (const [who, p] of [['Alice', a.page], ['Bob', b.page]]) {
    const s = await badge(/** @type {any} */ (p));
    assert.equal(s.cls, 'badge ok', `${who}'s badge stays green: ${JSON.stringify(s)}`);
    assert.equal(await /** @type {any} */ (p).getByText('Carol').count(), 0, `${who} never hears of Carol`);
  }
  console.log(`test time ${Date.now() - t0} ms`);
}));
