// @ts-check
// A call session: local media, one RTCPeerConnection per other participant
// (full mesh), negotiation through the SignalingClient. No DOM here: the UI
// (call.js) listens to the callbacks.

import { SignalingClient, SignalingError } from './protocol.js';
import { KeyAgreement, joinToken } from '../e2ee/keys.js';
import { localSDP, remoteSDP } from './sdp.js';
import { PeerData } from './datachan.js';
import { Consult } from './consult.js';
import { ROLE_HOST } from '../e2ee/roster.js';

/** RTCRtpScriptTransform where the browser has it; else createEncodedStreams. */
const useScriptTransform = typeof RTCRtpScriptTransform !== 'undefined';
const isFirefox = /Firefox\//.test(navigator.userAgent);

/**
 * @typedef {import('./protocol.js').Message} Message
 * @typedef {import('./protocol.js').Welcome} Welcome
 * @typedef {{
 *   id: string, name: string, pc: RTCPeerConnection, stream: MediaStream, polite: boolean,
 *   makingOffer: boolean, ignoreOffer: boolean, pendingCandidates: RTCIceCandidateInit[],
 *   state: string, upOnce?: boolean, restartTimer: number, badSeconds: number, codecsSet?: WeakSet<RTCRtpTransceiver>,
 *   createdAt: number, everConnected: boolean, downSince: number, upSince: number, data?: PeerData, iceRestartAt: number,
 * }} Remote
 * @typedef {{
 *   onRemoteAdded?: (r: Remote) => void,
 *   onRemoteUpdated?: (r: Remote) => void,
 *   onRemoteRemoved?: (r: Remote, reason: string) => void,
 *   onNotice?: (text: string) => void,
 *   onFatal?: (e: SignalingError) => void,
 *   onSecurity?: (s: Security) => void,
 *   onWaiting?: (w: {title: string, hostPresent: boolean}) => void,
 *   onAdmitted?: () => void,
 *   onConsultation?: (c: ConsultState) => void,
 *   onChat?: (c: {from: string, name: string, text: string, at: number, mine: boolean}) => void,
 *   onTransfer?: (t: import('./datachan.js').Transfer, name: string) => void,
 *   onRemoved?: () => void,
 *   onReconnecting?: (attempt: number) => void,
 *   onResumed?: () => void,
 * }} SessionEvents
 * @typedef {{
 *   role: string, title: string, locked: boolean, isHost: boolean,
 *   knocks: {id: string, name: string, verified: boolean, checked: boolean}[],
 *   members: {pid: string, name: string, host: boolean, me: boolean, stale: boolean}[],
 * }} ConsultState
 * @typedef {{hostKey: Uint8Array, record?: import('./consult.js').HostRecord|null, store?: import('./consult.js').HostStore|null}} ConsultOpts
 * @typedef {{code: string, confirmed: string[], holders: string[], suspended: string[], problems: {peer: string, name: string, text: string}[], codeStall: {why: 'missing'|'restarting'|'used-up'|'changing'|'offline', names: string[]} | null}} Security
 * @typedef {{sent: number, unsent: number, peers: Record<string, {opened: number, dropped: number, reasons: Record<string, number>}>,
 *   video?: Record<string, number>}} WorkerStats
 * @typedef {{id: string, browser: number, worker: number, bad: number, repairs: number}} TransformCheck
 * @typedef {{sr: RTCRtpSender|RTCRtpReceiver, role: 'send'|'recv', peer: string, id: string, frames: number}} BrowserCount
 */

/**
 * A confirmed peer whose connection stays down this long stops getting our
 * keys (docs/security.md §3.5). Chromium reports "disconnected" about 8 s
 * after a peer goes silent, so a silent departure is cut off within about
 * 12 s.
 */
export const SUSPEND_AFTER_MS = 3000;
/** ... and gets them back once its connection has been up this long without a break. */
export const UNSUSPEND_AFTER_MS = 5000;
/** ... as does one whose connection never comes up. */
export const NEVER_CONNECTED_MS = 30000;
/** Offers and candidates from a peer not yet confirmed are held this long, at most. */
const HOLD_MS = 30000;
/** An impolite page answers a restart-ice request only if its own last ICE restart is older than this. */
const RESTART_REQUEST_SKIP_MS = 2000;
/**
 * A connection's video whose browser counters (frames received, frames
 * encoded) grew by at least this many frames in a second while none went
 * through our transform has lost its transform (checkTransforms) ...
 */
const BYPASS_FRAMES = 5;
/** ... when that is seen this many seconds in a row; then it gets a new one ... */
const BYPASS_SECONDS = 2;
/** ... and when that has not helped this many times in a row, the badge says so. */
const BYPASS_REPAIRS = 1;

