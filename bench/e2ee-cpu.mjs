// CPU cost of Parley's end-to-end encryption in a real two-person call
// (issue: end-to-end encryption; target: at most 5 % of one core at
// 640x480, 20 fps). Not part of the test suite: run it by hand,
//   node bench/e2ee-cpu.mjs [--runs 3] [--window 20] [--settle 3] [--modes e2ee,none[,passthrough]]
//                           [--limit 290] [--target 5] [--ref GIT-REF]
// See bench/README.md for what it measures and why.
//
// Each run starts two fresh Chromiums (the test harness's launcher: fake
// 640x480 20 fps camera and a beeping microphone), joins both to a new
// room of a real Parley binary on loopback, waits until both decode > 100
// video frames and send 640x480 with no quality limitation (bandwidth
// estimation ramps up first), lets the call settle, then sums utime+stime (+ reaped
// children) from /proc/<pid>/stat over every process of each Chromium's
// process tree during a fixed window. Modes, all on the same Parley page:
//   e2ee         the product as shipped: SFrame in the encoded-transform worker
//   none         the same page with no encoded transform at all: an init
//                script makes RTCRtpScriptTransform a stub and the
//                sender/receiver `transform` setter ignores it, so frames go
//                from encoder to packetizer (and depacketizer to decoder)
//                directly; the E2EE worker still exists and still gets keys
//   passthrough  a real RTCRtpScriptTransform on every sender and receiver,
//                but the page's /e2ee/worker.js is replaced (by a Playwright
//                route) with one that forwards every frame unchanged: the
//                transform plumbing without the crypto
// Modes alternate within each round (ABBA order) so drift in the load of a
// shared machine hits them alike.
import { execFileSync, execSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repo, launchBrowser, freePort, sleep } from '../tests/browser/harness.mjs';

// ---- options ----
const argv = process.argv.slice(2);
/** @param {string} name @param {string} def */
function opt(name, def) {
  const i = argv.indexOf('--' + name);
  if (i >= 0 && i + 1 < argv.length) return argv[i + 1];
  const eq = argv.find((a) => a.startsWith(`--${name}=`));
  return eq ? eq.slice(name.length + 3) : def;
}
if (argv.includes('--help') || argv.includes('-h')) {
  const lines = readFileSync(new URL(import.meta.url), 'utf8').split('\n');
  console.log(lines.slice(0, lines.findIndex((l) => !l.startsWith('//'))).join('\n'));
  process.exit(0);
}
const RUNS = Number(opt('runs', '3'));
const WINDOW_S = Number(opt('window', '20'));
const SETTLE_S = Number(opt('settle', '3'));
const MODES = opt('modes', 'e2ee,none').split(',').filter(Boolean);
const LIMIT_S = Number(opt('limit', '290'));
const TARGET_PP = Number(opt('target', '5'));
// Build Parley from this git ref (e.g. HEAD) instead of the work tree, so
// half-made edits elsewhere in a shared tree do not get in the way.
const REF = opt('ref', '');
/** A run where a side encodes or decodes below this did less than the 20 fps call's work. */
const STARVED_FPS = 18;
for (const m of MODES) if (!['e2ee', 'none', 'passthrough'].includes(m)) throw new Error('unknown mode ' + m);

const t0 = Date.now();
const elapsed = () => (Date.now() - t0) / 1000;
const log = (/** @type {string} */ s) => process.stderr.write(`[${elapsed().toFixed(0).padStart(3)} s] ${s}\n`);

// ---- /proc ----
const HZ = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

/** pid → {ppid, ticks (utime+stime+cutime+cstime)} for every process. */
function procTable() {
  /** @type {Map<number, {ppid: number, ticks: number}>} */
  const t = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let s;
    try { s = readFileSync(`/proc/${d}/stat`, 'utf8'); } catch { continue; }
    // Fields after "(comm)": state ppid ... utime(14) stime(15) cutime(16) cstime(17), 1-based.
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    t.set(Number(d), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) });
  }
  return t;
}

