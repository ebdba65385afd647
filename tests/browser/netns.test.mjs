// Calls that survive a changing or bad network (issue 10), with real
// Chromium inside network namespaces and the real parley binary:
//
//   ns A (Alice)                    ns S (server)                     ns B (Bob)
//   eth0 10.77.1.2/24 ==linkemu==> tapa 10.77.1.1/24
//                                  lo   10.77.0.1  parley :8080, TURN :3478
//                                  vb   10.77.2.1/24 <--- veth --->   eth0 10.77.2.2/24
//
// S routes between A and B (no NAT), so the pages see each other's host
// candidates (--use-fake-ui-for-media-stream: real addresses, no mDNS) and
// talk directly; the embedded TURN relay is there as in production. Alice's
// line goes through tests/linkemu, a user-space Ethernet link with loss,
// delay and jitter like `tc netem` (this machine's kernel has no sch_netem:
// `tc qdisc add ... netem` says "Specified qdisc kind is unknown"), which can
// also cut the line. Chromium runs inside its namespace through a wrapper
// (`ip netns exec <ns> /usr/bin/chromium "$@"`); playwright drives it over
// pipes, which survive that.
//
//   1. Alice's address changes mid-call (10.77.1.2 -> .3 on the same link,
//      route fixed): the old ICE pair dies. Video decodes again on both
//      sides within 5 s, through an ICE restart (new ufrags on both sides;
//      Alice's selected candidate has the new ufrag and address).
//   2. Alice's link drops for 3 s: (a) `ip link set eth0 down` (the OS and
//      Chromium see it), (b) the line is cut in linkemu (they see nothing,
//      like Wi-Fi whose uplink dies). Video decodes again within 5 s after
//      the link is back.
//   3. 10 % loss and 50 ms ± 50 ms delay both ways on Alice's line (netem's
//      "loss 10% delay 50ms 50ms"): over 20 s both sides decode at least
//      80 % of the frames per second they decoded in the 20 s before, in the
//      same call; the SFrame workers count no authentication failure;
//      NACK, RTX and Opus in-band FEC are in the descriptions.
// Every figure is printed. Needs root; skipped with a message without it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, readdirSync, existsSync, chmodSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildParley, launchBrowser, joinCall, sleep, repo, CHROMIUM, joinTokenOf, recordKeys, workerStats, dumpOnFailure } from './harness.mjs';

const PREFIX = 'pnv';
const SERVER = '10.77.0.1';
const A_OLD = '10.77.1.2', A_NEW = '10.77.1.3', A_GW = '10.77.1.1';
const B_ADDR = '10.77.2.2', B_GW = '10.77.2.1';
const PORT = 8080;
const BASE = `http://${SERVER}:${PORT}`;