export class CallSession {
  /**
   * @param {{room: string, name: string, stream: MediaStream, relay: boolean, wsURL: string, secret: Uint8Array,
   *   consultation?: ConsultOpts|null}} opts
   * @param {SessionEvents} events
   */
  constructor(opts, events) {
    this.room = opts.room;
    /** 'host' or 'guest' in a consultation (from the server's welcome or waiting); '' in an open room. */
    this.role = '';
    this.title = '';
    this.waiting = false;
    /** The largest file this server lets people send (from welcome). */
    this.maxFileBytes = 100 * 1000 * 1000;
    /** Releases this tab's hold on hosting the consultation (Web Locks). */
    this.releaseHostLock = () => {};
    /** Stops listening for network changes. @type {(() => void)|undefined} */
    this.stopNetworkWatch = undefined;
    this.name = opts.name;
    this.stream = opts.stream;
    this.relay = opts.relay;
    this.secret = opts.secret;
    this.events = events;
    this.sig = new SignalingClient(opts.wsURL);
    /** @type {Map<string, Remote>} */
    this.remotes = new Map();
    this.myId = '';
    /** @type {RTCIceServer[]} */
    this.iceServers = [];
    this.ended = false;
    /** Names learnt from welcome and peer-joined. @type {Map<string, string>} */
    this.names = new Map();
    /** Names of peers that left, for warnings about their old ids. @type {Map<string, string>} */
    this.departedNames = new Map();
    /** Peers in the room when we joined: we call them once they are confirmed. @type {Set<string>} */
    this.toCall = new Set();
    /**
     * Offers and candidates from peers not confirmed yet: no peer connection
     * exists and nothing is sent to a peer before its key is verified
     * (docs/security.md §3.4). @type {Map<string, {offer?: Message, candidates: Message[], at: number}>}
     */
    this.held = new Map();
    /** WebRTC messages, in order, each after the key messages before it. @type {Promise<void>} */
    this.rtcQueue = Promise.resolve();
    /** The encoded-transform worker: all frame encryption happens there. */
    this.worker = new Worker(new URL('../e2ee/worker.js', import.meta.url), { type: 'module', name: 'parley-e2ee' });
    /** @type {WeakSet<RTCRtpSender|RTCRtpReceiver>} */
    this.transformed = new WeakSet();
    /** Per sender and receiver: its browser counter and the worker's, at the last check. @type {WeakMap<RTCRtpSender|RTCRtpReceiver, TransformCheck>} */
    this.transformChecks = new WeakMap();
    /** The id of the transform on each sender and receiver (the worker counts frames by it). @type {WeakMap<RTCRtpSender|RTCRtpReceiver, string>} */
    this.transformIds = new WeakMap();
    this.transformSeq = 0;
    /** Video the browser keeps handling without our transform, by role and peer ('send peer'): whose, and what that means. @type {Map<string, {peer: string, text: string}>} */
    this.bypassed = new Map();
    /** Per-peer problems found by key agreement (bad MACs and the like). @type {Map<string, string>} */
    this.keyProblems = new Map();
    /** @type {WorkerStats|null} */
    this.lastStats = null;
    this.unconfirmedSeconds = 0;
    /** @type {ReturnType<typeof setTimeout>|undefined} */
    this.iceTimer = undefined;
    /** Peers whose media has not decrypted for a while. @type {Set<string>} */
    this.undecryptable = new Set();
    /** Whether our signaling connection is down and being reconnected. */
    this.reconnecting = false;
    this.keys = new KeyAgreement(opts.room, opts.secret, {
      send: (payload, to) => { this.sig.send(to ? { type: 'e2ee', to, payload } : { type: 'e2ee', payload }); },
      installSendKey: (kid, key) => this.worker.postMessage({ op: 'send-key', kid, key }, [key.buffer]),
      installRecvKey: (peer, kid, key) => this.worker.postMessage({ op: 'recv-key', peer, kid, key: key.slice() }),
      dropPeer: (peer) => this.worker.postMessage({ op: 'drop-peer', peer }),
      onChange: () => {
        this.connectConfirmed();
        this.reportSecurity();
      },
      onWarning: (peer, text) => {
        this.keyProblems.set(peer, text);
        this.reportSecurity();
      },
      onRoster: () => this.consultChanged(),
      onUnlisted: (pid) => {
        const name = this.names.get(pid) || this.remotes.get(pid)?.name;
        if (name) this.departedNames.set(pid, name);
        // The name stays while the server still has them in the room (until
        // its peer-left): the badge then names someone present whom the
        // roster does not list, e.g. a removed member a server keeps in.
        if (name && !this.names.has(pid)) this.names.set(pid, name);
        this.held.delete(pid);
        this.toCall.delete(pid);
        this.removeRemote(pid, 'removed');
      },
      onRemoved: () => {
        if (this.ended) return;
        this.events.onRemoved?.();
      },
    }, opts.consultation ? { hostKey: opts.consultation.hostKey, isHost: !!opts.consultation.record } : {});
    /** The consultation side (rosters, knocks, freshness); null in an open room. */
    this.consult = opts.consultation ? new Consult(this, opts.consultation) : null;
    /** The browser's video counters, read just before stats request seq (checkTransforms). @type {{seq: number, counts: BrowserCount[]}|null} */
    this.browserCounts = null;
    let seq = 0;
    this.worker.onmessage = (ev) => {
      if (ev.data?.op !== 'stats') return;
      this.onWorkerStats(ev.data.stats);
      const read = this.browserCounts;
      if (read && read.seq === ev.data.seq) {
        this.browserCounts = null;
        this.checkTransforms(ev.data.stats, read.counts);
      }
    };
    /** @type {ReturnType<typeof setInterval>|undefined} */
    this.statsTimer = setInterval(async () => {
      this.checkConnections();
      // The browser's counters first, then the worker's (its answer comes
      // after): a frame the browser counted that went through the worker
      // is in the worker's count by then. A getStats that does not answer
      // within 800 ms holds nothing up: that second has no check.
      const n = ++seq;
      /** @type {BrowserCount[]|null} */
      const counts = await Promise.race([
        this.readBrowserCounts().catch((e) => { console.warn('video counters', e); return null; }),
        new Promise((resolve) => { setTimeout(() => resolve(null), 800); }),
      ]);
      this.browserCounts = counts && n === seq ? { seq: n, counts } : null;
      if (!this.ended) this.worker.postMessage({ op: 'stats', seq: n });
    }, 1000);
  }

  /**
   * TURN credentials expire (their username starts with the expiry time):
   * ask for fresh ones when half their life has passed (at least 30 s on),
   * so an ICE restart late in a long call can still use the relay, with
   * time to spare if the first request is lost to a reconnect.
   */
  scheduleICERefresh() {
    clearTimeout(this.iceTimer);
    const user = this.iceServers.find((s) => s.username)?.username || '';
    const expiry = Number(user.split(':')[0]) * 1000;
    if (!Number.isFinite(expiry) || expiry <= 0) return;
    const wait = Math.min(Math.max((expiry - Date.now()) * 0.5, 30_000), 24 * 3600_000);
    this.iceTimer = setTimeout(() => this.sig.send({ type: 'ice-refresh' }), wait);
  }

  /** @param {import('./protocol.js').IceServer[]} servers */
  useICEServers(servers) {
    if (!servers.length) return;
    this.iceServers = servers;
    for (const r of this.remotes.values()) {
      try {
        r.pc.setConfiguration({ ...r.pc.getConfiguration(), iceServers: servers });
      } catch (e) {
        console.warn('new ICE servers not applied', e);
      }
    }
    this.scheduleICERefresh();
  }

