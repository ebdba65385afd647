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
//      Chromium see it): an ICE restart (new ufrags on both sides) and
//      video decodes again within 5 s after the link is back (on the
//      restart's pair or the old one, which works again: Chromium's
//      choice, reported); (b) the line is cut in linkemu (they see
//      nothing, like Wi-Fi whose uplink dies): video decodes again within
//      5 s after the line is back.
//   3. 10 % loss and 50 ms ± 50 ms delay (netem's "loss 10% delay 50ms
//      50ms", here done by linkemu) on Alice's outgoing packets, then both
//      ways on her line: over 15 s each, both sides decode at least 80 % of
//      the frames per second they decoded in the 15 s before, in the same
//      call; the SFrame workers count no authentication failure (frames
//      delivered twice count as "duplicate"); NACK, RTX and Opus in-band
//      FEC are in the descriptions and retransmissions arrive.
// Every figure is printed (lines starting "FIGURE" at the end;
// PARLEY_NETNS_DEBUG=1 adds every 200 ms sample around each event). About
// 2.5 minutes. Needs root (CI runs ./scripts/test.sh as root); skipped
// with a message without it. Namespaces, linkemu, the server and the
// browsers are removed on failure too (after(), and on exit or a signal),
// and namespaces left by a killed earlier run are removed at start.
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

/**
 * Deletes one of this file's namespaces, first killing what still runs in
 * it (a browser or server this file started and could not stop: the
 * namespace would live on with them).
 * @param {string} n
 */
function removeNamespace(n) {
  if (!existsSync(`/run/netns/${n}`)) return;
  try {
    for (const pid of ip('netns', 'pids', n).split(/\s+/).filter(Boolean)) {
      try { process.kill(Number(pid), 'SIGKILL'); } catch {}
    }
  } catch {}
  try { ip('netns', 'del', n); } catch {}
}

