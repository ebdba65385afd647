// @ts-check
// Host-signed membership lists ("rosters") for consultations
// (docs/security.md §9). The host's browser holds an Ed25519 key pair made
// for one consultation (private key non-extractable, in IndexedDB); the
// public key H travels in the guest link's fragment together with the link
// secret: #c=b64url(S(16) || H(32)). Every page of a consultation gives its
// keys only to the members the latest roster it accepted names, each with
// the X25519 key the host saw.
//
//   signed = "parley/1 roster" || u8(1) || lp(R) || lp(H) || u32(seq) || u8(flags) || u16(n)
//            || sort( lp( lp(pid_i) || lp(pub_i) || u8(role_i) ) )      flags bit 0: locked
//   sig    = Ed25519(sk_host, signed)
//
// The JSON form, carried as an "e2ee"-style payload by the server and over
// the host's data channels: {"t":"roster","seq":n,"locked":b,
// "members":[{"pid","pub","role"}],"sig"}. Receivers re-encode `signed`
// from the parsed fields and verify; "the same roster" means the same
// signed bytes.

import { b64url, unb64url } from './keys.js';

export const ROLE_GUEST = 0;
export const ROLE_HOST = 1;
/** Most members a roster may name (the mesh holds 4; room to spare for the format). */
export const MAX_ROSTER = 16;
/** The consultation link parameter's length: b64url of 16 + 32 bytes. */
export const CONSULTATION_PARAM_LEN = 64;

const te = new TextEncoder();

/** @param {...Uint8Array} parts */
function cat(...parts) {
  const out = new Uint8Array(parts.reduce((n, b) => n + b.length, 0));
  let o = 0;
  for (const b of parts) { out.set(b, o); o += b.length; }
  return out;
}

/** @param {Uint8Array|string} x */
function lp(x) {
  const b = typeof x === 'string' ? te.encode(x) : x;
  if (b.length > 0xffff) throw new Error('lp: too long');
  return cat(new Uint8Array([b.length >> 8, b.length & 0xff]), b);
}