  /**
   * Runs a WebRTC message's handler once every key-agreement message that
   * arrived before it has been processed, and after the WebRTC messages
   * before it. A peer sends its confirm before its offer, and the server
   * keeps one sender's order, so by then the offerer is normally confirmed.
   * @param {() => Promise<void>|void} fn
   */
  afterKeys(fn) {
    const gate = this.keys.queue;
    this.rtcQueue = this.rtcQueue.then(() => gate).then(fn).catch((e) => console.warn('signaling message', e));
  }

  /**
   * Whether we may connect to a peer: its key is verified and confirmed.
   * @param {string} pid
   */
  mayConnect(pid) {
    return this.keys.isConfirmed(pid);
  }

  /**
   * Calls the confirmed peers we are to call, and answers the held offers
   * of the ones that called us. Runs whenever the key agreement moves.
   */
  connectConfirmed() {
    if (this.ended) return;
    for (const pid of this.keys.confirmed()) {
      if (this.remotes.has(pid) || !this.mayConnect(pid)) continue;
      const held = this.held.get(pid);
      if (this.toCall.has(pid)) {
        this.toCall.delete(pid);
        this.addRemote(pid, this.nameOf(pid), true);
      } else if (held?.offer) {
        this.held.delete(pid);
        this.addRemote(pid, this.nameOf(pid), false);
        const { offer, candidates } = held;
        this.rtcQueue = this.rtcQueue.then(async () => {
          await this.onDescription(offer, 'offer');
          for (const c of candidates) await this.onCandidate(c);
        }).catch((e) => console.warn('held offer', e));
      }
    }
  }

  /**
   * Keeps an offer or candidate from a peer whose hello verified but which
   * is not confirmed yet (the offerer confirmed us first; our side of the
   * confirmation is still being computed). Anything from a peer with no
   * verified hello is dropped, so the server cannot fill these slots with
   * invented ids. Bounded: 8 peers, the latest offer and 64 candidates
   * each, 30 s.
   * @param {Message} m
   */
  hold(m) {
    const from = m.from || '';
    if (!this.keys.isPending(from)) return;
    let h = this.held.get(from);
    if (!h) {
      if (this.held.size >= 8) return;
      h = { candidates: [], at: Date.now() };
      this.held.set(from, h);
    }
    if (m.type === 'offer') {
      h.offer = m;
      h.candidates = [];
    } else if (m.type === 'candidate' && h.candidates.length < 64) {
      h.candidates.push(m);
    }
  }

  /**
   * Once a second: forget stale held messages, and suspend the keys of a
   * confirmed peer whose connection has been down for SUSPEND_AFTER_MS (or
   * never came up) while the server still says it is here — a silent
   * departure; give the current key back if the connection recovers.
   */
  checkConnections() {
    const now = Date.now();
    for (const [pid, h] of this.held) if (now - h.at > HOLD_MS) this.held.delete(pid);
    for (const [pid, r] of this.remotes) {
      const st = r.pc.connectionState;
      if (st === 'connected') {
        r.everConnected = true;
        r.downSince = 0;
        r.upSince ||= now;
        // Back only after 5 s without a break, so a flapping connection
        // does not churn generations (docs/security.md §3.5).
        if (this.keys.members.get(pid)?.suspended && now - r.upSince >= UNSUSPEND_AFTER_MS && this.mayConnect(pid)) this.keys.unsuspend(pid);
        continue;
      }
      r.upSince = 0;
      const down = st === 'disconnected' || st === 'failed' || st === 'closed';
      if (r.everConnected && down) r.downSince ||= now;
      // A network change or outage: restart ICE early (not only once the
      // browser calls it failed), at most every 5 s. The impolite side
      // leads on "disconnected"; on "failed" either side may.
      if (r.everConnected && (st === 'failed' || (st === 'disconnected' && !r.polite && now - r.downSince >= 2000)) && now - r.iceRestartAt >= 5000) {
        r.iceRestartAt = now;
        this.restartIce(r);
      }
      const tooLong = (r.everConnected && down && now - r.downSince >= SUSPEND_AFTER_MS) ||
        (!r.everConnected && now - r.createdAt >= NEVER_CONNECTED_MS);
      if (tooLong && this.keys.isConfirmed(pid) && !this.keys.members.get(pid)?.suspended) this.keys.suspend(pid);
    }
  }

  /** A display name for a peer id, also for peers that left. @param {string} pid */
  displayName(pid) {
    const left = this.departedNames.get(pid);
    return this.remotes.get(pid)?.name || this.names.get(pid) || (left ? `${left} (who left)` : 'Someone');
  }

  /** The current security state, for the badge. @returns {Security} */
  security() {
    /** @type {{peer: string, name: string, text: string}[]} */
    const problems = [];
    for (const [peer, text] of this.keyProblems) {
      const name = peer === '' ? 'This call' : peer.startsWith(':') ? 'This consultation' : this.displayName(peer);
      problems.push({ peer, name, text });
    }
    if (this.consult && !this.waiting) {
      // Someone the server put in the room whom the host's roster does not
      // name gets no key and no connection; say who it is.
      const listed = this.keys.roster?.entries;
      const present = new Set([...this.names.keys(), ...this.keys.unlisted.keys()]);
      for (const pid of present) {
        if (pid === this.myId || listed?.has(pid)) continue;
        const text = this.role === 'host' ? 'is in the call, but you did not let them in: they get no key and cannot see or hear anything'
          : 'is in the call, but the host did not let them in: they get no key and cannot see or hear anything';
        problems.push({ peer: pid, name: this.names.get(pid) || 'Someone', text });
      }
      if (this.consult.staleTooLong()) {
        problems.push({ peer: ':fresh', name: 'This consultation', text: 'the host is not confirming the list of participants right now, so your new keys go only to the host until they do' });
      }
    }
    // Everyone who holds our keys must be someone the server announced: a
    // key holder nobody can see would be a silent listener.
    for (const pid of this.keys.confirmed()) {
      if (!this.remotes.has(pid) && !this.names.has(pid)) {
        problems.push({ peer: pid, name: 'An unseen participant', text: 'holds a key to this call but is not in the call list' });
      }
    }
    for (const { peer, text } of this.bypassed.values()) {
      if (this.remotes.has(peer)) problems.push({ peer, name: this.displayName(peer), text });
    }
    for (const peer of this.undecryptable) {
      if (this.keyProblems.has(peer)) continue;
      const name = this.remotes.get(peer)?.name || 'Someone';
      problems.push({ peer, name, text: 'cannot be decrypted' });
    }
    const holders = this.keys.recipients().map((pid) => this.displayName(pid));
    const suspended = this.keys.confirmed().filter((pid) => this.keys.members.get(pid)?.suspended).map((pid) => this.displayName(pid));
    // No safety code to compare for CODE_TIMEOUT_MS: why (docs/security.md
    // §4.5). While our own signaling connection is down, that is the reason.
    const stall = this.keys.codeStall();
    const codeStall = stall && { why: this.reconnecting ? /** @type {const} */ ('offline') : stall.why, names: stall.pids.map((pid) => this.displayName(pid)) };
    return { code: this.keys.code, confirmed: this.keys.confirmed(), holders, suspended, problems, codeStall };
  }