/** The pids of root and all its descendants. @param {Map<number, {ppid: number}>} t @param {number} root */
function tree(t, root) {
  const out = new Set([root]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, p] of t) if (!out.has(pid) && out.has(p.ppid)) { out.add(pid); grew = true; }
  }
  return out;
}

/** CPU ticks of each root's process tree. @param {number[]} roots */
function treeTicks(roots) {
  const t = procTable();
  return roots.map((r) => {
    let sum = 0;
    for (const pid of tree(t, r)) sum += t.get(pid)?.ticks ?? 0;
    return sum;
  });
}

/**
 * CPU ticks (utime+stime) of the threads of each root's process tree, by
 * thread name (comm): "DedicatedWorker" is the E2EE worker's thread.
 * @param {number[]} roots
 */
function threadTicks(roots) {
  const t = procTable();
  /** @type {Map<string, number>} */
  const by = new Map();
  for (const r of roots) {
    for (const pid of tree(t, r)) {
      let tids = [];
      try { tids = readdirSync(`/proc/${pid}/task`); } catch { continue; }
      for (const tid of tids) {
        let s;
        try { s = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'); } catch { continue; }
        const comm = s.slice(s.indexOf('(') + 1, s.lastIndexOf(')'));
        const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
        by.set(comm, (by.get(comm) || 0) + Number(f[11]) + Number(f[12]));
      }
    }
  }
  return by;
}

/** Whole-machine busy and total jiffies from /proc/stat. */
function machineTicks() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0); // user..steal, not guest (counted in user)
  const idle = f[3] + f[4];
  return { busy: total - idle, total };
}

/** Direct children of this node process that are Chromium browsers. */
function chromiumChildren() {
  const t = procTable();
  /** @type {Set<number>} */
  const out = new Set();
  for (const [pid, p] of t) {
    if (p.ppid !== process.pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('--user-data-dir=')) out.add(pid);
    } catch {}
  }
  return out;
}

// ---- Parley ----
const work = mkdtempSync(join(tmpdir(), 'parley-e2ee-cpu-'));

/** Builds cmd/parley from the work tree or from REF. */
function buildParley() {
  let src = repo;
  if (REF) {
    src = join(work, 'src');
    execSync(`mkdir -p '${src}' && git -C '${repo}' archive '${REF}' | tar -x -C '${src}'`, { stdio: 'inherit' });
  }
  const bin = join(work, 'parley');
  execFileSync('go', ['build', '-o', bin, './cmd/parley'], { cwd: src, stdio: 'inherit' });
  return bin;
}

