// Cross-browser: a Chromium ↔ Firefox call through Parley, end-to-end
// encrypted (SFrame in each browser's encoded-transform worker), decoding
// both ways, with the same safety code on both screens. Chromium is the
// playwright harness's; Firefox is Debian's firefox-esr driven by npm
// puppeteer-core over WebDriver BiDi (tests/browser/firefox.mjs). Both
// orders: whoever joins second makes the offer. Every call goes through a
// recording proxy (proxy.mjs), which checks that no description either
// browser sends or applies carries an audio-level RTP header extension
// (they travel outside SRTP's encryption and tell who speaks), and which
// plays a server that rewrites the codecs offered to Firefox: Firefox keeps
// VP8 only, and refuses a video offer without it rather than send another
// codec with a VP8-sized clear prefix (docs/security.md §3.6).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startParley, launchBrowser, sleep } from './harness.mjs';
import { ensureFirefox, launchFirefox, recordPageInternals, callStats, e2eeCounters, badge } from './firefox.mjs';
import { startProxy } from './proxy.mjs';

// scripts/test.sh installs firefox-esr; skip only where it is missing and
// cannot be installed here either.
const noFirefox = ensureFirefox();
if (noFirefox) console.log(`SKIPPING the Firefox tests: ${noFirefox}`);

/** @type {Awaited<ReturnType<typeof startParley>>} */
let parley;
/** @type {Array<{close: () => Promise<void>}>} */
let open = [];

before(async () => { if (!noFirefox) parley = await startParley(); });
after(async () => {
  for (const b of open) await b.close();
  await parley?.stop();
});

/** @typedef {{name: string, page: any, consoleLines: string[]}} Side */

/** @param {Side} side @param {string} url */
async function join(side, url) {
  await side.page.goto(url);
  await side.page.waitForSelector('#call', { visible: true, timeout: 30000 });
}

/**
 * Polls a page's call statistics until check() holds.
 * @param {Side} side
 * @param {(s: Awaited<ReturnType<typeof callStats>>) => boolean} check
 * @param {string} what
 */
async function waitStats(side, check, what, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await callStats(side.page);
    if (check(s)) return s;
    if (Date.now() > deadline) throw new Error(`${side.name}: timed out waiting for ${what}; last stats: ${JSON.stringify(s)}`);
    await sleep(500);
  }
}

/** Polls until both badges show the same non-empty code with everyone confirmed. @param {Side[]} sides */
async function waitSameCode(sides, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const bs = await Promise.all(sides.map((s) => badge(s.page)));
    if (bs.every((b) => b.code && b.code === bs[0].code && /only the people in this call/.test(b.title))) return bs;
    if (Date.now() > deadline) throw new Error(`badges never agreed: ${JSON.stringify(bs)}`);
    await sleep(250);
  }
}

/**
 * Asserts that no offer or answer that crossed the proxy, and no
 * description either page applied, has an audio-level extension.
 * @param {Awaited<ReturnType<typeof startProxy>>} proxy @param {Side[]} sides
 */
async function assertNoAudioLevels(proxy, sides) {
  const sent = proxy.messages.filter((m) => m.dir === 'c2s' && (m.json?.type === 'offer' || m.json?.type === 'answer'));
  assert.ok(sent.length >= 2, 'an offer and an answer crossed the server');
  for (const m of sent) assert.doesNotMatch(m.json.sdp, /audio-level/, `no audio-level extension in a sent ${m.json.type}`);
  for (const side of sides) {
    const applied = await side.page.evaluate(() => /** @type {any} */ (window).__pcs.map((/** @type {RTCPeerConnection} */ pc) =>
      [pc.localDescription?.sdp || '', pc.remoteDescription?.sdp || '']).flat());
    assert.ok(applied.some((/** @type {string} */ x) => /m=audio/.test(x)), `${side.name}: descriptions applied`);
    for (const sdp of applied) assert.doesNotMatch(sdp, /audio-level/, `${side.name}: no audio-level extension applied`);
  }
}

/**
 * One call, the two joining in the given order; asserts decoding both ways,
 * audio, the SFrame counters and the badges, and reports the figures.
 * @param {import('node:test').TestContext} t
 * @param {'firefox'|'chromium'} second who joins second (and so offers)
 * @param {{relay?: boolean, hook?: import('./proxy.mjs').Hook}} [opts] relay: both join with relay=1; hook: the proxy's rewriting
 */
