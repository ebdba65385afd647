// @ts-check
// The end-to-end encryption worker: every outgoing audio and video frame of
// every peer connection is sealed here with SFrame, and every incoming one
// opened, inside WebRTC encoded transforms. One worker per page, so one
// counter per sender key across all connections and tracks (a (KID, CTR)
// pair is never used twice).
//
// Frame on the wire: clear prefix || SFrame(header || ciphertext || tag).
// The clear prefix is what the receiver's depacketizer needs: for VP8 the
// frame tag (3 bytes) and, on key frames, the start code and size (7 more:
// 10 in all), chosen by the P bit of the first byte; for audio none, and
// for any video codec other than VP8 none either (a frame whose metadata
// names another codec is encrypted whole: its bytes are not VP8's, so a
// VP8-sized prefix would leave real content in the clear). The
// SFrame metadata (authenticated, not sent) is
//   "parley/1 media" || u8 kind (0 audio, 1 video) || prefix
// so a prefix cannot be changed and an audio frame cannot pass as video.
//
// Page → worker messages (postMessage):
//   {op: 'send-key', kid: bigint, key: Uint8Array}           switch our sender key
//   {op: 'recv-key', peer: string, kid: bigint, key: Uint8Array} a peer's key
//   {op: 'drop-peer', peer: string}                           forget a peer's keys
//   {op: 'key-frame', peer: string}                           a connection is back: key frames both ways
//   {op: 'streams', role, peer, kind, id, readable, writable} createEncodedStreams fallback
//   {op: 'stats', seq}                                        → {op: 'stats', seq, stats}
// Worker → page: {op: 'stats', seq, stats: {sent, unsent, peers: {[peer]: {opened, dropped, reasons}},
//                                           video: {[transform id]: n}}}
// A transform's options (RTCRtpScriptTransform) are {role, peer, kind, id}:
// id names that one transform (session.js).
// reasons counts dropped frames by why: empty, short (no room for SFrame),
// and SFrameReceiver's own (badHeader, unknownKid, auth, replay), except
// that a frame refused as a replay which is a copy of one opened recently
// (same KID, counter, clear prefix and tag: delivered twice) counts as
// duplicate (recent.js). video counts the video frames that entered each
// transform, before any check: the page compares them with what the browser
// says it encoded and received, to notice a transform the browser dropped
// (session.js checkTransforms).

import { SFrameSender, SFrameReceiver, parseHeader, splitKid, makeKid, ratchet, getSuite, AES_128_GCM_SHA256_128 } from './sframe.js';
import { RecentFrames } from './recent.js';

const SUITE = AES_128_GCM_SHA256_128;
/** That suite's authentication tag length in bytes (Nt). */
const TAG_LENGTH = getSuite(SUITE).Nt;
/** How many ratchet steps a receiver looks ahead of the newest key it holds. */
const LOOKAHEAD = 4;
/** How long a replaced key stays usable for frames still in flight. */
const KEEP_OLD_MS = 5000;
/**
 * A video frame that opens and is not a key frame, after at least this long
 * (and three times the usual interval) without one from the same
 * connection, most likely follows lost frames (an outage, a new media
 * path): ask for a key frame at once. Chromium's decoder asks for one by
 * itself only after about 3 s of undecodable frames.
 */
const GAP_MS = 1000;
/** At most one such request per peer this often. */
const GAP_REQUEST_EVERY_MS = 1000;

const te = new TextEncoder();
const LABEL = te.encode('parley/1 media');

/** @type {SFrameSender|null} */
let sender = null;
let sent = 0;
let unsent = 0;

/**
 * @typedef {{rx: SFrameReceiver, newest: {gen: number, step: number, base: Uint8Array, index: number} | null,
 *   opened: number, dropped: number, reasons: Record<string, number>, ahead: Promise<void>, recent: RecentFrames,
 *   askedAt: number}} PeerKeys
 */