/** Parley on loopback (as tests/browser/harness.mjs starts it, from our own binary). */
async function startParley() {
  const bin = buildParley();
  const http = await freePort();
  const turnPort = await freePort();
  const proc = spawn(bin, ['-listen', `127.0.0.1:${http}`, '-turn-listen', `127.0.0.1:${turnPort}`, '-turn-public-ip', '127.0.0.1',
    '-log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let logs = '';
  proc.stdout.on('data', (d) => { logs = (logs + d).slice(-20000); });
  proc.stderr.on('data', (d) => { logs = (logs + d).slice(-20000); });
  const base = `http://127.0.0.1:${http}`;
  const deadline = Date.now() + 20000;
  for (;;) {
    try { if ((await fetch(base + '/healthz')).ok) break; } catch {}
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error('parley did not start:\n' + logs);
    await sleep(100);
  }
  return {
    base, proc,
    get logs() { return logs; },
    async room() {
      const r = await fetch(base + '/api/rooms', { method: 'POST' });
      if (r.status !== 201) throw new Error('room creation: ' + r.status);
      const room = /** @type {{id: string, url: string}} */ (await r.json());
      const secret = randomBytes(16).toString('base64url'); // the link secret, made client-side as the landing page does
      return { ...room, link: (/** @type {string} */ query) => `${base}${room.url}?${query}#k=${secret}` };
    },
    async stop() {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await new Promise((r) => proc.once('exit', r));
      }
    },
  };
}

// ---- cleanup, also on failure and at the time limit ----
/** @type {{close: () => Promise<void>, pid: number}[]} */
const openBrowsers = [];
/** @type {Awaited<ReturnType<typeof startParley>> | null} */
let parley = null;
let cleaning = false;

function killTree(/** @type {number} */ root) {
  const t = procTable();
  for (const pid of tree(t, root)) { try { process.kill(pid, 'SIGKILL'); } catch {} }
}

async function closeBrowser(/** @type {{close: () => Promise<void>, pid: number}} */ b) {
  await Promise.race([b.close(), sleep(5000)]);
  killTree(b.pid);
  const i = openBrowsers.indexOf(b);
  if (i >= 0) openBrowsers.splice(i, 1);
}

async function cleanup() {
  if (cleaning) return;
  cleaning = true;
  for (const b of [...openBrowsers]) await closeBrowser(b).catch(() => {});
  // A browser still being launched when we failed: every Chromium that is a
  // child of this process is ours.
  for (const pid of chromiumChildren()) killTree(pid);
  if (parley) await Promise.race([parley.stop(), sleep(3000)]).catch(() => {});
  if (parley && parley.proc.exitCode === null) parley.proc.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
}

async function fail(/** @type {unknown} */ e, code = 1) {
  console.error('e2ee-cpu: ' + (e instanceof Error ? e.stack || e.message : String(e)));
  if (parley) console.error('--- parley log (tail) ---\n' + parley.logs.split('\n').slice(-20).join('\n'));
  for (const [i, b] of openBrowsers.entries()) {
    // @ts-ignore
    console.error(`--- browser ${i} console (tail) ---\n` + (b.consoleLines || []).slice(-15).join('\n'));
  }
  await cleanup();
  process.exit(code);
}

const hardLimit = setTimeout(() => { fail(new Error(`time limit of ${LIMIT_S} s reached`), 2); }, LIMIT_S * 1000);
process.on('SIGINT', () => fail(new Error('interrupted'), 130));
process.on('SIGTERM', () => fail(new Error('terminated'), 143));
process.on('uncaughtException', (e) => fail(e));
process.on('unhandledRejection', (e) => fail(e));

// ---- the modes, installed in every page before its scripts ----
/** @param {string} mode */
const installMode = (mode) => {
  // @ts-ignore
  const w = /** @type {any} */ (window);
  w.__bench = { mode, transforms: 0, skipped: 0 };
  const Real = w.RTCRtpScriptTransform;
  if (!Real) return;
  if (mode === 'e2ee' || mode === 'passthrough') {
    // Only counts: the app's own worker (or, in passthrough, the forwarding
    // worker served in its place) and the real transform.
    w.RTCRtpScriptTransform = function (/** @type {Worker} */ worker, /** @type {any} */ options) {
      w.__bench.transforms++;
      return new Real(worker, options);
    };
  } else if (mode === 'none') {
    class NoTransform { constructor(/** @type {Worker} */ _w, /** @type {any} */ o) { this.options = o; } }
    w.RTCRtpScriptTransform = NoTransform;
    for (const proto of [RTCRtpSender.prototype, RTCRtpReceiver.prototype]) {
      const d = /** @type {PropertyDescriptor} */ (Object.getOwnPropertyDescriptor(proto, 'transform'));
      const kept = new WeakMap();
      Object.defineProperty(proto, 'transform', {
        configurable: true, enumerable: d.enumerable,
        get() { return kept.has(this) ? kept.get(this) : d.get?.call(this); },
        set(v) {
          if (v instanceof NoTransform) { kept.set(this, v); w.__bench.skipped++; } else d.set?.call(this, v);
        },
      });
    }
  }
};

// In passthrough mode this is served in place of /e2ee/worker.js (the page's
// CSP allows workers from its own origin only): it forwards every frame
// unchanged and answers the page's stats polls like the real worker.
const PASSTHROUGH_WORKER = `
self.onrtctransform = (ev) => {
  const t = ev.transformer;
  t.readable.pipeThrough(new TransformStream({ transform(frame, c) { c.enqueue(frame); } })).pipeTo(t.writable).catch(() => {});
};
self.onmessage = (ev) => {
  if (ev.data && ev.data.op === 'stats') self.postMessage({ op: 'stats', stats: { sent: 0, unsent: 0, peers: {} } });
};
`;

// ---- media statistics of a page ----
/** @param {import('playwright-core').Page} page */
function snapshot(page) {
  return page.evaluate(async () => {
    // @ts-ignore
    const pcs = /** @type {RTCPeerConnection[]} */ (window.__pcs || []).filter((pc) => pc.connectionState !== 'closed');
    const s = {
      conns: pcs.length, state: pcs.map((pc) => pc.connectionState).join(','),
      decoded: 0, received: 0, inWidth: 0, inHeight: 0, encoded: 0, outWidth: 0, outHeight: 0,
      outVideoBytes: 0, inVideoBytes: 0, limit: '', codec: '', audioCodec: '', localType: '',
      // @ts-ignore
      bench: window.__bench,
      badge: document.getElementById('e2ee-badge')?.className || '',
      t: performance.now(),
    };
    for (const pc of pcs) {
      const rep = await pc.getStats();
      /** @type {Map<string, any>} */
      const byId = new Map();
      rep.forEach((r) => byId.set(r.id, r));
      rep.forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') {
          s.decoded += r.framesDecoded || 0; s.received += r.framesReceived || 0; s.inVideoBytes += r.bytesReceived || 0;
          s.inWidth = r.frameWidth || 0; s.inHeight = r.frameHeight || 0;
          s.codec = byId.get(r.codecId)?.mimeType || s.codec;
        }
        if (r.type === 'inbound-rtp' && r.kind === 'audio') s.audioCodec = byId.get(r.codecId)?.mimeType || s.audioCodec;
        if (r.type === 'outbound-rtp' && r.kind === 'video') {
          s.encoded += r.framesEncoded || 0; s.outVideoBytes += r.bytesSent || 0;
          s.outWidth = r.frameWidth || 0; s.outHeight = r.frameHeight || 0;
          s.limit = r.qualityLimitationReason || '';
        }
        if (r.type === 'transport' && r.selectedCandidatePairId) {
          const pair = byId.get(r.selectedCandidatePairId);
          s.localType = byId.get(pair?.localCandidateId)?.candidateType || '';
        }
      });
    }
    return s;
  });
}