/** @param {Uint8Array} a @param {Uint8Array} b */
function cmp(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** @param {Uint8Array} a @param {Uint8Array} b */
export function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

/** @param {Uint8Array} b @returns {BufferSource} */
const buf = (b) => /** @type {BufferSource} */ (b);

/**
 * @typedef {{pid: string, pub: Uint8Array, role: number}} RosterEntry
 * @typedef {{seq: number, locked: boolean, members: RosterEntry[]}} Roster
 * @typedef {{roster: Roster, signed: Uint8Array, json: object}} VerifiedRoster
 */

/**
 * Reads a consultation link's fragment, "#c=<b64url(S || H)>": the link
 * secret S (16 bytes) and the host's public signing key H (32 bytes). One
 * parameter, so H cannot be cut off alone. Null if absent or malformed.
 * @param {string} hash
 * @returns {{secret: Uint8Array, hostKey: Uint8Array}|null}
 */
export function consultationFromHash(hash) {
  const m = /(?:^#|&)c=([A-Za-z0-9_-]+)(?:&|$)/.exec(hash);
  if (!m || m[1].length !== CONSULTATION_PARAM_LEN) return null;
  try {
    const b = unb64url(m[1]);
    if (b.length !== 48) return null;
    return { secret: b.slice(0, 16), hostKey: b.slice(16) };
  } catch {
    return null;
  }
}

/** The fragment of a consultation link. @param {Uint8Array} secret @param {Uint8Array} hostKey */
export function consultationHash(secret, hostKey) {
  if (secret.length !== 16 || hostKey.length !== 32) throw new Error('consultation link: bad key sizes');
  return 'c=' + b64url(cat(secret, hostKey));
}

/** Whether a string has the shape of a peer id (9 random bytes, b64url). @param {unknown} s */
const isPid = (s) => typeof s === 'string' && /^[A-Za-z0-9_-]{12}$/.test(s);

/**
 * Checks a roster's fields and returns its signed bytes. Throws on anything
 * malformed: exactly one host, unique pids and keys, 1..MAX_ROSTER members.
 * @param {string} room @param {Uint8Array} hostKey @param {Roster} r
 */
export function encodeRoster(room, hostKey, r) {
  if (!Number.isInteger(r.seq) || r.seq < 1 || r.seq > 0xffffffff) throw new Error('roster: bad seq');
  const n = r.members.length;
  if (n < 1 || n > MAX_ROSTER) throw new Error('roster: bad size');
  if (r.members.filter((m) => m.role === ROLE_HOST).length !== 1) throw new Error('roster: needs exactly one host');
  const pids = new Set(), pubs = new Set();
  const items = r.members.map((m) => {
    if (!isPid(m.pid) || !(m.pub instanceof Uint8Array) || m.pub.length !== 32 || (m.role !== ROLE_HOST && m.role !== ROLE_GUEST)) {
      throw new Error('roster: bad member');
    }
    const k = b64url(m.pub);
    if (pids.has(m.pid) || pubs.has(k)) throw new Error('roster: duplicate member');
    pids.add(m.pid); pubs.add(k);
    return lp(cat(lp(m.pid), lp(m.pub), new Uint8Array([m.role])));
  }).sort(cmp);
  const seq = new Uint8Array(4);
  new DataView(seq.buffer).setUint32(0, r.seq);
  return cat(te.encode('parley/1 roster'), new Uint8Array([1]), lp(room), lp(hostKey), seq,
    new Uint8Array([r.locked ? 1 : 0]), new Uint8Array([n >> 8, n & 0xff]), ...items);
}

/**
 * Signs a roster with the host's private key (a non-extractable CryptoKey).
 * @param {string} room @param {Uint8Array} hostKey @param {CryptoKey} sk @param {Roster} r
 */
export async function signRoster(room, hostKey, sk, r) {
  const signed = encodeRoster(room, hostKey, r);
  const sig = new Uint8Array(await crypto.subtle.sign('Ed25519', sk, buf(signed)));
  const json = {
    t: 'roster', seq: r.seq, locked: r.locked,
    members: r.members.map((m) => ({ pid: m.pid, pub: b64url(m.pub), role: m.role })),
    sig: b64url(sig),
  };
  return { roster: r, signed, json };
}

/**
 * Parses and verifies a roster payload against the host key from our own
 * fragment and our room. Throws if anything is off.
 * @param {string} room @param {Uint8Array} hostKey @param {any} p
 * @returns {Promise<VerifiedRoster>}
 */
export async function verifyRoster(room, hostKey, p) {
  if (!p || typeof p !== 'object' || p.t !== 'roster' || !Array.isArray(p.members) || typeof p.locked !== 'boolean' || typeof p.sig !== 'string') {
    throw new Error('roster: malformed');
  }
  /** @type {Roster} */
  const r = {
    seq: p.seq, locked: p.locked,
    members: p.members.slice(0, MAX_ROSTER + 1).map((/** @type {any} */ m) => ({ pid: m?.pid, pub: unb64url(String(m?.pub ?? '')), role: m?.role })),
  };
  const signed = encodeRoster(room, hostKey, r);
  const sig = unb64url(p.sig);
  if (sig.length !== 64) throw new Error('roster: bad signature');
  const pk = await crypto.subtle.importKey('raw', buf(hostKey), { name: 'Ed25519' }, false, ['verify']);
  if (!(await crypto.subtle.verify('Ed25519', pk, buf(sig), buf(signed)))) throw new Error('roster: bad signature');
  return { roster: r, signed, json: p };
}

/** SHA-256 of a roster's signed bytes (the host echoes it to show which list it is at). @param {Uint8Array} signed */
export async function rosterHash(signed) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', buf(signed)));
}

/** Makes a consultation's host signing key pair (private key non-extractable). */
export async function newHostKey() {
  const kp = /** @type {CryptoKeyPair} */ (await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']));
  const pub = new Uint8Array(await crypto.subtle.exportKey('raw', kp.publicKey));
  return { sk: kp.privateKey, pub };
}
