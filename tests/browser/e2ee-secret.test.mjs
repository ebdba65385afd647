// The server never learns the link secret: a proxy in front of Parley
// records every HTTP request and WebSocket message the server receives (and
// sends) during a whole call — landing page, room creation, call pages,
// scripts, signaling, hang-up — and none of it carries the secret, in any
// encoding, nor any key derived from it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import { startParley, launchBrowser, joinCall, waitForStats, sleep } from './harness.mjs';
import { startProxy } from './proxy.mjs';

/** @type {Awaited<ReturnType<typeof startParley>>} */
let parley;
/** @type {Awaited<ReturnType<typeof startProxy>>|undefined} */
let proxy;
/** @type {Array<Awaited<ReturnType<typeof launchBrowser>>>} */
let open = [];

before(async () => { parley = await startParley(); });
after(async () => {
  for (const b of open) await b.close();
  await proxy?.close();
  await parley?.stop();
});

const te = new TextEncoder();
/** @param {string} s */
const lp = (s) => { const b = te.encode(s); return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]); };

/** K_hello, K_salt, K_code as the page derives them (e2ee/keys.js). @param {Buffer} secret @param {string} room */
async function derivedKeys(secret, room) {
  const k = await webcrypto.subtle.importKey('raw', secret, 'HKDF', false, ['deriveBits']);
  /** @type {Record<string, Buffer>} */
  const out = {};
  for (const label of ['parley/1 hello-key', 'parley/1 pairwise-salt', 'parley/1 safety-key']) {
    out[label] = Buffer.from(await webcrypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: lp(room), info: te.encode(label) }, k, 256));
  }
  return out;
}

/**
 * Every form in which bytes could leak: base64url, standard base64 (with
 * and without padding, and at each of the three alignments inside a longer
 * base64 text), hex both cases, percent-encoding, the raw bytes; and, for
 * partial leaks, every 11-character window of the base64url text, every
 * 16-digit window of the hex and every 8-byte window of the raw bytes.
 * @param {string} name @param {Buffer} bytes
 * @returns {{what: string, str?: string, bytes?: Buffer, ci?: boolean}[]}
 */
function needles(name, bytes) {
  const n = [];
  const b64u = bytes.toString('base64url');
  const b64 = bytes.toString('base64');
  n.push({ what: `${name} base64url`, str: b64u });
  n.push({ what: `${name} base64`, str: b64 });
  n.push({ what: `${name} base64 unpadded`, str: b64.replace(/=+$/, '') });
  n.push({ what: `${name} base64 percent-encoded`, str: encodeURIComponent(b64) });
  for (let k = 1; k <= 2; k++) {
    // Inside a longer base64 text the secret's bytes may start mid-group:
    // the characters of the groups made only of its bytes are fixed.
    const shifted = Buffer.concat([Buffer.alloc(k), bytes]);
    const full = Math.floor(shifted.length / 3);
    for (const enc of /** @type {const} */ (['base64', 'base64url'])) {
      n.push({ what: `${name} ${enc} at offset ${k}`, str: shifted.subarray(0, full * 3).toString(enc).slice(4) });
    }
  }
  n.push({ what: `${name} hex`, str: bytes.toString('hex'), ci: true });
  n.push({ what: `${name} percent-encoded bytes`, str: [...bytes].map((x) => '%' + x.toString(16).padStart(2, '0')).join(''), ci: true });
  n.push({ what: `${name} raw bytes`, bytes });
  n.push({ what: `${name} bytes as latin1 text in UTF-8`, bytes: Buffer.from(bytes.toString('latin1'), 'utf8') });
  for (let i = 0; i + 11 <= b64u.length; i++) n.push({ what: `${name} base64url chars ${i}..${i + 11}`, str: b64u.slice(i, i + 11) });
  const hex = bytes.toString('hex');
  for (let i = 0; i + 16 <= hex.length; i += 2) n.push({ what: `${name} hex digits ${i}..${i + 16}`, str: hex.slice(i, i + 16), ci: true });
  for (let i = 0; i + 8 <= bytes.length; i++) n.push({ what: `${name} bytes ${i}..${i + 8}`, bytes: bytes.subarray(i, i + 8) });
  return n;
}

/**
 * Where each needle occurs in the haystacks. Text needles are also looked
 * for in the URL-decoded and JSON-decoded forms of each haystack.
 * @param {{where: string, data: Buffer}[]} hay @param {ReturnType<typeof needles>} ns
 */