// ---- one run ----
/** @param {string} mode @param {string} label */
async function oneRun(mode, label) {
  const room = await /** @type {NonNullable<typeof parley>} */ (parley).room();
  /** @type {any[]} */
  const bs = [];
  for (const who of ['Alice', 'Bob']) {
    const before = chromiumChildren();
    const b = await launchBrowser();
    const pids = [...chromiumChildren()].filter((p) => !before.has(p));
    if (pids.length !== 1) throw new Error(`could not find the Chromium process of ${who}: ${pids}`);
    b.pid = pids[0];
    b.who = who;
    openBrowsers.push(b);
    log(`${label}: ${who} launched`);
    await b.ctx.addInitScript(installMode, mode);
    if (mode === 'passthrough') {
      await b.ctx.route('**/e2ee/worker.js', (route) => route.fulfill({ contentType: 'text/javascript', body: PASSTHROUGH_WORKER }));
    }
    bs.push(b);
  }
  try {
    for (const b of bs) {
      await b.page.goto(room.link(`name=${b.who}&join=1`));
      await b.page.locator('#call').waitFor({ state: 'visible', timeout: 20000 });
    }
    log(`${label}: both joined`);
    // Both sides decode > 100 frames.
    const deadline = Date.now() + 40000;
    for (;;) {
      const ss = await Promise.all(bs.map((b) => snapshot(b.page)));
      if (ss.every((s) => s.conns === 1 && s.decoded > 100)) break;
      if (Date.now() > deadline) throw new Error(`${label}: no video after 40 s: ${JSON.stringify(ss)}`);
      await sleep(250);
    }
    log(`${label}: both decode > 100 frames`);
    // Bandwidth estimation starts low and VP8 may start below 640x480: wait
    // (up to 10 s) until both send full size with nothing limiting quality.
    const full = Date.now() + 10000;
    for (;;) {
      const ss = await Promise.all(bs.map((b) => snapshot(b.page)));
      if (ss.every((s) => s.outWidth === 640 && s.outHeight === 480 && s.limit === 'none')) break;
      if (Date.now() > full) { log(`${label}: not at full quality after 10 s more: ${ss.map((s) => `${s.outWidth}x${s.outHeight} ${s.limit}`)}`); break; }
      await sleep(250);
    }
    await sleep(SETTLE_S * 1000);
    const roots = bs.map((b) => b.pid);
    const s0 = await Promise.all(bs.map((b) => snapshot(b.page)));
    const m0 = machineTicks();
    const th0 = threadTicks(roots);
    const c0 = treeTicks(roots);
    const w0 = process.hrtime.bigint();
    await sleep(WINDOW_S * 1000);
    const c1 = treeTicks(roots);
    const w1 = process.hrtime.bigint();
    const th1 = threadTicks(roots);
    const m1 = machineTicks();
    const s1 = await Promise.all(bs.map((b) => snapshot(b.page)));
    const wall = Number(w1 - w0) / 1e9;
    const cpu = c1.map((c, i) => (100 * (c - c0[i])) / HZ / wall); // % of one core
    const ours = c1.reduce((a, c, i) => a + c - c0[i], 0);
    const cores = (m1.total - m0.total) / HZ / wall;
    /** @type {Record<string, number>} % of one core by thread name, both browsers */
    const threads = {};
    for (const [name, v] of th1) threads[name] = (100 * (v - (th0.get(name) || 0))) / HZ / wall;
    const r = {
      mode, label, wall, cpu, sum: cpu[0] + cpu[1], threads, worker: threads.DedicatedWorker || 0,
      // What the rest of the machine did meanwhile, in % of one core.
      others: (100 * ((m1.busy - m0.busy) - ours)) / HZ / wall,
      machineCores: cores,
      fps: s1.map((s, i) => (s.decoded - s0[i].decoded) / ((s.t - s0[i].t) / 1000)),
      encFps: s1.map((s, i) => (s.encoded - s0[i].encoded) / ((s.t - s0[i].t) / 1000)),
      kbps: s1.map((s, i) => (8 * (s.outVideoBytes - s0[i].outVideoBytes)) / (s.t - s0[i].t)),
      res: s1.map((s) => `${s.inWidth}x${s.inHeight}`),
      outRes: s1.map((s) => `${s.outWidth}x${s.outHeight}`),
      limit: s1.map((s) => s.limit),
      codec: s1.map((s) => `${s.codec}/${s.audioCodec}`),
      path: s1.map((s) => s.localType),
      bench: s1.map((s) => s.bench),
      badge: s1.map((s) => s.badge),
      loadavg: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
    };
    // The mode is what it says.
    for (const [i, b] of r.bench.entries()) {
      if (!b || b.mode !== mode) throw new Error(`${label}: mode not installed on ${bs[i].who}: ${JSON.stringify(b)}`);
      if (mode === 'none' && (b.skipped < 4 || b.transforms !== 0)) throw new Error(`${label}: ${JSON.stringify(b)}`);
      if (mode !== 'none' && b.transforms < 4) throw new Error(`${label}: only ${b.transforms} transforms: ${JSON.stringify(b)}`);
      if (!/\bok\b/.test(r.badge[i])) throw new Error(`${label}: E2EE badge not green on ${bs[i].who}: ${r.badge[i]}`);
    }
    return r;
  } finally {
    for (const b of bs) await closeBrowser(b);
  }
}