  reportSecurity() {
    this.events.onSecurity?.(this.security());
  }

  /**
   * Marks a peer red when its frames keep failing to open for two seconds
   * while none open; clears it once frames open again.
   * @param {WorkerStats} st
   */
  onWorkerStats(st) {
    const prev = this.lastStats;
    this.lastStats = st;
    let changed = false;
    for (const [peer, r] of this.remotes) {
      const now = st.peers[peer];
      const before = prev?.peers[peer];
      if (!now || !before || r.state !== 'connected') continue;
      const opened = now.opened - before.opened;
      const dropped = now.dropped - before.dropped;
      const bad = dropped > 0 && opened === 0;
      r.badSeconds = bad ? (r.badSeconds || 0) + 1 : 0;
      const isRed = this.undecryptable.has(peer);
      if (r.badSeconds >= 2 && !isRed) { this.undecryptable.add(peer); changed = true; }
      if (opened > 0 && isRed) { this.undecryptable.delete(peer); changed = true; }
    }
    // With others in the call but nobody confirming our keys, our link is
    // probably wrong or cut short: say so, in words a person can act on.
    // (In a consultation only those the roster lists count: someone the
    // host did not let in gets no key by design and has its own warning.)
    const listed = this.keys.roster?.entries;
    const others = this.consult && listed ? [...this.names.keys()].filter((p) => listed.has(p)) : [...this.names.keys()];
    const lonely = others.length > 0 && this.keys.confirmed().length === 0;
    this.unconfirmedSeconds = lonely ? (this.unconfirmedSeconds || 0) + 1 : 0;
    const warnLink = this.unconfirmedSeconds >= 6;
    if (warnLink !== this.keyProblems.has('')) {
      if (warnLink) this.keyProblems.set('', 'nobody in the call accepted your keys. Your link may be wrong or incomplete: ask for the whole link again');
      else this.keyProblems.delete('');
      changed = true;
    }
    if (changed) this.reportSecurity();
  }

  /**
   * A browser can drop an encoded transform and go on without it: Chromium
   * (156) recreates a video receive stream without its transform when a
   * renegotiation rolls back a local offer (crossing offers). Frames would
   * then reach the decoder unopened, so a picture that someone on the path
   * made up could be shown; a sender in that state would send video in the
   * clear. Once a second, for each connection's video, the frames the
   * browser counts (received; encoded) are compared with those that went
   * through our transform (the worker's counts): a browser count that
   * grows by BYPASS_FRAMES or more while ours stands still, BYPASS_SECONDS
   * in a row, gets the transform put on again. If that does not help
   * BYPASS_REPAIRS times in a row, the badge says so.
   * @param {WorkerStats} st the worker's answer @param {BrowserCount[]} counts the browser's, read just before
   */
  checkTransforms(st, counts) {
    if (!st.video || this.ended) return;
    let changed = false;
    for (const { sr, role, peer, id, frames } of counts) {
      if (!this.remotes.has(peer)) continue;
      const bad = this.checkTransform(sr, role, peer, id, frames, st.video[id] || 0);
      const key = `${role} ${peer}`;
      if (bad === null || bad === this.bypassed.has(key)) continue;
      changed = true;
      if (!bad) {
        this.bypassed.delete(key);
        continue;
      }
      const text = role === 'send'
        ? 'may be getting your video unencrypted: your browser stopped encrypting it. Leave the call and join again'
        : 'has video your browser shows without decrypting it. Leave the call and join again';
      this.bypassed.set(key, { peer, text });
    }
    if (changed) this.reportSecurity();
  }

  /**
   * The browser's counters for each connected connection's video: frames
   * received by its receiver, frames encoded for its sender.
   * @returns {Promise<BrowserCount[]>}
   */
  async readBrowserCounts() {
    /** @type {BrowserCount[]} */
    const out = [];
    if (!useScriptTransform) return out;
    for (const [peer, r] of this.remotes) {
      if (r.pc.connectionState !== 'connected') continue;
      for (const t of r.pc.getTransceivers()) {
        if (t.receiver.track.kind !== 'video' || t.currentDirection === 'stopped') continue;
        for (const [sr, role] of /** @type {const} */ ([[t.receiver, 'recv'], [t.sender, 'send']])) {
          const id = this.transformIds.get(sr);
          if (!id) continue;
          const type = role === 'send' ? 'outbound-rtp' : 'inbound-rtp';
          // A browser that does not give the counter is not checked.
          let frames = -1;
          (await sr.getStats()).forEach((x) => {
            const v = x.type === type && x.kind === 'video' ? (role === 'send' ? x.framesEncoded : x.framesReceived) : undefined;
            if (typeof v === 'number') frames = Math.max(frames, 0) + v;
          });
          if (frames >= 0) out.push({ sr, role, peer, id, frames });
        }
      }
    }
    return out;
  }