async function crossCall(t, second, opts = {}) {
  const extra = opts.relay ? '&relay=1' : '';
  const room = await parley.room();
  const proxy = await startProxy(parley.base, { hook: opts.hook });
  open.push(proxy);
  const link = (/** @type {string} */ q) => `${proxy.base}${room.url}?${q}#k=${room.secret}`;
  const chromium = await launchBrowser();
  open.push(chromium);
  await chromium.ctx.addInitScript(recordPageInternals);
  // The test's relay advertises 127.0.0.1 (-turn-public-ip), and Firefox
  // drops relay candidates on a loopback address unless this pref is set
  // (without it: "ICE failed, your TURN server appears to be broken"). A
  // real relay has a routable address, so only the relay test sets it.
  const firefox = await launchFirefox(opts.relay ? { prefs: { 'media.peerconnection.ice.loopback': true } } : {});
  open.push(firefox);
  t.diagnostic(`Firefox: ${firefox.version}`);
  /** @type {Side} */
  const chrome = { name: 'Chromium', page: chromium.page, consoleLines: chromium.consoleLines };
  /** @type {Side} */
  const fox = { name: 'Firefox', page: firefox.page, consoleLines: firefox.consoleLines };
  const t0 = Date.now();
  try {
    const order = second === 'firefox' ? [chrome, fox] : [fox, chrome];
    for (const side of order) {
      await join(side, link((side === chrome ? 'name=Chrome&join=1' : 'name=Fox&join=1') + extra));
    }
    // The other's name is on each screen.
    await chrome.page.getByText('Fox', { exact: true }).waitFor({ timeout: 20000 });
    await fox.page.waitForFunction(() => [...document.querySelectorAll('.tile.remote .who')].some((e) => e.textContent === 'Chrome'), { timeout: 20000 });

    // Video decodes both ways, and keeps up with what arrives.
    for (const side of [chrome, fox]) {
      const s = await waitStats(side, (x) => x.length === 1 && x[0].state === 'connected' && x[0].videoFramesDecoded > 100,
        'remote video framesDecoded > 100');
      // Each side sends through its own TURN allocation. (The remote end
      // may show as prflx: the other's relayed checks can arrive before its
      // relay candidate is signaled.)
      if (opts.relay) assert.match(s[0].local, /^relay /, `${side.name}: the local candidate of the selected pair is a relay one (${s[0].local})`);
    }
    t.diagnostic(`first 100 frames decoded on both sides ${Date.now() - t0} ms after the first join`);

    // Audio samples grow on both sides, and video keeps decoding.
    const a = { c: (await callStats(chrome.page))[0], f: (await callStats(fox.page))[0] };
    const ctrA = { c: await e2eeCounters(chrome.page), f: await e2eeCounters(fox.page) };
    await sleep(3000);
    const b = { c: (await callStats(chrome.page))[0], f: (await callStats(fox.page))[0] };
    for (const [side, x, y] of /** @type {const} */ ([['Chromium', a.c, b.c], ['Firefox', a.f, b.f]])) {
      assert.ok(y.audioSamples > x.audioSamples + 48000, `${side}: remote audio samples grow: ${x.audioSamples} -> ${y.audioSamples}`);
      assert.ok(y.videoFramesDecoded > x.videoFramesDecoded + 20, `${side}: remote video keeps decoding: ${x.videoFramesDecoded} -> ${y.videoFramesDecoded}`);
      assert.ok(y.videoFramesReceived > 0, `${side}: framesReceived is reported`);
      // Close to what arrives: over the last 3 s, and since the start (the
      // first frames can arrive before the sender's key does: those are
      // received but cannot be opened, so they are never decoded).
      const dDec = y.videoFramesDecoded - x.videoFramesDecoded;
      const dRecv = y.videoFramesReceived - x.videoFramesReceived;
      assert.ok(dDec >= 0.9 * dRecv, `${side}: over the last 3 s, decoded frames keep up with received frames: ${dDec} of ${dRecv}`);
      assert.ok(y.videoFramesDecoded >= 0.8 * y.videoFramesReceived,
        `${side}: decoded frames close to received frames: ${y.videoFramesDecoded} of ${y.videoFramesReceived}`);
      assert.ok(y.audioEnergy > 0, `${side}: remote audio is not silent`);
    }

    // The frames really went through SFrame: each worker sealed what it
    // sent and opened what it decoded. Drops: the first frames can arrive
    // before the key does, and a receiver can hand its transform the same
    // frame twice (seen on both browsers under load: the duplicate fails
    // SFrame's replay check); the worker counts both as "open" failures, so
    // allow a few while the call runs.
    /** @type {Record<string, any>} */
    const ctr = {};
    for (const side of [chrome, fox]) {
      const before = side === chrome ? ctrA.c : ctrA.f;
      const c = await e2eeCounters(side.page);
      assert.ok(before && c, `${side.name}: the e2ee worker reports counters`);
      const peers = Object.values(c.peers);
      assert.equal(peers.length, 1, `${side.name}: the worker holds keys for one peer`);
      const [p] = peers;
      const [p0] = Object.values(before.peers);
      const decoded = (side === chrome ? b.c : b.f).videoFramesDecoded;
      assert.ok(c.sent > 200 && c.sent > before.sent + 50, `${side.name}: the worker keeps sealing the frames it sends (${before.sent} -> ${c.sent})`);
      assert.ok(p.opened > decoded, `${side.name}: the worker opened more frames (${p.opened}, audio and video) than video decoded (${decoded})`);
      assert.ok(p.opened > p0.opened + 50, `${side.name}: the worker keeps opening frames (${p0.opened} -> ${p.opened})`);
      assert.ok(p.dropped - p0.dropped <= (p.opened - p0.opened) / 10,
        `${side.name}: few frames failed to open while the call ran (${p.dropped - p0.dropped} dropped, ${p.opened - p0.opened} opened: ${JSON.stringify(p.reasons)})`);
      ctr[side.name] = c;
    }

    // The badge is green with the same safety code on both screens.
    const [bc, bf] = await waitSameCode([chrome, fox]);
    for (const [side, bb] of /** @type {const} */ ([['Chromium', bc], ['Firefox', bf]])) {
      assert.ok(bb.className.split(/\s+/).includes('ok'), `${side}: #e2ee-badge has class ok (${bb.className})`);
      assert.ok(bb.codeShown, `${side}: the safety code line is shown`);
      assert.match(bb.code, /^\d{4} \d{4} \d{4}$/, `${side}: the safety code`);
    }
    assert.equal(bc.code, bf.code, 'the same safety code on both screens');
    await assertNoAudioLevels(proxy, [chrome, fox]);
    t.diagnostic(`codecs: Chromium receives ${b.c.videoCodec}, Firefox receives ${b.f.videoCodec}`);
    for (const x of [b.c, b.f]) assert.match(x.videoCodec, /VP8/i, 'VP8 both ways');

    t.diagnostic(`${second} joined second (offered)${extra}; codes: Chromium "${bc.code}", Firefox "${bf.code}"`);
    t.diagnostic(`Chromium decoded ${b.c.videoFramesDecoded}/${b.c.videoFramesReceived} frames of Firefox's video (${b.c.videoCodec}), ` +
      `audio samples ${b.c.audioSamples}; selected pair ${b.c.local} -> ${b.c.remote}`);
    t.diagnostic(`Firefox decoded ${b.f.videoFramesDecoded}/${b.f.videoFramesReceived} frames of Chromium's video (${b.f.videoCodec}), ` +
      `audio samples ${b.f.audioSamples}; selected pair ${b.f.local} -> ${b.f.remote}`);
    t.diagnostic(`SFrame worker counters: Chromium ${JSON.stringify(ctr.Chromium)}; Firefox ${JSON.stringify(ctr.Firefox)}`);
  } catch (e) {
    for (const side of [chrome, fox]) console.log(`--- ${side.name} console ---\n` + side.consoleLines.slice(-40).join('\n'));
    console.log('--- parley log (tail) ---\n' + parley.logs.split('\n').slice(-40).join('\n'));
    throw e;
  } finally {
    for (const x of [firefox, chromium, proxy]) {
      await x.close();
      open = open.filter((o) => o !== x);
    }
  }
}

