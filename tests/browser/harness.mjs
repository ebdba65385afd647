// Test harness for Parley's browser tests: builds and runs the real binary
// on loopback, drives Debian's Chromium through playwright-core with fake
// camera and microphone, and reads what a person would see (decoded
// frames, audio samples, text on screen) from the pages.
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes, hkdfSync, createHash } from 'node:crypto';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

export const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CHROMIUM = process.env.PARLEY_CHROMIUM || '/usr/bin/chromium';

let binary = process.env.PARLEY_BIN || '';
/**
 * Builds cmd/parley once per test process, unless PARLEY_BIN names a binary
 * already built from this checkout (scripts/test.sh builds one for all the
 * test files: linking it again for each file cost seconds apiece).
 */
export function buildParley() {
  if (binary) return binary;
  const dir = mkdtempSync(join(tmpdir(), 'parley-bin-'));
  binary = join(dir, 'parley');
  execFileSync('go', ['build', '-o', binary, './cmd/parley'], { cwd: repo, stdio: 'inherit' });
  return binary;
}

/** A free TCP port on 127.0.0.1 that is also free for UDP. */
export async function freePort() {
  for (;;) {
    const port = await new Promise((resolve, reject) => {
      const s = createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const p = /** @type {import('node:net').AddressInfo} */ (s.address()).port;
        s.close(() => resolve(p));
      });
    });
    const udpFree = await new Promise((resolve) => {
      const u = createSocket('udp4');
      u.once('error', () => resolve(false));
      u.bind(port, '127.0.0.1', () => u.close(() => resolve(true)));
    });
    if (udpFree) return port;
  }
}

/**
 * Starts Parley on loopback with a fresh data directory and -open-rooms
 * (for the tests that are not about accounts; pass {accounts: true} for
 * closed-by-default). Extra flags are appended.
 * @param {string[]} [extra]
 * @param {{accounts?: boolean, dataDir?: string}} [opts]
 */
