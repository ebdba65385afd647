// Node side of the wire inspector (main.go in this directory), for the
// browser tests: builds it once, runs it in a room, reads what it recorded,
// and asks it to try keys on recorded frames (-open mode).
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KeyAgreement } from '../../e2ee/keys.js';
import { joinTokenOf } from '../browser/harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const work = mkdtempSync(join(tmpdir(), 'parley-inspector-'));

let binary = '';
/** Builds ./tests/inspector once per test process. */
export function buildInspector() {
  if (binary) return binary;
  binary = join(work, 'inspector');
  execFileSync('go', ['build', '-o', binary, './tests/inspector'], { cwd: repo, stdio: 'inherit' });
  return binary;
}

/**
 * @typedef {{
 *   type: 'frame', t: number, peer: string, name: string, kind: 'audio'|'video', ssrc: number, ts: number, seq: number,
 *   packets: number, complete: boolean, size: number, prefix: number, keyFrame: boolean, prefixHex: string,
 *   sframe: boolean, err?: string, hdrLen: number, hdrHex: string, kid: number, kidStr: string, ctr: number,
 *   index: number, gen: number, step: number, bodyLen: number, body: string, bodyCut: boolean,
 * }} Frame
 * @typedef {{type: 'event', event: string, t: number, [k: string]: any}} Event
 */

let runs = 0;
/**
 * Starts the inspector in a room. `done` resolves when it has left by itself.
 * With `secret` (the link secret, b64url) it joins with the room's join
 * token and takes part in the key agreement through e2ee/keys.js, run here
 * in Node: pages connect only to peers whose keys they confirmed, so a
 * listener without keys would get no media. The keys it receives are
 * recorded in `keys` but the inspector itself only records ciphertext.
 * @param {{base: string, room: string, secret?: string, name?: string, durationMs: number, bodyBytes?: number, pliMs?: number}} o
 */
export function runInspector(o) {
  const bin = buildInspector();
  const out = join(work, `frames-${++runs}.jsonl`);
  const args = ['-url', o.base, '-room', o.room, '-name', o.name || 'Inspector', '-duration', `${o.durationMs}ms`,
    '-out', out, '-body-bytes', String(o.bodyBytes ?? -1), '-pli', `${o.pliMs ?? 1000}ms`];
  if (o.secret) args.push('-token', joinTokenOf(o.secret).token, '-bridge');
  const proc = spawn(bin, args, { stdio: [o.secret ? 'pipe' : 'ignore', o.secret ? 'pipe' : 'ignore', 'pipe'] });
  /** @type {{op: string, peer: string, kid: string}[]} */
  const keys = [];
  if (o.secret) bridgeKeys(proc, o.room, o.secret, keys);
  let log = '';
  proc.stderr.on('data', (d) => { log += d; });
  const done = new Promise((resolve, reject) => {
    const kill = setTimeout(() => { proc.kill('SIGKILL'); }, o.durationMs + 20000);
    proc.once('exit', (code, sig) => {
      clearTimeout(kill);
      if (code === 0) resolve(undefined);
      else reject(new Error(`inspector exited with ${code ?? sig}:\n${log}`));
    });
  });
  done.catch(() => {});
  /** @type {Frame[]} */
  const frames = [];
  /** @type {Event[]} */
  const events = [];
  let seen = 0;
  return {
    proc, out, done, keys,
    get log() { return log; },
    /** Everything recorded so far (the file is flushed per line; read on from where the last call stopped). */
    read() {
      if (existsSync(out)) {
        const buf = readFileSync(out);
        const end = buf.lastIndexOf(10) + 1; // up to the last whole line
        if (end > seen) {
          for (const line of buf.subarray(seen, end).toString('utf8').split('\n')) {
            if (!line) continue;
            let v;
            try { v = JSON.parse(line); } catch { continue; }
            if (v.type === 'frame') frames.push(v); else events.push(v);
          }
          seen = end;
        }
      }
      return { frames: frames.slice(), events: events.slice() };
    },
    stop() { if (proc.exitCode === null) proc.kill('SIGTERM'); },
  };
}

/**
 * Runs the inspector's side of the key agreement (e2ee/keys.js) over its
 * bridge: e2ee payloads in and out, and a "call" once a peer that was in
 * the room before us is confirmed, as the page does (session.js).
 * @param {import('node:child_process').ChildProcess} proc @param {string} room @param {string} secret
 * @param {{op: string, peer: string, kid: string}[]} keys
 */
function bridgeKeys(proc, room, secret, keys) {
  const write = (/** @type {object} */ v) => { try { proc.stdin?.write(JSON.stringify(v) + '\n'); } catch {} };
  /** @type {KeyAgreement|null} */
  let ka = null;
  const toCall = new Set();
  const ka0 = new KeyAgreement(room, Buffer.from(secret, 'base64url'), {
    send: (payload, to) => write(to ? { type: 'e2ee', to, payload } : { type: 'e2ee', payload }),
    installSendKey: (kid) => keys.push({ op: 'send-key', peer: '', kid: String(kid) }),
    installRecvKey: (peer, kid) => keys.push({ op: 'recv-key', peer, kid: String(kid) }),
    dropPeer: () => {},
    onChange: () => {
      for (const pid of ka0.confirmed()) if (toCall.delete(pid)) write({ type: 'call', id: pid });
    },
    onWarning: (peer, text) => console.log(`inspector key agreement: ${peer}: ${text}`),
  });
  let buf = '';
  proc.stdout?.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let m;
      try { m = JSON.parse(line); } catch { continue; }
      if (m.type === 'welcome') {
        for (const p of m.peers || []) toCall.add(p.id);
        ka = ka0;
        ka.start(m.id);
      } else if (m.type === 'e2ee' && ka) {
        ka.onMessage(m.from, m.payload);
      } else if (m.type === 'peer-left' && ka) {
        toCall.delete(m.id);
        ka.peerLeft(m.id);
      }
    }
  });
  proc.once('exit', () => ka0.stop());
}

/**
 * Tries keys on frames with the Go SFrame implementation (inspector -open).
 * @param {{keys: {kid: string|number, key: string, label?: string}[],
 *          frames: {kind: string, prefix: string, sframe: string, label?: string}[], ratchet?: number}} req
 * @returns {{frame: number, key: number, mode: string, ok: boolean, err?: string, plainLen?: number, frameKid: number, keyKid: number}[]}
 */
export function openFrames(req) {
  const bin = buildInspector();
  const out = execFileSync(bin, ['-open'], { input: JSON.stringify(req), maxBuffer: 64 << 20 });
  return JSON.parse(out.toString()).results;
}

/** The whole wire frame's SFrame part (header || ciphertext || tag) as hex. @param {Frame} f */
export function sframeHex(f) {
  if (f.bodyCut) throw new Error('frame body was cut: run the inspector with bodyBytes -1');
  return f.hdrHex + f.body;
}

/** KID parts: index << 24 | generation << 8 | step. @param {bigint|number|string} kid */
export function splitKid(kid) {
  const k = BigInt(kid);
  return { index: Number((k >> 24n) & 0xffffn), gen: Number((k >> 8n) & 0xffffn), step: Number(k & 0xffn) };
}
