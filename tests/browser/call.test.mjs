// Browser-to-browser calls through Parley's own signaling and TURN relay,
// in real Chromium with fake devices (issue: the foundation).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startParley, launchBrowser, joinCall, waitForStats, mediaStats, sleep, dumpOnFailure } from './harness.mjs';

/** @type {Awaited<ReturnType<typeof startParley>>} */
let parley;
/** @type {Array<Awaited<ReturnType<typeof launchBrowser>>>} */
let open = [];

before(async () => { parley = await startParley(); });
after(async () => {
  for (const b of open) await b.close();
  await parley?.stop();
});

async function browsers(n) {
  const bs = [];
  for (let i = 0; i < n; i++) bs.push(await launchBrowser());
  open.push(...bs);
  return bs;
}
async function closeAll(bs) {
  for (const b of bs) await b.close();
  open = open.filter((b) => !bs.includes(b));
}

/** Every connection of the page decodes more than n video frames. */
const decodesVideo = (n, conns) => (s) => s.length === conns && s.every((c) => c.videoFramesDecoded > n);

/** Decoded frames stay close to received ones: the frames open (nothing is lost to decryption). */
function assertDecodesWhatArrives(stats) {
  for (const c of stats) {
    assert.ok(c.videoFramesDecoded >= 0.9 * c.videoFramesReceived,
      `framesDecoded ${c.videoFramesDecoded} close to framesReceived ${c.videoFramesReceived}`);
  }
}

/** Every page shows the green end-to-end badge and the same safety code. */
async function assertSameSafetyCode(pages) {
  const deadline = Date.now() + 10000;
  let codes = [];
  for (;;) {
    codes = [];
    for (const p of pages) {
      const cls = await p.locator('#e2ee-badge').getAttribute('class');
      const title = await p.locator('#e2ee-title').innerText();
      codes.push({ cls, title, code: await p.locator('#e2ee-code').innerText() });
    }
    const ok = codes.every((c) => /\bok\b/.test(c.cls || '') && /^\d{4} \d{4} \d{4}$/.test(c.code) && c.code === codes[0].code &&
      c.title.startsWith('End-to-end encrypted: only the people'));
    if (ok) return codes[0].code;
    if (Date.now() > deadline) assert.fail('badges differ or are not green: ' + JSON.stringify(codes));
    await sleep(250);
  }
}

/** Audio samples keep growing on every connection of the page. */
async function assertAudioFlows(page, conns) {
  const a = await mediaStats(page);
  await sleep(1500);
  const b = await mediaStats(page);
  assert.equal(b.length, conns, 'connections');
  for (let i = 0; i < conns; i++) {
    assert.ok(b[i].audioSamples > a[i].audioSamples + 10000, `remote audio samples grow on connection ${i}: ${a[i].audioSamples} -> ${b[i].audioSamples}`);
  }
}

const onFailure = (bs, fn) => dumpOnFailure(bs, () => ({ 'parley log': parley.logs }), fn);

let cur = [];
test('two people call each other; hang-up shows the other side they left', onFailure(() => cur, async () => {
  const room = await parley.room();
  const [a, b] = cur = await browsers(2);
  await joinCall(a, room.link(`name=Alice&join=1`));
  await joinCall(b, room.link(`name=Bob&join=1`));
  for (const p of [a.page, b.page]) {
    const s = await waitForStats(p, decodesVideo(100, 1), 'remote video framesDecoded > 100');
    assert.equal(s[0].state, 'connected');
    assertDecodesWhatArrives(s);
  }
  await assertAudioFlows(a.page, 1);
  await assertAudioFlows(b.page, 1);
  const code2 = await assertSameSafetyCode([a.page, b.page]);
  // The names are on screen.
  await a.page.getByText('Bob', { exact: true }).waitFor();
  await b.page.getByText('Alice', { exact: true }).waitFor();

  await b.page.click('#hangup');
  await b.page.getByText('You left the call').first().waitFor();
  await a.page.getByText('Bob left the call.').waitFor({ timeout: 10000 });
  assert.equal(await a.page.locator('.tile.remote').count(), 0, 'Bob\'s tile is gone');
  // Alone again: the safety code changes with the membership.
  await a.page.waitForFunction((c) => {
    const el = document.getElementById('e2ee-code');
    return el && el.textContent && el.textContent !== c;
  }, code2, { timeout: 5000 });
  await closeAll(cur);
}));

