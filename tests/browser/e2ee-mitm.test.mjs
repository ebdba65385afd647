// A signaling man-in-the-middle that replaces a participant's public key is
// caught. The proxy (proxy.mjs) sits where the server is: it sees and can
// rewrite every signaling message between Alice and Bob.
// - Outsider (no link secret): its forged hellos fail the link MAC; both
//   pages turn red naming the other person, no peer is confirmed, and no
//   peer connection is made (no offer, answer or candidate is sent).
// - Insider (knows the link secret, e.g. a server operator who was sent the
//   link): it runs the real key agreement (e2ee/keys.js, in Node) with each
//   side under the other's id and even relays the real sender keys, so both
//   pages are green and media flows — but Alice and Bob see different
//   safety codes, which is how they notice. Control: through an untouched
//   proxy both see the same code.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, webcrypto } from 'node:crypto';
import { startParley, launchBrowser, joinCall, sleep } from './harness.mjs';
import { startProxy } from './proxy.mjs';
import { KeyAgreement, safetyCode, b64url, unb64url } from '../../e2ee/keys.js';
import { splitKid } from '../../e2ee/sframe.js';

/** @type {Awaited<ReturnType<typeof startParley>>} */
let parley;
/** @type {Array<Awaited<ReturnType<typeof launchBrowser>>>} */
let open = [];
/** @type {Array<Awaited<ReturnType<typeof startProxy>>>} */
let proxies = [];

/** Every KeyAgreement made here, so their rekey timers stop at the end. @type {KeyAgreement[]} */
const agreements = [];
/** @param {KeyAgreement} k */
const track = (k) => { agreements.push(k); return k; };

before(async () => { parley = await startParley(); });
after(async () => {
  for (const k of agreements) k.stop();
  for (const b of open) await b.close();
  for (const p of proxies) await p.close();
  await parley?.stop();
});

const te = new TextEncoder();
/** @param {string} s */
const lp = (s) => { const b = te.encode(s); return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]); };

/** K_code as the pages derive it from the link secret. @param {Uint8Array} secret @param {string} room */
async function kCodeOf(secret, room) {
  const k = await webcrypto.subtle.importKey('raw', secret, 'HKDF', false, ['deriveBits']);
  const raw = await webcrypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: lp(room), info: te.encode('parley/1 safety-key') }, k, 256);
  return webcrypto.subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
}

/**
 * The safety code the pages should show for `members`, computed here from
 * the link secret and what crossed the proxy. Works with both versions of
 * keys.js: the first (code over the members' keys only) and the one with a
 * commit-and-reveal round (code also over an epoch and every member's
 * revealed random r, taken from the recorded "reveal" messages).
 * @param {Uint8Array} secret @param {string} room @param {{pid: string, pub: Uint8Array}[]} members
 * @param {Awaited<ReturnType<typeof startProxy>>} proxy
 */
async function expectedCode(secret, room, members, proxy) {
  const kCode = await kCodeOf(secret, room);
  const code = /** @type {(...a: any[]) => Promise<string>} */ (safetyCode);
  if (code.length <= 3) return code(kCode, room, members);
  const items = members.map((m) => lp(m.pid)).sort(Buffer.compare);
  const epoch = new Uint8Array(await webcrypto.subtle.digest('SHA-256', Buffer.concat([Buffer.from('parley/1 epoch'), lp(room), ...items])));
  const tag = b64url(epoch);
  // One reveal per sending connection: that of the round's last attempt
  // (a membership that comes back runs a new attempt, docs/security.md §4.1).
  const last = Math.max(-1, ...proxy.messages.filter((m) => m.dir === 'c2s' && m.json?.type === 'e2ee' && m.json.payload?.t === 'reveal' && m.json.payload.epoch === tag).map((m) => m.json.payload.attempt ?? 0));
  /** @type {Map<number, Uint8Array>} */
  const reveals = new Map();
  for (const m of proxy.messages) {
    const p = m.json?.payload;
    if (m.dir === 'c2s' && m.json?.type === 'e2ee' && p?.t === 'reveal' && p.epoch === tag && (p.attempt ?? 0) === last) reveals.set(m.conn, unb64url(p.r));
  }
  if (reveals.size !== members.length) return `(${reveals.size} reveals for ${members.length} members)`;
  return code(kCode, room, epoch, members, [...reveals.values()]);
}

