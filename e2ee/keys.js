// @ts-check
// Parley's end-to-end key agreement, run in the page (docs/security.md has
// the full design; this file is its reference implementation).
//
// The link secret S lives in the URL fragment (#k=...) and never reaches the
// server. From it come three keys, one purpose each:
//   K_hello = HKDF(S, salt=lp(R), "parley/1 hello-key")      authenticates hellos
//   K_salt  = HKDF(S, salt=lp(R), "parley/1 pairwise-salt")  salts pairwise keys
//   K_code  = HKDF(S, salt=lp(R), "parley/1 safety-key")     keys the safety code
// Each participant announces an X25519 public key in a MACed hello; each
// pair derives a wrap key and a confirm key from their ECDH secret; once
// confirmed, each participant sends its own random SFrame base key to the
// other, wrapped. Messages travel as opaque "e2ee" signaling payloads.

import { ratchet, makeKid, AES_128_GCM_SHA256_128 } from './sframe.js';

/** Version, suite and curve, bound into every MAC. */
export const E2EE_VERSION = 1;
export const SUITE = AES_128_GCM_SHA256_128;
export const CURVE = 'X25519';
/** Link secrets are at least this many bytes. */
export const MIN_SECRET_BYTES = 16;
/** How long a sender waits after handing out a new key before using it. */
export const SWITCH_DELAY_MS = 400;
/** Senders start a fresh generation this often, even when nobody comes or goes. */
export const REKEY_INTERVAL_MS = 10 * 60 * 1000;

const te = new TextEncoder();