// ---- tables ----
const median = (/** @type {number[]} */ a) => {
  const s = [...a].sort((x, y) => x - y);
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};
const f1 = (/** @type {number} */ x) => (Number.isFinite(x) ? x.toFixed(1) : '-');
/** @param {string[]} head @param {string[][]} rows */
function table(head, rows) {
  const out = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i ? '---:' : '---')).join('|')}|`];
  for (const r of rows) out.push(`| ${r.join(' | ')} |`);
  return out.join('\n');
}

async function main() {
  log(`uptime: ${execFileSync('uptime').toString().trim()}`);
  log(`building Parley from ${REF ? 'git ' + REF : 'the work tree'}`);
  log(`modes ${MODES.join(',')}, ${RUNS} runs each, window ${WINDOW_S} s, settle ${SETTLE_S} s, limit ${LIMIT_S} s`);
  parley = await startParley();
  log(`parley at ${parley.base}`);
  /** @type {any[]} */
  const results = [];
  let perRun = 0;
  outer: for (let round = 0; round < RUNS; round++) {
    const order = round % 2 ? [...MODES].reverse() : MODES;
    for (const mode of order) {
      const label = `${mode} #${round + 1}`;
      // Leave room to finish cleanly inside the limit.
      if (perRun && elapsed() + perRun + 10 > LIMIT_S) {
        log(`stopping early: ${label} would not fit in the ${LIMIT_S} s limit`);
        break outer;
      }
      const started = elapsed();
      log(`${label}...`);
      const r = await oneRun(mode, label);
      perRun = Math.max(perRun, elapsed() - started);
      results.push(r);
      log(`${label}: CPU ${f1(r.cpu[0])} + ${f1(r.cpu[1])} = ${f1(r.sum)} % of a core; decode ${r.fps.map(f1).join('/')} fps;` +
        ` ${r.res.join('/')}; limit ${r.limit.join('/')}; others ${f1(r.others)} %; load ${r.loadavg}`);
    }
  }
  clearTimeout(hardLimit);
  await cleanup();

  const starved = (/** @type {any} */ r) => [...r.fps, ...r.encFps].some((x) => x < STARVED_FPS);
  const cores = (results[0]?.machineCores ?? 0).toFixed(0);
  console.log(`\nPer run: CPU in % of one core over a ${WINDOW_S} s window, each browser's whole process tree; worker = the` +
    ` DedicatedWorker threads (E2EE worker) of both; others = the rest of the machine (${cores} cores) meanwhile, % of one core\n`);
  console.log(table(
    ['run', 'Alice CPU', 'Bob CPU', 'both', 'worker', 'decoded fps A/B', 'encoded fps A/B', 'video kbit/s A/B', 'received res A/B', 'quality limit A/B', 'others', 'load avg'],
    results.map((r) => [r.label + (starved(r) ? ' (starved)' : ''), f1(r.cpu[0]), f1(r.cpu[1]), f1(r.sum), f1(r.worker), r.fps.map(f1).join(' / '),
      r.encFps.map(f1).join(' / '), r.kbps.map((/** @type {number} */ x) => x.toFixed(0)).join(' / '), r.res.join(' / '), r.limit.join(' / '),
      f1(r.others), r.loadavg]),
  ));
  const nStarved = results.filter(starved).length;
  if (nStarved) {
    console.log(`\n${nStarved} run(s) marked "starved": a side encoded or decoded under ${STARVED_FPS} fps, so it did less work than` +
      ` the 20 fps call and its CPU figure is low; the machine was too busy for that run to count fully.`);
  }

  /** @type {Record<string, any>} */
  const by = {};
  for (const m of MODES) {
    const rs = results.filter((r) => r.mode === m);
    by[m] = {
      rs, n: rs.length,
      sum: median(rs.map((r) => r.sum)), a: median(rs.map((r) => r.cpu[0])), b: median(rs.map((r) => r.cpu[1])),
      min: Math.min(...rs.map((r) => r.sum)), max: Math.max(...rs.map((r) => r.sum)),
      worker: median(rs.map((r) => r.worker)),
      fps: median(rs.flatMap((r) => r.fps)),
      others: median(rs.map((r) => r.others)),
      res: [...new Set(rs.flatMap((r) => r.res))].join(', '),
      codec: [...new Set(rs.flatMap((r) => r.codec))].join(', '),
    };
  }
  console.log(`\nBy mode: medians over runs; a two-person call, each browser sends 640x480 20 fps VP8 + Opus and receives the other's\n`);
  console.log(table(
    ['mode', 'runs', 'CPU both browsers', 'range (both)', 'per browser (Alice / Bob)', 'E2EE worker thread (both)', 'decoded fps per side', 'received resolution', 'codecs', 'others on the machine'],
    MODES.map((m) => [m, String(by[m].n), f1(by[m].sum), `${f1(by[m].min)}–${f1(by[m].max)}`, `${f1(by[m].a)} / ${f1(by[m].b)}`,
      f1(by[m].worker), f1(by[m].fps), by[m].res, by[m].codec, f1(by[m].others)]),
  ));

  if (by.e2ee && by.none) {
    const both = by.e2ee.sum - by.none.sum;
    const per = both / 2;
    // Paired by round: e2ee and none of the same round ran back to back.
    const paired = [];
    for (let round = 1; round <= RUNS; round++) {
      const e = results.find((r) => r.label === `e2ee #${round}`);
      const n = results.find((r) => r.label === `none #${round}`);
      if (e && n) paired.push((e.sum - n.sum) / 2);
    }
    const pm = median(paired);
    console.log(`\nE2EE overhead (e2ee minus none), percentage points of one core\n`);
    const rows = [
      ['per browser (one participant\'s machine), from the medians', f1(per), `<= ${TARGET_PP}`, per <= TARGET_PP ? 'yes' : 'no'],
      ['both browsers summed, from the medians', f1(both), '', ''],
      [`per browser, median of the ${paired.length} back-to-back pairs (${paired.map(f1).join(', ')})`, f1(pm), `<= ${TARGET_PP}`, pm <= TARGET_PP ? 'yes' : 'no'],
      ['per browser, E2EE worker thread alone (e2ee minus none)', f1((by.e2ee.worker - by.none.worker) / 2), '', ''],
    ];
    if (by.passthrough) {
      rows.push(['per browser, transform plumbing only (passthrough minus none)', f1((by.passthrough.sum - by.none.sum) / 2), '', '']);
      rows.push(['per browser, SFrame work (e2ee minus passthrough)', f1((by.e2ee.sum - by.passthrough.sum) / 2), '', '']);
    }
    console.log(table(['overhead', 'pp of one core', 'target', 'met'], rows));

    // Where the difference goes: thread names with the largest change.
    /** @type {Set<string>} */
    const names = new Set(results.flatMap((r) => Object.keys(r.threads)));
    const rowsT = [...names].map((name) => {
      const med = MODES.map((m) => median(by[m].rs.map((/** @type {any} */ r) => r.threads[name] || 0)));
      return { name, med, diff: med[MODES.indexOf('e2ee')] - med[MODES.indexOf('none')] };
    }).sort((x, y) => Math.abs(y.diff) - Math.abs(x.diff)).slice(0, 8);
    console.log(`\nThreads with the largest e2ee − none difference (medians, both browsers, % of one core; thread names as the kernel truncates them)\n`);
    console.log(table(['thread', ...MODES, 'e2ee − none'], rowsT.map((t) => [t.name, ...t.med.map(f1), f1(t.diff)])));
  }
  log(`uptime: ${execFileSync('uptime').toString().trim()}`);
  log(`total ${elapsed().toFixed(0)} s`);
}

main().catch((e) => fail(e));