const noHooks = () => ({
  send() {}, installSendKey() {}, installRecvKey() {}, dropPeer() {}, onChange() {}, onWarning() {},
});

/** What the badge shows. @param {import('playwright-core').Page} page */
const badge = (page) => page.evaluate(() => {
  const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
  return {
    cls: $('e2ee-badge').className,
    title: $('e2ee-title').textContent || '',
    code: $('e2ee-code').textContent || '',
    codeShown: !$('e2ee-code-line').hidden,
    helpShown: !$('e2ee-help').hidden,
  };
});

/**
 * Polls the badge until pred holds.
 * @param {import('playwright-core').Page} page @param {(b: Awaited<ReturnType<typeof badge>>) => boolean} pred @param {string} what
 */
async function waitBadge(page, pred, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const b = await badge(page);
    if (pred(b)) return b;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; badge: ${JSON.stringify(b)}`);
    await sleep(200);
  }
}

/** Inbound video of the page's one connection. @param {import('playwright-core').Page} page */
const videoIn = (page) => page.evaluate(async () => {
  // @ts-ignore
  const pcs = /** @type {RTCPeerConnection[]} */ ((window.__pcs || []).filter((pc) => pc.connectionState !== 'closed'));
  const s = { conns: pcs.length, state: pcs[0]?.connectionState || '', framesReceived: 0, framesDecoded: 0, bytesReceived: 0, packetsReceived: 0 };
  for (const pc of pcs) {
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        s.framesReceived += r.framesReceived || 0;
        s.framesDecoded += r.framesDecoded || 0;
        s.bytesReceived += r.bytesReceived || 0;
        s.packetsReceived += r.packetsReceived || 0;
      }
    });
  }
  return s;
});

/** @param {import('playwright-core').Page} page @param {(s: Awaited<ReturnType<typeof videoIn>>) => boolean} pred @param {string} what */
async function waitVideo(page, pred, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await videoIn(page);
    if (pred(s)) return s;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; video: ${JSON.stringify(s)}`);
    await sleep(300);
  }
}

/**
 * One case: a fresh room, a fresh proxy with `hook`, Alice then Bob joining
 * through it. The browsers are closed at the end of the case.
 * @param {string} title
 * @param {(ctx: {proxy: Awaited<ReturnType<typeof startProxy>>, room: {id: string, url: string, secret: string}, secret: Uint8Array}) => import('./proxy.mjs').Hook|undefined} makeHook
 * @param {(ctx: any) => Promise<void>} body
 */
function callCase(title, makeHook, body) {
  // A case takes about 10 s here; the limit leaves room for a machine shared with other browser tests.
  test(title, { timeout: 90000 }, async () => {
    const t0 = Date.now();
    const room = await parley.room();
    const secret = unb64url(room.secret);
    const proxy = await startProxy(parley.base);
    proxies.push(proxy);
    const ctx = { proxy, room, secret, /** @type {any} */ a: null, /** @type {any} */ b: null };
    proxy.setHook(makeHook(ctx));
    const link = (/** @type {string} */ name) => `${proxy.base}${room.url}?name=${name}&join=1#k=${room.secret}`;
    const a = ctx.a = await launchBrowser();
    open.push(a);
    const b = ctx.b = await launchBrowser();
    open.push(b);
    try {
      await joinCall(a, link('Alice'));
      await joinCall(b, link('Bob'));
      await body(ctx);
      console.log(`${title}: ${Date.now() - t0} ms`);
    } catch (e) {
      for (const [i, x] of [a, b].entries()) console.log(`--- browser ${i} console ---\n` + x.consoleLines.slice(-30).join('\n'));
      console.log('--- proxy problems ---\n' + proxy.problems.join('\n'));
      console.log('--- parley log (tail) ---\n' + parley.logs.split('\n').slice(-30).join('\n'));
      throw e;
    } finally {
      for (const x of [a, b]) await x.close();
      open = open.filter((x) => x !== a && x !== b);
    }
  });
}

/** The participants' ids from the welcomes the proxy saw (Alice joined first). @param {Awaited<ReturnType<typeof startProxy>>} proxy */
function ids(proxy) {
  const w = proxy.messages.filter((m) => m.dir === 's2c' && m.json?.type === 'welcome');
  return { A: w[0]?.json.id, connA: w[0]?.conn, B: w[1]?.json.id, connB: w[1]?.conn };
}

