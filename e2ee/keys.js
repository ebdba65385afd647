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
import { verifyRoster, sameBytes, ROLE_HOST } from './roster.js';

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
/** How many departed peer ids a page remembers (oldest forgotten first). */
export const MAX_DEPARTED = 4096;

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

/**
 * The join token: T_join = HKDF(S, salt = 32 zero bytes, "parley/1 join-token", 32),
 * sent (b64url) with every join so that whoever holds only the room id
 * cannot join (docs/security.md §2.5). The salt is not lp(R) because the
 * room id is not known yet when the creator registers the verifier.
 * @param {Uint8Array} secret
 */
export async function joinToken(secret) {
  return b64url(await hkdf(secret, new Uint8Array(32), 'parley/1 join-token', 32));
}

/**
 * The join verifier registered when a room is made:
 * V = SHA-256("parley/1 join-verifier" || T_join), b64url. The server keeps only V.
 * @param {Uint8Array} secret
 */
export async function joinVerifier(secret) {
  const t = unb64url(await joinToken(secret));
  return b64url(new Uint8Array(await crypto.subtle.digest('SHA-256', buf(cat('parley/1 join-verifier', t)))));
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

/** The highest safety-code round attempt (docs/security.md §4.1). */
const MAX_ATTEMPT = 0x7fffffff;

/**
 * After this long without a safety code while there is someone to compare
 * it with, the badge warns (docs/security.md §4.5) ...
 */
export const CODE_TIMEOUT_MS = 30000;
/** ... where only a code shown this long without a break counts as one ... */
export const CODE_STABLE_MS = 15000;
/**
 * ... and not in the first seconds after a code was blanked (a join), while
 * codes that come and go without one staying CODE_STABLE_MS warn after twice
 * the timeout.
 */
export const CODE_GRACE_MS = 5000;
/** How often the badge's reading of codeStall() is checked. */
const CODE_CHECK_MS = 1000;

/**
 * A commitment to r: SHA-256("parley/1 commit" || lp(R) || lp(pid) || lp(epoch) || u32(attempt) || r).
 * @param {string} room @param {string} pid @param {Uint8Array} epoch @param {number} attempt @param {Uint8Array} r
 */
async function commitment(room, pid, epoch, attempt, r) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', buf(cat('parley/1 commit', lp(room), lp(pid), lp(epoch), uint(attempt, 4), r))));
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
 *   gen?: number, step?: number, suspended?: boolean,
 *   data?: CryptoKey, dataDir?: number, sendN?: bigint, recvN?: bigint|null,
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
 *   codeTimeoutMs?: number,
 *   codeStableMs?: number,
 *   codeGraceMs?: number,
 *   codeCheckMs?: number,
 *   onRoster?: (r: import('./roster.js').VerifiedRoster) => void,
 *   onUnlisted?: (pid: string) => void,
 *   onRemoved?: () => void,
 * }} Hooks
 * @typedef {{hostKey?: Uint8Array|null, isHost?: boolean}} Options
 */

/**
 * The roster a page is at (consultations, docs/security.md §9).
 * @typedef {{seq: number, signed: Uint8Array, locked: boolean, entries: Map<string, {pub: Uint8Array, role: number}>}} CurrentRoster
 */