/**
 * Rewrites the video section of an offer: with keepVP8, an H.264 payload
 * type is added in front of VP8 (the offerer would prefer it); without,
 * VP8 is renamed H.264 and everything else dropped, so H.264 is all that is
 * offered. What a server could do to make Firefox, which has no working
 * setCodecPreferences, send another codec. (Chromium offers VP8 only: its
 * codec preferences are set.)
 * @param {string} sdp @param {boolean} keepVP8
 */
function preferH264(sdp, keepVP8) {
  const h264 = 'H264/90000';
  const fmtp = 'level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f';
  const [head, ...secs] = sdp.split(/\r\n(?=m=)/);
  return [head, ...secs.map((sec) => {
    const lines = sec.split('\r\n');
    const m = /^m=video (\S+) (\S+) (.*)$/.exec(lines[0]);
    if (!m) return sec;
    const pts = m[3].split(' ');
    const vp8 = pts.find((pt) => lines.some((l) => l.startsWith(`a=rtpmap:${pt} VP8/`)));
    if (!vp8) throw new Error('no VP8 in the offer to rewrite');
    if (keepVP8) {
      let pt = 120;
      while (pts.includes(String(pt))) pt++;
      const at = lines.findIndex((l) => l.startsWith('a=rtpmap:'));
      lines.splice(at, 0, `a=rtpmap:${pt} ${h264}`, `a=fmtp:${pt} ${fmtp}`, `a=rtcp-fb:${pt} nack`, `a=rtcp-fb:${pt} nack pli`);
      lines[0] = `m=video ${m[1]} ${m[2]} ${[String(pt), ...pts].join(' ')}`;
      return lines.join('\r\n');
    }
    const body = lines.slice(1).filter((l) => { const x = /^a=(?:rtpmap|fmtp|rtcp-fb):(\d+) /.exec(l); return !x || (x[1] === vp8 && !l.startsWith('a=fmtp:')); })
      .map((l) => (l.startsWith(`a=rtpmap:${vp8} `) ? `a=rtpmap:${vp8} ${h264}\r\na=fmtp:${vp8} ${fmtp}` : l));
    return [`m=video ${m[1]} ${m[2]} ${vp8}`, ...body].join('\r\n');
  })].join('\r\n');
}