test('relay=1 sends all media through the embedded TURN relay', onFailure(() => cur, async () => {
  const before = await parley.metrics();
  const room = await parley.room();
  const [a, b] = cur = await browsers(2);
  await joinCall(a, room.link(`name=Alice&join=1&relay=1`));
  await joinCall(b, room.link(`name=Bob&join=1&relay=1`));
  for (const p of [a.page, b.page]) {
    const s = await waitForStats(p, decodesVideo(100, 1), 'relayed video framesDecoded > 100');
    assert.equal(s[0].localType, 'relay', 'local candidate of the selected pair is relay');
    assert.equal(s[0].remoteType, 'relay', 'remote candidate of the selected pair is relay');
  }
  await assertAudioFlows(a.page, 1);
  const m = await parley.metrics();
  assert.ok(m.parley_turn_allocations >= 2, `relay holds both allocations (got ${m.parley_turn_allocations})`);
  const bytes = m.parley_turn_relayed_bytes_total - (before.parley_turn_relayed_bytes_total || 0);
  assert.ok(bytes > 500_000, `media bytes went through the relay (got ${bytes})`);
  await closeAll(cur);
}));

test('audio=1 joins audio-only: no video sent, audio flows both ways', onFailure(() => cur, async () => {
  const room = await parley.room();
  const [a, b] = cur = await browsers(2);
  await joinCall(a, room.link(`name=Phone&join=1&audio=1`));
  await joinCall(b, room.link(`name=Desk&join=1`));
  await waitForStats(a.page, (s) => s.length === 1 && s[0].state === 'connected' && s[0].audioSamples > 48000, 'audio at the audio-only side');
  await waitForStats(b.page, (s) => s.length === 1 && s[0].state === 'connected' && s[0].audioSamples > 48000, 'audio at the video side');
  await assertAudioFlows(a.page, 1);
  await assertAudioFlows(b.page, 1);
  const sa = await mediaStats(a.page);
  assert.equal(sa[0].sendersVideoTracks, 0, 'the audio-only side has no video track on any sender');
  assert.equal(sa[0].outVideoBytes, 0, 'the audio-only side sends no video bytes');
  const sb = await mediaStats(b.page);
  assert.equal(sb[0].videoFramesReceived, 0, 'the other side receives no video');
  await closeAll(cur);
}));

test('three people in one room: everyone decodes both others (mesh)', onFailure(() => cur, async () => {
  const room = await parley.room();
  const bs = cur = await browsers(3);
  const names = ['Ann', 'Ben', 'Cat'];
  for (const [i, b] of bs.entries()) await joinCall(b, room.link(`name=${names[i]}&join=1`));
  for (const b of bs) assertDecodesWhatArrives(await waitForStats(b.page, decodesVideo(100, 2), 'both remote videos framesDecoded > 100', 45000));
  for (const b of bs) assert.equal(await b.page.locator('.tile.remote').count(), 2);
  for (const b of bs) await assertAudioFlows(b.page, 2);
  await assertSameSafetyCode(bs.map((b) => b.page));
  await closeAll(cur);
}));

test('a long call gets fresh TURN credentials before the old ones expire', onFailure(() => cur, async () => {
  // Credentials valid for 1 minute: the page asks for new ones after 30 s.
  const short = await startParley(['-turn-credential-ttl', '1m']);
  try {
    const room = await short.room();
    const [a, b] = cur = await browsers(2);
    await joinCall(a, room.link('name=Alice&join=1&relay=1'));
    await joinCall(b, room.link('name=Bob&join=1&relay=1'));
    await waitForStats(a.page, decodesVideo(50, 1), 'relayed video');
    const username = () => a.page.evaluate(() => {
      // @ts-ignore
      const pc = window.__pcs.find((p) => p.connectionState !== 'closed');
      return pc.getConfiguration().iceServers[0].username;
    });
    const first = await username();
    const deadline = Date.now() + 70000;
    let now = first;
    while (now === first && Date.now() < deadline) {
      await sleep(2000);
      now = await username();
    }
    assert.notEqual(now, first, 'the connection was given new TURN credentials');
    assert.ok(Number(now.split(':')[0]) > Number(first.split(':')[0]), `later expiry: ${first} -> ${now}`);
    // The call goes on through the relay.
    const before = (await mediaStats(a.page))[0].videoFramesDecoded;
    await waitForStats(a.page, (s) => s[0].state === 'connected' && s[0].videoFramesDecoded > before + 20 && s[0].localType === 'relay', 'still decoding through the relay');
    await closeAll(cur);
  } finally {
    await short.stop();
  }
}));
