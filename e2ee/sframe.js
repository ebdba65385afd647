// SFrame (RFC 9605) for the browser, on WebCrypto only.
//
// Usable from the page and from the dedicated worker that runs the WebRTC
// encoded transform (RTCRtpScriptTransform / createEncodedStreams): it touches
// nothing but globalThis.crypto.subtle, BigInt and typed arrays.
//
// Wire format of one SFrame ciphertext (RFC 9605 §4.2, §4.3):
//
//     +--------+------------+------------+----------------------+---------+
//     | config |  KID...    |  CTR...    |  ciphertext          |   tag   |
//     | 1 byte | 0..8 bytes | 0..8 bytes |  (= plaintext size)  | Nt bytes|
//     +--------+------------+------------+----------------------+---------+
//     \______________ header ___________/
//
// The header is authenticated (it is the first part of the AAD, followed by
// the caller's metadata); the rest is the AEAD output. Nothing here parses
// codec payloads: the caller chooses what goes in `metadata` (for Parley, the
// clear VP8 prefix plus a media label; see E2EE-DESIGN.md §4).
//
// Counters: one (KID, CTR) pair must never encrypt twice (RFC 9605 §4.3).
// SFrameSender reserves each counter synchronously, before any await, and
// throws instead of wrapping. Counters and KIDs are BigInt everywhere because
// they are 64-bit values on the wire.
//
// Inputs are Uint8Array (or ArrayBuffer where noted). WebCrypto rejects views
// backed by a SharedArrayBuffer, so do not pass those.

// ---------------------------------------------------------------------------
// Errors

/**
 * Reasons an SFrame call can throw. SFrameReceiver.open never throws; it
 * counts instead (see ReceiverStats).
 * - `bad-header`: malformed SFrame header (parseHeader).
 * - `bad-argument`: a KID, counter, key or index out of range or of the wrong type.
 * - `unknown-suite`: a cipher suite id not in SUITES.
 * - `counter-exhausted`: the sender reached its counter cap; make a new key.
 * @typedef {'bad-header' | 'bad-argument' | 'unknown-suite' | 'counter-exhausted'} SFrameErrorCode
 */

/** An error thrown by this module; `code` says why. */
export class SFrameError extends Error {
  /**
   * @param {SFrameErrorCode} code
   * @param {string} [detail]
   */
  constructor(code, detail) {
    super(detail ? `sframe: ${code}: ${detail}` : `sframe: ${code}`);
    this.name = 'SFrameError';
    /** @readonly @type {SFrameErrorCode} */
    this.code = code;
  }
}

// ---------------------------------------------------------------------------
// Cipher suites (RFC 9605 §4.5, Table 1; ids from the IANA registry, §8.1)

/**
 * Constants of one cipher suite, in bytes (RFC 9605 §4.4, §4.5).
 * @typedef {object} Suite
 * @property {number} id      IANA cipher suite id (2 bytes on the wire of the key schedule).
 * @property {string} name
 * @property {'AES-GCM' | 'AES-CTR-HMAC'} aead
 * @property {'SHA-256' | 'SHA-512'} hash  hash of HKDF (and of HMAC for the CTR suites)
 * @property {number} Nh   hash output size
 * @property {number} Nka  AES key size inside the compound CTR+HMAC key (0 for GCM)
 * @property {number} Nk   AEAD key size (for CTR+HMAC: Nka + Nh)
 * @property {number} Nn   nonce size
 * @property {number} Nt   tag size (the AEAD's overhead)
 */

/** @param {Suite} s @returns {Readonly<Suite>} */
const suite = (s) => Object.freeze(s);

/** 0x0001 AES_128_CTR_HMAC_SHA256_80 (RFC 9605 §4.5.1). */
export const AES_128_CTR_HMAC_SHA256_80 = 0x0001;
/** 0x0002 AES_128_CTR_HMAC_SHA256_64 (RFC 9605 §4.5.1). */
export const AES_128_CTR_HMAC_SHA256_64 = 0x0002;
/** 0x0003 AES_128_CTR_HMAC_SHA256_32 (RFC 9605 §4.5.1). */
export const AES_128_CTR_HMAC_SHA256_32 = 0x0003;
/** 0x0004 AES_128_GCM_SHA256_128: Parley's suite (E2EE-DESIGN.md §1). */
export const AES_128_GCM_SHA256_128 = 0x0004;
/** 0x0005 AES_256_GCM_SHA512_128. */
export const AES_256_GCM_SHA512_128 = 0x0005;

/**
 * The cipher suites of RFC 9605, by id.
 * @type {Readonly<Record<number, Readonly<Suite>>>}
 */