/** The hello each participant really sent (as the browser sent it, before any rewriting). @param {Awaited<ReturnType<typeof startProxy>>} proxy @param {number} conn */
function realHello(proxy, conn) {
  return proxy.messages.find((m) => m.dir === 'c2s' && m.conn === conn && m.json?.type === 'e2ee' && m.json.payload?.t === 'hello')?.json.payload;
}

const green = (/** @type {Awaited<ReturnType<typeof badge>>} */ x) =>
  /\bok\b/.test(x.cls) && x.title.startsWith('End-to-end encrypted: only the people') && x.codeShown && x.helpShown && /^\d{4} \d{4} \d{4}$/.test(x.code);

callCase('control: through an untouched proxy both sides are green with the same safety code', () => undefined, async ({ proxy, room, secret, a, b }) => {
  const ba = await waitBadge(a.page, green, 'Alice green');
  const bb = await waitBadge(b.page, green, 'Bob green');
  await waitVideo(a.page, (s) => s.framesDecoded > 30, 'Alice decodes');
  await waitVideo(b.page, (s) => s.framesDecoded > 30, 'Bob decodes');
  assert.equal(ba.code, bb.code, 'same safety code on both sides');
  // The code is the one over both real keys.
  const { A, B, connA, connB } = ids(proxy);
  const ha = realHello(proxy, connA);
  const hb = realHello(proxy, connB);
  const expected = await expectedCode(secret, room.id, [{ pid: A, pub: unb64url(ha.pub) }, { pid: B, pub: unb64url(hb.pub) }], proxy);
  assert.equal(ba.code, expected, 'the code covers Alice\'s and Bob\'s real keys');
  assert.deepEqual(proxy.problems, []);
  console.log(`control: Alice ${ba.code}, Bob ${bb.code}; ${proxy.messages.length} messages relayed`);
});

callCase('a server that withholds the safety-code reveals: after 30 s both badges warn in red that there is no code, naming the other; media goes on; the reveals let through, both are green with one code', (ctx) => {
  /** @type {{conn: number, to: string, payload: any}[]} */
  const held = ctx.held = [];
  return (dir, conn, m) => {
    if (dir !== 'c2s' || m.type !== 'e2ee' || m.payload?.t !== 'reveal') return undefined;
    held.push({ conn, to: m.to, payload: m.payload });
    return [];
  };
}, async ({ proxy, a, b, held }) => {
  const t0 = Date.now();
  const pending = (/** @type {Awaited<ReturnType<typeof badge>>} */ x) => /\bpending\b/.test(x.cls) && !x.codeShown;
  await waitBadge(a.page, pending, 'Alice waiting for the code');
  await waitBadge(b.page, pending, 'Bob waiting for the code');
  await waitVideo(a.page, (s) => s.framesDecoded > 30, 'Alice decodes');
  await waitVideo(b.page, (s) => s.framesDecoded > 30, 'Bob decodes');
  assert.ok(held.length >= 2, `the proxy holds both reveals (${held.length})`);
  const early = await badge(a.page);
  assert.ok(!/\bbad\b/.test(early.cls) || Date.now() - t0 > 25000, `no warning before the timeout: ${JSON.stringify(early)}`);
  const warned = (/** @type {string} */ other) => (/** @type {Awaited<ReturnType<typeof badge>>} */ x) =>
    /\bbad\b/.test(x.cls) && x.title.startsWith('Warning: no safety code to compare.') && x.title.includes(`The check is waiting for ${other}`);
  const wa = await waitBadge(a.page, warned('Bob'), 'Alice\'s warning naming Bob', 45000);
  const wb = await waitBadge(b.page, warned('Alice'), 'Bob\'s warning naming Alice', 10000);
  const took = Date.now() - t0;
  console.log(`withheld reveals: warned after ~${took} ms: ${wa.title}`);
  assert.ok(took >= 25000, `not before the 30 s timeout (${took} ms from Bob's join)`);
  for (const [who, x] of /** @type {const} */ ([['Alice', wa], ['Bob', wb]])) {
    assert.ok(!x.codeShown && !x.helpShown, `${who} is shown no code to compare`);
    assert.match(x.title, /you cannot check that nobody else is listening/);
    assert.ok(!x.code || !x.codeShown, `${who}: no code on screen`);
    assert.doesNotMatch(x.title, /not shown/, 'media is not said to be hidden');
  }
  // A warning, not a rejection: media goes on.
  const before = (await videoIn(a.page)).framesDecoded;
  await waitVideo(a.page, (s) => s.framesDecoded > before + 20, 'Alice still decodes Bob');
  // The reveals go through after all: the code appears on both, the same.
  const { A, B, connA, connB } = ids(proxy);
  for (const h of held) proxy.send(h.conn === connA ? connB : connA, 's2c', { type: 'e2ee', from: h.conn === connA ? A : B, payload: h.payload });
  const ga = await waitBadge(a.page, green, 'Alice green once the reveals arrive');
  const gb = await waitBadge(b.page, green, 'Bob green once the reveals arrive');
  assert.equal(ga.code, gb.code, 'one code on both sides');
});