  /**
   * One sender's or receiver's check (checkTransforms).
   * @param {RTCRtpSender|RTCRtpReceiver} sr @param {'send'|'recv'} role @param {string} peer @param {string} id its transform's
   * @param {number} browser the browser's count @param {number} worker the worker's, for that transform
   * @returns {boolean|null} true once repairs did not help, false once frames go through again after a repair, else null
   */
  checkTransform(sr, role, peer, id, browser, worker) {
    const last = this.transformChecks.get(sr);
    const c = last || { id, browser, worker, bad: 0, repairs: 0 };
    this.transformChecks.set(sr, c);
    if (c.id !== id) {
      // A new transform (ours, after a repair): its count starts again.
      c.id = id;
      c.browser = browser;
      c.worker = worker;
      return null;
    }
    // A recreated stream starts its counters again.
    const grew = browser >= c.browser ? browser - c.browser : browser;
    const ours = worker - c.worker;
    c.browser = browser;
    c.worker = worker;
    if (!last) return null;
    if (ours > 0) {
      c.bad = 0;
      if (c.repairs === 0) return null;
      c.repairs = 0;
      return false;
    }
    if (grew < BYPASS_FRAMES) return null;
    if (++c.bad < BYPASS_SECONDS) return null;
    c.bad = 0;
    c.repairs++;
    console.warn(`the ${role === 'send' ? 'sender' : 'receiver'} transform for ${peer} was dropped by the browser (${grew} frames without it): putting it on again (${c.repairs})`);
    this.transformed.delete(sr);
    this.transform(sr, role, peer, 'video');
    return c.repairs > BYPASS_REPAIRS ? true : null;
  }

  /**
   * Puts the encryption transform on a sender or receiver, once.
   * @param {RTCRtpSender|RTCRtpReceiver} sr
   * @param {'send'|'recv'} role
   * @param {string} peer
   * @param {string} kind
   */
  transform(sr, role, peer, kind) {
    if (this.transformed.has(sr)) return;
    this.transformed.add(sr);
    const id = `${role}-${++this.transformSeq}`;
    this.transformIds.set(sr, id);
    const options = { role, peer, kind, id };
    if (useScriptTransform) {
      sr.transform = new RTCRtpScriptTransform(this.worker, options);
    } else {
      // @ts-ignore createEncodedStreams is Chromium's older API
      const { readable, writable } = sr.createEncodedStreams();
      this.worker.postMessage({ op: 'streams', ...options, readable, writable }, [readable, writable]);
    }
  }

  /**
   * Transforms on every transceiver of a connection, and VP8 first: the
   * clear prefix of encrypted video frames is VP8's (docs/security.md).
   * @param {Remote} r
   */
  transformAll(r) {
    for (const t of r.pc.getTransceivers()) {
      const kind = t.receiver.track.kind;
      this.transform(t.receiver, 'recv', r.id, kind);
      this.transform(t.sender, 'send', r.id, kind);
      if (kind === 'video' && !isFirefox && t.setCodecPreferences && !r.codecsSet?.has(t)) {
        const caps = RTCRtpReceiver.getCapabilities('video');
        if (caps) {
          const vp8 = caps.codecs.filter((c) => /^video\/(VP8|rtx|red|ulpfec)$/i.test(c.mimeType));
          try { t.setCodecPreferences(vp8); } catch (e) { console.warn('codec preferences', e); }
        }
        (r.codecsSet ||= new WeakSet()).add(t);
      }
    }
  }

  /** The consultation's state for the UI: who waits, who is in, the lock. */
  consultChanged() {
    if (!this.consult) return;
    const c = this.consult;
    const entries = this.keys.roster?.entries || new Map();
    const hostSeq = c.mine?.roster.seq ?? 0;
    /** @type {ConsultState} */
    const st = {
      role: this.role, title: this.title, locked: c.isHost ? c.locked : !!this.keys.roster?.locked, isHost: c.isHost,
      knocks: [...c.knocks.values()].map((k) => ({ id: k.id, name: k.name, verified: !!k.pub, checked: k.checked })),
      members: [...entries].map(([pid, e]) => ({
        pid, name: pid === this.myId ? 'You' : this.displayName(pid), host: e.role === ROLE_HOST, me: pid === this.myId,
        stale: c.isHost && pid !== this.myId && (c.pingSeq.get(pid) ?? hostSeq) < hostSeq,
      })),
    };
    this.events.onConsultation?.(st);
    this.reportSecurity();
  }

  /**
   * Whether chat and files may go to (and come from) a peer: the same rule
   * as our keys (confirmed, not suspended, listed, fresh).
   * @param {string} pid
   */
  mayShare(pid) {
    const m = this.keys.members.get(pid);
    return !!m && this.keys.isRecipient(m);
  }

  /**
   * Sends a chat message to everyone we share with; returns how many got it.
   * @param {string} text
   */
  async chat(text) {
    let n = 0;
    for (const r of this.remotes.values()) {
      if (!r.data?.open || !this.mayShare(r.id)) continue;
      try { await r.data.chat(text); n++; } catch { /* cut off: that person does not get it */ }
    }
    if (n) this.events.onChat?.({ from: this.myId, name: 'You', text, at: Date.now(), mine: true });
    return n;
  }

  /** Offers a file to everyone we share with; returns how many offers went out. @param {File} file */
  sendFile(file) {
    let n = 0;
    for (const r of this.remotes.values()) {
      if (!r.data?.open || !this.mayShare(r.id)) continue;
      r.data.offerFile(file);
      n++;
    }
    return n;
  }

  /**
   * The data channel of a connection: chat, files and, in a consultation,
   * the host's roster and echoes.
   * @param {Remote} r
   */
  openData(r) {
    const dc = r.pc.createDataChannel('parley', { negotiated: true, id: 0, ordered: true });
    r.data = new PeerData(r.id, dc, {
      room: this.room, myId: () => this.myId, member: (pid) => this.keys.members.get(pid),
      mayShare: (pid) => this.mayShare(pid), maxFileBytes: () => this.maxFileBytes,
      onChat: (pid, text, at) => this.events.onChat?.({ from: pid, name: this.displayName(pid), text, at, mine: false }),
      onTransfer: (t) => this.events.onTransfer?.(t, this.displayName(t.peer)),
      onPing: (pid, seq, t) => { this.consult?.onPing(pid, seq, t); },
      onPong: (pid, seq, hash, t) => { this.consult?.onPong(pid, seq, hash, t); },
      onRoster: (pid, json) => this.consult?.onRosterFromHost(pid, json),
      onProblem: (pid, text) => {
        this.keyProblems.set(pid, text);
        this.reportSecurity();
      },
    });
  }