/** @type {Map<string, PeerKeys>} */
const peers = new Map();

/** Video frames that entered each transform, by its id, and whose it is. @type {Map<string, {peer: string, n: number}>} */
const videoFrames = new Map();

/** Counts a video frame that entered the transform with this id. @param {string} id @param {string} peer */
function countVideo(id, peer) {
  const c = videoFrames.get(id);
  if (c) c.n++;
  else videoFrames.set(id, { peer, n: 1 });
}

/** Transformers of the sending side, to make a key frame after a key change. @type {Set<any>} */
const senders = new Set();
/** Video transformers of the receiving side, by peer, to ask for a key frame once a key arrives. @type {Map<string, Set<any>>} */
const receivers = new Map();

/** @param {string} peer */
function peerKeys(peer) {
  let p = peers.get(peer);
  if (!p) {
    p = { rx: new SFrameReceiver(SUITE), newest: null, opened: 0, dropped: 0, reasons: {}, ahead: Promise.resolve(), recent: new RecentFrames(TAG_LENGTH), askedAt: 0 };
    peers.set(peer, p);
  }
  return p;
}

/**
 * The codec of an encoded frame, from its metadata (Chromium and Firefox
 * both give mimeType); '' when the browser does not say.
 * @param {any} frame
 */
function mimeOf(frame) {
  try {
    return String(frame.getMetadata?.().mimeType || '').toLowerCase();
  } catch {
    return '';
  }
}

/** @param {Uint8Array} data @param {string} kind @param {string} mime */
function prefixLength(data, kind, mime) {
  if (kind !== 'video') return 0;
  // Parley negotiates VP8 only (docs/security.md §3.6). A browser that names
  // no codec is taken at its word on that; one that names another codec
  // gets no clear prefix at all.
  if (mime && mime !== 'video/vp8') return 0;
  // VP8 frame tag: P bit (bit 0 of byte 0) is 0 on key frames.
  const n = (data[0] & 1) === 0 ? 10 : 3;
  return Math.min(n, data.length);
}

/** @param {string} kind @param {Uint8Array} prefix */
function metadata(kind, prefix) {
  const m = new Uint8Array(LABEL.length + 1 + prefix.length);
  m.set(LABEL);
  m[LABEL.length] = kind === 'video' ? 1 : 0;
  m.set(prefix, LABEL.length + 1);
  return m;
}

/**
 * @param {string} kind @param {string} peer @param {string} id the transform's
 * @returns {(frame: any, controller: TransformStreamDefaultController) => Promise<void>}
 */
function encrypter(kind, peer, id) {
  return async (frame, controller) => {
    if (kind === 'video') countVideo(id, peer);
    const data = new Uint8Array(frame.data);
    if (data.length === 0 || !sender) {
      // Never send a frame in the clear: without a key there is no frame.
      if (data.length) unsent++;
      return;
    }
    const n = prefixLength(data, kind, mimeOf(frame));
    const prefix = data.slice(0, n);
    let sealed;
    try {
      sealed = await sender.seal(metadata(kind, prefix), data.subarray(n));
    } catch (e) {
      unsent++;
      return;
    }
    const out = new Uint8Array(n + sealed.length);
    out.set(prefix);
    out.set(sealed, n);
    frame.data = out.buffer;
    sent++;
    controller.enqueue(frame);
  };
}

/**
 * @param {string} peer @param {string} kind @param {string} id the transform's
 * @returns {(frame: any, controller: TransformStreamDefaultController) => Promise<void>}
 */