export async function startParley(extra = [], opts = {}) {
  const bin = buildParley();
  const http = await freePort();
  const turnPort = await freePort();
  const metrics = await freePort();
  const dataDir = opts.dataDir || mkdtempSync(join(tmpdir(), 'parley-data-'));
  const args = [
    '-listen', `127.0.0.1:${http}`, '-turn-listen', `127.0.0.1:${turnPort}`, '-turn-public-ip', '127.0.0.1',
    '-metrics-listen', `127.0.0.1:${metrics}`, '-log-level', 'debug', '-data-dir', dataDir,
    ...(opts.accounts ? [] : ['-open-rooms']), ...extra,
  ];
  let logs = '';
  const base = `http://127.0.0.1:${http}`;
  /** Starts the binary and waits until it answers /healthz. */
  const launch = async () => {
    const p = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout.on('data', (d) => { logs += d; });
    p.stderr.on('data', (d) => { logs += d; });
    const deadline = Date.now() + 20000;
    for (;;) {
      try {
        const r = await fetch(base + '/healthz');
        if (r.ok) break;
      } catch {}
      if (p.exitCode !== null || Date.now() > deadline) throw new Error('parley did not start:\n' + logs);
      await sleep(100);
    }
    return p;
  };
  let proc = await launch();
  return {
    base, turnPort, dataDir, bin, args,
    get proc() { return proc; },
    get logs() { return logs; },
    async room() {
      // The link secret, made on the client side as the landing page does,
      // and the verifier of its join token (docs/security.md §2.5).
      const secret = randomBytes(16).toString('base64url');
      const { token, verifier } = joinTokenOf(secret);
      const r = await fetch(base + '/api/rooms', {
        method: 'POST', headers: { Origin: base, 'Content-Type': 'application/json' }, body: JSON.stringify({ joinVerifier: verifier }),
      });
      if (r.status !== 201) throw new Error('room creation: ' + r.status + ' ' + await r.text());
      const room = /** @type {{id: string, url: string}} */ (await r.json());
      return {
        ...room, secret, token,
        /** The call link with query parameters and the #k= secret. @param {string} query */
        link: (query) => `${base}${room.url}?${query}#k=${secret}`,
      };
    },
    /** Prometheus metrics as a name → value map, summed over labels. */
    async metrics() {
      const text = await (await fetch(`http://127.0.0.1:${metrics}/metrics`)).text();
      /** @type {Record<string, number>} */
      const out = {};
      for (const line of text.split('\n')) {
        const m = /^([a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
        if (m) out[m[1]] = (out[m[1]] || 0) + Number(m[2]);
      }
      return out;
    },
    /**
     * Stops the server with SIGTERM, as systemd or docker do. Resolves with
     * how long it took to exit (ms) and its exit code.
     */
    async stop() {
      const t0 = Date.now();
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await exited;
      }
      return { ms: Date.now() - t0, code: proc.exitCode };
    },
    /** Starts the same server again: same ports, flags and data directory. */
    async start() {
      if (proc.exitCode === null) throw new Error('parley is still running');
      proc = await launch();
    },
  };
}

/**
 * The join token of a link secret (b64url), and its verifier, computed as
 * e2ee/keys.js does: T = HKDF(S, 32 zero bytes, "parley/1 join-token", 32),
 * V = SHA-256("parley/1 join-verifier" || T).
 * @param {string} secret b64url
 */
export function joinTokenOf(secret) {
  const t = Buffer.from(hkdfSync('sha256', Buffer.from(secret, 'base64url'), Buffer.alloc(32), 'parley/1 join-token', 32));
  const v = createHash('sha256').update('parley/1 join-verifier').update(t).digest();
  return { token: t.toString('base64url'), verifier: v.toString('base64url') };
}

export const sleep = (/** @type {number} */ ms) => new Promise((r) => setTimeout(r, ms));

// Recorded in every page before its scripts run: each RTCPeerConnection the
// app makes, so tests can read getStats like chrome://webrtc-internals does.
const recordPeerConnections = () => {
  const Orig = window.RTCPeerConnection;
  /** @type {RTCPeerConnection[]} */
  const pcs = [];
  // @ts-ignore
  window.__pcs = pcs;
  // @ts-ignore
  window.RTCPeerConnection = function (...args) {
    // @ts-ignore
    const pc = new Orig(...args);
    pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Orig.prototype;
  Object.setPrototypeOf(window.RTCPeerConnection, Orig);
};

const CHROMIUM_ARGS = [
  '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
];

/** @type {Promise<import('playwright-core').Browser> | null} */
let shared = null;
// In a test file (node --test runs each in a process of its own) the
// participants share one Chromium, which this hook closes after the file's
// last test: an open browser would keep the process from exiting. Other
// importers (the wire inspector, bench/e2ee-cpu.mjs) leave node:test alone,
// and their participants each get a Chromium of their own, as before.
const testFile = /\.test\.mjs$/.test(process.argv[1] || '');
if (testFile) {
  const { after } = await import('node:test');
  after(async () => {
    const b = shared;
    shared = null;
    if (b) await (await b).close().catch(() => {});
  });
}

/**
 * Launches one participant: its own browser context (a profile of its own:
 * storage, IndexedDB, cookies) in a Chromium shared by the test file (a
 * Chromium of its own outside the test runner), with a
 * fake camera (640x480, 20 fps) and microphone (a beep). Starting a Chromium
 * per participant cost 1–2 s apiece on two cores. Given args or an
 * executablePath (e.g. a wrapper that starts Chromium inside a network
 * namespace, netns.test.mjs), the participant gets a Chromium of its own
 * with those.
 * @param {{args?: string[], executablePath?: string}} [opts]
 */
export async function launchBrowser(opts = {}) {
  /** @type {import('playwright-core').BrowserContext} */
  let ctx;
  let dir = '';
  if (testFile && !opts.args && !opts.executablePath) {
    if (!shared) {
      shared = chromium.launch({ executablePath: CHROMIUM, headless: false, ignoreDefaultArgs: ['--headless'], args: CHROMIUM_ARGS });
      shared.catch(() => { shared = null; });
    }
    ctx = await (await shared).newContext();
  } else {
    dir = mkdtempSync(join(tmpdir(), 'parley-chromium-'));
    ctx = await chromium.launchPersistentContext(dir, {
      executablePath: opts.executablePath || CHROMIUM,
      headless: false,
      ignoreDefaultArgs: ['--headless'],
      args: [...CHROMIUM_ARGS, ...(opts.args || [])],
    });
  }
  await ctx.addInitScript(recordPeerConnections);
  const page = ctx.pages()[0] || (await ctx.newPage());
  /** @type {string[]} */
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`[pageerror] ${e.message}`));
  return {
    ctx, page, consoleLines,
    async close() {
      await ctx.close().catch(() => {});
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Per-connection media statistics of a page: for each RTCPeerConnection
 * the inbound video/audio counters, what it sends, and the selected
 * candidate pair's types.
 * @param {import('playwright-core').Page} page
 */
export async function mediaStats(page) {
  return page.evaluate(async () => {
    // @ts-ignore
    const pcs = /** @type {RTCPeerConnection[]} */ (window.__pcs || []);
    const out = [];
    for (const pc of pcs) {
      if (pc.connectionState === 'closed') continue;
      const rep = await pc.getStats();
      const s = {
        state: pc.connectionState,
        videoFramesDecoded: 0, videoFramesReceived: 0, audioSamples: 0, audioEnergy: 0,
        outVideoBytes: 0, outAudioBytes: 0, outVideo: false,
        localType: '', remoteType: '', relayProtocol: '',
        sendersVideoTracks: pc.getSenders().filter((x) => x.track && x.track.kind === 'video').length,
      };
      /** @type {Map<string, any>} */
      const byId = new Map();
      rep.forEach((r) => byId.set(r.id, r));
      rep.forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') {
          s.videoFramesDecoded += r.framesDecoded || 0;
          s.videoFramesReceived += r.framesReceived || 0;
        }
        if (r.type === 'inbound-rtp' && r.kind === 'audio') {
          s.audioSamples += r.totalSamplesReceived || 0;
          s.audioEnergy += r.totalAudioEnergy || 0;
        }
        if (r.type === 'outbound-rtp' && r.kind === 'video') { s.outVideo = true; s.outVideoBytes += r.bytesSent || 0; }
        if (r.type === 'outbound-rtp' && r.kind === 'audio') s.outAudioBytes += r.bytesSent || 0;
        if (r.type === 'transport' && r.selectedCandidatePairId) {
          const pair = byId.get(r.selectedCandidatePairId);
          if (pair) {
            const l = byId.get(pair.localCandidateId);
            const rm = byId.get(pair.remoteCandidateId);
            s.localType = l?.candidateType || '';
            s.remoteType = rm?.candidateType || '';
            s.relayProtocol = l?.relayProtocol || '';
          }
        }
      });
      out.push(s);
    }
    return out;
  });
}