  /**
   * This device's network changed (Wi-Fi to mobile data, back online):
   * every connection gets a new media path now, instead of waiting for
   * ICE to notice the old one is gone. Nothing while the device is
   * offline (its link went down): there is no path to restart onto, and
   * the offer would wait in the signaling outbox and arrive stale, just
   * before the one the "online" event makes — two restarts where one does.
   */
  networkChanged() {
    if (this.ended || navigator.onLine === false) return;
    // A new signaling connection first: the old one may be tied to an
    // address that is gone, and would swallow the restart's offer.
    this.sig.renew();
    for (const r of this.remotes.values()) {
      r.iceRestartAt = Date.now();
      this.restartIce(r);
    }
  }

  /** Joins the room and calls everyone already there. */
  async join() {
    const sig = this.sig;
    const onNet = () => this.networkChanged();
    window.addEventListener('online', onNet);
    // @ts-ignore navigator.connection is not in every browser (or in TypeScript's DOM types)
    navigator.connection?.addEventListener?.('change', onNet);
    this.stopNetworkWatch = () => {
      window.removeEventListener('online', onNet);
      // @ts-ignore
      navigator.connection?.removeEventListener?.('change', onNet);
    };
    sig.on('peer-joined', (m) => {
      if (!m.peer) return;
      this.names.set(m.peer.id, m.peer.name);
      this.events.onNotice?.(`${m.peer.name} is joining the call…`);
    });
    sig.on('peer-left', (m) => this.peerLeft(m.id || '', m.reason || 'left'));
    sig.on('roster', (m) => { if (!this.waiting) this.keys.onRoster(m.roster); });
    sig.on('knock', (m) => { if (m.peer) this.consult?.onKnock({ id: m.peer.id, name: m.peer.name, payload: m.payload }); });
    sig.on('knock-left', (m) => this.consult?.onKnockLeft(m.id || ''));
    sig.on('host', (m) => { if (this.waiting) this.events.onWaiting?.({ title: this.title, hostPresent: !!m.hostPresent }); });
    sig.on('welcome', (m) => {
      this.admitted(/** @type {Welcome} */ (/** @type {unknown} */ (m))).catch((e) => {
        console.warn('admission', e);
        this.events.onNotice?.('Could not enter the consultation. Please reload the page.');
      });
    });
    sig.on('e2ee', (m) => { if (m.from) this.keys.onMessage(m.from, m.payload); });
    sig.on('ice-servers', (m) => this.useICEServers(m.iceServers || []));
    sig.on('offer', (m) => this.afterKeys(() => this.onDescription(m, 'offer')));
    sig.on('answer', (m) => this.afterKeys(() => this.onDescription(m, 'answer')));
    sig.on('candidate', (m) => this.afterKeys(() => this.onCandidate(m)));
    sig.on('restart-ice', (m) => this.onRestartRequest(m));
    sig.on('error', (m) => {
      if (m.code === 'unknown-peer') return; // a peer left while we were talking to it
      this.events.onNotice?.(m.message || 'The server reported an error.');
    });
    sig.onclose = (e) => { if (!this.ended) this.events.onFatal?.(e); };
    sig.onreconnecting = (n) => {
      if (this.ended) return;
      this.reconnecting = true;
      this.events.onReconnecting?.(n);
      this.reportSecurity();
    };
    sig.onresumed = (m) => {
      this.reconnecting = false;
      this.reportSecurity();
      this.resumed(m).catch((e) => console.warn('resume', e));
    };

    const first = await sig.join(this.room, this.name, await joinToken(this.secret));
    this.myId = first.id;
    if (first.type === 'waiting') {
      // A consultation's waiting room: our hello goes (only) to the host as
      // a knock; the welcome comes when the host lets us in.
      this.role = 'guest';
      this.waiting = true;
      this.title = first.title || '';
      if (!this.consult) throw new SignalingError('not-a-consultation', 'This link is not a complete consultation link. Ask the person who invited you for the whole link.');
      if (this.consult.record) {
        throw new SignalingError('sign-in', 'You created this consultation in this browser. Sign in to host it.');
      }
      await this.keys.start(this.myId);
      this.events.onWaiting?.({ title: this.title, hostPresent: !!first.hostPresent });
      return first;
    }
    const welcome = /** @type {Welcome} */ (first);
    if (welcome.role === 'host') {
      if (!this.consult?.record) {
        throw new SignalingError('no-host-key', 'This consultation was made in another browser (or its record was cleared here). Open it from the browser where you created it.');
      }
      // One tab hosts at a time: two would sign two different lists.
      const locked = await this.holdHostLock();
      if (!locked) throw new SignalingError('host-elsewhere', 'This consultation is already open in another tab or window of this browser. Use that one, or close it and reload this page.');
    } else if (this.consult) {
      throw new SignalingError('not-a-consultation', 'This is not a consultation link. Ask the person who invited you for the right link.');
    }
    await this.enterCall(welcome);
    return welcome;
  }

  /**
   * Takes this browser's lock on hosting the consultation, held until the
   * page leaves. False if another tab holds it.
   * @returns {Promise<boolean>}
   */
  holdHostLock() {
    if (!navigator.locks) return Promise.resolve(true);
    return new Promise((resolve) => {
      navigator.locks.request('parley-host/' + this.room, { ifAvailable: true }, (lock) => {
        if (!lock) {
          resolve(false);
          return undefined;
        }
        resolve(true);
        return new Promise((release) => { this.releaseHostLock = () => release(undefined); });
      }).catch(() => resolve(true));
    });
  }