function findLeaks(hay, ns) {
  const hits = [];
  for (const h of hay) {
    const texts = [h.data.toString('latin1'), h.data.toString('utf8')];
    try { texts.push(decodeURIComponent(h.data.toString('utf8'))); } catch {}
    try { texts.push(JSON.stringify(JSON.parse(h.data.toString('utf8')), (_, v) => v)); } catch {}
    try {
      // Every string value inside a JSON message, unescaped.
      const strs = [];
      JSON.parse(h.data.toString('utf8'), (_, v) => { if (typeof v === 'string') strs.push(v); return v; });
      texts.push(strs.join('\n'));
    } catch {}
    const lower = texts.map((t) => t.toLowerCase());
    for (const nd of ns) {
      let hit = false;
      if (nd.bytes) hit = h.data.indexOf(nd.bytes) >= 0;
      else if (nd.str) hit = nd.ci ? lower.some((t) => t.includes(/** @type {string} */ (nd.str).toLowerCase())) : texts.some((t) => t.includes(/** @type {string} */ (nd.str)));
      if (hit) hits.push(`${nd.what} in ${h.where}`);
    }
  }
  return hits;
}

/** @param {import('playwright-core').Page} page */
const badge = (page) => page.evaluate(() => ({
  cls: document.getElementById('e2ee-badge')?.className || '',
  title: document.getElementById('e2ee-title')?.textContent || '',
  code: document.getElementById('e2ee-code')?.textContent || '',
}));