export const SUITES = Object.freeze({
  [AES_128_CTR_HMAC_SHA256_80]: suite({ id: 1, name: 'AES_128_CTR_HMAC_SHA256_80', aead: 'AES-CTR-HMAC', hash: 'SHA-256', Nh: 32, Nka: 16, Nk: 48, Nn: 12, Nt: 10 }),
  [AES_128_CTR_HMAC_SHA256_64]: suite({ id: 2, name: 'AES_128_CTR_HMAC_SHA256_64', aead: 'AES-CTR-HMAC', hash: 'SHA-256', Nh: 32, Nka: 16, Nk: 48, Nn: 12, Nt: 8 }),
  [AES_128_CTR_HMAC_SHA256_32]: suite({ id: 3, name: 'AES_128_CTR_HMAC_SHA256_32', aead: 'AES-CTR-HMAC', hash: 'SHA-256', Nh: 32, Nka: 16, Nk: 48, Nn: 12, Nt: 4 }),
  [AES_128_GCM_SHA256_128]: suite({ id: 4, name: 'AES_128_GCM_SHA256_128', aead: 'AES-GCM', hash: 'SHA-256', Nh: 32, Nka: 0, Nk: 16, Nn: 12, Nt: 16 }),
  [AES_256_GCM_SHA512_128]: suite({ id: 5, name: 'AES_256_GCM_SHA512_128', aead: 'AES-GCM', hash: 'SHA-512', Nh: 64, Nka: 0, Nk: 32, Nn: 12, Nt: 16 }),
});

/**
 * Looks a suite up by id; a Suite object is returned as is (so the AEAD
 * helpers can be driven with suites outside RFC 9605, as in the tests).
 * @param {number | Suite} id
 * @returns {Readonly<Suite>}
 */
export function getSuite(id) {
  if (typeof id === 'object' && id !== null) return id;
  const s = Object.prototype.hasOwnProperty.call(SUITES, id) ? SUITES[id] : undefined;
  if (!s) throw new SFrameError('unknown-suite', String(id));
  return s;
}

// ---------------------------------------------------------------------------
// Small byte helpers

const U64_MAX = (1n << 64n) - 1n;

/** @type {Uint8Array} */
const EMPTY = new Uint8Array(0);

/**
 * WebCrypto's lib.dom types want ArrayBuffer-backed views (TS >= 5.7); ours
 * are, as long as callers do not hand us SharedArrayBuffer views.
 * @param {Uint8Array} u
 * @returns {BufferSource}
 */
const bs = (u) => /** @type {BufferSource} */ (u);

/** @returns {SubtleCrypto} */
function subtle() {
  const c = globalThis.crypto;
  if (!c || !c.subtle) throw new Error('sframe: WebCrypto (crypto.subtle) is not available; a secure context is required');
  return c.subtle;
}

/**
 * @param {...Uint8Array} parts
 * @returns {Uint8Array}
 */
function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/** @type {TextEncoder | undefined} */
let textEncoder;
/** @param {string} s @returns {Uint8Array} */
const ascii = (s) => (textEncoder ??= new TextEncoder()).encode(s);

/**
 * Accepts a Uint8Array or an ArrayBuffer (what encoded frames carry).
 * @param {unknown} x
 * @returns {Uint8Array | null}
 */
function asBytes(x) {
  if (x instanceof Uint8Array) return x;
  if (x instanceof ArrayBuffer) return new Uint8Array(x);
  return null;
}

/**
 * @param {unknown} x
 * @param {string} what
 * @returns {Uint8Array}
 */
function requireBytes(x, what) {
  const b = asBytes(x);
  if (!b) throw new SFrameError('bad-argument', `${what} must be a Uint8Array or ArrayBuffer`);
  return b;
}

/**
 * A KID or CTR: a non-negative integer below 2^64, as BigInt or safe Number.
 * @param {bigint | number} x
 * @param {string} what
 * @returns {bigint}
 */
function toU64(x, what) {
  let v;
  if (typeof x === 'bigint') v = x;
  else if (typeof x === 'number' && Number.isSafeInteger(x)) v = BigInt(x);
  else throw new SFrameError('bad-argument', `${what} must be a bigint or a safe integer`);
  if (v < 0n || v > U64_MAX) throw new SFrameError('bad-argument', `${what} out of range 0..2^64-1`);
  return v;
}

/**
 * Big-endian encoding of v in exactly n bytes (v must fit).
 * @param {bigint} v
 * @param {number} n
 * @returns {Uint8Array}
 */
function beBytes(v, n) {
  const out = new Uint8Array(n);
  for (let i = n - 1; i >= 0; i--) { out[i] = Number(v & 0xffn); v >>= 8n; }
  return out;
}

/** Minimal number of bytes for v > 0. @param {bigint} v @returns {number} */
function byteLength(v) {
  let n = 0;
  while (v > 0n) { n++; v >>= 8n; }
  return n;
}

// ---------------------------------------------------------------------------
// SFrame header (RFC 9605 §4.3)
//
//      0 1 2 3 4 5 6 7
//     +-+-+-+-+-+-+-+-+------------+------------+
//     |X|  K  |Y|  C  |   KID...   |   CTR...   |
//     +-+-+-+-+-+-+-+-+------------+------------+
//
// X = 0: K is the KID itself (0..7), no KID bytes follow.
// X = 1: K + 1 is the length of the KID field (1..8 bytes, big-endian).
// Y and C: the same for the counter. KID bytes come before CTR bytes.
// Values 0..7 MUST be carried in the config byte and longer values MUST use
// the minimum number of bytes, so each (KID, CTR) has exactly one encoding;
// parseHeader rejects the other encodings as malformed.

/** X flag: K holds the KID length minus one. */
const HDR_X = 0x80;
/** Y flag: C holds the CTR length minus one. */
const HDR_Y = 0x08;
/** Largest header: config byte + 8-byte KID + 8-byte CTR. */
export const MAX_HEADER_SIZE = 17;