/** @param {string} cmd @param {string[]} args @param {string} [input] */
const run = (cmd, args, input) => execFileSync(cmd, args, { input, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
/** @param {...string} args */
const ip = (...args) => run('ip', args);

/** Why this file cannot run here, or '' when it can. */
function whyNot() {
  if (process.platform !== 'linux') return 'network namespaces are Linux only';
  if (process.getuid?.() !== 0) return 'needs root to make network namespaces (./scripts/test.sh runs as root in CI)';
  if (!existsSync('/dev/net/tun')) return 'no /dev/net/tun (linkemu needs TAP devices)';
  if (!existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM}`;
  const probe = `${PREFIX}probe${process.pid}`;
  try {
    ip('netns', 'add', probe);
    ip('netns', 'del', probe);
  } catch (e) {
    return `cannot make a network namespace here: ${String(/** @type {any} */ (e).stderr || e).trim()}`;
  }
  return '';
}
const skip = whyNot();
if (skip) console.log(`# netns tests skipped: ${skip}`);

/** Deletes namespaces of earlier runs whose process is gone (a killed test). */
function removeLeftovers() {
  let names = [];
  try { names = readdirSync('/run/netns'); } catch { return; }
  for (const n of names) {
    const m = new RegExp(`^${PREFIX}(\\d+)-`).exec(n);
    if (!m || Number(m[1]) === process.pid || existsSync(`/proc/${m[1]}`)) continue;
    try { ip('netns', 'del', n); console.log(`# removed leftover namespace ${n}`); } catch {}
  }
}

const ns = { s: `${PREFIX}${process.pid}-s`, a: `${PREFIX}${process.pid}-a`, b: `${PREFIX}${process.pid}-b` };
const work = skip ? '' : mkdtempSync(join(tmpdir(), 'parley-netns-'));

/** @type {import('node:child_process').ChildProcess|undefined} */
let server;
let serverLog = '';
/** @type {Awaited<ReturnType<typeof startLinkemu>>|undefined} */
let link;

function teardown() {
  try { server?.kill('SIGKILL'); } catch {}
  try { link?.proc.kill('SIGKILL'); } catch {}
  for (const n of [ns.a, ns.b, ns.s]) {
    if (existsSync(`/run/netns/${n}`)) { try { ip('netns', 'del', n); } catch {} }
  }
  if (work) rmSync(work, { recursive: true, force: true });
}

/**
 * Starts linkemu between Alice's namespace (eth0) and the server's (tapa),
 * and returns a function to send it one command and read its answer.
 * @param {string} bin
 */
async function startLinkemu(bin) {
  const proc = spawn(bin, ['-a', ns.a, '-a-dev', 'eth0', '-b', ns.s, '-b-dev', 'tapa'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const lines = createInterface({ input: proc.stdout });
  /** @type {((l: string) => void)[]} */
  const waiting = [];
  lines.on('line', (l) => waiting.shift()?.(l));
  const next = () => new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('linkemu did not answer: ' + stderr)), 5000);
    waiting.push((l) => { clearTimeout(t); resolve(l); });
  });
  const ready = await next();
  if (ready !== 'ready') throw new Error('linkemu: ' + ready + stderr);
  return {
    proc,
    /** @param {string} line */
    async cmd(line) {
      const answer = next();
      proc.stdin.write(line + '\n');
      const a = await answer;
      if (!a.startsWith('ok')) throw new Error(`linkemu ${line}: ${a}`);
      return a.slice(3);
    },
  };
}

/** Builds the three namespaces, the links and the routes. @param {string} linkemuBin */
async function buildTopology(linkemuBin) {
  removeLeftovers();
  for (const n of [ns.s, ns.a, ns.b]) {
    if (existsSync(`/run/netns/${n}`)) ip('netns', 'del', n);
    ip('netns', 'add', n);
    ip('-n', n, 'link', 'set', 'lo', 'up');
    // IPv4 only: no router solicitations or link-local noise on the lines.
    run('ip', ['netns', 'exec', n, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
    run('ip', ['netns', 'exec', n, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1']);
  }
  ip('-n', ns.s, 'addr', 'add', `${SERVER}/32`, 'dev', 'lo');
  run('ip', ['netns', 'exec', ns.s, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  // Bob: a plain veth.
  ip('-n', ns.s, 'link', 'add', 'vb', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.b);
  ip('-n', ns.s, 'addr', 'add', `${B_GW}/24`, 'dev', 'vb');
  ip('-n', ns.s, 'link', 'set', 'vb', 'up');
  ip('-n', ns.b, 'addr', 'add', `${B_ADDR}/24`, 'dev', 'eth0');
  ip('-n', ns.b, 'link', 'set', 'eth0', 'up');
  ip('-n', ns.b, 'route', 'add', 'default', 'via', B_GW);
  // Alice: through linkemu.
  link = await startLinkemu(linkemuBin);
  ip('-n', ns.s, 'addr', 'add', `${A_GW}/24`, 'dev', 'tapa');
  ip('-n', ns.s, 'link', 'set', 'tapa', 'up');
  ip('-n', ns.a, 'addr', 'add', `${A_OLD}/24`, 'dev', 'eth0');
  ip('-n', ns.a, 'link', 'set', 'eth0', 'up');
  ip('-n', ns.a, 'route', 'add', 'default', 'via', A_GW);
}

/**
 * Runs a snippet of JavaScript with node inside a namespace (the server is
 * reachable only from there) and returns what it prints.
 * @param {string} n @param {string} code
 */
function nodeIn(n, code) {
  return new Promise((resolve, reject) => {
    execFile('ip', ['netns', 'exec', n, process.execPath, '--input-type=module', '-e', code], { timeout: 20000 }, (err, out, errOut) => {
      if (err) reject(new Error(`${err.message}\n${errOut}`));
      else resolve(out);
    });
  });
}

async function startServer() {
  const bin = buildParley();
  const data = mkdtempSync(join(work, 'data-'));
  const args = [
    '-listen', `${SERVER}:${PORT}`, '-turn-listen', `${SERVER}:3478`, '-turn-public-ip', SERVER,
    '-turn-allow-peer', '10.77.0.0/16', '-log-level', 'debug', '-data-dir', data, '-open-rooms',
  ];
  server = spawn('ip', ['netns', 'exec', ns.s, bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  server.stdout?.on('data', (d) => { serverLog += d; });
  server.stderr?.on('data', (d) => { serverLog += d; });
  await nodeIn(ns.b, `
    const end = Date.now() + 20000;
    for (;;) {
      try { if ((await fetch('${BASE}/healthz')).ok) break; } catch {}
      if (Date.now() > end) { console.error('no answer'); process.exit(1); }
      await new Promise((r) => setTimeout(r, 100));
    }`);
}

/** A new room; its call link for a name. */
async function newRoom() {
  const secret = (await import('node:crypto')).randomBytes(16).toString('base64url');
  const { verifier } = joinTokenOf(secret);
  const out = await nodeIn(ns.b, `
    const r = await fetch('${BASE}/api/rooms', { method: 'POST', headers: { Origin: '${BASE}', 'Content-Type': 'application/json' },
      body: JSON.stringify({ joinVerifier: '${verifier}' }) });
    console.log(JSON.stringify({ status: r.status, body: await r.text() }));`);
  const { status, body } = JSON.parse(out);
  if (status !== 201) throw new Error(`room creation: ${status} ${body}`);
  const room = JSON.parse(body);
  return (/** @type {string} */ name) => `${BASE}${room.url}?name=${name}&join=1#k=${secret}`;
}

// Runs in every page before the app: what a test needs to tell an ICE
// restart from a recovering pair, with page timestamps (Date.now(), the
// same clock as this process): each description set (its ICE ufrag),
// restartIce() calls, connection states, local candidates, online/offline
// and connection changes, the selected pair (its local ufrag and address),
// and every 200 ms the video frames decoded.
const netRecorder = () => {
  /** @type {any[]} */
  const log = [];
  /** @type {{t: number, decoded: number, received: number}[]} */
  const frames = [];
  // @ts-ignore
  window.__net = log;
  // @ts-ignore
  window.__frames = frames;
  const now = () => Date.now();
  addEventListener('online', () => log.push({ t: now(), ev: 'online' }));
  addEventListener('offline', () => log.push({ t: now(), ev: 'offline' }));
  // @ts-ignore
  navigator.connection?.addEventListener?.('change', () => log.push({ t: now(), ev: 'connection-change' }));
  const ufragOf = (/** @type {string|undefined} */ sdp) => /a=ice-ufrag:(\S+)/.exec(sdp || '')?.[1] || '';
  const hooked = new WeakSet();
  const hook = (/** @type {RTCPeerConnection} */ pc) => {
    if (hooked.has(pc)) return;
    hooked.add(pc);
    pc.addEventListener('connectionstatechange', () => log.push({ t: now(), ev: 'connection', state: pc.connectionState }));
    pc.addEventListener('iceconnectionstatechange', () => log.push({ t: now(), ev: 'ice', state: pc.iceConnectionState }));
    pc.addEventListener('icecandidate', (e) => log.push({ t: now(), ev: 'candidate', c: e.candidate ? e.candidate.candidate : null }));
  };
  const P = RTCPeerConnection.prototype;
  for (const [m, which] of /** @type {const} */ ([['setLocalDescription', 'local'], ['setRemoteDescription', 'remote']])) {
    const orig = P[m];
    // @ts-ignore
    P[m] = async function (...args) {
      hook(this);
      // @ts-ignore
      const r = await orig.apply(this, args);
      const d = which === 'local' ? this.localDescription : this.remoteDescription;
      log.push({ t: now(), ev: which, type: d?.type, ufrag: ufragOf(d?.sdp) });
      return r;
    };
  }
  // Signaling WebSockets: when each opens, gets in and closes.
  const WS = window.WebSocket;
  // @ts-ignore
  window.WebSocket = function (/** @type {string} */ url, /** @type {any} */ protocols) {
    const ws = new WS(url, protocols);
    log.push({ t: now(), ev: 'ws-new' });
    ws.addEventListener('open', () => log.push({ t: now(), ev: 'ws-open' }));
    ws.addEventListener('close', (e) => log.push({ t: now(), ev: 'ws-close', code: e.code }));
    ws.addEventListener('message', (e) => {
      const type = /^\{"type":"(welcome|waiting)"/.exec(String(e.data))?.[1];
      if (type) log.push({ t: now(), ev: 'ws-' + type });
    });
    return ws;
  };
  window.WebSocket.prototype = WS.prototype;
  Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  const restart = P.restartIce;
  P.restartIce = function () {
    log.push({ t: now(), ev: 'restartIce' });
    return restart.call(this);
  };
  let pair = '';
  setInterval(async () => {
    let decoded = 0, received = 0;
    // @ts-ignore
    for (const pc of /** @type {RTCPeerConnection[]} */ (window.__pcs || [])) {
      hook(pc);
      if (pc.connectionState === 'closed') continue;
      const rep = await pc.getStats();
      /** @type {Map<string, any>} */
      const byId = new Map();
      rep.forEach((r) => byId.set(r.id, r));
      rep.forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') { decoded += r.framesDecoded || 0; received += r.framesReceived || 0; }
        if (r.type === 'transport' && r.selectedCandidatePairId) {
          const p = byId.get(r.selectedCandidatePairId);
          const l = p && byId.get(p.localCandidateId), rm = p && byId.get(p.remoteCandidateId);
          const desc = l && rm ? `${l.candidateType} ${l.address}:${l.port} ufrag=${l.usernameFragment} -> ${rm.candidateType} ${rm.address}:${rm.port} ufrag=${rm.usernameFragment}` : '';
          if (desc && desc !== pair) {
            pair = desc;
            log.push({ t: now(), ev: 'pair', pair: desc, localUfrag: l.usernameFragment, localAddress: l.address, localType: l.candidateType });
          }
        }
      });
    }
    frames.push({ t: now(), decoded, received });
  }, 200);
};

/** @typedef {Awaited<ReturnType<typeof launchBrowser>>} Browser */
/** @type {Browser[]} */
let open = [];

/** Chromium inside namespace n, through a wrapper script. @param {string} n */
async function browserIn(n) {
  const wrapper = join(work, `chromium-${n}.sh`);
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${n} ${CHROMIUM} "$@"\n`);
  chmodSync(wrapper, 0o755);
  const b = await launchBrowser({ executablePath: wrapper, args: [`--unsafely-treat-insecure-origin-as-secure=${BASE}`] });
  await b.ctx.addInitScript(recordKeys);
  await b.ctx.addInitScript(netRecorder);
  open.push(b);
  return b;
}

/** @param {import('playwright-core').Page} page */
const recorded = (page) => page.evaluate(() => ({
  // @ts-ignore
  net: /** @type {any[]} */ (window.__net.slice()), frames: /** @type {{t: number, decoded: number, received: number}[]} */ (window.__frames.slice()),
}));

/** Alice in A and Bob in B in a new room, both decoding the other's video. */
async function call() {
  const link = await newRoom();
  const alice = await browserIn(ns.a);
  const bob = await browserIn(ns.b);
  await joinCall(alice, link('Alice'));
  await joinCall(bob, link('Bob'));
  const end = Date.now() + 30000;
  for (;;) {
    const [ra, rb] = await Promise.all([recorded(alice.page), recorded(bob.page)]);
    const last = (/** @type {any} */ r) => r.frames.at(-1)?.decoded || 0;
    if (last(ra) > 60 && last(rb) > 60) break;
    if (Date.now() > end) throw new Error(`the call did not come up: Alice decoded ${last(ra)}, Bob ${last(rb)}`);
    await sleep(300);
  }
  return { alice, bob };
}

async function hangUp() {
  for (const b of open) await b.close();
  open = [];
}

/**
 * How decoding went around an event at t0: the longest run without a new
 * decoded frame that ends after t0, when it ended (resumedAt), and whether
 * decoding then kept going (frames in the 2 s after).
 * @param {{t: number, decoded: number}[]} frames @param {number} t0
 */
function stallAround(frames, t0) {
  let lastInc = frames[0]?.t ?? t0;
  let best = { from: t0, to: t0, ms: 0 };
  for (let i = 1; i < frames.length; i++) {
    if (frames[i].decoded > frames[i - 1].decoded) {
      const gap = { from: lastInc, to: frames[i].t, ms: frames[i].t - lastInc };
      if (gap.to > t0 && gap.from >= t0 - 2000 && gap.ms > best.ms) best = gap;
      lastInc = frames[i].t;
    }
  }
  const end = frames.at(-1);
  if (end && end.t - lastInc > best.ms && end.t > t0) best = { from: lastInc, to: Infinity, ms: end.t - lastInc }; // never resumed
  const at = (/** @type {number} */ t) => frames.find((f) => f.t >= t)?.decoded ?? frames.at(-1)?.decoded ?? 0;
  const after2s = at(best.to + 2000) - at(best.to);
  return { stallFrom: best.from, resumedAt: best.to, stallMs: best.ms, after2s };
}

/** Entries of a page's log from t0 on, with times relative to t0. @param {any[]} net @param {number} t0 */
const since = (net, t0) => net.filter((e) => e.t >= t0).map((e) => ({ ...e, dt: e.t - t0 }));

/** The ufrag of the last description of a kind set before t. @param {any[]} net @param {'local'|'remote'} kind @param {number} t */
const ufragBefore = (net, kind, t) => net.filter((e) => e.ev === kind && e.t < t).at(-1)?.ufrag || '';

/** Prints a page's log from t0 on, one short line per entry. @param {string} who @param {any[]} net @param {number} t0 */
function printLog(who, net, t0) {
  for (const e of since(net, t0)) {
    if (e.ev === 'candidate' && e.c === null) continue;
    const { t, dt, ev, ...rest } = e;
    console.log(`#   ${who} +${dt} ms ${ev} ${Object.values(rest).join(' ')}`);
  }
}

const onFailure = (/** @type {(t: any) => Promise<void>} */ fn) => dumpOnFailure(() => open, () => ({ 'parley log': serverLog }), fn);

before(async () => {
  if (skip) return;
  const bin = join(work, 'linkemu');
  execFileSync('go', ['build', '-o', bin, './tests/linkemu'], { cwd: repo, stdio: 'inherit' });
  process.on('exit', teardown);
  await buildTopology(bin);
  await startServer();
});

after(async () => {
  await hangUp();
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server?.once('exit', r));
    server.kill('SIGTERM');
    await Promise.race([exited, sleep(10000)]);
  }
  link?.proc.stdin?.end();
  teardown();
});

test('Alice\'s address changes mid-call: an ICE restart, video decodes again on both sides within 5 s', { skip: skip || false, timeout: 180000 }, onFailure(async () => {
  const { alice, bob } = await call();
  await sleep(2000);
  const t0 = Date.now();
  ip('-n', ns.a, 'addr', 'del', `${A_OLD}/24`, 'dev', 'eth0');
  ip('-n', ns.a, 'addr', 'add', `${A_NEW}/24`, 'dev', 'eth0');
  ip('-n', ns.a, 'route', 'replace', 'default', 'via', A_GW);
  console.log(`# address change took ${Date.now() - t0} ms (${A_OLD} -> ${A_NEW})`);
  await sleep(15000);
  const [ra, rb] = await Promise.all([recorded(alice.page), recorded(bob.page)]);
  printLog('Alice', ra.net, t0 - 500);
  printLog('Bob', rb.net, t0 - 500);
  for (const [who, r] of [['Alice', ra], ['Bob', rb]]) {
    console.log(`# ${who}: ${JSON.stringify(stallAround(r.frames, t0))} (relative: resumed +${stallAround(r.frames, t0).resumedAt - t0} ms)`);
  }
  console.log('# worker Alice', JSON.stringify(await workerStats(alice.page)), 'Bob', JSON.stringify(await workerStats(bob.page)));
  await hangUp();
}));
