// Nothing for whoever holds only the room id, and nothing for a peer whose
// key did not verify (issue 11, docs/security.md §2.5, §3.4, §3.5):
//   1. a WebSocket client with the room id but not the link secret is
//      refused (close 4003) and learns no name, count or candidate; a
//      member's page (relay=0) makes no peer connection towards a peer
//      whose hello does not verify, and sends it nothing;
//   2. a departed member's hello replayed under its old id by a patched
//      server (the proxy) is refused, the others are warned, and it
//      decodes nothing new; coming back for real is a new id and a join;
//   3. a member whose connection fails silently (the server keeps it in
//      the room) stops getting keys within 15 s: a new generation starts,
//      and none of its keys opens a frame sent after it;
//   4. no description sent or applied carries an audio-level extension.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import {
  startParley, launchBrowser, joinCall, waitForStats, mediaStats, sleep, dumpOnFailure,
  recordKeys, keyLog, workerStats, badge, until,
} from './harness.mjs';
import { startProxy } from './proxy.mjs';
import { buildInspector, runInspector, openFrames, sframeHex, splitKid } from '../inspector/inspector.mjs';

/** @type {Awaited<ReturnType<typeof startParley>>} */
let parley;
/** @type {Array<Awaited<ReturnType<typeof launchBrowser>>>} */
let open = [];
/** @type {Array<Awaited<ReturnType<typeof startProxy>>>} */
const proxies = [];
/** @type {ReturnType<typeof runInspector>|null} */
let inspector = null;

before(async () => {
  buildInspector();
  parley = await startParley();
});
// Each case closes its browsers: on two cores, pages left running would
// starve the next case's calls.
afterEach(async () => {
  inspector?.stop();
  inspector = null;
  for (const b of open) await b.close();
  open = [];
});
after(async () => {
  inspector?.stop();
  for (const b of open) await b.close();
  for (const p of proxies) await p.close();
  await parley?.stop();
});

const onFailure = (fn) => dumpOnFailure(() => open, () => ({
  ...(inspector ? { 'inspector log': inspector.log } : {}),
  'parley log': parley.logs,
}), fn);

async function participant() {
  const b = await launchBrowser();
  open.push(b);
  await b.ctx.addInitScript(recordKeys);
  return b;
}

/**
 * A raw signaling client (what a script with the room id could run).
 * @param {string} base @param {string} [origin]
 */
function rawClient(base, origin = base) {
  const ws = new WebSocket(base.replace(/^http/, 'ws') + '/ws', { headers: { Origin: origin } });
  /** @type {any[]} */
  const messages = [];
  /** @type {string[]} */
  const texts = [];
  ws.on('message', (d) => {
    texts.push(String(d));
    try { messages.push(JSON.parse(String(d))); } catch {}
  });
  const closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
  const opened = new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  return {
    ws, messages, texts, closed, opened,
    /** @param {any} m */
    async send(m) { await opened; ws.send(JSON.stringify(m)); },
    close() { ws.close(); },
  };
}

/** Peer connections a page has ever made (the harness records each one). @param {import('playwright-core').Page} page */
// @ts-ignore
const pcsMade = (page) => page.evaluate(() => window.__pcs.length);
/** Peer connections still open. @param {import('playwright-core').Page} page */
// @ts-ignore
const pcsOpen = (page) => page.evaluate(() => window.__pcs.filter((pc) => pc.connectionState !== 'closed').length);
/** Video frames decoded, summed over the page's connections. @param {import('playwright-core').Page} page */
const decodedTotal = async (page) => (await mediaStats(page)).reduce((n, c) => n + c.videoFramesDecoded, 0);
const b64 = (/** @type {number} */ n) => randomBytes(n).toString('base64url');