/**
 * Encodes an SFrame header (RFC 9605 §4.3) with minimal KID and CTR fields.
 * @param {bigint | number} kid  0..2^64-1
 * @param {bigint | number} ctr  0..2^64-1
 * @returns {Uint8Array}
 */
export function encodeHeader(kid, ctr) {
  const k = toU64(kid, 'kid');
  const c = toU64(ctr, 'ctr');
  const kl = k < 8n ? 0 : byteLength(k);
  const cl = c < 8n ? 0 : byteLength(c);
  const out = new Uint8Array(1 + kl + cl);
  out[0] = (kl ? HDR_X | ((kl - 1) << 4) : Number(k) << 4) | (cl ? HDR_Y | (cl - 1) : Number(c));
  if (kl) out.set(beBytes(k, kl), 1);
  if (cl) out.set(beBytes(c, cl), 1 + kl);
  return out;
}

/**
 * A decoded SFrame header.
 * @typedef {object} SFrameHeader
 * @property {bigint} kid
 * @property {bigint} ctr
 * @property {number} length  header size in bytes; the AEAD ciphertext starts there
 */

/**
 * Reads a minimal big-endian field of n (1..8) bytes; null if not minimal.
 * @param {Uint8Array} b
 * @param {number} off
 * @param {number} n
 * @returns {bigint | null}
 */
function readField(b, off, n) {
  let v;
  if (n <= 6) {
    let x = 0;
    for (let i = 0; i < n; i++) x = x * 256 + b[off + i];
    v = BigInt(x);
  } else {
    v = 0n;
    for (let i = 0; i < n; i++) v = (v << 8n) | BigInt(b[off + i]);
  }
  // Minimal: a value < 8 belongs in the config byte, and no leading zero byte.
  if (v < 8n || b[off] === 0) return null;
  return v;
}

/**
 * Header decoder for the receive path: null instead of throwing.
 * @param {Uint8Array} b
 * @returns {SFrameHeader | null}
 */
function decodeHeader(b) {
  if (b.length < 1) return null;
  const cfg = b[0];
  const kl = cfg & HDR_X ? ((cfg >> 4) & 7) + 1 : 0;
  const cl = cfg & HDR_Y ? (cfg & 7) + 1 : 0;
  const length = 1 + kl + cl;
  if (b.length < length) return null;
  const kid = kl ? readField(b, 1, kl) : BigInt((cfg >> 4) & 7);
  const ctr = cl ? readField(b, 1 + kl, cl) : BigInt(cfg & 7);
  if (kid === null || ctr === null) return null;
  return { kid, ctr, length };
}

/**
 * Parses the SFrame header at the start of `bytes` (RFC 9605 §4.3).
 * Bytes after the header are ignored; `length` says where they start.
 * @param {Uint8Array | ArrayBuffer} bytes
 * @returns {SFrameHeader}
 * @throws {SFrameError} `bad-header` if truncated or not minimally encoded
 */
export function parseHeader(bytes) {
  const b = requireBytes(bytes, 'header');
  const h = decodeHeader(b);
  if (!h) throw new SFrameError('bad-header', b.length === 0 ? 'empty' : 'truncated or non-minimal encoding');
  return h;
}

// ---------------------------------------------------------------------------
// HKDF (RFC 5869) on HMAC, so that Extract and Expand can be used separately
// (WebCrypto's HKDF deriveBits always does both).

/**
 * @param {'SHA-256' | 'SHA-512'} hash
 * @param {Uint8Array} key
 * @param {KeyUsage[]} usages
 * @returns {Promise<CryptoKey>}
 */
function importHmac(hash, key, usages) {
  return subtle().importKey('raw', bs(key), { name: 'HMAC', hash }, false, usages);
}

/**
 * @param {CryptoKey} key
 * @param {Uint8Array} data
 * @returns {Promise<Uint8Array>}
 */
async function hmacSign(key, data) {
  return new Uint8Array(await subtle().sign('HMAC', key, bs(data)));
}

/**
 * HKDF-Extract(salt, ikm) = HMAC-Hash(salt, ikm). An empty salt means HashLen
 * zero bytes (RFC 5869 §2.2), which is also what HMAC does with an empty key;
 * WebCrypto refuses empty HMAC keys, so the zeros are spelled out.
 * @param {'SHA-256' | 'SHA-512'} hash
 * @param {Uint8Array} salt
 * @param {Uint8Array} ikm
 * @returns {Promise<Uint8Array>} the pseudorandom key, HashLen bytes
 */
export async function hkdfExtract(hash, salt, ikm) {
  const s = salt.length ? salt : new Uint8Array(hash === 'SHA-512' ? 64 : 32);
  return hmacSign(await importHmac(hash, s, ['sign']), ikm);
}

/**
 * HKDF-Expand(prk, info, length) (RFC 5869 §2.3).
 * @param {'SHA-256' | 'SHA-512'} hash
 * @param {Uint8Array} prk
 * @param {Uint8Array} info
 * @param {number} length  at most 255 * HashLen
 * @returns {Promise<Uint8Array>}
 */
