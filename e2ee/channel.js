// @ts-check
// End-to-end sealing of chat and file messages on a peer connection's data
// channel (docs/security.md §9.5). DTLS alone is not trusted (a malicious
// server can sit in the middle of it), so each message is sealed with the
// pair's K_data (HKDF label "parley/1 pairwise-data", derived in keys.js
// next to K_wrap and K_confirm):
//
//   nonce = u8(dir) || 3 zero bytes || u64(n)     dir: 1 or 2, from the pair order
//   AAD   = "parley/1 data" || lp(R) || lp(pid_from) || lp(pid_to) || u64(n)
//   wire  = u64(n) || AES-256-GCM(K_data, nonce, AAD, plaintext)
//
// n counts per direction for the life of K_data, never per channel, so no
// nonce repeats when a channel is opened again. The receiver takes the
// first n it sees on a channel if it is not below what it expects (a gap
// raises a warning), and after that only exactly the next n.

const te = new TextEncoder();
const LABEL = te.encode('parley/1 data');
/** Largest plaintext of one data-channel message. */
export const MAX_PLAINTEXT = 64 * 1024 + 64;
const MAX_N = (1n << 64n) - 2n;

/** @param {...Uint8Array} parts */
function cat(...parts) {
  const out = new Uint8Array(parts.reduce((n, b) => n + b.length, 0));
  let o = 0;
  for (const b of parts) { out.set(b, o); o += b.length; }
  return out;
}

/** @param {string} s */
function lp(s) {
  const b = te.encode(s);
  return cat(new Uint8Array([b.length >> 8, b.length & 0xff]), b);
}

/** @param {bigint} n */
function u64(n) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, n);
  return b;
}

/** @param {number} dir @param {bigint} n */
function nonceOf(dir, n) {
  const b = new Uint8Array(12);
  b[0] = dir;
  b.set(u64(n), 4);
  return b;
}

/** @param {Uint8Array} b @returns {BufferSource} */
const buf = (b) => /** @type {BufferSource} */ (b);

/**
 * @typedef {{data?: CryptoKey, dataDir?: number, sendN?: bigint, recvN?: bigint|null}} DataKeys
 *   the pair's state, kept on the key agreement's member record
 */

export class ChannelError extends Error {}

/**
 * Seals one message for `to`. Throws ChannelError before the counter wraps.
 * @param {string} room @param {string} from @param {string} to @param {DataKeys} m @param {Uint8Array} plaintext
 */
export async function sealData(room, from, to, m, plaintext) {
  if (!m.data || !m.dataDir || m.sendN === undefined) throw new ChannelError('no data key for this peer');
  if (plaintext.length > MAX_PLAINTEXT) throw new ChannelError('message too large');
  const n = m.sendN;
  if (n > MAX_N) throw new ChannelError('counter exhausted');
  m.sendN = n + 1n; // reserved before any await: never used twice
  const aad = cat(LABEL, lp(room), lp(from), lp(to), u64(n));
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv: buf(nonceOf(m.dataDir, n)), additionalData: buf(aad), tagLength: 128 }, m.data, buf(plaintext)));
  return cat(u64(n), ct);
}

/**
 * Opens one message from `from`. Returns {plaintext, gap}; throws
 * ChannelError if it does not authenticate or is out of order.
 * @param {string} room @param {string} from @param {string} to @param {DataKeys} m @param {Uint8Array} wire
 * @param {boolean} firstOnChannel the first message on a newly opened channel
 */
export async function openData(room, from, to, m, wire, firstOnChannel) {
  if (!m.data || !m.dataDir) throw new ChannelError('no data key for this peer');
  if (wire.length < 8 + 16) throw new ChannelError('message too short');
  const n = new DataView(wire.buffer, wire.byteOffset, 8).getBigUint64(0);
  const expect = m.recvN ?? 0n;
  let gap = false;
  if (firstOnChannel || m.recvN === null) {
    if (n < expect) throw new ChannelError('replayed message');
    gap = n > expect;
  } else if (n !== expect) {
    throw new ChannelError(n < expect ? 'replayed message' : 'messages lost or reordered');
  }
  const aad = cat(LABEL, lp(room), lp(from), lp(to), u64(n));
  let pt;
  try {
    pt = new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-GCM', iv: buf(nonceOf(3 - m.dataDir, n)), additionalData: buf(aad), tagLength: 128 }, m.data, buf(wire.subarray(8))));
  } catch {
    throw new ChannelError('message failed authentication');
  }
  m.recvN = n + 1n;
  return { plaintext: pt, gap };
}