/**
 * Polls until check(stats) is true, or fails with the last stats.
 * @param {import('playwright-core').Page} page
 * @param {(s: Awaited<ReturnType<typeof mediaStats>>) => boolean} check
 * @param {string} what
 * @param {number} [timeoutMs]
 */
export async function waitForStats(page, check, what, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await mediaStats(page);
    if (check(last)) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last stats: ${JSON.stringify(last)}`);
    await sleep(500);
  }
}

/**
 * Opens the call page with the URL contract and waits until joined.
 * @param {Awaited<ReturnType<typeof launchBrowser>>} b
 * @param {string} url
 */
export async function joinCall(b, url) {
  await b.page.goto(url);
  await b.page.locator('#call').waitFor({ state: 'visible', timeout: 20000 });
}

/**
 * Wraps a test body so that a failure prints what a person debugging it
 * needs: the last console lines of every browser and the tail of each log.
 * @template T
 * @param {() => Array<{consoleLines: string[]}>} browsers
 * @param {() => Record<string, string>} logs title → text, read at failure time
 * @param {(t: T) => Promise<void>} fn
 * @returns {(t: T) => Promise<void>}
 */
export function dumpOnFailure(browsers, logs, fn) {
  return async (t) => {
    try {
      await fn(t);
    } catch (e) {
      for (const [i, b] of browsers().entries()) console.log(`--- browser ${i} console ---\n` + b.consoleLines.slice(-30).join('\n'));
      for (const [title, text] of Object.entries(logs())) console.log(`--- ${title} (tail) ---\n` + text.split('\n').slice(-40).join('\n'));
      throw e;
    }
  };
}

// Runs in every page before the app: records each key the page gives its
// worker. 'send-key' transfers the key's buffer, so the bytes are copied
// before the real postMessage runs.
export const recordKeys = () => {
  /** @type {{op: string, peer: string, kid: string, key: string, t: number}[]} */
  const log = [];
  // @ts-ignore
  window.__keyLog = log;
  const orig = Worker.prototype.postMessage;
  // @ts-ignore
  Worker.prototype.postMessage = function (msg, ...rest) {
    try {
      if (msg && (msg.op === 'send-key' || msg.op === 'recv-key') && msg.key instanceof Uint8Array) {
        const key = Array.from(msg.key, (b) => b.toString(16).padStart(2, '0')).join('');
        log.push({ op: msg.op, peer: msg.peer || '', kid: String(msg.kid), key, t: Date.now() });
      }
      if (!this.__watched) {
        // The worker's own counters (opened/dropped per peer), answered to the app's 1 s stats requests.
        this.__watched = true;
        this.addEventListener('message', (/** @type {MessageEvent} */ ev) => {
          // @ts-ignore
          if (ev.data?.op === 'stats') window.__workerStats = ev.data.stats;
        });
      }
    } catch { /* never break the app */ }
    // @ts-ignore
    return orig.call(this, msg, ...rest);
  };
};

/** @typedef {{op: string, peer: string, kid: string, key: string, t: number}} KeyEntry */
/** The keys a page gave its worker so far (pages started with recordKeys). @param {import('playwright-core').Page} page @returns {Promise<KeyEntry[]>} */
// @ts-ignore
export const keyLog = (page) => page.evaluate(() => window.__keyLog.slice());

/** The worker's last stats: {sent, unsent, peers: {[id]: {opened, dropped, reasons}}}. @param {import('playwright-core').Page} page */
// @ts-ignore
export const workerStats = (page) => page.evaluate(() => window.__workerStats || null);

/** What the encryption badge shows. @param {import('playwright-core').Page} page */
export const badge = (page) => page.evaluate(() => ({
  cls: document.getElementById('e2ee-badge')?.className || '',
  text: document.getElementById('e2ee-title')?.textContent || '',
  holders: document.getElementById('e2ee-holders')?.textContent || '',
  code: document.getElementById('e2ee-code')?.textContent || '',
}));

/** Until fn() is truthy, or fail. @template T @param {() => Promise<T>|T} fn @param {string} what @param {number} [ms] @returns {Promise<T>} */
export async function until(fn, what, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await sleep(250);
  }
}

/** Where the browser tests put their screenshots (gitignored). */
export const SHOTS = join(repo, 'test-results', 'screenshots');

/**
 * What a person would see wrong in the layout: text cut off or spilling
 * out of its box, controls overlapping their siblings, anything wider
 * than the screen.
 * @param {import('playwright-core').Page} page
 */
export async function layoutProblems(page) {
  return page.evaluate(() => {
    /** @type {string[]} */
    const problems = [];
    const shown = (/** @type {Element} */ e) => {
      const r = e.getBoundingClientRect();
      const cs = getComputedStyle(e);
      return r.width > 0 && r.height > 0 && cs.visibility !== 'hidden' && cs.display !== 'none';
    };
    const name = (/** @type {Element} */ e) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}${e.className ? '.' + String(e.className).replace(/ /g, '.') : ''} "${(e.textContent || '').trim().slice(0, 40)}"`;
    const vw = document.documentElement.clientWidth;
    if (document.documentElement.scrollWidth > vw + 1) problems.push(`the page scrolls sideways: ${document.documentElement.scrollWidth} > ${vw}`);
    for (const e of document.querySelectorAll('h1, h2, h3, p, label, legend, button, a, li, span, strong, div')) {
      if (!shown(e) || getComputedStyle(e).display === 'inline') continue;
      const he = /** @type {HTMLElement} */ (e);
      if (he.scrollWidth > he.clientWidth + 1) problems.push(`text overflows: ${name(e)} (${he.scrollWidth} > ${he.clientWidth})`);
      const r = e.getBoundingClientRect();
      if (r.right > vw + 1 || r.left < -1) problems.push(`off screen: ${name(e)} (${Math.round(r.left)}..${Math.round(r.right)} of ${vw})`);
    }
    const controls = [...document.querySelectorAll('button, a.button, input, select, textarea, label, .brand')].filter(shown);
    /** @type {Map<Element, Element[]>} */
    const byParent = new Map();
    for (const c of controls) {
      const p = /** @type {Element} */ (c.parentElement);
      byParent.set(p, [...(byParent.get(p) || []), c]);
    }
    for (const sibs of byParent.values()) {
      for (let i = 0; i < sibs.length; i++) {
        for (let j = i + 1; j < sibs.length; j++) {
          const a = sibs[i].getBoundingClientRect(), b = sibs[j].getBoundingClientRect();
          const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
          const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
          if (w > 1 && h > 1) problems.push(`overlap: ${name(sibs[i])} and ${name(sibs[j])}`);
        }
      }
    }
    // Touch targets: every button and button-link at least 44 px high.
    for (const c of document.querySelectorAll('button, a.button')) {
      if (shown(c) && c.getBoundingClientRect().height < 44) problems.push(`small touch target: ${name(c)}`);
    }
    return problems;
  });
}

/**
 * Screenshots the page at phone and desktop sizes and checks the layout at each.
 * @param {import('playwright-core').Page} page @param {string} what
 */
export async function checkLayouts(page, what) {
  for (const [w, h] of [[360, 740], [1280, 800]]) {
    await page.setViewportSize({ width: w, height: h });
    await page.waitForTimeout(100);
    mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: join(SHOTS, `${what}-${w}x${h}.png`), fullPage: true });
    assert.deepEqual(await layoutProblems(page), [], `${what} at ${w}x${h}`);
  }
}