/** Deletes namespaces of earlier runs whose process is gone (a killed test). */
function removeLeftovers() {
  let names = [];
  try { names = readdirSync('/run/netns'); } catch { return; }
  for (const n of names) {
    const m = new RegExp(`^${PREFIX}(\\d+)-`).exec(n);
    if (!m || Number(m[1]) === process.pid || existsSync(`/proc/${m[1]}`)) continue;
    removeNamespace(n);
    console.log(`# removed leftover namespace ${n}`);
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
  for (const n of [ns.a, ns.b, ns.s]) removeNamespace(n);
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
    let decoded = 0, received = 0, vpk = 0, apk = 0, pli = 0, kfe = 0;
    // @ts-ignore
    for (const pc of /** @type {RTCPeerConnection[]} */ (window.__pcs || [])) {
      hook(pc);
      if (pc.connectionState === 'closed') continue;
      const rep = await pc.getStats();
      /** @type {Map<string, any>} */
      const byId = new Map();
      rep.forEach((r) => byId.set(r.id, r));
      rep.forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') { decoded += r.framesDecoded || 0; received += r.framesReceived || 0; vpk += r.packetsReceived || 0; }
        if (r.type === 'inbound-rtp' && r.kind === 'audio') apk += r.packetsReceived || 0;
        if (r.type === 'outbound-rtp' && r.kind === 'video') { pli += (r.pliCount || 0) + (r.firCount || 0); kfe += r.keyFramesEncoded || 0; }
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
    frames.push({ t: now(), decoded, received, vpk, apk, pli, kfe });
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
  const started = Date.now();
  const link = await newRoom();
  const alice = await browserIn(ns.a);
  const bob = await browserIn(ns.b);
  await joinCall(alice, link('Alice'));
  await joinCall(bob, link('Bob'));
  const end = Date.now() + 30000;
  for (;;) {
    const [ra, rb] = await Promise.all([recorded(alice.page), recorded(bob.page)]);
    const last = (/** @type {any} */ r) => r.frames.at(-1)?.decoded || 0;
    if (last(ra) > 60 && last(rb) > 60) {
      console.log(`# call up (browsers started, both decoding) in ${Date.now() - started} ms`);
      break;
    }
    if (Date.now() > end) throw new Error(`the call did not come up: Alice decoded ${last(ra)}, Bob ${last(rb)}`);
    await sleep(300);
  }
  return { alice, bob };
}

async function hangUp() {
  const started = Date.now();
  for (const b of open) await b.close();
  if (open.length) console.log(`# browsers closed in ${Date.now() - started} ms`);
  open = [];
}

/**
 * How decoding went through trouble that began at t0: when it stopped (the
 * last new frame before the first run of 500 ms without one that began
 * after t0 - 1 s: a frame or two still come out of the jitter buffer), and
 * when it was back for good (resumedAt: the first new frame after that
 * from which at least 20 more follow within 2 s, i.e. 10 fps or more, and
 * never 500 ms without one; Infinity if never), with the frames decoded
 * in those 2 s.
 * @param {{t: number, decoded: number}[]} frames @param {number} t0
 */
function stallAround(frames, t0) {
  const at = (/** @type {number} */ t) => frames.find((f) => f.t >= t)?.decoded ?? frames.at(-1)?.decoded ?? 0;
  const end = frames.at(-1)?.t ?? t0;
  /** Times at which a new frame had been decoded. */
  const incs = frames.filter((f, i) => i > 0 && f.decoded > frames[i - 1].decoded).map((f) => f.t);
  let stallFrom = t0;
  for (let i = 0; i < incs.length; i++) {
    const next = incs[i + 1] ?? end;
    if (incs[i] >= t0 - 1000 && next - incs[i] >= 500) { stallFrom = incs[i]; break; }
  }
  let resumedAt = Infinity;
  for (const [i, t] of incs.entries()) {
    if (t <= stallFrom || t + 2000 > end) continue;
    // Steady from here: no 500 ms without a new frame in the next 2 s.
    let steady = true;
    for (let j = i; j < incs.length && incs[j] < t + 2000; j++) if ((incs[j + 1] ?? end) - incs[j] >= 500) steady = false;
    if (steady && at(t + 2000) - at(t) >= 20) { resumedAt = t; break; }
  }
  const after2s = Number.isFinite(resumedAt) ? at(resumedAt + 2000) - at(resumedAt) : 0;
  return { stallFrom, resumedAt, stallMs: (Number.isFinite(resumedAt) ? resumedAt : end) - stallFrom, after2s };
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
  // Namespaces and processes go whatever happens: after() on failures and
  // timeouts, these on an exception that ends the process or a signal.
  process.on('exit', teardown);
  for (const sig of /** @type {const} */ (['SIGINT', 'SIGTERM', 'SIGHUP'])) {
    process.once(sig, () => { teardown(); process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1)); });
  }
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

/**
 * What happened after a network event at t0 on both pages: when each step
 * came (ICE restart asked, signaling back, the other side's offer, a new
 * pair), when video decoded again, and whether the media path after it is
 * an ICE restart's (the selected local candidate carries a ufrag first set
 * after t0) rather than the old pair recovering.
 * Times are from t0 (the address change, or the link back); the stall
 * is looked for from tTrouble (when the trouble began).
 * @param {string} what @param {number} tTrouble @param {number} t0 @param {{net: any[], frames: any[]}} ra @param {{net: any[], frames: any[]}} rb
 */
function recovery(what, tTrouble, t0, ra, rb) {
  const first = (/** @type {any[]} */ net, /** @type {(e: any) => boolean} */ f) => {
    const e = net.find((x) => x.t >= tTrouble && f(x));
    return e ? e.t - t0 : null;
  };
  /** @param {{net: any[], frames: any[]}} r */
  const side = (r) => {
    const oldLocal = ufragBefore(r.net, 'local', tTrouble), oldRemote = ufragBefore(r.net, 'remote', tTrouble);
    const newLocal = new Set(since(r.net, tTrouble).filter((e) => e.ev === 'local' && e.ufrag !== oldLocal).map((e) => e.ufrag));
    const newRemote = new Set(since(r.net, tTrouble).filter((e) => e.ev === 'remote' && e.ufrag !== oldRemote).map((e) => e.ufrag));
    const pair = r.net.filter((e) => e.ev === 'pair').at(-1);
    const stall = stallAround(r.frames, tTrouble);
    return {
      restartAsked: first(r.net, (e) => e.ev === 'restartIce'),
      networkEvent: first(r.net, (e) => e.ev === 'online' || e.ev === 'offline' || e.ev === 'connection-change'),
      wsNew: first(r.net, (e) => e.ev === 'ws-new'), wsBack: first(r.net, (e) => e.ev === 'ws-welcome'),
      disconnected: first(r.net, (e) => e.ev === 'connection' && e.state !== 'connected'),
      newLocalDesc: first(r.net, (e) => e.ev === 'local' && e.ufrag !== oldLocal),
      newRemoteDesc: first(r.net, (e) => e.ev === 'remote' && e.ufrag !== oldRemote),
      newPair: first(r.net, (e) => e.ev === 'pair' && newLocal.has(e.localUfrag)),
      restarts: newLocal.size, remoteRestarts: newRemote.size,
      pair: pair?.pair || '', pairIsNew: !!pair && newLocal.has(pair.localUfrag), pairAddress: pair?.localAddress || '',
      stallMs: stall.stallMs, resumed: Number.isFinite(stall.resumedAt) ? stall.resumedAt - t0 : null, after2s: stall.after2s,
    };
  };
  const out = { alice: side(ra), bob: side(rb) };
  if (process.env.PARLEY_NETNS_DEBUG) {
    // Every 200 ms sample: ms from t0: video frames decoded/received, video/audio packets received, key-frame requests received/key frames sent.
    for (const [who, r] of [['Alice', ra], ['Bob', rb]]) {
      console.log(`# ${who} samples: ` + r.frames.filter((f) => f.t > tTrouble - 500 && f.t < t0 + 5000).map((f) => `${f.t - t0}:${f.decoded}/${f.received}/${f.vpk}/${f.apk}/${f.pli}/${f.kfe}`).join(' '));
    }
  }
  for (const [who, x] of Object.entries(out)) {
    console.log(`# ${what}: ${who}: network event +${x.networkEvent ?? '-'} ms, ICE restart asked +${x.restartAsked ?? '-'} ms, ` +
      `not connected +${x.disconnected ?? '-'} ms, signaling reconnect +${x.wsNew ?? '-'} ms / back +${x.wsBack ?? '-'} ms, ` +
      `new local ufrag +${x.newLocalDesc ?? '-'} ms, new remote ufrag +${x.newRemoteDesc ?? '-'} ms, pair on a new ufrag +${x.newPair ?? '-'} ms; ` +
      `video stalled ${x.stallMs} ms, decoding again +${x.resumed ?? 'never'} ms (${x.after2s} frames in the 2 s after); ` +
      `ICE restarts ${x.restarts} local / ${x.remoteRestarts} remote; selected pair now: ${x.pair}`);
  }
  return out;
}

/** Asserts video decodes again within ms of t0 on both sides. @param {ReturnType<typeof recovery>} r @param {number} ms @param {string} what */
function assertResumed(r, ms, what) {
  for (const [who, x] of Object.entries(r)) {
    assert.ok(x.resumed !== null && x.resumed <= ms, `${who}: video decodes again within ${ms} ms ${what} (${x.resumed ?? 'never'} ms)`);
    assert.ok(x.after2s >= 20, `${who}: and keeps decoding (${x.after2s} frames in the 2 s after, at 20 fps)`);
  }
}

/**
 * Asserts an ICE restart took place after the event: new ICE credentials
 * on both ends, on both sides. With pairMustBeNew, also that media now
 * flows on the restart's pair (the selected local candidate carries a ufrag
 * first set after the event): required when the old pair cannot work any
 * more (the address is gone). After an outage the old pair works again
 * once the link is back, and Chromium may keep it: which pair it keeps is
 * its choice, reported, not asserted.
 * @param {ReturnType<typeof recovery>} r @param {boolean} pairMustBeNew
 */
function assertRestarted(r, pairMustBeNew) {
  for (const [who, x] of Object.entries(r)) {
    assert.ok(x.restarts >= 1 && x.remoteRestarts >= 1, `${who}: new ICE credentials on both ends (restarts: ${x.restarts} local, ${x.remoteRestarts} remote)`);
    if (pairMustBeNew) assert.ok(x.pairIsNew, `${who}: the selected pair is the restart's (local ufrag first set after the event): ${x.pair}`);
  }
}

/** Figures collected for the summary at the end. @type {string[]} */
const summary = [];

test('Alice\'s address changes mid-call: an ICE restart, video decodes again on both sides within 5 s', { skip: skip || false, timeout: 180000 }, onFailure(async () => {
  const { alice, bob } = await call();
  await sleep(2000);
  const t0 = Date.now();
  ip('-n', ns.a, 'addr', 'del', `${A_OLD}/24`, 'dev', 'eth0');
  ip('-n', ns.a, 'addr', 'add', `${A_NEW}/24`, 'dev', 'eth0');
  ip('-n', ns.a, 'route', 'replace', 'default', 'via', A_GW);
  console.log(`# address change: ${A_OLD} -> ${A_NEW} on Alice's eth0 took ${Date.now() - t0} ms`);
  await sleep(8000);
  const [ra, rb] = await Promise.all([recorded(alice.page), recorded(bob.page)]);
  printLog('Alice', ra.net, t0 - 200);
  printLog('Bob', rb.net, t0 - 200);
  const r = recovery('address change', t0, t0, ra, rb);
  summary.push(`address change: video decodes again after ${r.alice.resumed} ms (Alice) / ${r.bob.resumed} ms (Bob); ICE restart asked at +${r.alice.restartAsked ?? r.bob.restartAsked} ms, signaling back at +${r.alice.wsBack} ms`);
  assertRestarted(r, true);
  assert.equal(r.alice.pairAddress.startsWith('10.77.0.') ? A_NEW : r.alice.pairAddress, A_NEW, 'Alice sends from her new address (or a relay)');
  assertResumed(r, 5000, 'after the address change');
  await hangUp();
  // Back to the first address for the next cases.
  ip('-n', ns.a, 'addr', 'del', `${A_NEW}/24`, 'dev', 'eth0');
  ip('-n', ns.a, 'addr', 'add', `${A_OLD}/24`, 'dev', 'eth0');
  ip('-n', ns.a, 'route', 'replace', 'default', 'via', A_GW);
}));

test('Alice\'s link goes down for 3 s (ip link set down): video decodes again within 5 s after it is back', { skip: skip || false, timeout: 180000 }, onFailure(async () => {
  const { alice, bob } = await call();
  await sleep(2000);
  const t0 = Date.now();
  ip('-n', ns.a, 'link', 'set', 'eth0', 'down');
  await sleep(3000);
  ip('-n', ns.a, 'link', 'set', 'eth0', 'up');
  ip('-n', ns.a, 'route', 'replace', 'default', 'via', A_GW); // gone with the link
  const tBack = Date.now();
  console.log(`# link down for ${tBack - t0} ms`);
  await sleep(8000);
  const [ra, rb] = await Promise.all([recorded(alice.page), recorded(bob.page)]);
  printLog('Alice', ra.net, t0 - 200);
  printLog('Bob', rb.net, t0 - 200);
  const r = recovery('link down 3 s (times from link up)', t0, tBack, ra, rb);
  const onPair = (/** @type {{pairIsNew: boolean}} */ x) => (x.pairIsNew ? 'the restart\'s pair' : 'the old pair');
  summary.push(`link down 3 s: video decodes again ${r.alice.resumed} ms (Alice) / ${r.bob.resumed} ms (Bob) after the link is up; ICE restart asked at +${r.alice.restartAsked ?? r.bob.restartAsked} ms, ` +
    `answered (signaling back at +${r.alice.wsBack} ms, new remote ufrag at +${r.alice.newRemoteDesc} ms); media on ${onPair(r.alice)} (Alice) / ${onPair(r.bob)} (Bob)`);
  assertRestarted(r, false);
  assertResumed(r, 5000, 'after the link is back');
  await hangUp();
}));

test('Alice\'s line is cut for 3 s (nothing the OS sees): video decodes again within 5 s after it is back', { skip: skip || false, timeout: 180000 }, onFailure(async () => {
  const { alice, bob } = await call();
  await sleep(2000);
  const t0 = Date.now();
  await link?.cmd('down');
  await sleep(3000);
  await link?.cmd('up');
  const tBack = Date.now();
  console.log(`# line cut for ${tBack - t0} ms`);
  await sleep(8000);
  const [ra, rb] = await Promise.all([recorded(alice.page), recorded(bob.page)]);
  printLog('Alice', ra.net, t0 - 200);
  printLog('Bob', rb.net, t0 - 200);
  const r = recovery('line cut 3 s (times from the line back)', t0, tBack, ra, rb);
  const restarted = r.alice.restarts > 0 || r.bob.restarts > 0;
  summary.push(`line cut 3 s: video decodes again ${r.alice.resumed} ms (Alice) / ${r.bob.resumed} ms (Bob) after the line is back; ${restarted ? 'through an ICE restart' : 'no ICE restart (the pair survived)'}`);
  assertResumed(r, 5000, 'after the line is back');
  await hangUp();
}));

/**
 * Receive-side counters of a page's connection: video frames, NACKs sent,
 * retransmissions received, loss; audio FEC and concealment.
 * @param {import('playwright-core').Page} page
 */
const rtpDetail = (page) => page.evaluate(async () => {
  // @ts-ignore
  const pc = /** @type {RTCPeerConnection[]} */ (window.__pcs).find((x) => x.connectionState !== 'closed');
  /** @type {Record<string, number>} */
  const o = {};
  if (!pc) return o;
  (await pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') {
      for (const k of ['framesDecoded', 'framesReceived', 'framesDropped', 'packetsReceived', 'packetsLost', 'nackCount', 'retransmittedPacketsReceived', 'pliCount', 'freezeCount', 'totalFreezesDuration', 'keyFramesDecoded']) o['v.' + k] = r[k] || 0;
    }
    if (r.type === 'inbound-rtp' && r.kind === 'audio') {
      for (const k of ['packetsReceived', 'packetsLost', 'fecPacketsReceived', 'fecPacketsDiscarded', 'concealedSamples', 'totalSamplesReceived']) o['a.' + k] = r[k] || 0;
    }
    if (r.type === 'outbound-rtp' && r.kind === 'video') {
      for (const k of ['framesEncoded', 'framesSent', 'retransmittedPacketsSent', 'nackCount', 'frameWidth', 'frameHeight', 'framesPerSecond']) o['out.' + k] = r[k] || 0;
      o['out.limitation'] = r.qualityLimitationReason;
    }
  });
  return o;
});