test('only the room id: refused with 4003 and nothing learnt; no peer connection to a peer whose key did not verify', { timeout: 120000 }, onFailure(async () => {
  const room = await parley.room();
  const alice = await participant();
  await joinCall(alice, room.link('name=Alice&join=1'));

  // ---- a script with the room id (the part of the link before "#") ----
  const eve = rawClient(parley.base);
  await eve.send({ type: 'join', version: 1, room: room.id, name: 'Eve' });
  const closed = /** @type {{code: number, reason: string}} */ (await eve.closed);
  console.log(`room id only: close ${closed.code} ${closed.reason}; got ${JSON.stringify(eve.messages)}`);
  assert.equal(closed.code, 4003, 'documented close code for a refused join token');
  assert.equal(eve.messages.length, 1);
  assert.equal(eve.messages[0].type, 'error');
  assert.equal(eve.messages[0].code, 'bad-token');
  assert.match(eve.messages[0].message, /whole link/);
  for (const leak of ['Alice', 'peers', 'participants', 'candidate', 'iceServers']) {
    assert.ok(!eve.texts.join('').includes(leak), `nothing about ${leak}`);
  }
  const info = await (await fetch(`${parley.base}/api/rooms/${room.id}`)).json();
  assert.deepEqual(info, { id: room.id, exists: true }, 'without the token the API says only that the room exists');
  const infoWithToken = await (await fetch(`${parley.base}/api/rooms/${room.id}`, { headers: { 'Parley-Join-Token': room.token } })).json();
  assert.equal(infoWithToken.participants, 1, 'with the token it tells the count');

  // ---- someone the server lets in (it holds the join token) without the
  // link secret: its hello cannot verify ----
  const mal = rawClient(parley.base);
  await mal.send({ type: 'join', version: 1, room: room.id, name: 'Mallory', token: room.token });
  const welcome = await until(() => mal.messages.find((m) => m.type === 'welcome'), 'Mallory\'s welcome');
  const aliceId = welcome.peers[0].id;
  await mal.send({ type: 'e2ee', payload: { t: 'hello', pid: welcome.id, pub: b64(32), nonce: b64(32), mac: b64(32), reply: false } });
  await mal.send({ type: 'offer', to: aliceId, sdp: 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\na=rtpmap:111 opus/48000/2\r\n' });
  await mal.send({ type: 'candidate', to: aliceId, candidate: { candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 40000 typ host', sdpMid: '0', sdpMLineIndex: 0 } });
  const warned = await until(async () => {
    const s = await badge(alice.page);
    return s.cls === 'badge bad' && /Mallory/.test(s.text) && /does not match this call link/.test(s.text) ? s : null;
  }, 'Alice warned about Mallory');
  console.log(`Alice's badge: ${warned.text}`);
  await sleep(4000);
  assert.equal(await pcsMade(alice.page), 0, 'Alice made no peer connection towards Mallory');
  const toMallory = mal.messages.filter((m) => ['offer', 'answer', 'candidate', 'e2ee'].includes(m.type));
  assert.deepEqual(toMallory, [], 'Mallory got no offer, answer, candidate or key message');

  // ---- Bob, with the whole link, is called as usual: one connection each ----
  const bob = await participant();
  await joinCall(bob, room.link('name=Bob&join=1'));
  for (const p of [alice.page, bob.page]) await waitForStats(p, (s) => s.length === 1 && s[0].videoFramesDecoded > 30, 'Alice and Bob decode each other');
  assert.equal(await pcsMade(alice.page), 1, 'Alice made exactly one connection: Bob');
  assert.equal(await pcsMade(bob.page), 1, 'Bob made exactly one connection: Alice');
  assert.deepEqual(mal.messages.filter((m) => ['offer', 'answer', 'candidate', 'e2ee'].includes(m.type)).map((m) => m.type).filter((t) => t !== 'e2ee'), [],
    'Mallory still got no offer, answer or candidate');
  assert.ok(!mal.messages.some((m) => m.type === 'e2ee' && ['confirm', 'key', 'commit', 'reveal'].includes(m.payload?.t)), 'nor any confirm, key or safety-code message');
  mal.close();
}));

test('a departed member\'s hello replayed under its old id is refused; it decodes nothing new; a real return is a new join', { timeout: 180000 }, onFailure(async () => {
  const room = await parley.room();
  const proxy = await startProxy(parley.base);
  proxies.push(proxy);
  const link = (/** @type {string} */ q) => `${proxy.base}${room.url}?${q}#k=${room.secret}`;
  const ann = await participant(), ben = await participant(), cat = await participant();
  await joinCall(ann, link('name=Ann&join=1'));
  await joinCall(ben, link('name=Ben&join=1'));
  await joinCall(cat, link('name=Cat&join=1'));
  for (const b of [ann, ben, cat]) await waitForStats(b.page, (s) => s.filter((c) => c.videoFramesDecoded > 30).length === 2, 'everyone decodes both others', 45000);

  const welcomes = proxy.messages.filter((m) => m.dir === 's2c' && m.json?.type === 'welcome');
  const idOf = new Map(welcomes.map((m) => [m.conn, m.json.id]));
  const connOf = (/** @type {string} */ name) => welcomes[['Ann', 'Ben', 'Cat'].indexOf(name)].conn;
  const catConn = connOf('Cat'), catId = idOf.get(catConn);
  const catSent = proxy.messages.filter((m) => m.conn === catConn && m.dir === 'c2s' && m.json?.type === 'e2ee');
  const catHello = catSent.find((m) => m.json.payload?.t === 'hello' && !m.json.to);
  assert.ok(catHello, 'Cat\'s hello was recorded');
  const gens = async (/** @type {any} */ b) => Math.max(...(await keyLog(b.page)).filter((e) => e.op === 'send-key').map((e) => splitKid(e.kid).gen));
  const annGen0 = await gens(ann), benGen0 = await gens(ben);

  // ---- the patched server: Cat "leaves" for Ann and Ben, but its
  // connection (and page) stay, silenced, in the server's room ----
  proxy.setHook((dir, conn) => (conn === catConn ? [] : undefined));
  for (const who of ['Ann', 'Ben']) proxy.send(connOf(who), 's2c', { type: 'peer-left', id: catId, reason: 'left' });
  for (const b of [ann, ben]) await b.page.getByText('Cat left the call.').waitFor({ timeout: 10000 });
  await until(async () => (await gens(ann)) > annGen0 && (await gens(ben)) > benGen0, 'Ann and Ben switch to a generation Cat never had');
  await sleep(2000);
  const catDecoded0 = await decodedTotal(cat.page);
  const annStats0 = await workerStats(ann.page), benStats0 = await workerStats(ben.page);

  // ---- it replays Cat's hello (and everything else Cat sent them) under Cat's old id ----
  for (const who of ['Ann', 'Ben']) {
    const to = idOf.get(connOf(who));
    proxy.send(connOf(who), 's2c', { type: 'e2ee', from: catId, payload: catHello.json.payload });
    for (const m of catSent.filter((x) => x.json.to === to)) proxy.send(connOf(who), 's2c', { type: 'e2ee', from: catId, payload: m.json.payload });
  }
  for (const [who, b] of [['Ann', ann], ['Ben', ben]]) {
    const s = await until(async () => {
      const x = await badge(/** @type {any} */ (b).page);
      return x.cls === 'badge bad' && /Cat \(who left\): left the call/.test(x.text) ? x : null;
    }, `${who} warned about Cat's old identity`);
    console.log(`${who}'s badge after the replay: ${s.text}`);
    assert.ok(!/Cat/.test(s.holders), `${who} shares no key with Cat: ${s.holders}`);
  }
  // Let Cat's page talk again (the server "keeps" it): it still gets nothing.
  proxy.setHook((dir, conn) => (conn === catConn && dir === 's2c' ? [] : undefined));
  await sleep(5000);
  const catDecoded1 = await decodedTotal(cat.page);
  console.log(`Cat decoded ${catDecoded1 - catDecoded0} frames after the replay`);
  assert.equal(catDecoded1 - catDecoded0, 0, 'Cat decodes nothing new');
  for (const [who, b] of [['Ann', ann], ['Ben', ben]]) {
    assert.equal(await pcsOpen(/** @type {any} */ (b).page), 1, `${who} has no connection to Cat`);
  }
  const catKeys = await keyLog(cat.page);
  const annNow = await gens(ann), benNow = await gens(ben);
  for (const e of catKeys.filter((x) => x.op === 'recv-key')) {
    const g = splitKid(e.kid).gen;
    assert.ok(g < annNow || g < benNow, `Cat holds no key of the current generations (${e.kid})`);
  }
  const annStats1 = await workerStats(ann.page), benStats1 = await workerStats(ben.page);
  for (const [who, a0, a1] of [['Ann', annStats0, annStats1], ['Ben', benStats0, benStats1]]) {
    assert.equal(a1?.peers?.[catId]?.opened ?? 0, a0?.peers?.[catId]?.opened ?? 0, `${who} decrypted no frame of Cat's after the replay`);
  }

  // ---- Cat comes back for real: a new connection, a new id, a join ----
  proxy.setHook(undefined);
  const cat2 = await participant();
  await joinCall(cat2, link('name=Cat&join=1'));
  for (const b of [ann, ben]) await b.page.getByText('Cat joined the call.').waitFor({ timeout: 30000 });
  const newId = proxy.messages.filter((m) => m.dir === 's2c' && m.json?.type === 'welcome').at(-1)?.json.id;
  assert.notEqual(newId, catId, 'a rejoin has a new id');
  await waitForStats(ann.page, (s) => s.filter((c) => c.videoFramesDecoded > 30).length === 2, 'Ann decodes Ben and the returning Cat', 45000);
  assert.deepEqual(proxy.problems.filter((p) => !/upgrade refused/.test(p)), []);
}));

test('a member whose connection fails silently stops getting keys within 15 s; its keys open no later frame', { timeout: 240000 }, onFailure(async () => {
  const room = await parley.room();
  const ann = await participant(), ben = await participant(), cat = await participant();
  await joinCall(ann, room.link('name=Ann&join=1'));
  await joinCall(ben, room.link('name=Ben&join=1'));
  await joinCall(cat, room.link('name=Cat&join=1'));
  try {
    for (const b of [ann, ben, cat]) await waitForStats(b.page, (s) => s.filter((c) => c.videoFramesDecoded > 30).length === 2, 'everyone decodes both others', 45000);
  } catch (e) {
    for (const b of [ann, ben, cat]) console.log(`worker ${JSON.stringify(await workerStats(b.page))}; keys ${JSON.stringify((await keyLog(b.page)).map((k) => [k.op, k.peer, k.kid]))}`);
    throw e;
  }
  const ins = inspector = runInspector({ base: parley.base, room: room.id, secret: room.secret, name: 'Wire Inspector', durationMs: 120000, bodyBytes: -1 });
  const annIndex = splitKid((await keyLog(ann.page)).find((e) => e.op === 'send-key')?.kid ?? 0).index;
  const annId = (await keyLog(cat.page)).find((e) => e.op === 'recv-key' && splitKid(e.kid).index === annIndex)?.peer;
  assert.ok(annId, 'Cat holds a key of Ann\'s');
  await until(() => ins.read().frames.filter((f) => f.peer === annId && f.kind === 'video' && f.complete).length > 20, 'the inspector receiving Ann', 30000);
  const genBefore = Math.max(...(await keyLog(ann.page)).filter((e) => e.op === 'send-key').map((e) => splitKid(e.kid).gen));

  // ---- Cat's connections die without a word to the server ----
  await ann.page.evaluate(() => {
    // @ts-ignore
    window.__states = [];
    // @ts-ignore
    for (const pc of window.__pcs) pc.addEventListener('connectionstatechange', () => window.__states.push(`${Date.now()} ${pc.connectionState}`));
  });
  const tFail = Date.now();
  // @ts-ignore
  await cat.page.evaluate(() => { for (const pc of window.__pcs) pc.close(); });
  const newKey = await until(async () => (await keyLog(ann.page)).find((e) => e.op === 'send-key' && splitKid(e.kid).gen > genBefore), 'Ann starting a new generation', 20000);
  const took = newKey.t - tFail;
  // @ts-ignore
  console.log(`Ann's new generation ${splitKid(newKey.kid).gen} after ${took} ms; Ann's connection states: ${(await ann.page.evaluate(() => window.__states)).map((x) => `+${Number(x.split(' ')[0]) - tFail} ms ${x.split(' ')[1]}`).join(', ')}`);
  assert.ok(took <= 15000, `within 15 s (${took} ms)`);
  const s = await badge(ann.page);
  console.log(`Ann's badge: ${JSON.stringify(s)}`);
  assert.ok(!/Keys shared with:[^.]*Cat/.test(s.holders), 'Cat is no longer among the key holders');
  assert.match(s.holders, /Connection lost with Cat/);
  await sleep(3000);

  // ---- frames Ann sends after the switch, tried with every key Cat has for Ann ----
  const after = ins.read().frames.filter((f) => f.peer === annId && f.complete && f.gen === splitKid(newKey.kid).gen);
  assert.ok(after.length > 20, `the inspector captured Ann's frames under the new generation (${after.length})`);
  const catKeysForAnn = (await keyLog(cat.page)).filter((e) => e.op === 'recv-key' && e.peer === annId);
  assert.ok(catKeysForAnn.every((e) => splitKid(e.kid).gen <= genBefore), 'Cat never received the new generation');
  const sample = after.slice(0, 10);
  const results = openFrames({
    keys: [...catKeysForAnn.map((e) => ({ kid: e.kid, key: e.key, label: 'cat' })), { kid: newKey.kid, key: newKey.key, label: 'ann' }],
    frames: sample.map((f) => ({ kind: f.kind, prefix: f.prefixHex, sframe: sframeHex(f) })),
    ratchet: 4,
  });
  const opened = (/** @type {number} */ k) => new Set(results.filter((r) => r.key === k && r.ok).map((r) => r.frame)).size;
  for (let k = 0; k < catKeysForAnn.length; k++) assert.equal(opened(k), 0, `Cat's key ${catKeysForAnn[k].kid} (and its next ratchet steps) opens none of Ann's new frames`);
  assert.equal(opened(catKeysForAnn.length), sample.length, 'Ann\'s own new key opens them (the check works)');
  ins.stop();
  await ins.done;
  inspector = null;
  // Ann and Ben still decode each other.
  await waitForStats(ann.page, (st) => st.some((c) => c.state === 'connected' && c.videoFramesDecoded > 30), 'Ann still decodes Ben');
}));

test('no description sent or applied carries an audio-level extension (Chromium)', { timeout: 120000 }, onFailure(async () => {
  const room = await parley.room();
  const proxy = await startProxy(parley.base);
  proxies.push(proxy);
  const link = (/** @type {string} */ q) => `${proxy.base}${room.url}?${q}#k=${room.secret}`;
  const a = await participant(), b = await participant();
  await joinCall(a, link('name=Alice&join=1'));
  await joinCall(b, link('name=Bob&join=1'));
  for (const p of [a.page, b.page]) await waitForStats(p, (s) => s.length === 1 && s[0].videoFramesDecoded > 30 && s[0].audioSamples > 0, 'audio and video flow');
  const sdps = proxy.messages.filter((m) => m.dir === 'c2s' && (m.json?.type === 'offer' || m.json?.type === 'answer')).map((m) => m.json.sdp);
  assert.ok(sdps.length >= 2, 'an offer and an answer crossed the server');
  for (const sdp of sdps) {
    assert.match(sdp, /m=audio/);
    assert.doesNotMatch(sdp, /audio-level/, 'no audio-level extension sent');
  }
  for (const p of [a.page, b.page]) {
    // @ts-ignore
    const applied = await p.evaluate(() => window.__pcs.map((pc) => [pc.localDescription?.sdp || '', pc.remoteDescription?.sdp || '']).flat());
    for (const sdp of applied) assert.doesNotMatch(sdp, /audio-level/, 'no audio-level extension applied');
    // And the browser itself negotiated none for its audio sender.
    // @ts-ignore
    const exts = await p.evaluate(() => window.__pcs.flatMap((pc) => pc.getSenders().filter((s) => s.track?.kind === 'audio').flatMap((s) => s.getParameters().headerExtensions.map((h) => h.uri))));
    assert.ok(!exts.some((u) => /audio-level/.test(u)), `negotiated audio extensions: ${exts.join(', ')}`);
  }
}));