  /**
   * Enters the call after a welcome (an open room, the host, or an admitted guest).
   * @param {Welcome} welcome
   */
  async enterCall(welcome) {
    this.role = welcome.role || '';
    this.title = welcome.title || this.title;
    if (welcome.maxFileBytes) this.maxFileBytes = welcome.maxFileBytes;
    this.iceServers = welcome.iceServers || [];
    this.scheduleICERefresh();
    // The newcomer makes the offers, once each peer's key is confirmed
    // (connectConfirmed): adding our tracks fires negotiationneeded.
    for (const p of welcome.peers || []) {
      this.names.set(p.id, p.name);
      this.toCall.add(p.id);
    }
    if (!this.keys.myId) await this.keys.start(this.myId);
    if (this.role === 'host' && this.consult) {
      await this.consult.hostStart(welcome.roster, new Set((welcome.peers || []).map((p) => p.id)));
      for (const k of welcome.waiting || []) await this.consult.onKnock(k);
    }
    this.connectConfirmed();
    this.consultChanged();
  }

  /**
   * Someone left (the server's peer-left, or gone from a resumed welcome).
   * @param {string} id @param {string} reason
   */
  peerLeft(id, reason) {
    const name = this.names.get(id) || this.remotes.get(id)?.name;
    if (name) this.departedNames.set(id, name);
    // Forget the name: if this id ever comes back it is a replay, and a
    // key holder under it shows as an unseen participant.
    this.names.delete(id);
    this.held.delete(id);
    this.toCall.delete(id);
    this.keys.peerLeft(id, name !== undefined);
    this.keyProblems.delete(id);
    this.undecryptable.delete(id);
    this.removeRemote(id, reason);
    this.consult?.onLeft(id);
    this.consultChanged();
  }

  /**
   * Back in after a reconnect, in our old place (no leave and join for the
   * others): fresh TURN credentials, anyone who left meanwhile, our keys
   * asked for again, and an ICE restart where the media path may be gone —
   * always with the relay (its allocations die with a restarted server),
   * else only on connections that are not up.
   * @param {Message} m
   */
  async resumed(m) {
    if (this.ended) return;
    if (m.type === 'waiting') {
      this.events.onResumed?.();
      return;
    }
    const w = /** @type {Welcome} */ (/** @type {unknown} */ (m));
    if (this.waiting) {
      // Let in while we were away.
      await this.admitted(w);
      this.events.onResumed?.();
      return;
    }
    if (w.roster) this.keys.onRoster(w.roster);
    this.useICEServers(w.iceServers || []);
    const present = new Set((w.peers || []).map((p) => p.id));
    for (const p of w.peers || []) if (!this.names.has(p.id)) this.names.set(p.id, p.name);
    for (const id of [...this.remotes.keys(), ...this.names.keys()]) {
      if (!present.has(id)) this.peerLeft(id, 'left');
    }
    await this.keys.resync();
    for (const r of this.remotes.values()) {
      if (!this.relay && r.pc.connectionState === 'connected') continue;
      r.iceRestartAt = Date.now();
      this.restartIce(r);
    }
    this.events.onResumed?.();
  }

  /**
   * An ICE restart (a new media path, e.g. after a network change or with
   * fresh relay credentials). Once a connection's first offer is answered,
   * only its impolite side makes offers: the polite side asks for the
   * restart with restart-ice (docs/protocol.md). Offers then never cross,
   * and the polite side never rolls its own offer back: after such a
   * rollback Chromium (156) recreates the video receive stream without its
   * encoded transform, and the decoder gets ciphertext (checkTransforms).
   * @param {Remote} r
   */
  restartIce(r) {
    if (r.polite && r.pc.currentRemoteDescription) {
      this.sig.send({ type: 'restart-ice', to: r.id });
      return;
    }
    try {
      r.pc.restartIce();
    } catch (e) {
      console.warn('ICE restart', e);
    }
  }

  /**
   * The polite side of a connection asks for an ICE restart; a restart of
   * ours in the last RESTART_REQUEST_SKIP_MS serves it already.
   * @param {Message} m
   */
  onRestartRequest(m) {
    const r = this.remotes.get(m.from || '');
    if (!r || r.polite || Date.now() - r.iceRestartAt < RESTART_REQUEST_SKIP_MS) return;
    r.iceRestartAt = Date.now();
    this.restartIce(r);
  }

  /**
   * The host let us in: the roster that names us, our hello again (the
   * others take it now that the roster lists us), and the call.
   * @param {Welcome} welcome
   */
  async admitted(welcome) {
    if (!this.waiting) return;
    this.waiting = false;
    await this.keys.onRoster(welcome.roster);
    await this.enterCall(welcome);
    await this.keys.rehello();
    this.consult?.admitted();
    this.events.onAdmitted?.();
  }