/** b - a for every numeric key. @param {Record<string, any>} a @param {Record<string, any>} b */
const delta = (a, b) => Object.fromEntries(Object.keys(b).map((k) => [k, typeof b[k] === 'number' && !k.startsWith('out.frame') && k !== 'out.framesPerSecond' ? b[k] - (a[k] || 0) : b[k]]));

/**
 * What the descriptions of a page's connection negotiate: NACK, PLI and RTX
 * for VP8, Opus in-band FEC.
 * @param {import('playwright-core').Page} page
 */
const negotiated = (page) => page.evaluate(() => {
  // @ts-ignore
  const pc = /** @type {RTCPeerConnection[]} */ (window.__pcs).find((x) => x.connectionState !== 'closed');
  /** @param {string} sdp */
  const check = (sdp) => {
    const video = sdp.split(/\r\n(?=m=)/).find((m) => m.startsWith('m=video')) || '';
    const audio = sdp.split(/\r\n(?=m=)/).find((m) => m.startsWith('m=audio')) || '';
    const vp8 = /a=rtpmap:(\d+) VP8\/90000/.exec(video)?.[1] || '';
    const opus = /a=rtpmap:(\d+) opus\/48000/.exec(audio)?.[1] || '';
    return {
      vp8: !!vp8,
      nack: new RegExp(`a=rtcp-fb:${vp8} nack\\r`).test(video),
      pli: new RegExp(`a=rtcp-fb:${vp8} nack pli`).test(video),
      rtx: new RegExp(`a=fmtp:\\d+ apt=${vp8}\\r`).test(video),
      inbandFec: new RegExp(`a=fmtp:${opus} [^\\r]*useinbandfec=1`).test(audio),
    };
  };
  return { local: check(pc?.localDescription?.sdp || ''), remote: check(pc?.remoteDescription?.sdp || '') };
});