test('the server never sees the link secret: every request and signaling message of a call is free of it', async () => {
  const t0 = Date.now();
  proxy = await startProxy(parley.base);
  const a = await launchBrowser();
  open.push(a);
  const b = await launchBrowser();
  open.push(b);
  try {
    // Alice starts a consultation on the landing page, through the proxy:
    // the secret is made in her browser.
    await a.page.goto(proxy.base + '/');
    await a.page.click('#start');
    await a.page.locator('#created').waitFor({ state: 'visible' });
    const link = await a.page.inputValue('#link');
    const m = /^(http:\/\/127\.0\.0\.1:\d+)\/c\/([^/?#]+)#k=([A-Za-z0-9_-]+)$/.exec(link);
    assert.ok(m, `the landing page shows a call link with a secret: ${link}`);
    assert.equal(m[1], proxy.base, 'the link points at the origin the page came from (the proxy)');
    const room = m[2];
    const secretText = m[3];
    const secret = Buffer.from(secretText, 'base64url');
    assert.ok(secret.length >= 16, `secret has at least 16 bytes (${secret.length})`);
    assert.equal(secret.toString('base64url'), secretText, 'the secret is canonical base64url');

    // Alice follows "Join the consultation now" and the pre-join form.
    await a.page.click('#open');
    await a.page.waitForFunction(() => document.activeElement?.id === 'name', null, { timeout: 15000 });
    assert.ok(a.page.url().endsWith('#k=' + secretText), 'the call page keeps the secret in its fragment');
    await a.page.fill('#name', 'Alice');
    await a.page.click('#join');
    await a.page.locator('#call').waitFor({ state: 'visible', timeout: 20000 });
    // Bob opens the link he was sent, with the URL contract.
    const bobURL = new URL(link);
    bobURL.search = '?name=Bob&join=1';
    await joinCall(b, bobURL.href);

    const decodes = (/** @type {any[]} */ s) => s.length === 1 && s[0].videoFramesDecoded > 60;
    await waitForStats(a.page, decodes, 'Alice decodes Bob\'s video');
    await waitForStats(b.page, decodes, 'Bob decodes Alice\'s video');
    // The call really is end-to-end encrypted, with one safety code.
    const ba = await badge(a.page);
    const bb = await badge(b.page);
    assert.match(ba.cls, /\bok\b/, `Alice's badge is green: ${JSON.stringify(ba)}`);
    assert.match(bb.cls, /\bok\b/, `Bob's badge is green: ${JSON.stringify(bb)}`);
    assert.match(ba.code, /^\d{4} \d{4} \d{4}$/);
    assert.equal(ba.code, bb.code, 'both see the same safety code');

    await b.page.click('#hangup');
    await b.page.getByText('You left the call').first().waitFor();
    await a.page.getByText('Bob left the call.').waitFor({ timeout: 10000 });
    await sleep(1000); // Alice's new generation after Bob left, and the like
    // Closing the pages ends their sockets: that traffic is recorded too.
    for (const x of [a, b]) await x.close();
    open = [];
    await sleep(300);

    // ---- what the server received (and sent) ----
    const reqs = proxy.requests;
    const msgs = proxy.messages;
    /** @type {{where: string, data: Buffer}[]} */
    const hay = [];
    for (const [i, r] of reqs.entries()) {
      hay.push({ where: `request ${i} line: ${r.method} ${r.url}`, data: Buffer.from(`${r.method} ${r.url} HTTP/1.1`) });
      for (let j = 0; j < r.rawHeaders.length; j += 2) {
        hay.push({ where: `request ${i} (${r.method} ${r.url}) header ${r.rawHeaders[j]}`, data: Buffer.from(`${r.rawHeaders[j]}: ${r.rawHeaders[j + 1]}`, 'latin1') });
      }
      hay.push({ where: `request ${i} (${r.method} ${r.url}) body`, data: r.body });
    }
    for (const [i, x] of msgs.entries()) hay.push({ where: `ws message ${i} (${x.dir}, conn ${x.conn}, ${x.json?.type})`, data: Buffer.from(x.text, 'utf8') });
    for (const [i, x] of proxy.controls.entries()) hay.push({ where: `ws control frame ${i} (${x.dir}, opcode ${x.opcode})`, data: x.payload });

    const keys = await derivedKeys(secret, room);
    const ns = [...needles('secret', secret)];
    for (const [label, k] of Object.entries(keys)) ns.push(...needles(label, k));

    // The search finds what it looks for: plant each full-length form of
    // the secret in a copy of a real message.
    const sample = msgs.find((x) => x.json?.type === 'offer');
    assert.ok(sample, 'an offer was recorded');
    for (const nd of needles('secret', secret).slice(0, 12)) {
      const planted = Buffer.concat([Buffer.from(sample.text.slice(0, 200)), nd.bytes || Buffer.from(/** @type {string} */ (nd.str)), Buffer.from(sample.text.slice(200))]);
      assert.ok(findLeaks([{ where: 'planted', data: planted }], ns).length > 0, `the search would find: ${nd.what}`);
    }

    const leaks = findLeaks(hay, ns);
    assert.deepEqual(leaks, [], 'no trace of the link secret or its keys reached the server');

    // The recording is the whole call, not an empty log.
    const lines = reqs.map((r) => `${r.method} ${r.url.replace(/\?.*/, '')}`);
    assert.ok(lines.includes('GET /'), 'landing page');
    assert.ok(lines.includes('POST /api/rooms'), 'room creation');
    assert.ok(lines.includes(`GET /c/${room}`), 'call page');
    assert.ok(lines.includes(`GET /api/rooms/${room}`), 'room check');
    assert.ok(lines.some((l) => /^GET \/e2ee\/keys\.js$/.test(l)), 'the key agreement script');
    assert.equal(reqs.filter((r) => r.upgrade && r.url === '/ws').length, 2, 'two signaling sockets');
    const bodies = reqs.reduce((n, r) => n + r.body.length, 0);
    const c2s = msgs.filter((x) => x.dir === 'c2s');
    const s2c = msgs.filter((x) => x.dir === 's2c');
    /** @param {any[]} list */
    const types = (list) => list.reduce((o, x) => { const k = x.json?.type === 'e2ee' ? `e2ee/${x.json.payload?.t}` : x.json?.type; o[k] = (o[k] || 0) + 1; return o; }, /** @type {Record<string, number>} */ ({}));
    const tc = types(c2s);
    const ts = types(s2c);
    for (const k of ['join', 'offer', 'answer', 'candidate', 'e2ee/hello', 'e2ee/confirm', 'e2ee/key', 'leave']) {
      assert.ok(tc[k] > 0, `browsers sent ${k} (got ${JSON.stringify(tc)})`);
    }
    assert.equal(tc.join, 2);
    for (const k of ['welcome', 'peer-joined', 'peer-left', 'offer', 'answer', 'e2ee/hello', 'e2ee/confirm', 'e2ee/key']) {
      assert.ok(ts[k] > 0, `server sent ${k} (got ${JSON.stringify(ts)})`);
    }
    assert.deepEqual(proxy.problems, [], 'the relay saw only whole text messages');
    console.log(`recorded ${reqs.length} HTTP requests (${reqs.filter((r) => r.upgrade).length} upgrades, ${bodies} body bytes), ` +
      `${c2s.length} messages to the server ${JSON.stringify(tc)}, ${s2c.length} from it ${JSON.stringify(ts)}, ` +
      `${proxy.controls.length} control frames; ${hay.length} haystacks searched for ${ns.length} needles; safety code ${ba.code}; ${Date.now() - t0} ms`);
  } catch (e) {
    for (const [i, x] of [a, b].entries()) console.log(`--- browser ${i} console ---\n` + x.consoleLines.slice(-30).join('\n'));
    console.log('--- proxy problems ---\n' + proxy.problems.join('\n'));
    console.log('--- parley log (tail) ---\n' + parley.logs.split('\n').slice(-40).join('\n'));
    throw e;
  }
});
