// Encoded transforms stay on. Chromium (156) recreates a video receive
// stream without its encoded transform when a renegotiation rolls back a
// local offer (two offers crossing: both pages restarted ICE on a resume,
// one resume in three); the frames then reach the decoder unopened and the
// picture freezes on ciphertext. So once a connection's first offer is
// answered only its impolite page makes offers, and the polite one asks
// with restart-ice (session.js restartIce); and once a second each page
// compares, per connection, the video frames the browser counts with those
// that went through its worker (session.js checkTransforms).
//   1. relay=1, both pages see a network change at the same moment, three
//      times: only one page offers (the polite one asks), both go on
//      decoding, and what they decode went through their workers; no
//      transform is lost, badges stay green.
//   2. Alice's sender transform is taken off from outside (Chromium then
//      counts frames it encodes but sends none of them on): her page puts a
//      new one on and Bob decodes her again; her badge stays green.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startParley, launchBrowser, joinCall, waitForStats, mediaStats, dumpOnFailure, badge, until, recordKeys, workerStats } from './harness.mjs';

/** @type {Awaited<ReturnType<typeof startParley>>} */
let parley;
/** @type {Array<Awaited<ReturnType<typeof launchBrowser>>>} */
let open = [];

before(async () => { parley = await startParley(); });
afterEach(async () => {
  for (const b of open) await b.close();
  open = [];
});
after(async () => { await parley?.stop(); });

const onFailure = (fn) => dumpOnFailure(() => open, () => ({ 'parley log': parley.logs }), fn);

/** Video frames decoded over a page's connections. @param {import('playwright-core').Page} page */
const decoded = async (page) => (await mediaStats(page)).reduce((n, c) => n + c.videoFramesDecoded, 0);

/**
 * Takes the transform off the page's one video receiver or sender; returns
 * whether there was one.
 * @param {import('playwright-core').Page} page @param {'recv'|'send'} role
 */
const takeOff = (page, role) => page.evaluate((role) => {
  // @ts-ignore
  const pc = /** @type {RTCPeerConnection} */ (window.__pcs.find((p) => p.connectionState === 'connected'));
  const t = pc.getTransceivers().find((x) => x.receiver.track.kind === 'video');
  if (!t) return false;
  const sr = role === 'recv' ? t.receiver : t.sender;
  // @ts-ignore transform is not in every DOM typing
  const had = !!sr.transform;
  // @ts-ignore
  sr.transform = null;
  return had;
}, role);

/** Whether the page's video receiver or sender has a transform. @param {import('playwright-core').Page} page @param {'recv'|'send'} role */
const hasTransform = (page, role) => page.evaluate((role) => {
  // @ts-ignore
  const pc = /** @type {RTCPeerConnection} */ (window.__pcs.find((p) => p.connectionState === 'connected'));
  const t = pc.getTransceivers().find((x) => x.receiver.track.kind === 'video');
  // @ts-ignore
  return !!(t && (role === 'recv' ? t.receiver : t.sender).transform);
}, role);

/**
 * Video frames that went through a page's worker for its one peer, by
 * direction: its stats count them by transform id, "send-N" or "recv-N".
 * @param {import('playwright-core').Page} page
 */
async function workerVideo(page) {
  const st = /** @type {any} */ (await workerStats(page));
  const sum = (/** @type {string} */ role) => Object.entries(st?.video || {}).reduce((n, [id, v]) => (id.startsWith(role + '-') ? n + Number(v) : n), 0);
  return { send: sum('send'), recv: sum('recv') };
}