function decrypter(peer, kind, id) {
  // When the last frame opened, and the usual interval between frames (ms).
  let lastAt = 0;
  let interval = 0;
  return async (frame, controller) => {
    const p = peerKeys(peer);
    if (kind === 'video') countVideo(id, peer);
    const data = new Uint8Array(frame.data);
    const drop = (/** @type {string} */ why) => {
      p.dropped++;
      p.reasons[why] = (p.reasons[why] || 0) + 1;
    };
    if (data.length === 0) return drop('empty');
    const n = prefixLength(data, kind, mimeOf(frame));
    if (data.length <= n) return drop('short');
    const body = data.subarray(n);
    const prefix = data.slice(0, n);
    const meta = metadata(kind, prefix);
    const before = { ...p.rx.stats };
    const plain = (await lookAhead(p, meta, body)) || (await p.rx.open(meta, body));
    if (!plain) {
      // Name the reason (replay, auth, unknownKid, ...) for diagnosis. A
      // frame refused as a replay that is a copy of one we opened a moment
      // ago (delivered twice) counts as "duplicate": "replay" is left for
      // frames that could be someone sending old frames again.
      const st = /** @type {Record<string, number>} */ (/** @type {unknown} */ (p.rx.stats));
      const b = /** @type {Record<string, number>} */ (/** @type {unknown} */ (before));
      const why = Object.keys(b).find((k) => st[k] !== b[k]) || 'open';
      return drop(why === 'replay' && p.recent.has(prefix, body) ? 'duplicate' : why);
    }
    p.recent.add(prefix, body);
    const out = new Uint8Array(n + plain.length);
    out.set(prefix);
    out.set(plain, n);
    frame.data = out.buffer;
    p.opened++;
    if (kind === 'video') {
      const now = Date.now();
      const since = now - lastAt;
      if (lastAt > 0 && since >= Math.max(GAP_MS, 3 * interval) && frame.type !== 'key' && now - p.askedAt >= GAP_REQUEST_EVERY_MS) {
        p.askedAt = now;
        requestKeyFrame(peer);
      }
      if (lastAt > 0) interval = interval ? 0.9 * interval + 0.1 * Math.min(since, 1000) : Math.min(since, 1000);
      lastAt = now;
    }
    controller.enqueue(frame);
  };
}

/**
 * When a frame's KID is a few ratchet steps ahead of the newest key we hold
 * for that sender (someone joined and the sender ratcheted), derive that
 * step and try it. The new key is kept only if the frame authenticates
 * under it, so junk frames cannot move our state.
 * @param {PeerKeys} p @param {Uint8Array} metadata @param {Uint8Array} body
 * @returns {Promise<Uint8Array|null>} the plaintext if the look-ahead key opened the frame
 */
function lookAhead(p, metadata, body) {
  // One look-ahead at a time per sender: an audio and a video frame at the
  // same new step must not add and remove each other's key.
  const run = p.ahead.then(() => lookAheadNow(p, metadata, body));
  p.ahead = run.then(() => {}, () => {});
  return run;
}

/** @param {PeerKeys} p @param {Uint8Array} metadata @param {Uint8Array} body @returns {Promise<Uint8Array|null>} */
async function lookAheadNow(p, metadata, body) {
  const nk = p.newest;
  if (!nk) return null;
  let kid;
  try { kid = parseHeader(body).kid; } catch { return null; }
  if (p.rx.hasKey(kid)) return null;
  const { index, generation, step } = splitKid(kid);
  if (index !== nk.index || generation !== nk.gen || step <= nk.step || step > nk.step + LOOKAHEAD) return null;
  let base = nk.base;
  for (let s = nk.step + 1; s <= step; s++) base = await ratchet(SUITE, base);
  await p.rx.addKey(kid, base);
  const plain = await p.rx.open(metadata, body);
  if (!plain) {
    p.rx.removeKey(kid);
    return null;
  }
  // Adopt the step; the previous one stays a little for frames in flight.
  const oldKid = makeKid(nk.index, nk.gen, nk.step);
  p.newest = { index, gen: generation, step, base };
  retire(p, oldKid);
  return plain;
}

/**
 * Removes a replaced key after KEEP_OLD_MS, unless it became the newest again.
 * @param {PeerKeys} p @param {bigint} kid
 */