export class KeyAgreement {
  /**
   * @param {string} room @param {Uint8Array} secret @param {Hooks} hooks
   * @param {Options} [opts] a consultation: the host's public signing key
   *   H from the link, and whether this page is the host
   */
  constructor(room, secret, hooks, opts = {}) {
    this.room = room;
    this.secret = secret;
    this.hooks = hooks;
    /** The host's public signing key: set in a consultation, where rosters rule. */
    this.hostKey = opts.hostKey || null;
    this.isHost = !!opts.isHost;
    /** @type {CurrentRoster|null} */
    this.roster = null;
    /**
     * Key-agreement messages of peers the roster does not list (yet), with
     * a verified hello first: replayed in order if a roster lists them.
     * At most 8 peers, 8 messages each. @type {Map<string, any[]>}
     */
    this.unlisted = new Map();
    /**
     * A guest gives keys to peers other than the host only while the host
     * has recently confirmed the roster it is at (§9.4); the host and open
     * rooms are always "fresh".
     */
    this.fresh = !this.hostKey || this.isHost;
    this.removed = false;
    /** @type {Map<string, Member>} */
    this.members = new Map();
    this.myId = '';
    this.code = '';
    /**
     * Since when this page has had no safety code to compare (docs/security.md
     * §4.5): when it first had someone to compare with, or when a code that
     * had been shown for CODE_STABLE_MS without a break was blanked. A code
     * shown for less, a new round or a new attempt does not move it; time
     * alone (our lone code, compared with nobody) pauses it. 0 until there
     * is someone to compare with.
     */
    this.noCodeSince = 0;
    /** When the code shown now appeared, whether it is ours alone, and when a code was last blanked. */
    this.codeShownAt = 0;
    this.codeAlone = false;
    this.codeBlankedAt = 0;
    /** Redraws the badge when codeStall() changes. @type {ReturnType<typeof setInterval>|undefined} */
    this.codeTimer = undefined;
    this.lastStall = 'null';
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
     * that knows the link cannot grind two views into one code. A round is
     * an (epoch, attempt) pair: the same membership can come back, and the
     * attempt tells its new round from an old one still in flight. Each
     * attempt is a new object, so `this.round !== round` after an await
     * means the round moved on.
     * `c` is our commitment once computed; `resent` the peers we sent it
     * to again because they were behind.
     * @type {{epoch: Uint8Array, tag: string, attempt: number, r: Uint8Array, c?: Uint8Array, pids: string[], revealed: boolean, resent: Set<string>} | null}
     */
    this.round = null;
    /**
     * Commitments and reveals received, by epoch tag: only the highest
     * attempt seen, then by pid. @type {Map<string, {attempt: number, got: Map<string, {commit?: Uint8Array, r?: Uint8Array}>}>}
     */
    this.rounds = new Map();
    /**
     * The highest attempt this page used or saw, by epoch tag, for the
     * 1024 most recent epochs. @type {Map<string, number>}
     */
    this.lastAttempt = new Map();
    /** Moves to a higher attempt in the current 10 s window (at most 10). */
    this.moves = 0;
    this.moveWindow = 0;
    /**
     * Commitments that came over the move limit: every member's, of the
     * highest attempt pending for one epoch, handled when the window ends.
     * @type {{epoch: string, attempt: number, msgs: Map<string, any>} | null}
     */
    this.deferred = null;
    /** @type {ReturnType<typeof setTimeout>|undefined} */
    this.deferTimer = undefined;
    /** @type {ReturnType<typeof setInterval>|undefined} */
    this.rekeyTimer = undefined;
    /**
     * Peers the server said left, by id, with their public key when we
     * knew it. Every message under a departed id, and a hello with a
     * departed key, is refused: a rejoin is a new connection with a new id
     * and a new key, so an old one coming back can only be a replay
     * (docs/security.md §3.5). Only peers the server announced or whose
     * hello verified are recorded, so forged peer-left messages for
     * invented ids cannot fill it; it is never trimmed, and once full, new
     * hellos are refused (fail closed).
     * @type {Map<string, Uint8Array|null>}
     */
    this.departed = new Map();
    /** Public keys of departed peers, b64url. @type {Set<string>} */
    this.departedKeys = new Set();
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
    this.watchCode();
    // In a consultation the link keys are bound to the host's key as well,
    // so a link stripped of it derives other keys (§9.1).
    const salt = this.hostKey ? cat(lp(this.room), lp(this.hostKey)) : lp(this.room);
    this.kHello = await hmacKey(await hkdf(this.secret, salt, 'parley/1 hello-key', 32));
    this.kSalt = await hkdf(this.secret, salt, 'parley/1 pairwise-salt', 32);
    this.kCode = await hmacKey(await hkdf(this.secret, salt, 'parley/1 safety-key', 32));
    const kp = /** @type {CryptoKeyPair} */ (await crypto.subtle.generateKey({ name: 'X25519' }, false, ['deriveBits']));
    this.sk = kp.privateKey;
    this.pub = new Uint8Array(await crypto.subtle.exportKey('raw', kp.publicKey));
    await this.newGeneration(true);
    await this.updateCode();
    this.hooks.send(await this.hello(false));
    // A fresh key now and then bounds what one leaked key exposes. Peers
    // that left without the server saying so are cut off sooner: the page
    // suspends a peer whose connection stays down (suspend), which starts a
    // generation without it; the rekey then goes only to recipients().
    this.rekeyTimer = setInterval(() => {
      if (this.recipients().length === 0) return;
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
    if (this.departed.has(from)) {
      if (p.t === 'hello') return this.reject(from, 'left the call, and a message under their old identity came back; it was refused');
      return;
    }
    if (p.t === 'hello') return this.onHello(from, p);
    const m = this.members.get(from);
    if (!m) {
      const held = this.unlisted.get(from);
      if (held && held.length < 8) held.push(p);
      return;
    }
    if (p.t === 'confirm') return this.onConfirm(m, p);
    // A peer back from a reconnect may have missed our key: send it again
    // (a repeat of the same generation and step is ignored).
    if (p.t === 'resync') return m.state === 'confirmed' ? this.sendKeyTo(m) : undefined;
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
    if (this.departedKeys.has(b64url(pub))) return this.reject(from, 'uses the key of someone who left the call; it was refused');
    if (this.hostKey) {
      // A consultation: only the members the host's latest roster names,
      // each with the key the host saw, get anywhere (§9.2).
      const e = this.roster?.entries.get(from);
      if (!e) {
        if (this.unlisted.size < 8 && !this.unlisted.has(from)) this.unlisted.set(from, [p]);
        this.hooks.onChange();
        return;
      }
      if (!sameBytes(e.pub, pub)) return this.reject(from, 'is not the person the host let in (their key differs)');
    }
    const old = this.members.get(from);
    if (old && cmpBytes(old.pub, pub) === 0 && cmpBytes(old.nonce, nonce) === 0) return; // a repeat
    if (!old && this.departed.size >= MAX_DEPARTED) {
      return this.reject(from, 'cannot be accepted: too many people have come and gone in this call. Start a new call');
    }
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
    const dataRaw = await hkdf(shared, salt, cat('parley/1 pairwise-data', pair), 32);
    shared.fill(0);
    /** @type {Member} */
    const m = {
      pid: from, pub, nonce, state: 'hello', sentConfirm: false,
      wrap: await crypto.subtle.importKey('raw', buf(wrapRaw), 'AES-GCM', false, ['encrypt', 'decrypt']),
      confirm: await hmacKey(confirmRaw),
      // Chat and files (e2ee/channel.js): one counter per direction for the
      // life of this key, never reset (§9.5).
      data: await crypto.subtle.importKey('raw', buf(dataRaw), 'AES-GCM', false, ['encrypt', 'decrypt']),
      dataDir: cmpBytes(mine, theirsT) < 0 ? 1 : 2, sendN: 0n, recvN: null,
    };
    wrapRaw.fill(0); confirmRaw.fill(0); dataRaw.fill(0);
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
    if (!this.isRecipient(m)) return;
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
    for (const m of this.members.values()) if (this.isRecipient(m)) await this.sendKeyTo(m);
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

  /**
   * A participant left: forget them, refuse their id and key from now on,
   * and switch to a key they never had.
   * @param {string} pid @param {boolean} [announced] the server had announced this peer
   */
  peerLeft(pid, announced = false) {
    this.unlisted.delete(pid);
    this.queue = this.queue.then(async () => {
      const m = this.members.get(pid);
      if (m || announced) {
        this.departed.set(pid, m ? m.pub : null);
        if (m) this.departedKeys.add(b64url(m.pub));
      }
      this.members.delete(pid);
      this.hooks.dropPeer(pid);
      if (m && m.state === 'confirmed') await this.newGeneration();
      await this.updateCode();
      this.hooks.onChange();
    }).catch((e) => console.warn('e2ee leave', e));
    return this.queue;
  }

  /**
   * Starts a safety-code round for the current confirmed membership
   * (docs/security.md §4.1). Alone, the code is computed at once (there is
   * nobody to compare with).
   */
  async updateCode() {
    if (!this.myId) return;
    const pids = [this.myId, ...this.confirmed()];
    const epoch = await epochOf(this.room, pids);
    const tag = b64url(epoch);
    if (this.round && this.round.tag === tag) return;
    if (this.round) this.sawAttempt(this.round.tag, this.round.attempt);
    this.blankCode();
    if (pids.length > 1 && !this.noCodeSince) this.noCodeSince = Date.now();
    // Above every attempt we used or saw for this membership, unless peers
    // that got here first already committed to a higher one.
    const last = this.lastAttempt.get(tag);
    if (last === MAX_ATTEMPT) {
      // Only injected attempts get here (honest pages count up from 0): no
      // attempt is left above the one a peer may still hold, so this
      // membership can never finish a round. Say so, show no code.
      this.round = { epoch, tag, attempt: MAX_ATTEMPT, r: crypto.getRandomValues(new Uint8Array(32)), pids, revealed: true, resent: new Set() };
      // Held under an attempt no round has, so progress() never completes it.
      this.rounds.set(tag, { attempt: MAX_ATTEMPT + 1, got: new Map() });
      for (const pid of pids) if (pid !== this.myId) this.reject(pid, 'cannot finish the safety-code check, its attempts are used up: start a new call to compare codes');
      this.hooks.onChange();
      return;
    }
    let attempt = last === undefined ? 0 : last + 1;
    let held = this.rounds.get(tag);
    if (held && held.attempt >= attempt) attempt = held.attempt;
    else held = { attempt, got: new Map() };
    for (const [k, v] of [...this.rounds]) {
      if (k === tag) continue;
      this.sawAttempt(k, v.attempt);
      this.rounds.delete(k);
    }
    this.rounds.set(tag, held);
    this.round = { epoch, tag, attempt, r: crypto.getRandomValues(new Uint8Array(32)), pids, revealed: false, resent: new Set() };
    if (pids.length === 1) {
      const round = this.round;
      const code = await this.computeCode(round, [round.r]);
      if (this.round === round) this.showCode(code, round);
      return;
    }
    await this.sendCommit();
    await this.progress();
  }

  /**
   * No code from now on. If one was shown, the clock of §4.5 moves: it
   * starts if it was not running, skips the time a lone code was shown
   * (paused while alone), and starts again after a code shown
   * CODE_STABLE_MS; a shorter code leaves it. watchCode redraws the badge.
   */
  blankCode() {
    if (!this.code) return;
    this.code = '';
    const now = Date.now();
    this.codeBlankedAt = now;
    if (!this.noCodeSince) this.noCodeSince = now;
    else if (this.codeAlone) this.noCodeSince = Math.min(now, this.noCodeSince + (now - this.codeShownAt)); // paused while alone
    else if (now - this.codeShownAt >= (this.hooks.codeStableMs ?? CODE_STABLE_MS)) this.noCodeSince = now;
  }

  /**
   * Shows a code computed for a round; the same code again (a round
   * finishing twice) keeps its time. @param {string} code @param {{pids: string[]}} round
   */
  showCode(code, round) {
    if (code !== this.code) this.codeShownAt = Date.now();
    this.code = code;
    this.codeAlone = round.pids.length === 1;
  }

  /** Checks codeStall() every CODE_CHECK_MS and redraws the badge when it changes. */
  watchCode() {
    clearInterval(this.codeTimer);
    this.codeTimer = setInterval(() => {
      const now = JSON.stringify(this.codeStall());
      if (now === this.lastStall) return;
      this.lastStall = now;
      this.hooks.onChange();
    }, this.hooks.codeCheckMs ?? CODE_CHECK_MS);
    // In Node (the tests) this must not hold the process.
    /** @type {any} */ (this.codeTimer).unref?.();
  }

  /**
   * Why there has been no safety code to compare (docs/security.md §4.5),
   * or null. With no code shown for CODE_TIMEOUT_MS since noCodeSince, and
   * none blanked in the last CODE_GRACE_MS: 'missing' names the members of
   * the round whose commitment for the current attempt we lack or, once all
   * are in, whose reveal; 'restarting' (a move waits for the move limit, or
   * nothing is missing) and 'used-up' (no attempt left) name every other
   * member. Otherwise, after twice CODE_TIMEOUT_MS in which codes came and
   * went (the last blanked less than CODE_TIMEOUT_MS ago) but none stayed
   * CODE_STABLE_MS: 'changing'. Null while a code has been shown that long,
   * with nobody to compare with, or with time left.
   * @returns {{why: 'missing'|'restarting'|'used-up'|'changing', pids: string[]} | null}
   */
  codeStall() {
    const round = this.round;
    if (!round || round.pids.length < 2 || !this.noCodeSince) return null;
    const now = Date.now();
    if (this.code && now - this.codeShownAt >= (this.hooks.codeStableMs ?? CODE_STABLE_MS)) return null;
    const timeout = this.hooks.codeTimeoutMs ?? CODE_TIMEOUT_MS;
    const others = round.pids.filter((p) => p !== this.myId);
    if (!this.code && now - this.noCodeSince >= timeout && now - this.codeBlankedAt >= (this.hooks.codeGraceMs ?? CODE_GRACE_MS)) {
      const held = this.rounds.get(round.tag);
      if (held && held.attempt > MAX_ATTEMPT) return { why: 'used-up', pids: others };
      if (!held || held.attempt !== round.attempt || (this.deferred && this.deferred.epoch === round.tag)) return { why: 'restarting', pids: others };
      const noCommit = others.filter((p) => !held.got.get(p)?.commit);
      if (noCommit.length) return { why: 'missing', pids: noCommit };
      const noReveal = others.filter((p) => !held.got.get(p)?.r);
      return noReveal.length ? { why: 'missing', pids: noReveal } : { why: 'restarting', pids: others };
    }
    // Codes came and went (one was blanked after the clock started, and
    // lately) and none stayed: the one on screen, if any, is just the latest.
    if (now - this.noCodeSince >= 2 * timeout && this.codeBlankedAt > this.noCodeSince && now - this.codeBlankedAt < timeout) return { why: 'changing', pids: others };
    return null;
  }

  /** Records an attempt used or seen for an epoch. @param {string} tag @param {number} attempt */
  sawAttempt(tag, attempt) {
    const prev = this.lastAttempt.get(tag);
    this.lastAttempt.delete(tag);
    this.lastAttempt.set(tag, prev === undefined ? attempt : Math.max(prev, attempt));
    if (this.lastAttempt.size > 1024) this.lastAttempt.delete(/** @type {string} */ (this.lastAttempt.keys().next().value));
  }

  /** Sends this page's commitment for the current round to every other member. */
  async sendCommit() {
    const round = this.round;
    if (!round) return;
    const c = await commitment(this.room, this.myId, round.epoch, round.attempt, round.r);
    if (this.round !== round) return;
    round.c = c;
    for (const pid of round.pids) if (pid !== this.myId) this.hooks.send({ t: 'commit', epoch: round.tag, attempt: round.attempt, c: b64url(c) }, pid);
  }

  /**
   * Moves the current round to attempt `a` with a fresh r (a peer came
   * back to this membership, moved on before us, or we lost one of its
   * commitments). Returns false when it may not move now.
   * @param {number} a
   */
  async moveTo(a) {
    const round = /** @type {NonNullable<typeof this.round>} */ (this.round);
    if (!this.mayMove()) return false;
    this.round = { ...round, attempt: a, r: crypto.getRandomValues(new Uint8Array(32)), c: undefined, revealed: false, resent: new Set() };
    this.rounds.set(round.tag, { attempt: a, got: new Map() });
    if (this.code) { this.blankCode(); this.hooks.onChange(); }
    await this.sendCommit();
    return true;
  }

  /** @param {Member} m @param {any} p */
  async onRound(m, p) {
    if (typeof p.epoch !== 'string' || p.epoch.length > 64) return;
    const a = p.attempt;
    let bytes;
    try {
      if (!Number.isInteger(a) || a < 0 || a > MAX_ATTEMPT) throw new Error('attempt');
      bytes = unb64url(p.t === 'commit' ? p.c : p.r);
    } catch {
      return this.reject(m.pid, 'sent a malformed safety-code message');
    }
    if (bytes.length !== 32) return this.reject(m.pid, 'sent a malformed safety-code message');
    const round = this.round;
    if (!round || p.epoch !== round.tag) return this.stash(m, p, bytes);
    if (a < round.attempt) {
      // From an earlier round of this membership, or from a peer that is
      // behind: if it lost our commitment, send it again (once per attempt).
      if (p.t === 'commit' && round.c && round.pids.includes(m.pid) && !round.resent.has(m.pid)) {
        round.resent.add(m.pid);
        this.hooks.send({ t: 'commit', epoch: round.tag, attempt: round.attempt, c: b64url(round.c) }, m.pid);
      }
      return;
    }
    const held = /** @type {{attempt: number, got: Map<string, {commit?: Uint8Array, r?: Uint8Array}>}} */ (this.rounds.get(round.tag));
    const e = a === round.attempt ? held.got.get(m.pid) : undefined;
    if (p.t === 'reveal' && !e?.commit) {
      // A reveal whose commitment we never got (lost, or injected): nobody
      // can finish this attempt with us, so start the next one.
      const next = Math.max(a, round.attempt) + 1;
      if (next > MAX_ATTEMPT) {
        // Only injected attempts get this far (honest pages count up from 0).
        this.blankCode();
        this.hooks.onChange();
        return this.reject(m.pid, 'pushed the safety-code check past its last attempt: start a new call to compare codes');
      }
      if (!(await this.moveTo(next))) this.deferMove(m.pid, { t: 'commit', epoch: p.epoch, attempt: next, c: '' });
      return this.progress();
    }
    if (a > round.attempt && !(await this.moveTo(a))) return this.deferMove(m.pid, p);
    const now = /** @type {{attempt: number, got: Map<string, {commit?: Uint8Array, r?: Uint8Array}>}} */ (this.rounds.get(round.tag));
    this.record(now.got, m.pid, p.t, bytes);
    await this.progress();
  }

  /**
   * Keeps a message for an epoch that is not the current one: a peer may
   * reach an epoch first. Only the highest attempt is kept, and at most 8
   * epochs, so a server cannot make us store junk.
   * @param {Member} m @param {any} p @param {Uint8Array} bytes
   */
  stash(m, p, bytes) {
    let held = this.rounds.get(p.epoch);
    if (!held) {
      if (this.rounds.size >= 8) { this.sawAttempt(p.epoch, p.attempt); return; }
      held = { attempt: p.attempt, got: new Map() };
      this.rounds.set(p.epoch, held);
    } else if (p.attempt < held.attempt) {
      return;
    } else if (p.attempt > held.attempt) {
      held.attempt = p.attempt;
      held.got = new Map();
    }
    this.record(held.got, m.pid, p.t, bytes);
  }

  /**
   * One commitment per member and attempt (a repeat, or a second one, is
   * ignored); a reveal counts once, and only after its commitment.
   * @param {Map<string, {commit?: Uint8Array, r?: Uint8Array}>} got @param {string} pid @param {string} t @param {Uint8Array} bytes
   */
  record(got, pid, t, bytes) {
    const e = got.get(pid) || {};
    if (t === 'commit') {
      if (e.commit) return;
      e.commit = bytes;
      got.set(pid, e);
    } else if (e.commit && !e.r) {
      e.r = bytes;
    }
  }

  /** Whether the round may move to a higher attempt now: at most 10 moves in 10 s. */
  mayMove() {
    const now = Date.now();
    if (now - this.moveWindow > 10000) { this.moveWindow = now; this.moves = 0; }
    if (this.moves >= 10) return false;
    this.moves++;
    return true;
  }

  /**
   * Keeps commitments that came over the move limit (every member's, of
   * the highest attempt pending) and handles them once the window has
   * passed, so the round is delayed, not stuck. No code is shown meanwhile.
   * @param {string} pid @param {any} p
   */
  deferMove(pid, p) {
    if (this.code) { this.blankCode(); this.hooks.onChange(); }
    if (!this.deferred || this.deferred.epoch !== p.epoch || p.attempt > this.deferred.attempt) this.deferred = { epoch: p.epoch, attempt: p.attempt, msgs: new Map() };
    // One per member; a real commitment replaces a placeholder.
    if (p.attempt === this.deferred.attempt && (!this.deferred.msgs.has(pid) || this.deferred.msgs.get(pid).c === '')) this.deferred.msgs.set(pid, p);
    if (this.deferTimer !== undefined) return;
    const wait = Math.max(0, this.moveWindow + 10000 - Date.now()) + 10;
    this.deferTimer = setTimeout(() => {
      this.deferTimer = undefined;
      const d = this.deferred;
      this.deferred = null;
      if (!d) return;
      for (const [from, msg] of d.msgs) {
        // A placeholder (a lost commitment made us want to move) moves only.
        if (msg.c === '') {
          this.queue = this.queue.then(async () => {
            if (this.round && this.round.tag === msg.epoch && msg.attempt > this.round.attempt && !(await this.moveTo(msg.attempt))) this.deferMove(from, msg);
            await this.progress();
          }).catch((e) => console.warn('e2ee round', e));
        } else {
          this.onMessage(from, msg);
        }
      }
    }, wait);
  }

  /** Reveals once every commitment is in; computes the code once every reveal checks out. */
  async progress() {
    const round = this.round;
    if (!round || round.pids.length === 1) return;
    const held = this.rounds.get(round.tag);
    if (!held || held.attempt !== round.attempt) return;
    const got = held.got;
    const others = round.pids.filter((p) => p !== this.myId);
    if (!others.every((p) => got.get(p)?.commit)) return;
    if (!round.revealed) {
      round.revealed = true;
      for (const pid of others) this.hooks.send({ t: 'reveal', epoch: round.tag, attempt: round.attempt, r: b64url(round.r) }, pid);
    }
    if (!others.every((p) => got.get(p)?.r)) return;
    const rs = [round.r];
    for (const pid of others) {
      const e = /** @type {{commit: Uint8Array, r: Uint8Array}} */ (got.get(pid));
      if (!equalBytes(await commitment(this.room, pid, round.epoch, round.attempt, e.r), e.commit)) {
        if (this.round !== round) return;
        this.blankCode();
        this.hooks.onChange();
        return this.reject(pid, 'revealed a safety-code value that does not match its commitment');
      }
      rs.push(e.r);
    }
    if (this.round !== round) return; // membership or attempt changed meanwhile
    // A higher attempt is waiting for the move limit: this one is over.
    if (this.deferred && this.deferred.epoch === round.tag && this.deferred.attempt > round.attempt) return;
    const code = await this.computeCode(round, rs);
    if (this.round !== round) return;
    this.showCode(code, round);
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
    clearTimeout(this.deferTimer);
    clearInterval(this.codeTimer);
  }

  /** Confirmed participants' ids. */
  confirmed() {
    return [...this.members.values()].filter((m) => m.state === 'confirmed').map((m) => m.pid);
  }

  /** Whether a peer's hello verified and it is not confirmed yet. @param {string} pid */
  isPending(pid) {
    return this.members.get(pid)?.state === 'hello';
  }

  /** @param {string} pid */
  isConfirmed(pid) {
    return this.members.get(pid)?.state === 'confirmed';
  }

  /**
   * Whether our sender keys (and chat and files) go to this member:
   * confirmed, not suspended, and in a consultation listed by the roster
   * with the key we confirmed — and, for a guest sending to anyone but the
   * host, only while the host has recently confirmed our roster (§9.4).
   * @param {Member} m
   */
  isRecipient(m) {
    if (m.state !== 'confirmed' || m.suspended) return false;
    if (!this.hostKey) return true;
    const e = this.roster?.entries.get(m.pid);
    if (!e || !sameBytes(e.pub, m.pub)) return false;
    return this.isHost || this.fresh || e.role === ROLE_HOST;
  }

  /** The host's peer id in a consultation, from the roster ('' if none). */
  hostPid() {
    for (const [pid, e] of this.roster?.entries || []) if (e.role === ROLE_HOST) return pid;
    return '';
  }

  /**
   * A roster arrived (from the server, or from the host over a data
   * channel). Verified under the host key of our own link; accepted only if
   * it names us (our pid and key) and is newer than the one we are at. A
   * newer valid roster that omits us means the host removed us. Members it
   * no longer lists (or lists with another key) are dropped like departures,
   * and a new generation is installed at once (§9.2, §9.3).
   * @param {any} payload
   */
  onRoster(payload) {
    const run = this.queue.then(() => this.acceptRoster(payload));
    this.queue = run.then(() => {}, () => {});
    return run;
  }

  /** @param {any} payload @returns {Promise<'accepted'|'repeat'|'old'|'not-me'|'removed'|'bad'|'ignored'>} */
  async acceptRoster(payload) {
    if (!this.hostKey || this.removed || !this.myId) return 'ignored';
    let v;
    try {
      v = await verifyRoster(this.room, this.hostKey, payload);
    } catch {
      this.reject(':roster', 'a list of participants that is not signed by the host arrived; it was ignored');
      return 'bad';
    }
    const cur = this.roster;
    if (cur && v.roster.seq < cur.seq) return 'old';
    if (cur && v.roster.seq === cur.seq) {
      if (sameBytes(cur.signed, v.signed)) return 'repeat';
      this.reject(':roster', 'the host seems to have sent two different lists of participants; the first was kept');
      return 'bad';
    }
    const me = v.roster.members.find((e) => e.pid === this.myId);
    const namesMe = !!me && sameBytes(me.pub, this.pub);
    if (!namesMe) {
      if (!cur) return 'not-me'; // not admitted yet, or an older list
      this.removed = true;
      this.stop();
      this.hooks.onRemoved?.();
      return 'removed';
    }
    /** @type {CurrentRoster} */
    const next = { seq: v.roster.seq, signed: v.signed, locked: v.roster.locked, entries: new Map(v.roster.members.map((e) => [e.pid, { pub: e.pub, role: e.role }])) };
    this.roster = next;
    let dropped = false;
    for (const m of [...this.members.values()]) {
      const e = next.entries.get(m.pid);
      if (e && sameBytes(e.pub, m.pub)) continue;
      // Removed by the host: gone for good, like a departure.
      dropped ||= m.state === 'confirmed';
      this.members.delete(m.pid);
      this.departed.set(m.pid, m.pub);
      this.departedKeys.add(b64url(m.pub));
      this.hooks.dropPeer(m.pid);
      this.hooks.onUnlisted?.(m.pid);
    }
    if (dropped) await this.newGeneration(true);
    this.hooks.onRoster?.(v);
    // Hellos that waited for the host's word.
    for (const [pid, held] of [...this.unlisted]) {
      if (!next.entries.has(pid)) continue;
      this.unlisted.delete(pid);
      for (const p of held) await this.handle(pid, p);
    }
    await this.updateCode();
    this.hooks.onChange();
    return 'accepted';
  }

  /**
   * The host saw a knock: checks the waiting guest's hello against the link
   * (K_hello) and returns its public key, without creating a member or
   * answering (§9.3). Null if it does not verify, or the key or id left.
   * @param {string} pid @param {any} p
   */
  async checkKnock(pid, p) {
    await this.queue;
    try {
      const pub = unb64url(p?.pub), nonce = unb64url(p?.nonce), mac = unb64url(p?.mac);
      if (p?.t !== 'hello' || p.pid !== pid || pub.length !== 32 || nonce.length !== 32) return null;
      if (this.departed.has(pid) || this.departedKeys.has(b64url(pub))) return null;
      if (!(await verify(/** @type {CryptoKey} */ (this.kHello), mac, this.helloInput(pid, pub, nonce)))) return null;
      return pub;
    } catch {
      return null;
    }
  }

  /** After a reconnect: asks every confirmed peer for its current key again. */
  resync() {
    this.queue = this.queue.then(() => {
      for (const pid of this.confirmed()) this.hooks.send({ t: 'resync' }, pid);
    });
    return this.queue;
  }

  /** Sends our hello again, to everyone (an admitted guest does, §9.3). */
  async rehello() {
    await this.queue;
    this.hooks.send(await this.hello(false));
  }

  /**
   * A guest's freshness (§9.4): true while the host's last pong matched our
   * roster within the time limit. Losing it starts a generation wrapped for
   * the host only; regaining it hands the current key to everyone listed.
   * @param {boolean} fresh
   */
  setFresh(fresh) {
    if (this.isHost || !this.hostKey || fresh === this.fresh) return this.queue;
    this.fresh = fresh;
    this.queue = this.queue.then(async () => {
      if (!fresh) await this.newGeneration(true);
      else for (const m of this.members.values()) await this.sendKeyTo(m);
      this.hooks.onChange();
    }).catch((e) => console.warn('e2ee freshness', e));
    return this.queue;
  }

  /** The ids our sender keys go to. */
  recipients() {
    return [...this.members.values()].filter((m) => this.isRecipient(m)).map((m) => m.pid);
  }

  /**
   * A confirmed peer's connection has been down for a while with no
   * peer-left from the server (it may have left silently, or the server may
   * hide its departure): stop giving it keys and start a generation it
   * never gets (docs/security.md §3.5). Its own keys stay, as it may come back.
   * @param {string} pid
   */
  suspend(pid) {
    this.queue = this.queue.then(async () => {
      const m = this.members.get(pid);
      if (!m || m.state !== 'confirmed' || m.suspended) return;
      m.suspended = true;
      await this.newGeneration();
      this.hooks.onChange();
    }).catch((e) => console.warn('e2ee suspend', e));
    return this.queue;
  }

  /** The suspended peer's connection works again: it gets our current key. @param {string} pid */
  unsuspend(pid) {
    this.queue = this.queue.then(async () => {
      const m = this.members.get(pid);
      if (!m || !m.suspended) return;
      m.suspended = false;
      if (m.state === 'confirmed') await this.sendKeyTo(m);
      this.hooks.onChange();
    }).catch((e) => console.warn('e2ee unsuspend', e));
    return this.queue;
  }
}