/** A two-person call; relay=1 on both sides where asked (through the relay, the dropped transform shows at once). @param {boolean} relay */
async function call(relay) {
  const room = await parley.room();
  const q = relay ? '&relay=1' : '';
  const a = await launchBrowser();
  const b = await launchBrowser();
  open.push(a, b);
  for (const x of [a, b]) await x.ctx.addInitScript(recordKeys);
  for (const x of [a, b]) await x.ctx.addInitScript(countOffers);
  await joinCall(a, room.link(`name=Alice&join=1${q}`));
  await joinCall(b, room.link(`name=Bob&join=1${q}`));
  for (const p of [a.page, b.page]) await waitForStats(p, (s) => s.length === 1 && s[0].videoFramesDecoded > 60, 'the call is up');
  await until(async () => (await badge(a.page)).cls === 'badge ok' && (await badge(b.page)).cls === 'badge ok', 'green badges', 20000);
  return { a, b };
}

// Counts the offers a page sets as its local description.
const countOffers = () => {
  // @ts-ignore
  window.__offers = 0;
  const orig = RTCPeerConnection.prototype.setLocalDescription;
  // @ts-ignore
  RTCPeerConnection.prototype.setLocalDescription = function (d, ...rest) {
    // @ts-ignore
    if (d?.type === 'offer' || (!d && this.signalingState !== 'have-remote-offer')) window.__offers++;
    return orig.call(this, d, ...rest);
  };
};
// @ts-ignore
const offers = (/** @type {import('playwright-core').Page} */ page) => page.evaluate(() => window.__offers);

/** Fires the browser's "online" event in the page, as a network change does (session.js networkChanged). @param {import('playwright-core').Page} page */
const networkChange = (page) => page.evaluate(() => window.dispatchEvent(new Event('online')));

test('relay=1, both pages see a network change at once, three times: only one offers, both keep decoding through their transforms, badges green', { timeout: 180000 }, onFailure(async () => {
  const { a, b } = await call(true);
  const pages = [a.page, b.page];
  for (let round = 1; round <= 3; round++) {
    const frames = await Promise.all(pages.map(decoded));
    const through = await Promise.all(pages.map(workerVideo));
    const made = await Promise.all(pages.map(offers));
    await Promise.all(pages.map(networkChange));
    for (const [i, p] of pages.entries()) {
      await waitForStats(p, (s) => s.length === 1 && s[0].state === 'connected' && s[0].localType === 'relay' && s[0].videoFramesDecoded > frames[i] + 60,
        `round ${round}: ${i ? 'Bob' : 'Alice'} decodes on`, 20000);
      const w = await workerVideo(p);
      assert.ok(w.recv > through[i].recv + 40, `round ${round}: the frames ${i ? 'Bob' : 'Alice'} decodes went through the worker (${through[i].recv} → ${w.recv})`);
    }
    const now = await Promise.all(pages.map(offers));
    const by = now.map((n, i) => n - made[i]);
    assert.ok(by.filter((n) => n > 0).length === 1, `round ${round}: one page made the restart's offers, the other asked (offers: Alice ${by[0]}, Bob ${by[1]})`);
  }
  const dropped = [a, b].flatMap((x) => x.consoleLines.filter((l) => /transform .* was dropped by the browser/.test(l)));
  assert.deepEqual(dropped, [], 'no transform was lost');
  for (const p of pages) assert.equal((await badge(p)).cls, 'badge ok', 'the badges stay green');
}));

test('a sender transform the browser dropped is put back, and the other side decodes again', { timeout: 120000 }, onFailure(async () => {
  const { a, b } = await call(false);
  assert.ok(await takeOff(a.page, 'send'), 'Alice\'s video sender had a transform');
  const f0 = await decoded(b.page);
  await until(() => hasTransform(a.page, 'send'), 'the transform back on Alice\'s sender', 15000);
  assert.ok(a.consoleLines.some((l) => /sender transform .* was dropped by the browser/.test(l)), 'the page noticed and said so in its console');
  await waitForStats(b.page, (s) => s.length === 1 && s[0].videoFramesDecoded > f0 + 40, 'Bob decodes Alice again', 15000);
  const sent1 = (await workerVideo(a.page)).send;
  await until(async () => (await workerVideo(a.page)).send > sent1 + 20, 'Alice\'s frames go through her worker again', 5000);
  assert.equal((await badge(a.page)).cls, 'badge ok', 'Alice\'s badge stays green');
}));