callCase('outsider: a proxy without the link secret that swaps public keys is rejected, both pages warn, no connection is made', (ctx) => {
  const { proxy, room } = ctx;
  // The attacker's own key pair and its best guess at the hello key.
  const attacker = track(new KeyAgreement(room.id, randomBytes(16), noHooks()));
  const ready = attacker.start('attacker');
  /** @param {any} p */
  const forge = async (p) => {
    await ready;
    const mac = new Uint8Array(await webcrypto.subtle.sign('HMAC', /** @type {CryptoKey} */ (attacker.kHello),
      attacker.helloInput(p.pid, attacker.pub, unb64url(p.nonce))));
    return { ...p, pub: b64url(attacker.pub), mac: b64url(mac) };
  };
  /** @type {any} */
  let helloA = null;
  return async (dir, conn, m) => {
    if (dir !== 'c2s' || m.type !== 'e2ee' || m.payload?.t !== 'hello') return undefined;
    const { A, connB } = ids(proxy);
    if (m.payload.pid === A) helloA = m.payload;
    if (conn === connB && helloA) {
      // Towards Bob: Alice's hello with the attacker's key in it.
      proxy.send(connB, 's2c', { type: 'e2ee', from: A, payload: await forge(helloA) });
    }
    // Towards everyone else: this hello with the attacker's key.
    return [{ ...m, payload: await forge(m.payload) }];
  };
}, async ({ proxy, room, secret, a, b }) => {
  const bad = (/** @type {string} */ name) => (/** @type {Awaited<ReturnType<typeof badge>>} */ x) => /\bbad\b/.test(x.cls) && x.title.includes(name);
  const ba = await waitBadge(a.page, bad('Bob'), 'Alice\'s red warning naming Bob');
  const bb = await waitBadge(b.page, bad('Alice'), 'Bob\'s red warning naming Alice');
  for (const [who, x] of /** @type {const} */ ([['Alice', ba], ['Bob', bb]])) {
    assert.match(x.title, /^Warning: .*sent a key that does not match this call link/, `${who}'s warning says why: ${x.title}`);
    assert.ok(!x.helpShown, `${who} is not told to compare a code (no confirmed peer)`);
  }
  // The code on screen covers each person alone: the other is not
  // confirmed. (With the commit-and-reveal keys.js a lone member's code
  // includes a random r that never leaves the page, so it cannot be
  // recomputed here; the check below that nobody sent anything but hellos
  // covers that version.)
  if (safetyCode.length <= 3) {
    const { A, B, connA, connB } = ids(proxy);
    const soloA = await expectedCode(secret, room.id, [{ pid: A, pub: unb64url(realHello(proxy, connA).pub) }], proxy);
    const soloB = await expectedCode(secret, room.id, [{ pid: B, pub: unb64url(realHello(proxy, connB).pub) }], proxy);
    assert.equal(ba.code, soloA, 'Alice\'s code covers only herself');
    assert.equal(bb.code, soloB, 'Bob\'s code covers only himself');
  }
  // No connection at all: a page connects only to a peer whose key it
  // confirmed (docs/security.md §3.4), so no offer, answer or candidate
  // (no IP address) went to the forged peer, and no media flows.
  await sleep(4000);
  const va = await videoIn(a.page);
  const vb = await videoIn(b.page);
  for (const [who, v, page] of /** @type {const} */ ([['Alice', va, a.page], ['Bob', vb, b.page]])) {
    // @ts-ignore
    assert.equal(await page.evaluate(() => window.__pcs.length), 0, `${who} made no peer connection: ${JSON.stringify(v)}`);
  }
  const rtc = proxy.messages.filter((m) => m.dir === 'c2s' && ['offer', 'answer', 'candidate'].includes(m.json?.type));
  assert.deepEqual(rtc, [], 'no offer, answer or candidate was sent');
  // No key agreement got past the hellos.
  const c2s = proxy.messages.filter((m) => m.dir === 'c2s' && m.json?.type === 'e2ee').map((m) => m.json.payload.t);
  assert.deepEqual(c2s.filter((t) => t !== 'hello'), [], 'nobody sent a confirmation, a key or a safety-code commitment');
  const rewritten = proxy.messages.filter((m) => m.action === 'rewritten').length;
  const injected = proxy.messages.filter((m) => m.action === 'injected').length;
  assert.ok(rewritten >= 2 && injected >= 1, `hellos were forged (${rewritten} rewritten, ${injected} injected)`);
  const final = [await badge(a.page), await badge(b.page)];
  assert.ok(final.every((x) => /\bbad\b/.test(x.cls)), 'still red after seconds of media');
  assert.deepEqual(proxy.problems, []);
  console.log(`outsider: ${rewritten} hellos rewritten, ${injected} injected; Alice: "${final[0].title}" (solo code ${ba.code}); Bob: "${final[1].title}" (solo code ${bb.code}); ` +
    `video at Alice ${JSON.stringify(va)}, at Bob ${JSON.stringify(vb)}`);
});