export async function hkdfExpand(hash, prk, info, length) {
  const hl = hash === 'SHA-512' ? 64 : 32;
  if (!Number.isInteger(length) || length < 0 || length > 255 * hl) throw new SFrameError('bad-argument', 'HKDF-Expand length');
  const key = await importHmac(hash, prk, ['sign']);
  const out = new Uint8Array(length);
  let t = EMPTY;
  for (let i = 1, o = 0; o < length; i++) {
    t = await hmacSign(key, concat(t, info, Uint8Array.of(i)));
    out.set(t.subarray(0, Math.min(t.length, length - o)), o);
    o += t.length;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Key schedule (RFC 9605 §4.4.2) and ratchet (§5.1)
//
//   sframe_secret = HKDF-Extract("", base_key)
//   sframe_key    = HKDF-Expand(sframe_secret, "SFrame 1.0 Secret key "  || KID(8, BE) || suite(2, BE), Nk)
//   sframe_salt   = HKDF-Expand(sframe_secret, "SFrame 1.0 Secret salt " || KID(8, BE) || suite(2, BE), Nn)
//   base_key'     = HKDF-Expand(HKDF-Extract("", base_key), "SFrame 1.0 Ratchet", Nh)
//
// The key and salt labels end with a space; the ratchet label does not.

/** Label prefix of sframe_key (note the trailing space). */
const LABEL_KEY = 'SFrame 1.0 Secret key ';
/** Label prefix of sframe_salt (note the trailing space). */
const LABEL_SALT = 'SFrame 1.0 Secret salt ';
/** Label of the sender-key ratchet (no trailing space). */
const LABEL_RATCHET = 'SFrame 1.0 Ratchet';

/**
 * @param {string} prefix
 * @param {bigint} kid
 * @param {number} suiteId
 * @returns {Uint8Array}
 */
function scheduleLabel(prefix, kid, suiteId) {
  return concat(ascii(prefix), beBytes(kid, 8), Uint8Array.of(suiteId >> 8, suiteId & 0xff));
}

/**
 * Every intermediate value of the key schedule, as bytes. For tests and
 * vectors; the sender and receiver import key/salt and drop the bytes.
 * @typedef {object} KeyMaterial
 * @property {Uint8Array} secret     sframe_secret (Nh bytes)
 * @property {Uint8Array} keyLabel   sframe_key_label
 * @property {Uint8Array} saltLabel  sframe_salt_label
 * @property {Uint8Array} key        sframe_key (Nk bytes)
 * @property {Uint8Array} salt       sframe_salt (Nn bytes)
 */

/**
 * RFC 9605 §4.4.2 derive_key_salt, returning the raw bytes.
 * @param {number | Suite} suiteId
 * @param {bigint | number} kid
 * @param {Uint8Array} baseKey
 * @returns {Promise<KeyMaterial>}
 */
export async function deriveKeySalt(suiteId, kid, baseKey) {
  const s = getSuite(suiteId);
  const k = toU64(kid, 'kid');
  const base = requireBytes(baseKey, 'baseKey');
  if (base.length === 0) throw new SFrameError('bad-argument', 'empty base key');
  const secret = await hkdfExtract(s.hash, EMPTY, base);
  const keyLabel = scheduleLabel(LABEL_KEY, k, s.id);
  const saltLabel = scheduleLabel(LABEL_SALT, k, s.id);
  const [key, salt] = await Promise.all([
    hkdfExpand(s.hash, secret, keyLabel, s.Nk),
    hkdfExpand(s.hash, secret, saltLabel, s.Nn),
  ]);
  return { secret, keyLabel, saltLabel, key, salt };
}

/**
 * Sender-key ratchet, RFC 9605 §5.1:
 * HKDF-Expand(HKDF-Extract("", baseKey), "SFrame 1.0 Ratchet", Nh).
 * @param {number | Suite} suiteId
 * @param {Uint8Array} baseKey
 * @returns {Promise<Uint8Array>} the next base key, Nh bytes
 */
export async function ratchet(suiteId, baseKey) {
  const s = getSuite(suiteId);
  const base = requireBytes(baseKey, 'baseKey');
  if (base.length === 0) throw new SFrameError('bad-argument', 'empty base key');
  const prk = await hkdfExtract(s.hash, EMPTY, base);
  const next = await hkdfExpand(s.hash, prk, ascii(LABEL_RATCHET), s.Nh);
  prk.fill(0);
  return next;
}

/**
 * Nonce = sframe_salt XOR CTR, the counter as an Nn-byte big-endian integer
 * (RFC 9605 §4.4.3).
 * @param {Uint8Array} salt
 * @param {bigint | number} ctr
 * @returns {Uint8Array}
 */
export function frameNonce(salt, ctr) {
  const c = toU64(ctr, 'ctr');
  const n = Uint8Array.from(salt);
  const cb = beBytes(c, 8);
  for (let i = 0; i < 8; i++) n[n.length - 8 + i] ^= cb[i];
  return n;
}

// ---------------------------------------------------------------------------
// AEADs: AES-GCM (suites 4, 5) and AES-CTR + HMAC (suites 1-3, RFC 9605 §4.5.1)

/**
 * Imported, non-extractable AEAD keys.
 * @typedef {{ kind: 'AES-GCM', gcm: CryptoKey } | { kind: 'AES-CTR-HMAC', enc: CryptoKey, auth: CryptoKey }} AeadKey
 */

/**
 * Imports an AEAD key (sframe_key) for a suite. For CTR+HMAC the first Nka
 * bytes are the AES key and the remaining Nh bytes the HMAC key.
 * @param {Readonly<Suite>} s
 * @param {Uint8Array} key
 * @returns {Promise<AeadKey>}
 */
async function importAeadKey(s, key) {
  if (key.length !== s.Nk) throw new SFrameError('bad-argument', `AEAD key must be ${s.Nk} bytes`);
  if (s.aead === 'AES-GCM') {
    return { kind: 'AES-GCM', gcm: await subtle().importKey('raw', bs(key), 'AES-GCM', false, ['encrypt', 'decrypt']) };
  }
  const [enc, auth] = await Promise.all([
    subtle().importKey('raw', bs(key.subarray(0, s.Nka)), 'AES-CTR', false, ['encrypt', 'decrypt']),
    importHmac(s.hash, key.subarray(s.Nka), ['sign']),
  ]);
  return { kind: 'AES-CTR-HMAC', enc, auth };
}

/**
 * compute_tag of RFC 9605 §4.5.1:
 * HMAC(auth_key, len(aad) u64 || len(ct) u64 || Nt u64 || nonce || aad || ct), truncated to Nt.
 * @param {Readonly<Suite>} s
 * @param {CryptoKey} auth
 * @param {Uint8Array} nonce
 * @param {Uint8Array} aad
 * @param {Uint8Array} ct
 * @returns {Promise<Uint8Array>}
 */
async function ctrHmacTag(s, auth, nonce, aad, ct) {
  const lens = new Uint8Array(24);
  const dv = new DataView(lens.buffer);
  dv.setBigUint64(0, BigInt(aad.length));
  dv.setBigUint64(8, BigInt(ct.length));
  dv.setBigUint64(16, BigInt(s.Nt));
  const mac = await hmacSign(auth, concat(lens, nonce, aad, ct));
  return mac.subarray(0, s.Nt);
}

/** AES-CTR parameters: initial counter block = nonce || 0x00000000, 32-bit counter. @param {Uint8Array} nonce @returns {AesCtrParams} */
function ctrParams(nonce) {
  const counter = new Uint8Array(16);
  counter.set(nonce);
  return { name: 'AES-CTR', counter, length: 32 };
}

/**
 * Constant-time equality: always reads every byte and accumulates XORs.
 * @param {Uint8Array} a
 * @param {Uint8Array} b
 * @returns {boolean}
 */
function ctEqual(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

/**
 * @param {Readonly<Suite>} s
 * @param {AeadKey} k
 * @param {Uint8Array} nonce
 * @param {Uint8Array} aad
 * @param {Uint8Array} pt
 * @returns {Promise<Uint8Array>} ciphertext || tag
 */
async function aeadEncrypt(s, k, nonce, aad, pt) {
  if (k.kind === 'AES-GCM') {
    return new Uint8Array(await subtle().encrypt(
      { name: 'AES-GCM', iv: bs(nonce), additionalData: bs(aad), tagLength: 128 }, k.gcm, bs(pt)));
  }
  const ct = new Uint8Array(await subtle().encrypt(ctrParams(nonce), k.enc, bs(pt)));
  return concat(ct, await ctrHmacTag(s, k.auth, nonce, aad, ct));
}

/**
 * @param {Readonly<Suite>} s
 * @param {AeadKey} k
 * @param {Uint8Array} nonce
 * @param {Uint8Array} aad
 * @param {Uint8Array} ct  ciphertext || tag
 * @returns {Promise<Uint8Array | null>} null if authentication fails
 */
async function aeadDecrypt(s, k, nonce, aad, ct) {
  if (ct.length < s.Nt) return null;
  if (k.kind === 'AES-GCM') {
    try {
      return new Uint8Array(await subtle().decrypt(
        { name: 'AES-GCM', iv: bs(nonce), additionalData: bs(aad), tagLength: 128 }, k.gcm, bs(ct)));
    } catch {
      return null; // OperationError: tag mismatch
    }
  }
  const inner = ct.subarray(0, ct.length - s.Nt);
  const tag = ct.subarray(ct.length - s.Nt);
  const want = await ctrHmacTag(s, k.auth, nonce, aad, inner);
  if (!ctEqual(tag, want)) return null;
  return new Uint8Array(await subtle().decrypt(ctrParams(nonce), k.enc, bs(inner)));
}

/**
 * AEAD.Encrypt of a suite with a raw key (RFC 9605 §4.5). For vectors/tests.
 * @param {number | Suite} suiteId
 * @param {Uint8Array} key    Nk bytes (CTR+HMAC: enc_key || auth_key)
 * @param {Uint8Array} nonce  Nn bytes
 * @param {Uint8Array} aad
 * @param {Uint8Array} pt
 * @returns {Promise<Uint8Array>} ciphertext || tag
 */
export async function aeadSeal(suiteId, key, nonce, aad, pt) {
  const s = getSuite(suiteId);
  return aeadEncrypt(s, await importAeadKey(s, key), nonce, aad, pt);
}

/**
 * AEAD.Decrypt of a suite with a raw key. For vectors/tests.
 * @param {number | Suite} suiteId
 * @param {Uint8Array} key
 * @param {Uint8Array} nonce
 * @param {Uint8Array} aad
 * @param {Uint8Array} ct  ciphertext || tag
 * @returns {Promise<Uint8Array | null>} the plaintext, or null if authentication fails
 */
export async function aeadOpen(suiteId, key, nonce, aad, ct) {
  const s = getSuite(suiteId);
  return aeadDecrypt(s, await importAeadKey(s, key), nonce, aad, ct);
}

// ---------------------------------------------------------------------------
// Per-KID frame keys

/**
 * The derived state of one KID: non-extractable AEAD key(s) plus the salt.
 * Low level: `sealAt` trusts the caller to never repeat a counter. Use
 * SFrameSender and SFrameReceiver unless you are writing tests.
 */
export class SFrameKey {
  /** @type {Readonly<Suite>} */ #suite;
  /** @type {bigint} */ #kid;
  /** @type {Uint8Array} */ #salt;
  /** @type {AeadKey} */ #aead;

  /**
   * Use SFrameKey.derive.
   * @param {Readonly<Suite>} s
   * @param {bigint} kid
   * @param {Uint8Array} salt
   * @param {AeadKey} aead
   */
  constructor(s, kid, salt, aead) {
    this.#suite = s;
    this.#kid = kid;
    this.#salt = salt;
    this.#aead = aead;
  }

  /**
   * Runs the key schedule (RFC 9605 §4.4.2) for `kid` and imports the result;
   * the intermediate key bytes are zeroed (best effort).
   * @param {number | Suite} suiteId
   * @param {bigint | number} kid
   * @param {Uint8Array} baseKey
   * @returns {Promise<SFrameKey>}
   */
  static async derive(suiteId, kid, baseKey) {
    const s = getSuite(suiteId);
    const k = toU64(kid, 'kid');
    const m = await deriveKeySalt(s, k, baseKey);
    try {
      return new SFrameKey(s, k, m.salt, await importAeadKey(s, m.key));
    } finally {
      m.secret.fill(0);
      m.key.fill(0);
    }
  }

  /** @returns {Readonly<Suite>} */
  get suite() { return this.#suite; }
  /** @returns {bigint} */
  get kid() { return this.#kid; }

  /**
   * Encrypts one frame with an explicit counter: header || ciphertext || tag.
   * The caller guarantees that `ctr` is never used twice with this key.
   * @param {bigint | number} ctr
   * @param {Uint8Array | ArrayBuffer} metadata
   * @param {Uint8Array | ArrayBuffer} plaintext
   * @returns {Promise<Uint8Array>}
   */
  async sealAt(ctr, metadata, plaintext) {
    const c = toU64(ctr, 'ctr');
    const md = requireBytes(metadata, 'metadata');
    const pt = requireBytes(plaintext, 'plaintext');
    const header = encodeHeader(this.#kid, c);
    const ct = await aeadEncrypt(this.#suite, this.#aead, frameNonce(this.#salt, c), concat(header, md), pt);
    const out = new Uint8Array(header.length + ct.length);
    out.set(header);
    out.set(ct, header.length);
    return out;
  }

  /**
   * Decrypts the AEAD part of a frame whose header was already parsed.
   * @param {Uint8Array} header  the header bytes as received
   * @param {bigint} ctr
   * @param {Uint8Array} metadata
   * @param {Uint8Array} ct  ciphertext || tag
   * @returns {Promise<Uint8Array | null>} null if authentication fails
   */
  async openAt(header, ctr, metadata, ct) {
    return aeadDecrypt(this.#suite, this.#aead, frameNonce(this.#salt, ctr), concat(header, metadata), ct);
  }
}

// ---------------------------------------------------------------------------
// Sender

/** Default counter cap: the last counter a sender will use (48-bit counters). */
export const DEFAULT_MAX_COUNTER = (1n << 48n) - 1n;

/**
 * @typedef {object} SenderOptions
 * @property {bigint} [maxCounter]  last counter value that may be used (inclusive);
 *   default DEFAULT_MAX_COUNTER. Lower it in tests to reach the cap.
 */

/**
 * Encrypts frames under one KID with its own counter, starting at 0.
 * Share one sender between every transform that encrypts under this KID
 * (all tracks, all peer connections): the counter is per KID, not per stream.
 */
export class SFrameSender {
  /** @type {Readonly<Suite>} */ #suite;
  /** @type {bigint} */ #kid;
  /** @type {Promise<SFrameKey>} */ #key;
  /** @type {bigint} */ #next = 0n;
  /** @type {bigint} */ #max;

  /**
   * Starts deriving the key at once; `seal` waits for it. A bad argument
   * throws here; a WebCrypto failure rejects the seals.
   * @param {number} suiteId
   * @param {bigint | number} kid
   * @param {Uint8Array} baseKey  the caller may zero it once the constructor returns
   * @param {SenderOptions} [options]
   */
  constructor(suiteId, kid, baseKey, options = {}) {
    this.#suite = getSuite(suiteId);
    this.#kid = toU64(kid, 'kid');
    const base = requireBytes(baseKey, 'baseKey');
    if (base.length === 0) throw new SFrameError('bad-argument', 'empty base key');
    const max = options.maxCounter ?? DEFAULT_MAX_COUNTER;
    if (typeof max !== 'bigint' || max < 0n || max > U64_MAX) throw new SFrameError('bad-argument', 'maxCounter');
    this.#max = max;
    const copy = Uint8Array.from(base);
    this.#key = SFrameKey.derive(this.#suite, this.#kid, copy).finally(() => copy.fill(0));
    this.#key.catch(() => {}); // reported to each seal(), not as an unhandled rejection
  }

  /** @returns {Readonly<Suite>} */
  get suite() { return this.#suite; }
  /** @returns {bigint} */
  get kid() { return this.#kid; }
  /** The counter the next seal will use. @returns {bigint} */
  get nextCounter() { return this.#next; }
  /** @returns {bigint} */
  get maxCounter() { return this.#max; }
  /** True once every counter up to maxCounter has been handed out. @returns {boolean} */
  get exhausted() { return this.#next > this.#max; }

  /**
   * Resolves once the key is derived; rejects if derivation failed. Optional:
   * seal() waits by itself.
   * @returns {Promise<void>}
   */
  async ready() {
    await this.#key;
  }

  /**
   * Encrypts one frame: header || ciphertext || tag. The counter is taken
   * synchronously, before any await, so concurrent seals never share one; a
   * counter whose seal fails is not reused.
   * @param {Uint8Array | ArrayBuffer} metadata  authenticated, not sent (e.g. the clear codec prefix)
   * @param {Uint8Array | ArrayBuffer} plaintext
   * @returns {Promise<Uint8Array>}
   * @throws {SFrameError} `counter-exhausted` (as a rejection) once the cap is passed
   */
  async seal(metadata, plaintext) {
    const md = requireBytes(metadata, 'metadata');
    const pt = requireBytes(plaintext, 'plaintext');
    if (this.#next > this.#max) {
      throw new SFrameError('counter-exhausted', `KID ${this.#kid} used every counter up to ${this.#max}; switch to a new key`);
    }
    const ctr = this.#next++;
    const key = await this.#key;
    return key.sealAt(ctr, md, pt);
  }
}

// ---------------------------------------------------------------------------
// Replay window

/** Counters accepted behind the highest authenticated one, per KID. */
export const REPLAY_WINDOW = 1024;
const WINDOW_MASK = REPLAY_WINDOW - 1;

/**
 * Sliding replay window over BigInt counters: accepts each counter once,
 * and only if it is within REPLAY_WINDOW - 1 of the highest one seen.
 */
class ReplayWindow {
  /** @type {bigint} */ #top = -1n;
  #seen = new Uint32Array(REPLAY_WINDOW / 32);

  /** @param {number} i */
  #get(i) { return (this.#seen[i >>> 5] >>> (i & 31)) & 1; }
  /** @param {number} i */
  #set(i) { this.#seen[i >>> 5] |= 1 << (i & 31); }
  /** @param {number} i */
  #clear(i) { this.#seen[i >>> 5] &= ~(1 << (i & 31)); }

  /**
   * Would `ctr` be accepted now? Does not change the window.
   * @param {bigint} ctr
   * @returns {boolean}
   */
  check(ctr) {
    if (ctr > this.#top) return true;
    if (this.#top - ctr >= BigInt(REPLAY_WINDOW)) return false;
    return this.#get(Number(ctr & BigInt(WINDOW_MASK))) === 0;
  }

  /**
   * Marks `ctr` as seen; false if it was not acceptable.
   * @param {bigint} ctr
   * @returns {boolean}
   */
  accept(ctr) {
    if (!this.check(ctr)) return false;
    if (ctr > this.#top) {
      const gap = ctr - this.#top;
      if (this.#top < 0n || gap >= BigInt(REPLAY_WINDOW)) {
        this.#seen.fill(0);
      } else {
        const start = Number(this.#top & BigInt(WINDOW_MASK));
        for (let i = 1, n = Number(gap); i <= n; i++) this.#clear((start + i) & WINDOW_MASK);
      }
      this.#top = ctr;
    }
    this.#set(Number(ctr & BigInt(WINDOW_MASK)));
    return true;
  }
}

// ---------------------------------------------------------------------------
// Receiver

/**
 * Counts of open() outcomes. Every call increments exactly one of them.
 * @typedef {object} ReceiverStats
 * @property {number} opened      authenticated and returned
 * @property {number} short       empty, or too short for the tag after the header
 * @property {number} badHeader   malformed header (truncated, non-minimal) or input not bytes
 * @property {number} unknownKid  no key installed for the KID (or removed meanwhile)
 * @property {number} auth        authentication failed
 * @property {number} replay      counter already seen, or below the window
 */

/**
 * @typedef {object} KeyEntry
 * @property {SFrameKey} key
 * @property {ReplayWindow} window
 * @property {Uint8Array} fingerprint  SHA-256 of the base key, to spot a re-add of the same key
 */

/**
 * Decrypts frames for one cipher suite and any number of KIDs, each with its
 * own replay window. open() never throws: failures return null and are counted.
 */
export class SFrameReceiver {
  /** @type {Readonly<Suite>} */ #suite;
  /** @type {Map<bigint, KeyEntry>} */ #keys = new Map();
  /** @type {Map<bigint, object>} */ #pending = new Map();

  /** @readonly @type {ReceiverStats} */
  stats = { opened: 0, short: 0, badHeader: 0, unknownKid: 0, auth: 0, replay: 0 };

  /** @param {number} suiteId */
  constructor(suiteId) {
    this.#suite = getSuite(suiteId);
  }

  /** @returns {Readonly<Suite>} */
  get suite() { return this.#suite; }

  /**
   * Installs (or replaces) the base key of a KID. Replacing it with a
   * different key resets that KID's replay window; adding the very same key
   * again keeps the window, so a re-delivered key cannot re-open old frames.
   * If addKey or removeKey is called again for the KID before this one
   * finishes, the later call wins.
   * @param {bigint | number} kid
   * @param {Uint8Array} baseKey  copied at once; the caller may zero it after the call
   * @returns {Promise<void>}
   */
  async addKey(kid, baseKey) {
    const k = toU64(kid, 'kid');
    const base = Uint8Array.from(requireBytes(baseKey, 'baseKey'));
    const token = {};
    this.#pending.set(k, token);
    try {
      const [key, fp] = await Promise.all([
        SFrameKey.derive(this.#suite, k, base),
        subtle().digest('SHA-256', bs(base)).then((d) => new Uint8Array(d)),
      ]);
      if (this.#pending.get(k) !== token) return; // superseded by a later addKey/removeKey
      const old = this.#keys.get(k);
      const window = old && ctEqual(old.fingerprint, fp) ? old.window : new ReplayWindow();
      this.#keys.set(k, { key, window, fingerprint: fp });
    } finally {
      base.fill(0);
      if (this.#pending.get(k) === token) this.#pending.delete(k);
    }
  }

  /**
   * Forgets a KID (and cancels a pending addKey for it).
   * @param {bigint | number} kid
   * @returns {boolean} whether a key was installed
   */
  removeKey(kid) {
    const k = toU64(kid, 'kid');
    this.#pending.delete(k);
    return this.#keys.delete(k);
  }

  /** @param {bigint | number} kid @returns {boolean} */
  hasKey(kid) {
    return this.#keys.has(toU64(kid, 'kid'));
  }

  /**
   * Authenticates and decrypts one SFrame ciphertext. Never throws: on any
   * failure it returns null and increments the matching `stats` counter.
   * The replay window moves only after the frame authenticates.
   * @param {Uint8Array | ArrayBuffer} metadata  the same metadata the sender authenticated
   * @param {Uint8Array | ArrayBuffer} frame     header || ciphertext || tag
   * @returns {Promise<Uint8Array | null>}
   */
  async open(metadata, frame) {
    const st = this.stats;
    const b = asBytes(frame);
    const md = asBytes(metadata);
    if (!b || !md) { st.badHeader++; return null; }
    if (b.length === 0) { st.short++; return null; }
    const h = decodeHeader(b);
    if (!h) { st.badHeader++; return null; }
    if (b.length - h.length < this.#suite.Nt) { st.short++; return null; }
    const entry = this.#keys.get(h.kid);
    if (!entry) { st.unknownKid++; return null; }
    if (!entry.window.check(h.ctr)) { st.replay++; return null; }
    let pt;
    try {
      pt = await entry.key.openAt(b.subarray(0, h.length), h.ctr, md, b.subarray(h.length));
    } catch {
      pt = null;
    }
    if (!pt) { st.auth++; return null; }
    if (this.#keys.get(h.kid) !== entry) { st.unknownKid++; return null; } // removed or replaced meanwhile
    if (!entry.window.accept(h.ctr)) { st.replay++; return null; } // a concurrent open won
    st.opened++;
    return pt;
  }
}

// ---------------------------------------------------------------------------
// Parley KID layout (E2EE-DESIGN.md §3)
//
//   KID = index16 << 24 | generation16 << 8 | step8        (40 bits)
//
// index: the sender (16 random bits chosen per session); generation: a fresh
// random base key; step: RFC 9605 §5.1 ratchet step of that key (R = 8 bits).

/**
 * @typedef {object} ParleyKid
 * @property {number} index       0..65535
 * @property {number} generation  0..65535
 * @property {number} step        0..255
 */

/**
 * @param {number} n
 * @param {number} max
 * @param {string} what
 */
function checkField(n, max, what) {
  if (!Number.isInteger(n) || n < 0 || n > max) throw new SFrameError('bad-argument', `${what} must be an integer 0..${max}`);
}

/**
 * Builds a Parley KID: index16 << 24 | generation16 << 8 | step8.
 * @param {number} index       0..65535
 * @param {number} generation  0..65535
 * @param {number} step        0..255
 * @returns {bigint}
 */
export function makeKid(index, generation, step) {
  checkField(index, 0xffff, 'index');
  checkField(generation, 0xffff, 'generation');
  checkField(step, 0xff, 'step');
  return (BigInt(index) << 24n) | (BigInt(generation) << 8n) | BigInt(step);
}

/**
 * Splits a Parley KID into its fields.
 * @param {bigint | number} kid
 * @returns {ParleyKid}
 * @throws {SFrameError} `bad-argument` if kid is not a 40-bit Parley KID
 */
export function splitKid(kid) {
  const k = toU64(kid, 'kid');
  if (k >= 1n << 40n) throw new SFrameError('bad-argument', 'not a Parley KID (wider than 40 bits)');
  const n = Number(k);
  return { index: Math.floor(n / 2 ** 24), generation: Math.floor(n / 256) & 0xffff, step: n & 0xff };
}