/** @param {Uint8Array} b */
export function b64url(b) {
  let s = '';
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** @param {string} s */
export function unb64url(s) {
  if (typeof s !== 'string' || !/^[A-Za-z0-9_-]*$/.test(s)) throw new Error('bad base64url');
  const bin = atob(s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** @param {...(Uint8Array|string)} parts */
function cat(...parts) {
  const bs = parts.map((p) => (typeof p === 'string' ? te.encode(p) : p));
  const out = new Uint8Array(bs.reduce((n, b) => n + b.length, 0));
  let o = 0;
  for (const b of bs) { out.set(b, o); o += b.length; }
  return out;
}

/** Length-prefixed: 2-byte big-endian length, then the bytes. @param {Uint8Array|string} x */
function lp(x) {
  const b = typeof x === 'string' ? te.encode(x) : x;
  if (b.length > 0xffff) throw new Error('lp: too long');
  return cat(new Uint8Array([b.length >> 8, b.length & 0xff]), b);
}

/** @param {number} n @param {number} bytes */
function uint(n, bytes) {
  const out = new Uint8Array(bytes);
  for (let i = bytes - 1; i >= 0; i--) { out[i] = n & 0xff; n = Math.floor(n / 256); }
  return out;
}

/** @param {Uint8Array} a @param {Uint8Array} b */
function cmpBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** @param {Uint8Array} b @returns {BufferSource} */
const buf = (b) => /** @type {BufferSource} */ (b);

/**
 * HKDF-SHA256 to bytes.
 * @param {Uint8Array} ikm @param {Uint8Array} salt @param {Uint8Array|string} info @param {number} len
 */
async function hkdf(ikm, salt, info, len) {
  const k = await crypto.subtle.importKey('raw', buf(ikm), 'HKDF', false, ['deriveBits']);
  const bits = await crypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: buf(salt), info: buf(typeof info === 'string' ? te.encode(info) : info) }, k, len * 8);
  return new Uint8Array(bits);
}

/** @param {Uint8Array} raw */
const hmacKey = (raw) => crypto.subtle.importKey('raw', buf(raw), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);

/** @param {CryptoKey} key @param {Uint8Array} data */
async function hmac(key, data) {
  return new Uint8Array(await crypto.subtle.sign('HMAC', key, buf(data)));
}

/** Constant-time check of a MAC (WebCrypto's verify compares in constant time). @param {CryptoKey} key @param {Uint8Array} mac @param {Uint8Array} data */
function verify(key, mac, data) {
  return crypto.subtle.verify('HMAC', key, buf(mac), buf(data));
}

/**
 * Reads the link secret from a URL fragment like "#k=<base64url>".
 * Returns null if it is missing or too short.
 * @param {string} hash
 */
export function linkSecretFromHash(hash) {
  const m = /(?:^#|&)k=([A-Za-z0-9_-]+)/.exec(hash);
  if (!m) return null;
  try {
    const s = unb64url(m[1]);
    return s.length >= MIN_SECRET_BYTES ? s : null;
  } catch {
    return null;
  }
}

/** Makes a new link secret (the landing page does, in the creator's browser). */
export function newLinkSecret() {
  return b64url(crypto.getRandomValues(new Uint8Array(MIN_SECRET_BYTES)));
}

/** True if this browser can do Parley's end-to-end encryption. */
export async function e2eeSupported() {
  const transforms = typeof RTCRtpScriptTransform !== 'undefined' ||
    (typeof RTCRtpSender !== 'undefined' && 'createEncodedStreams' in RTCRtpSender.prototype);
  if (!transforms || !globalThis.crypto?.subtle) return false;
  try {
    await crypto.subtle.generateKey({ name: 'X25519' }, false, ['deriveBits']);
    return true;
  } catch {
    return false;
  }
}

/**
 * The 12-digit safety code: HMAC(K_code, "parley/1 safety" || v || suite ||
 * curve || lp(R) || lp(epoch) || sorted lp(lp(pid) || pub) of every confirmed
 * member || sorted lp(r) of every member's revealed random), first 40 bits
 * as 12 decimal digits in three groups.
 * @param {CryptoKey} kCode @param {string} room @param {Uint8Array} epoch
 * @param {{pid: string, pub: Uint8Array}[]} members @param {Uint8Array[]} reveals
 */
export async function safetyCode(kCode, room, epoch, members, reveals) {
  const items = members.map((m) => lp(cat(lp(m.pid), m.pub))).sort(cmpBytes);
  const rs = reveals.map((r) => lp(r)).sort(cmpBytes);
  const mac = await hmac(kCode, cat('parley/1 safety', uint(E2EE_VERSION, 1), uint(SUITE, 2), lp(CURVE), lp(room), lp(epoch), ...items, ...rs));
  let n = 0n;
  for (let i = 0; i < 5; i++) n = (n << 8n) | BigInt(mac[i]);
  const d = (n % 1000000000000n).toString().padStart(12, '0');
  return `${d.slice(0, 4)} ${d.slice(4, 8)} ${d.slice(8, 12)}`;
}

/**
 * The epoch of a membership: SHA-256("parley/1 epoch" || lp(R) || sorted lp(pid)).
 * Everyone who sees the same confirmed members computes the same epoch.
 * @param {string} room @param {string[]} pids
 */
async function epochOf(room, pids) {
  const items = pids.map((p) => lp(p)).sort(cmpBytes);
  return new Uint8Array(await crypto.subtle.digest('SHA-256', buf(cat('parley/1 epoch', lp(room), ...items))));
}

/**
 * A commitment to r: SHA-256("parley/1 commit" || lp(R) || lp(pid) || lp(epoch) || r).
 * @param {string} room @param {string} pid @param {Uint8Array} epoch @param {Uint8Array} r
 */
async function commitment(room, pid, epoch, r) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', buf(cat('parley/1 commit', lp(room), lp(pid), lp(epoch), r))));
}

/** Constant-time equality of two byte strings. @param {Uint8Array} a @param {Uint8Array} b */
function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

/**
 * @typedef {{
 *   pid: string, pub: Uint8Array, nonce: Uint8Array, state: 'hello'|'confirmed'|'failed',
 *   wrap?: CryptoKey, confirm?: CryptoKey, sentConfirm: boolean, index?: number,
 *   gen?: number, step?: number,
 * }} Member
 * @typedef {{
 *   send: (payload: object, to?: string) => void,
 *   installSendKey: (kid: bigint, key: Uint8Array) => void,
 *   installRecvKey: (peer: string, kid: bigint, key: Uint8Array) => void,
 *   dropPeer: (peer: string) => void,
 *   onChange: () => void,
 *   onWarning: (peer: string, text: string) => void,
 *   switchDelayMs?: number,
 *   rekeyIntervalMs?: number,
 * }} Hooks
 */

export class KeyAgreement {
  /**
   * @param {string} room @param {Uint8Array} secret @param {Hooks} hooks
   */
  constructor(room, secret, hooks) {
    this.room = room;
    this.secret = secret;
    this.hooks = hooks;
    /** @type {Map<string, Member>} */
    this.members = new Map();
    this.myId = '';
    this.code = '';
    /** @type {Uint8Array} */
    this.nonce = crypto.getRandomValues(new Uint8Array(32));
    /** Sender index, carried in KIDs. */
    this.index = crypto.getRandomValues(new Uint16Array(1))[0];
    this.gen = 0;
    this.step = 0;
    /** @type {Uint8Array} */
    this.base = new Uint8Array(0);
    this.warned = 0;
    this.warnWindow = 0;
    /** Our X25519 public key (raw, 32 bytes). */
    this.pub = new Uint8Array(0);
    /** @type {Promise<void>} serialises message handling */
    this.queue = Promise.resolve();
    /**
     * The safety-code round of the current membership: commit to a random r,
     * reveal it once everyone's commitment is in, then compute the code from
     * every r. Nobody can choose their r after seeing another's, so a server
     * that knows the link cannot grind two views into one code.
     * @type {{epoch: Uint8Array, tag: string, r: Uint8Array, pids: string[], revealed: boolean} | null}
     */
    this.round = null;
    /** Commitments and reveals received, by epoch tag then pid. @type {Map<string, Map<string, {commit?: Uint8Array, r?: Uint8Array}>>} */
    this.rounds = new Map();
    this.restarts = 0;
    this.restartWindow = 0;
    /** @type {ReturnType<typeof setInterval>|undefined} */
    this.rekeyTimer = undefined;
  }

  /** Derives the link keys, makes the key pair and the first sender key, and says hello. @param {string} myId */
  start(myId) {
    // Messages that arrive while we start wait in the same queue.
    const started = this.queue.then(() => this.begin(myId));
    this.queue = started.catch(() => {});
    return started;
  }

  /** @param {string} myId */
  async begin(myId) {
    this.myId = myId;
    const salt = lp(this.room);
    this.kHello = await hmacKey(await hkdf(this.secret, salt, 'parley/1 hello-key', 32));
    this.kSalt = await hkdf(this.secret, salt, 'parley/1 pairwise-salt', 32);
    this.kCode = await hmacKey(await hkdf(this.secret, salt, 'parley/1 safety-key', 32));
    const kp = /** @type {CryptoKeyPair} */ (await crypto.subtle.generateKey({ name: 'X25519' }, false, ['deriveBits']));
    this.sk = kp.privateKey;
    this.pub = new Uint8Array(await crypto.subtle.exportKey('raw', kp.publicKey));
    await this.newGeneration(true);
    await this.updateCode();
    this.hooks.send(await this.hello(false));
    // A fresh key now and then bounds what one leaked key exposes, and ends
    // the access of anyone who left without the server saying so.
    this.rekeyTimer = setInterval(() => {
      if (this.confirmed().length === 0) return;
      this.queue = this.queue.then(() => this.newGeneration()).catch((e) => console.warn('e2ee rekey', e));
    }, this.hooks.rekeyIntervalMs ?? REKEY_INTERVAL_MS);
  }

  /** @param {boolean} reply */
  async hello(reply) {
    const mac = await hmac(/** @type {CryptoKey} */ (this.kHello), this.helloInput(this.myId, this.pub, this.nonce));
    return { t: 'hello', pid: this.myId, pub: b64url(this.pub), nonce: b64url(this.nonce), mac: b64url(mac), reply };
  }

  /** @param {string} pid @param {Uint8Array} pub @param {Uint8Array} nonce */
  helloInput(pid, pub, nonce) {
    return cat('parley/1 hello', uint(E2EE_VERSION, 1), uint(SUITE, 2), lp(CURVE), lp(this.room), lp(pid), lp(pub), lp(nonce));
  }

  /**
   * Handles one e2ee payload from the signaling peer `from`. Never throws.
   * @param {string} from @param {any} p
   */
  onMessage(from, p) {
    this.queue = this.queue.then(() => this.handle(from, p)).catch((e) => {
      console.warn('e2ee message dropped', e);
    });
    return this.queue;
  }

  /** @param {string} from @param {any} p */
  async handle(from, p) {
    if (!p || typeof p !== 'object' || typeof p.t !== 'string') return;
    if (p.t === 'hello') return this.onHello(from, p);
    const m = this.members.get(from);
    if (!m) return;
    if (p.t === 'confirm') return this.onConfirm(m, p);
    if (p.t === 'key') return this.onKey(m, p);
    if (m.state !== 'confirmed') return;
    if (p.t === 'commit' || p.t === 'reveal') return this.onRound(m, p);
  }

  /** @param {string} from @param {any} p */
  async onHello(from, p) {
    let pub, nonce, mac;
    try {
      pub = unb64url(p.pub); nonce = unb64url(p.nonce); mac = unb64url(p.mac);
    } catch {
      return this.reject(from, 'sent a malformed key');
    }
    // The MAC is checked over our own view: the sender is who the server
    // says it is (from), in our room.
    if (from === this.myId) return this.reject(from, 'is a copy of your own key sent back by the server');
    if (p.pid !== from || pub.length !== 32 || nonce.length !== 32 ||
        !(await verify(/** @type {CryptoKey} */ (this.kHello), mac, this.helloInput(from, pub, nonce)))) {
      return this.reject(from, 'sent a key that does not match this call link');
    }
    const old = this.members.get(from);
    if (old && cmpBytes(old.pub, pub) === 0 && cmpBytes(old.nonce, nonce) === 0) return; // a repeat
    if (old) {
      // A second, different key for the same participant: refuse it and
      // keep the first (only a reload makes a new participant).
      return this.reject(from, 'tried to change their key in the middle of the call');
    }
    let shared;
    try {
      const theirs = await crypto.subtle.importKey('raw', buf(pub), { name: 'X25519' }, true, []);
      shared = new Uint8Array(await crypto.subtle.deriveBits({ name: 'X25519', public: theirs }, /** @type {CryptoKey} */ (this.sk), 256));
    } catch {
      return this.reject(from, 'sent an unusable key');
    }
    if (shared.every((x) => x === 0)) return this.reject(from, 'sent an unusable key');
    const mine = lp(cat(lp(this.myId), lp(this.pub), lp(this.nonce)));
    const theirsT = lp(cat(lp(from), lp(pub), lp(nonce)));
    const pair = cmpBytes(mine, theirsT) < 0 ? cat(mine, theirsT) : cat(theirsT, mine);
    const salt = /** @type {Uint8Array} */ (this.kSalt);
    const wrapRaw = await hkdf(shared, salt, cat('parley/1 pairwise-wrap', pair), 16);
    const confirmRaw = await hkdf(shared, salt, cat('parley/1 pairwise-confirm', pair), 32);
    shared.fill(0);
    /** @type {Member} */
    const m = {
      pid: from, pub, nonce, state: 'hello', sentConfirm: false,
      wrap: await crypto.subtle.importKey('raw', buf(wrapRaw), 'AES-GCM', false, ['encrypt', 'decrypt']),
      confirm: await hmacKey(confirmRaw),
    };
    wrapRaw.fill(0); confirmRaw.fill(0);
    this.members.set(from, m);
    if (!p.reply) this.hooks.send(await this.hello(true), from);
    m.sentConfirm = true;
    this.hooks.send({ t: 'confirm', mac: b64url(await hmac(/** @type {CryptoKey} */ (m.confirm), this.confirmInput(this.myId, from, this.nonce, nonce))) }, from);
    this.hooks.onChange();
  }

  /** @param {string} fromPid @param {string} toPid @param {Uint8Array} fromNonce @param {Uint8Array} toNonce */
  confirmInput(fromPid, toPid, fromNonce, toNonce) {
    return cat('parley/1 confirm', lp(this.room), lp(fromPid), lp(toPid), lp(fromNonce), lp(toNonce));
  }

  /** @param {Member} m @param {any} p */
  async onConfirm(m, p) {
    if (m.state !== 'hello') return;
    let mac;
    try { mac = unb64url(p.mac); } catch { return this.reject(m.pid, 'sent a malformed confirmation'); }
    if (!(await verify(/** @type {CryptoKey} */ (m.confirm), mac, this.confirmInput(m.pid, this.myId, m.nonce, this.nonce)))) {
      m.state = 'failed';
      this.hooks.onChange();
      return this.reject(m.pid, 'could not prove they hold their key');
    }
    m.state = 'confirmed';
    // A newcomer must not read what was said before: move our key one
    // ratchet step forward (the others follow by themselves), then give the
    // newcomer the new step only.
    await this.ratchetForward();
    await this.sendKeyTo(m);
    await this.updateCode();
    this.hooks.onChange();
  }

  /** @param {Member} m */
  async sendKeyTo(m) {
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const ct = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv: buf(iv), additionalData: buf(this.keyAAD(this.myId, m.pid, this.index, this.gen, this.step)), tagLength: 128 },
      /** @type {CryptoKey} */ (m.wrap), buf(this.base)));
    this.hooks.send({ t: 'key', index: this.index, gen: this.gen, step: this.step, iv: b64url(iv), ct: b64url(ct) }, m.pid);
  }

  /** @param {string} from @param {string} to @param {number} index @param {number} gen @param {number} step */
  keyAAD(from, to, index, gen, step) {
    return cat('parley/1 sender-key', lp(this.room), lp(from), lp(to), uint(index, 2), uint(gen, 4), uint(step, 1), uint(SUITE, 2));
  }

  /** @param {Member} m @param {any} p */
  async onKey(m, p) {
    if (m.state !== 'confirmed') return;
    const { index, gen, step } = p;
    if (![index, gen, step].every(Number.isInteger) || index < 0 || index > 0xffff || gen < 1 || gen > 0xffff || step < 0 || step > 255) return;
    if (m.gen !== undefined && (gen < m.gen || (gen === m.gen && step <= /** @type {number} */ (m.step)))) return; // old or replayed
    let key;
    try {
      key = new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-GCM', iv: buf(unb64url(p.iv)), additionalData: buf(this.keyAAD(m.pid, this.myId, index, gen, step)), tagLength: 128 },
        /** @type {CryptoKey} */ (m.wrap), buf(unb64url(p.ct))));
    } catch {
      return this.reject(m.pid, 'sent a key that failed authentication');
    }
    if (key.length !== 32) return;
    m.index = index; m.gen = gen; m.step = step;
    this.hooks.installRecvKey(m.pid, makeKid(index, gen, step), key);
    key.fill(0);
    this.hooks.onChange();
  }

  /**
   * Starts a new generation: a fresh random base key the departed never saw.
   * @param {boolean} [now] switch at once (first key) instead of after the others have it
   */
  async newGeneration(now = false) {
    this.gen = (this.gen % 0xffff) + 1;
    this.step = 0;
    this.base = crypto.getRandomValues(new Uint8Array(32));
    const kid = makeKid(this.index, this.gen, 0);
    const key = this.base.slice();
    for (const m of this.members.values()) if (m.state === 'confirmed') await this.sendKeyTo(m);
    if (now) {
      this.hooks.installSendKey(kid, key);
      return;
    }
    const gen = this.gen;
    setTimeout(() => {
      // Someone joined meanwhile and we already ratcheted past this key
      // (or a newer generation started): keep the newer one.
      if (this.gen === gen && this.step === 0) this.hooks.installSendKey(kid, key);
    }, this.hooks.switchDelayMs ?? SWITCH_DELAY_MS);
  }

  async ratchetForward() {
    if (this.step >= 250) return this.newGeneration();
    this.base = await ratchet(SUITE, this.base);
    this.step++;
    this.hooks.installSendKey(makeKid(this.index, this.gen, this.step), this.base.slice());
  }

  /** A participant left: forget them and switch to a key they never had. @param {string} pid */
  peerLeft(pid) {
    this.queue = this.queue.then(async () => {
      const m = this.members.get(pid);
      this.members.delete(pid);
      this.hooks.dropPeer(pid);
      if (m && m.state === 'confirmed') await this.newGeneration();
      await this.updateCode();
      this.hooks.onChange();
    }).catch((e) => console.warn('e2ee leave', e));
    return this.queue;
  }

  /**
   * Starts a safety-code round for the current confirmed membership. Alone,
   * the code is computed at once (there is nobody to compare with).
   */
  async updateCode() {
    const pids = [this.myId, ...this.confirmed()];
    const epoch = await epochOf(this.room, pids);
    const tag = b64url(epoch);
    if (this.round && this.round.tag === tag) return;
    this.code = '';
    const r = crypto.getRandomValues(new Uint8Array(32));
    this.round = { epoch, tag, r, pids, revealed: false };
    // Forget rounds of other memberships, keeping what already arrived for this one.
    for (const k of [...this.rounds.keys()]) if (k !== tag) this.rounds.delete(k);
    if (pids.length === 1) {
      this.code = await this.computeCode(this.round, [r]);
      return;
    }
    const c = await commitment(this.room, this.myId, epoch, r);
    for (const pid of pids) if (pid !== this.myId) this.hooks.send({ t: 'commit', epoch: tag, c: b64url(c) }, pid);
    await this.progress();
  }

  /** @param {Member} m @param {any} p */
  async onRound(m, p) {
    if (typeof p.epoch !== 'string' || p.epoch.length > 64) return;
    let bytes;
    try {
      bytes = unb64url(p.t === 'commit' ? p.c : p.r);
    } catch {
      return this.reject(m.pid, 'sent a malformed safety-code message');
    }
    if (bytes.length !== 32) return this.reject(m.pid, 'sent a malformed safety-code message');
    let got = this.rounds.get(p.epoch);
    if (!got) {
      if (this.rounds.size >= 8) return; // bounded: a server cannot make us store junk
      got = new Map();
      this.rounds.set(p.epoch, got);
    }
    const e = got.get(m.pid) || {};
    got.set(m.pid, e);
    if (p.t === 'commit') {
      if (e.commit && equalBytes(e.commit, bytes)) return; // a repeat
      if (e.commit && this.round && p.epoch === this.round.tag) {
        // The peer started this membership's round again (its view went
        // away and came back): start ours again too, with a fresh r, so
        // nobody's r is chosen after seeing another's.
        return this.restartRound(m.pid, bytes);
      }
      e.commit = bytes;
      e.r = undefined;
    } else {
      if (!e.commit || e.r) return; // a reveal needs its commitment first, and counts once
      e.r = bytes;
    }
    await this.progress();
  }

  /**
   * Starts the current round again with a fresh r, keeping only the new
   * commitment that triggered it. Bounded, so replayed commitments cannot
   * keep us busy.
   * @param {string} pid @param {Uint8Array} commit
   */
  async restartRound(pid, commit) {
    const round = this.round;
    if (!round) return;
    const now = Date.now();
    if (now - this.restartWindow > 10000) { this.restartWindow = now; this.restarts = 0; }
    if (this.restarts++ >= 10) return;
    round.r = crypto.getRandomValues(new Uint8Array(32));
    round.revealed = false;
    this.code = '';
    this.rounds.set(round.tag, new Map([[pid, { commit }]]));
    const c = await commitment(this.room, this.myId, round.epoch, round.r);
    for (const other of round.pids) if (other !== this.myId) this.hooks.send({ t: 'commit', epoch: round.tag, c: b64url(c) }, other);
    this.hooks.onChange();
    await this.progress();
  }

  /** Reveals once every commitment is in; computes the code once every reveal checks out. */
  async progress() {
    const round = this.round;
    if (!round || round.pids.length === 1) return;
    const got = this.rounds.get(round.tag) || new Map();
    const others = round.pids.filter((p) => p !== this.myId);
    if (!others.every((p) => got.get(p)?.commit)) return;
    if (!round.revealed) {
      round.revealed = true;
      for (const pid of others) this.hooks.send({ t: 'reveal', epoch: round.tag, r: b64url(round.r) }, pid);
    }
    if (!others.every((p) => got.get(p)?.r)) return;
    const rs = [round.r];
    for (const pid of others) {
      const e = /** @type {{commit: Uint8Array, r: Uint8Array}} */ (got.get(pid));
      if (!equalBytes(await commitment(this.room, pid, round.epoch, e.r), e.commit)) {
        this.code = '';
        this.hooks.onChange();
        return this.reject(pid, 'revealed a safety-code value that does not match its commitment');
      }
      rs.push(e.r);
    }
    if (this.round !== round) return; // membership changed meanwhile
    this.code = await this.computeCode(round, rs);
    this.hooks.onChange();
  }

  /** @param {{epoch: Uint8Array, pids: string[]}} round @param {Uint8Array[]} rs */
  async computeCode(round, rs) {
    const members = [];
    for (const pid of round.pids) {
      const pub = pid === this.myId ? this.pub : this.members.get(pid)?.pub;
      if (pub) members.push({ pid, pub });
    }
    return safetyCode(/** @type {CryptoKey} */ (this.kCode), this.room, round.epoch, members, rs);
  }

  /** @param {string} pid @param {string} why */
  reject(pid, why) {
    // The server could replay junk to flood warnings: at most 5 every 10 s.
    const now = Date.now();
    if (now - this.warnWindow > 10000) { this.warnWindow = now; this.warned = 0; }
    if (this.warned++ < 5) this.hooks.onWarning(pid, why);
  }

  /** Stops the periodic rekeying (the page is leaving the call). */
  stop() {
    clearInterval(this.rekeyTimer);
  }

  /** Confirmed participants' ids. */
  confirmed() {
    return [...this.members.values()].filter((m) => m.state === 'confirmed').map((m) => m.pid);
  }
}