callCase('insider: a proxy with the link secret that terminates the key agreement on both sides is caught by differing safety codes', (ctx) => {
  const { proxy, room, secret } = ctx;
  const st = ctx.mitm = {
    /** @type {KeyAgreement|null} impersonates Alice towards Bob */ ma: null,
    /** @type {KeyAgreement|null} impersonates Bob towards Alice */ mb: null,
    /** @type {Promise<void>|null} */ maStarted: null,
    /** @type {Promise<void>|null} */ mbStarted: null,
    A: '', B: '', connA: 0, connB: 0,
    /** @type {string[]} */ warnings: [],
    /** @type {string[]} */ relayed: [],
    intercepted: 0,
    relayChain: Promise.resolve(),
  };
  /**
   * Re-wraps a real sender key for the other side, so media flows and
   * nothing looks wrong but the codes.
   * @param {() => [KeyAgreement|null, string, number]} onward the agreement with the other victim, their id and connection
   * @param {string} fromId whose key @param {bigint} kid @param {Uint8Array} key
   */
  const relayKey = (onward, fromId, kid, key) => {
    st.relayChain = st.relayChain.then(async () => {
      // The other side may not have met its impostor yet: wait until it has.
      const deadline = Date.now() + 15000;
      for (;;) {
        const [v, to] = onward();
        if (v && to && v.confirmed().includes(to)) break;
        if (Date.now() > deadline) throw new Error('the other side never confirmed its impostor');
        await sleep(20);
      }
      const [via0, toId, toConn] = onward();
      const via = /** @type {KeyAgreement} */ (via0);
      const m = /** @type {any} */ (via.members.get(toId));
      const { index, generation: gen, step } = splitKid(kid);
      const iv = webcrypto.getRandomValues(new Uint8Array(12));
      const ct = new Uint8Array(await webcrypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: via.keyAAD(fromId, toId, index, gen, step), tagLength: 128 }, m.wrap, key));
      proxy.send(toConn, 's2c', { type: 'e2ee', from: fromId, payload: { t: 'key', index, gen, step, iv: b64url(iv), ct: b64url(ct) } });
      st.relayed.push(`${fromId}→${toId} index ${index} gen ${gen} step ${step}`);
    }).catch((e) => { st.warnings.push(String(e)); });
  };
  /**
   * @param {() => string} self whose id it uses @param {() => string} victim @param {() => number} victimConn
   * @param {() => [KeyAgreement|null, string, number]} onward where the victim's own sender key goes
   */
  const impostor = (self, victim, victimConn, onward) => {
    const ka = track(new KeyAgreement(room.id, secret, {
      send: (payload) => proxy.send(victimConn(), 's2c', { type: 'e2ee', from: self(), payload }),
      installSendKey() {},
      installRecvKey: (_peer, kid, key) => relayKey(onward, victim(), kid, key.slice()),
      dropPeer() {},
      onChange() {},
      onWarning: (peer, text) => st.warnings.push(`${peer}: ${text}`),
    }));
    // It hands on the victims' real keys instead of its own.
    ka.sendKeyTo = async () => {};
    return ka;
  };
  return async (dir, conn, m) => {
    if (dir === 's2c' && m.type === 'welcome') {
      if (!st.A) { st.A = m.id; st.connA = conn; } else { st.B = m.id; st.connB = conn; }
      return undefined;
    }
    if (dir === 's2c' && m.type === 'peer-joined' && conn === st.connA && !st.mb) {
      // Bob is coming: say hello to Alice as "Bob", with our own key.
      st.B = m.peer.id;
      st.mb = impostor(() => st.B, () => st.A, () => st.connA, () => [st.ma, st.B, st.connB]);
      const mb = st.mb;
      st.mbStarted = new Promise((r) => setImmediate(r)).then(() => mb.start(st.B));
      return undefined;
    }
    if (dir === 'c2s' && m.type === 'e2ee') {
      // Never forward a real key message: each side talks to an impostor.
      st.intercepted++;
      if (conn === st.connA) {
        if (!st.mb) return []; // Alice's hello to an empty room
        await st.mbStarted;
        st.mb.onMessage(st.A, m.payload);
        return [];
      }
      if (conn === st.connB) {
        if (!st.ma) {
          // Bob is ready (this is his hello): say hello to him as "Alice".
          st.ma = impostor(() => st.A, () => st.B, () => st.connB, () => [st.mb, st.A, st.connA]);
          st.maStarted = st.ma.start(st.A);
        }
        await st.maStarted;
        st.ma.onMessage(st.B, m.payload);
        return [];
      }
    }
    return undefined;
  };
}, async (ctx) => {
  const { proxy, a, b } = ctx;
  const st = ctx.mitm;
  const t0 = Date.now();
  const ba = await waitBadge(a.page, green, 'Alice green');
  const bb = await waitBadge(b.page, green, 'Bob green');
  const tGreen = Date.now() - t0;
  // Media flows both ways: the impostors handed on the real sender keys.
  await waitVideo(a.page, (s) => s.framesDecoded > 60, 'Alice decodes Bob');
  await waitVideo(b.page, (s) => s.framesDecoded > 60, 'Bob decodes Alice');
  const tVideo = Date.now() - t0;
  await sleep(2500); // longer than the pages take to mark undecryptable media red
  const fa = await badge(a.page);
  const fb = await badge(b.page);
  assert.ok(green(fa), `Alice is still green: ${JSON.stringify(fa)}`);
  assert.ok(green(fb), `Bob is still green: ${JSON.stringify(fb)}`);
  assert.equal(fa.code, ba.code);
  assert.equal(fb.code, bb.code);
  assert.notEqual(fa.code, fb.code, 'Alice and Bob read different safety codes');
  // Each code is the one the impostor facing that person computed.
  assert.equal(fa.code, st.mb.code, 'Alice\'s code is her view with the fake Bob');
  assert.equal(fb.code, st.ma.code, 'Bob\'s code is his view with the fake Alice');
  assert.deepEqual(st.mb.confirmed(), [st.A], 'the fake Bob confirmed Alice');
  assert.deepEqual(st.ma.confirmed(), [st.B], 'the fake Alice confirmed Bob');
  assert.deepEqual(st.warnings, [], 'the impostors were never rejected');
  // The real key messages never crossed.
  const forwardedE2EE = proxy.messages.filter((m) => m.json?.type === 'e2ee' && m.action === 'forwarded');
  assert.deepEqual(forwardedE2EE, [], 'no e2ee message went through unchanged');
  assert.ok(st.relayed.length >= 2, `real sender keys relayed both ways: ${st.relayed.join(', ')}`);
  assert.deepEqual(proxy.problems, []);
  console.log(`insider: Alice sees ${fa.code}, Bob sees ${fb.code}; intercepted ${st.intercepted} e2ee messages, ` +
    `injected ${proxy.messages.filter((m) => m.action === 'injected').length}; relayed keys: ${st.relayed.join(', ')}; ` +
    `green after ${tGreen} ms, 60 frames decoded after ${tVideo} ms`);
});
