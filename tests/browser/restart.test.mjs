// Calls that survive a server restart (issue 10). The server is stopped
// with SIGTERM (as systemd and docker stop it: it closes every page's
// WebSocket with 1012 and exits) and started again on the same ports with
// the same data directory. The pages reconnect and resume their places.
//   1. P2P: both pages are back within 5 s of the new server, video never
//      stops decoding for more than 1 s, the badge stays green with the same
//      safety code, and a third person who joins afterwards decodes both.
//   2. relay=1 on both sides: the relay's allocations die with the server;
//      within 10 s both are back on a relay pair and decoding.
//   3. The server exits within 10 s of SIGTERM.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startParley, launchBrowser, joinCall, waitForStats, mediaStats, sleep, dumpOnFailure, badge, until } from './harness.mjs';

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

async function people(n) {
  const bs = [];
  for (let i = 0; i < n; i++) bs.push(await launchBrowser());
  open.push(...bs);
  return bs;
}

/** Video frames decoded over all of a page's connections. @param {import('playwright-core').Page} page */
const decoded = async (page) => (await mediaStats(page)).reduce((n, c) => n + c.videoFramesDecoded, 0);

/**
 * Samples decoding on the pages every 200 ms while `during` runs, and
 * returns the longest time each page went without a new decoded frame.
 * @param {import('playwright-core').Page[]} pages @param {() => Promise<void>} during
 */
async function longestStall(pages, during) {
  const last = await Promise.all(pages.map(decoded));
  const lastAt = pages.map(() => Date.now());
  const stall = pages.map(() => 0);
  let running = true;
  const sampler = (async () => {
    while (running) {
      const now = await Promise.all(pages.map((p) => decoded(p).catch(() => -1)));
      const t = Date.now();
      now.forEach((n, i) => {
        if (n > last[i]) {
          stall[i] = Math.max(stall[i], t - lastAt[i]);
          last[i] = n;
          lastAt[i] = t;
        }
      });
      await sleep(200);
    }
  })();
  await during();
  running = false;
  await sampler;
  return stall.map((s, i) => Math.max(s, Date.now() - lastAt[i]));
}

/** Waits until every page's badge is green and shows one code; returns it. @param {import('playwright-core').Page[]} pages */
async function sameGreenCode(pages) {
  return until(async () => {
    const bs = await Promise.all(pages.map(badge));
    return bs.every((b) => b.cls === 'badge ok' && /^\d{4} \d{4} \d{4}$/.test(b.code) && b.code === bs[0].code) ? bs[0].code : null;
  }, 'green badges with one safety code', 20000);
}

/** The page shows "Reconnecting…" until it is back, then says so. @param {import('playwright-core').Page} page */
const reconnected = (page) => page.evaluate(() => document.getElementById('reconnecting')?.hidden === true && /Reconnected/.test(document.getElementById('status')?.textContent || ''));

test('P2P call: the server restarts; the pages resume within 5 s, video never stalls 1 s, same green code; a newcomer decodes both', { timeout: 240000 }, onFailure(async () => {
  const room = await parley.room();
  const [a, b] = await people(2);
  await joinCall(a, room.link('name=Alice&join=1'));
  await joinCall(b, room.link('name=Bob&join=1'));
  for (const p of [a.page, b.page]) await waitForStats(p, (s) => s.length === 1 && s[0].videoFramesDecoded > 60, 'the call is up');
  const code = await sameGreenCode([a.page, b.page]);
  /** @type {boolean[]} */
  const sawReconnecting = [false, false];
  let stopped = { ms: 0, code: /** @type {number|null} */ (null) };
  let back = 0;
  const stalls = await longestStall([a.page, b.page], async () => {
    await sleep(1500);
    stopped = await parley.stop();
    // Both pages say they are reconnecting.
    for (const [i, p] of [a.page, b.page].entries()) {
      sawReconnecting[i] = await until(() => p.evaluate(() => document.getElementById('reconnecting')?.hidden === false), 'Reconnecting… on screen', 5000).catch(() => false);
    }
    await sleep(1000);
    await parley.start();
    const t0 = Date.now();
    await until(async () => (await reconnected(a.page)) && (await reconnected(b.page)), 'both pages resumed', 15000);
    back = Date.now() - t0;
    await sleep(2000);
  });
  console.log(`SIGTERM to exit: ${stopped.ms} ms (code ${stopped.code}); pages resumed ${back} ms after the new server answered; longest video stall Alice ${stalls[0]} ms, Bob ${stalls[1]} ms`);
  assert.ok(stopped.ms < 10000, `the server exits within 10 s of SIGTERM (${stopped.ms} ms)`);
  assert.equal(stopped.code, 0, 'and cleanly');
  assert.deepEqual(sawReconnecting, [true, true], 'both pages said "Reconnecting…"');
  assert.ok(back <= 5000, `both pages back within 5 s (${back} ms)`);
  for (const s of stalls) assert.ok(s <= 1000, `video decoding never stopped for more than 1 s (${s} ms)`);
  assert.equal(await sameGreenCode([a.page, b.page]), code, 'the badge is green with the same safety code');
  const peerLeft = /left the call/.test(await a.page.locator('#status').innerText()) || /left the call/.test(await b.page.locator('#status').innerText());
  assert.ok(!peerLeft, 'nobody saw the other leave');

  // A third person after the restart.
  const [c] = await people(1);
  await joinCall(c, room.link('name=Carol&join=1'));
  for (const p of [a.page, b.page, c.page]) {
    await waitForStats(p, (s) => s.filter((x) => x.videoFramesDecoded > 30).length === 2, 'everyone decodes both others', 45000);
  }
  await sameGreenCode([a.page, b.page, c.page]);
}));

test('relay=1 on both sides: after the restart both are back on a relay pair and decoding within 10 s', { timeout: 240000 }, onFailure(async () => {
  const room = await parley.room();
  const [a, b] = await people(2);
  await joinCall(a, room.link('name=Alice&join=1&relay=1'));
  await joinCall(b, room.link('name=Bob&join=1&relay=1'));
  for (const p of [a.page, b.page]) {
    await waitForStats(p, (s) => s.length === 1 && s[0].videoFramesDecoded > 60 && s[0].localType === 'relay', 'decoding through the relay');
  }
  await parley.stop();
  await sleep(1000);
  await parley.start();
  const t0 = Date.now();
  const framesAt = await Promise.all([a.page, b.page].map(decoded));
  for (const [i, p] of [a.page, b.page].entries()) {
    await waitForStats(p, (s) => s.length === 1 && s[0].localType === 'relay' && s[0].state === 'connected' && s[0].videoFramesDecoded > framesAt[i] + 40,
      'back on a relay pair and decoding', 10000 - (Date.now() - t0));
  }
  const took = Date.now() - t0;
  console.log(`relay call back on a relay pair and decoding ${took} ms after the new server answered`);
  assert.ok(took <= 10000);
  const m = await parley.metrics();
  assert.ok((m.parley_turn_allocations || 0) >= 2, `new allocations on the restarted relay (${m.parley_turn_allocations})`);
}));