test('10 % loss and 50 ms ± 50 ms on Alice\'s outgoing packets, then both ways: both decode at least 80 % of the frames they did before; no SFrame authentication failure', { skip: skip || false, timeout: 240000 }, onFailure(async () => {
  const WINDOW = 15000;
  const { alice, bob } = await call();
  const pages = { alice: alice.page, bob: bob.page };
  for (const [who, page] of Object.entries(pages)) {
    const n = await negotiated(page);
    console.log(`# ${who} negotiates: ${JSON.stringify(n)}`);
    for (const side of /** @type {const} */ (['local', 'remote'])) {
      assert.deepEqual(n[side], { vp8: true, nack: true, pli: true, rtx: true, inbandFec: true }, `${who}'s ${side} description: VP8 with NACK, PLI and RTX; Opus with useinbandfec=1`);
    }
  }
  await sleep(3000);
  /** Frames decoded, RTP details and worker counters of both pages. */
  const snap = async () => {
    const out = {};
    for (const [who, page] of Object.entries(pages)) {
      // @ts-ignore
      out[who] = { t: Date.now(), rtp: await rtpDetail(page), worker: await workerStats(page) };
    }
    return /** @type {Record<string, {t: number, rtp: Record<string, any>, worker: any}>} */ (out);
  };
  const s0 = await snap();
  await sleep(WINDOW);
  const s1 = await snap();
  // Phase 1: what `tc qdisc add dev <Alice's interface> root netem loss
  // 10% delay 50ms 50ms` does, on Alice's outgoing packets. Phase 2: the
  // same both ways (her incoming packets too, and so the RTCP feedback
  // about them). Both are held to 80 % of the frames decoded before.
  const phases = [
    { name: 'Alice\'s outgoing packets', dir: 'ab', lossy: ['bob'], gate: true },
    { name: 'both ways on Alice\'s line', dir: 'both', lossy: ['alice', 'bob'], gate: true },
  ];
  /** @type {string[]} */
  const failures = [];
  let prev = s1;
  for (const ph of phases) {
    console.log(`# ${ph.name}: linkemu ${await link?.cmd(`set ${ph.dir} loss=0.1 delay=50ms jitter=50ms`)}`);
    await sleep(WINDOW);
    const cur = await snap();
    for (const who of Object.keys(pages)) {
      const base = delta(s0[who].rtp, s1[who].rtp), bad = delta(prev[who].rtp, cur[who].rtp);
      const fps = (/** @type {any} */ d, /** @type {number} */ ms) => d['v.framesDecoded'] / (ms / 1000);
      const f0 = fps(base, s1[who].t - s0[who].t), f1 = fps(bad, cur[who].t - prev[who].t);
      const ratio = f1 / f0;
      const peer = (/** @type {any} */ w) => /** @type {any} */ (Object.values(w?.peers || {})[0] || { opened: 0, dropped: 0, reasons: {} });
      const w1 = peer(prev[who].worker), w2 = peer(cur[who].worker);
      const reasons = Object.fromEntries(Object.entries(w2.reasons).map(([k, v]) => [k, /** @type {number} */ (v) - (w1.reasons[k] || 0)]));
      const other = who === 'alice' ? 'bob' : 'alice';
      const sender = delta(prev[other].rtp, cur[other].rtp);
      console.log(`# loss on ${ph.name}: ${who} decodes ${f1.toFixed(1)} fps, ${f0.toFixed(1)} before: ${(100 * ratio).toFixed(1)} %; ` +
        `the sender ends at ${sender['out.frameWidth']}x${sender['out.frameHeight']} ${sender['out.framesPerSecond']} fps (limited by: ${sender['out.limitation']})`);
      console.log(`#   ${who} receives, before: ${JSON.stringify(base)}`);
      console.log(`#   ${who} receives, with loss: ${JSON.stringify(bad)}`);
      console.log(`#   ${who}'s SFrame worker with loss: opened ${w2.opened - w1.opened}, dropped ${w2.dropped - w1.dropped} ${JSON.stringify(reasons)}; whole call so far: ${JSON.stringify(w2)}`);
      summary.push(`loss 10 % + 50±50 ms on ${ph.name}: ${who} decodes ${f1.toFixed(1)} of ${f0.toFixed(1)} fps (${(100 * ratio).toFixed(1)} %)${ph.gate ? '' : ' [reported, not asserted]'}; ` +
        `${bad['v.nackCount']} NACKs sent, ${bad['v.retransmittedPacketsReceived']} RTX packets received, ${bad['a.fecPacketsReceived']} Opus FEC packets used, ` +
        `${bad['v.freezeCount']} freezes (${bad['v.totalFreezesDuration'].toFixed(1)} s); sender ${sender['out.frameWidth']}x${sender['out.frameHeight']}@${sender['out.framesPerSecond']} (${sender['out.limitation']}); ` +
        `SFrame drops ${JSON.stringify(reasons)}`);
      if (ph.lossy.includes(who)) assert.ok(bad['v.retransmittedPacketsReceived'] > 0, `${who}: retransmissions (RTX) arrive under loss`);
      assert.equal(w2.reasons.auth || 0, 0, `${who}: no SFrame authentication failure (${JSON.stringify(w2.reasons)})`);
      assert.ok(w2.opened > w1.opened + 500, `${who}: the worker keeps opening frames under loss (${w1.opened} -> ${w2.opened})`);
      if (ph.gate && ratio < 0.8) failures.push(`${who} decodes ${(100 * ratio).toFixed(1)} % of the frames per second with loss on ${ph.name} (at least 80 % wanted)`);
    }
    prev = cur;
  }
  await link?.cmd('set both');
  console.log(`# linkemu counters (ab = Alice -> server, ba = server -> Alice): ${await link?.cmd('stats')}`);
  assert.deepEqual(failures, [], 'both decode at least 80 % of the frames per second they decoded without loss');
  await hangUp();
}));

test('figures', { skip: skip || false }, () => {
  for (const line of summary) console.log(`# FIGURE ${line}`);
});