test('a server that offers Firefox H.264 first gets VP8 from it: E2EE decodes both ways', { skip: noFirefox || false, timeout: 180000 }, async (t) => {
  /** @type {string[]} */
  const seen = [];
  await crossCall(t, 'chromium', {
    hook: (dir, conn, m) => {
      if (dir === 's2c' && m.type === 'offer') {
        const sdp = preferH264(m.sdp, true);
        seen.push(sdp);
        return [{ ...m, sdp }];
      }
      if (dir === 'c2s' && m.type === 'answer') seen.push('answer ' + m.sdp);
      return undefined;
    },
  });
  const offers = seen.filter((x) => !x.startsWith('answer '));
  const answers = seen.filter((x) => x.startsWith('answer '));
  assert.ok(offers.length >= 1 && offers.every((x) => /m=video \S+ \S+ 12\d /.test(x) && /H264/.test(x)), 'Firefox was offered H.264 first');
  assert.ok(answers.length >= 1 && answers.every((x) => !/H264/.test(x) && /VP8/.test(x)), 'Firefox answered VP8 and no H.264');
});

test('a server that offers Firefox H.264 only is refused: Firefox answers nothing and sends no video', { skip: noFirefox || false, timeout: 120000 }, async (t) => {
  const room = await parley.room();
  /** @type {number[]} */
  const rewritten = [];
  const proxy = await startProxy(parley.base, {
    hook: (dir, conn, m) => {
      if (dir === 's2c' && m.type === 'offer' && /m=video/.test(m.sdp)) {
        rewritten.push(conn);
        return [{ ...m, sdp: preferH264(m.sdp, false) }];
      }
      return undefined;
    },
  });
  const chromium = await launchBrowser();
  const firefox = await launchFirefox();
  open.push(proxy, chromium, firefox);
  const link = (/** @type {string} */ q) => `${proxy.base}${room.url}?${q}#k=${room.secret}`;
  try {
    await join({ name: 'Firefox', page: firefox.page, consoleLines: firefox.consoleLines }, link('name=Fox&join=1'));
    await join({ name: 'Chromium', page: chromium.page, consoleLines: chromium.consoleLines }, link('name=Chrome&join=1'));
    await firefox.page.waitForFunction(() => /Could not set up the connection with Chrome/.test(document.getElementById('status')?.textContent || ''), { timeout: 30000 }).catch(async (e) => {
      console.log('Firefox status: ' + await firefox.page.evaluate(() => document.getElementById('status')?.textContent) + '; rewritten ' + rewritten.length +
        '; messages ' + JSON.stringify(proxy.messages.map((m) => `${m.conn} ${m.dir} ${m.json?.type}/${m.json?.payload?.t || ''}`)));
      throw e;
    });
    await sleep(3000);
    assert.ok(rewritten.length >= 1, 'the proxy rewrote an offer to Firefox');
    const answers = proxy.messages.filter((m) => m.dir === 'c2s' && m.json?.type === 'answer');
    assert.deepEqual(answers, [], 'Firefox sent no answer');
    const fs = await callStats(firefox.page);
    t.diagnostic(`Firefox after the H.264-only offer: ${JSON.stringify(fs)}`);
    assert.ok(fs.every((c) => c.outVideoBytes === 0), 'Firefox sent no video');
  } catch (e) {
    console.log('--- Firefox console ---\n' + firefox.consoleLines.slice(-40).join('\n'));
    throw e;
  }
});

test('Chromium ↔ Firefox through Parley\'s TURN relay (relay=1 on both): E2EE decodes both ways, same safety code', { skip: noFirefox || false, timeout: 180000 },
  (t) => crossCall(t, 'firefox', { relay: true }));