  /**
   * @param {string} id
   * @param {string} name
   * @param {boolean} withTracks add our tracks now (we offer)
   */
  addRemote(id, name, withTracks) {
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.relay ? 'relay' : 'all',
      bundlePolicy: 'max-bundle',
      // @ts-ignore Chromium's switch for createEncodedStreams
      encodedInsertableStreams: !useScriptTransform,
    });
    /** @type {Remote} */
    const r = {
      id, name, pc, stream: new MediaStream(), polite: this.myId > id,
      makingOffer: false, ignoreOffer: false, pendingCandidates: [], state: 'connecting', restartTimer: 0, badSeconds: 0,
      createdAt: Date.now(), everConnected: false, downSince: 0, upSince: 0, iceRestartAt: 0,
    };
    this.remotes.set(id, r);
    this.openData(r);

    pc.ontrack = (ev) => {
      if (!r.stream.getTracks().includes(ev.track)) r.stream.addTrack(ev.track);
      this.events.onRemoteUpdated?.(r);
    };
    pc.onicecandidate = (ev) => {
      this.sig.send({ type: 'candidate', to: id, candidate: ev.candidate ? ev.candidate.toJSON() : null });
    };
    pc.onnegotiationneeded = async () => {
      try {
        r.makingOffer = true;
        const offer = await pc.createOffer();
        if (pc.signalingState !== 'stable') return; // an offer arrived meanwhile
        await pc.setLocalDescription({ type: 'offer', sdp: localSDP(offer.sdp || '') });
        const d = pc.localDescription;
        if (d) this.sig.send({ type: 'offer', to: id, sdp: d.sdp });
      } catch (e) {
        console.warn('offer failed', e);
      } finally {
        r.makingOffer = false;
      }
    };
    pc.onconnectionstatechange = () => {
      const was = r.state;
      r.state = pc.connectionState;
      // Back after an outage or an ICE restart: the frames lost meanwhile
      // leave each decoder waiting for a key frame, which Chromium asks for
      // by itself only after about 3 s. Ask now, both ways.
      if (pc.connectionState === 'connected' && was !== 'connected' && r.upOnce) {
        this.worker.postMessage({ op: 'key-frame', peer: r.id });
      }
      if (pc.connectionState === 'connected') r.upOnce = true;
      if (pc.connectionState === 'failed' && !r.polite && Date.now() - r.iceRestartAt >= 5000) {
        r.iceRestartAt = Date.now();
        this.restartIce(r);
      }
      this.events.onRemoteUpdated?.(r);
    };
    if (withTracks) this.addLocalTracks(r);
    this.events.onRemoteAdded?.(r);
    return r;
  }

  /**
   * Adds our tracks: audio, then video (or a receive-only video
   * transceiver when we send no video, so the m-lines keep one order).
   * @param {Remote} r
   */
  addLocalTracks(r) {
    const pc = r.pc;
    for (const kind of ['audio', 'video']) {
      const track = this.stream.getTracks().find((t) => t.kind === kind);
      if (track) {
        // Already sending it (a renegotiation, an ICE restart): nothing to do.
        if (pc.getSenders().some((x) => x.track === track)) continue;
        // addTrack reuses a transceiver the remote offer created, if any.
        pc.addTrack(track, this.stream);
      } else if (!pc.getTransceivers().some((t) => t.receiver.track.kind === kind)) {
        pc.addTransceiver(kind, { direction: 'recvonly' });
      }
    }
    // Right after the transceivers exist, before any frame flows.
    this.transformAll(r);
  }

  /**
   * @param {Message} m
   * @param {'offer'|'answer'} type
   */
  async onDescription(m, type) {
    const from = m.from || '';
    if (this.keys.departed.has(from)) return;
    let r = this.remotes.get(from);
    if (!r) {
      if (type !== 'offer') return;
      if (!this.mayConnect(from)) {
        // Not confirmed yet: no connection, no answer, no candidates.
        this.hold(m);
        return;
      }
      r = this.addRemote(from, this.nameOf(from), false);
    }
    const pc = r.pc;
    try {
      // An offer while ours is under way: ignored, on both sides. Perfect
      // negotiation would have the polite side roll its own offer back,
      // but after a rollback Chromium (156) recreates the video receive
      // stream without its encoded transform (docs/security.md §3.7). With
      // an honest server offers never cross (restartIce); a server that
      // makes them cross stalls this connection, no more.
      const collision = type === 'offer' && (r.makingOffer || pc.signalingState !== 'stable');
      r.ignoreOffer = collision;
      if (r.ignoreOffer) {
        console.warn(`ignored an offer from ${from} that crossed ours`);
        return;
      }
      // The remote's Opus parameters tell our encoder how to send: ask it
      // for constant bitrate whatever the other side asked for.
      await pc.setRemoteDescription({ type, sdp: remoteSDP(m.sdp || '', isFirefox) });
      this.transformAll(r);
      for (const c of r.pendingCandidates.splice(0)) await pc.addIceCandidate(c).catch(() => {});
      if (type === 'offer') {
        this.addLocalTracks(r);
        const answer = await pc.createAnswer();
        await pc.setLocalDescription({ type: 'answer', sdp: localSDP(answer.sdp || '') });
        const d = pc.localDescription;
        if (d) this.sig.send({ type: 'answer', to: from, sdp: d.sdp });
      }
    } catch (e) {
      console.warn('negotiation failed', e);
      this.events.onNotice?.(`Could not set up the connection with ${r.name}.`);
    }
  }

  /** @param {Message} m */
  async onCandidate(m) {
    if (this.keys.departed.has(m.from || '')) return;
    const r = this.remotes.get(m.from || '');
    if (!r) {
      this.hold(m);
      return;
    }
    const c = m.candidate || { candidate: '' };
    if (!r.pc.remoteDescription) {
      r.pendingCandidates.push(c);
      return;
    }
    try {
      await r.pc.addIceCandidate(c);
    } catch (e) {
      if (!r.ignoreOffer) console.warn('bad candidate', e);
    }
  }

  /** @param {string} id */
  nameOf(id) {
    return this.names.get(id) || 'Guest';
  }

  /**
   * @param {string} id
   * @param {string} reason
   */
  removeRemote(id, reason) {
    const r = this.remotes.get(id);
    if (!r) return;
    this.remotes.delete(id);
    this.bypassed.delete(`send ${id}`);
    this.bypassed.delete(`recv ${id}`);
    r.data?.cutOff(reason === 'removed' ? 'they were removed from the call' : 'they left the call');
    r.pc.close();
    this.events.onRemoteRemoved?.(r, reason);
  }

  /**
   * Replaces our outgoing track of one kind on every connection (device
   * switch, camera on/off). A null track sends nothing.
   * @param {'audio'|'video'} kind
   * @param {MediaStreamTrack|null} track
   */
  async replaceTrack(kind, track) {
    for (const old of kind === 'audio' ? this.stream.getAudioTracks() : this.stream.getVideoTracks()) {
      if (old !== track) {
        this.stream.removeTrack(old);
        old.stop();
      }
    }
    if (track) this.stream.addTrack(track);
    const jobs = [];
    for (const r of this.remotes.values()) {
      for (const t of r.pc.getTransceivers()) {
        if (t.receiver.track.kind === kind && t.sender) jobs.push(t.sender.replaceTrack(track));
      }
    }
    await Promise.all(jobs);
  }

  /** Hangs up: tells the others and closes every connection. */
  leave() {
    this.ended = true;
    this.stopNetworkWatch?.();
    this.consult?.stop();
    this.releaseHostLock();
    clearInterval(this.statsTimer);
    clearTimeout(this.iceTimer);
    this.keys.stop();
    this.sig.leave();
    for (const id of [...this.remotes.keys()]) this.removeRemote(id, 'hangup');
    for (const t of this.stream.getTracks()) t.stop();
    this.worker.terminate();
  }
}