function retire(p, kid) {
  setTimeout(() => {
    const nk = p.newest;
    if (nk && makeKid(nk.index, nk.gen, nk.step) === kid) return;
    p.rx.removeKey(kid);
  }, KEEP_OLD_MS);
}

/**
 * Installs a transform on a pair of encoded streams.
 * @param {{role: string, peer: string, kind: string, id: string}} o
 * @param {ReadableStream} readable @param {WritableStream} writable
 */
function pipe(o, readable, writable) {
  const transform = o.role === 'send' ? encrypter(o.kind, o.peer, o.id) : decrypter(o.peer, o.kind, o.id);
  // (Returns a promise that settles when the connection's stream ends.)
  return readable.pipeThrough(new TransformStream({ transform })).pipeTo(writable).catch(() => {})
    .finally(() => videoFrames.delete(o.id));
}

// RTCRtpScriptTransform (Chromium, Firefox, Safari).
// @ts-ignore onrtctransform exists in workers of browsers with RTCRtpScriptTransform
self.onrtctransform = (/** @type {any} */ ev) => {
  const t = ev.transformer;
  const o = t.options;
  /** @type {Set<any>} */
  let set = senders;
  if (o.role !== 'send') {
    set = receivers.get(o.peer) || new Set();
    receivers.set(o.peer, set);
  }
  if (o.role === 'send' || o.kind === 'video') set.add(t);
  pipe(o, t.readable, t.writable).finally(() => set.delete(t));
};

/**
 * Asks a peer for a key frame (where the browser can), so its video
 * recovers as soon as we can open its frames again instead of waiting for
 * the decoder's own timeout.
 * @param {string} peer
 */
function requestKeyFrame(peer) {
  for (const t of receivers.get(peer) || []) {
    try { t.sendKeyFrameRequest?.()?.catch?.(() => {}); } catch { /* not all browsers */ }
  }
}

self.onmessage = async (/** @type {MessageEvent} */ ev) => {
  const m = ev.data;
  switch (m.op) {
    case 'send-key': {
      sender = new SFrameSender(SUITE, m.kid, m.key);
      m.key.fill(0);
      for (const t of senders) {
        // A key frame right after a key change, so receivers recover at once.
        try { await t.generateKeyFrame?.(); } catch { /* not all browsers */ }
      }
      break;
    }
    case 'recv-key': {
      const p = peerKeys(m.peer);
      const { index, generation, step } = splitKid(m.kid);
      await p.rx.addKey(m.kid, m.key);
      const prev = p.newest;
      p.newest = { index, gen: generation, step, base: m.key };
      if (prev) retire(p, makeKid(prev.index, prev.gen, prev.step));
      // Frames under this key may already have been dropped: get a key frame now.
      if (p.dropped > 0) requestKeyFrame(m.peer);
      break;
    }
    case 'key-frame': {
      // A connection came back (session.js): a key frame from this peer
      // (our request) and one from us (every peer gets it; one per outage).
      requestKeyFrame(m.peer);
      for (const t of senders) {
        try { await t.generateKeyFrame?.(); } catch { /* not all browsers */ }
      }
      break;
    }
    case 'drop-peer':
      peers.delete(m.peer);
      for (const [id, c] of videoFrames) if (c.peer === m.peer) videoFrames.delete(id);
      break;
    case 'streams':
      pipe(m, m.readable, m.writable);
      break;
    case 'stats': {
      /** @type {Record<string, {opened: number, dropped: number, reasons: Record<string, number>}>} */
      const out = {};
      for (const [id, p] of peers) out[id] = { opened: p.opened, dropped: p.dropped, reasons: { ...p.reasons } };
      // @ts-ignore
      /** @type {Record<string, number>} */
      const video = {};
      for (const [id, c] of videoFrames) video[id] = c.n;
      // @ts-ignore
      self.postMessage({ op: 'stats', seq: m.seq, stats: { sent, unsent, peers: out, video } });
      break;
    }
  }
};
