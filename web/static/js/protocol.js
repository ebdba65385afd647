// @ts-check
// Parley signaling client: the WebSocket protocol of docs/protocol.md, with
// no UI. One SignalingClient per call.

/** The protocol version this page speaks. */
export const PROTOCOL_VERSION = 1;

/**
 * @typedef {{id: string, name: string}} Peer
 * @typedef {{urls: string[], username?: string, credential?: string}} IceServer
 * @typedef {{type: 'welcome', version: number, id: string, peers?: Peer[], iceServers?: IceServer[], maxPeers: number,
 *   role?: 'host'|'guest', title?: string, roster?: any, waiting?: Knock[], locked?: boolean, maxFileBytes?: number}} Welcome
 * @typedef {{type: 'waiting', version: number, id: string, title?: string, hostPresent?: boolean}} Waiting
 * @typedef {{id: string, name: string, payload?: any}} Knock
 * @typedef {{candidate?: string, sdpMid?: string|null, sdpMLineIndex?: number|null, usernameFragment?: string|null}} CandidateInit
 * @typedef {{type: string, from?: string, to?: string, sdp?: string, candidate?: CandidateInit|null,
 *   payload?: unknown, peer?: Peer, id?: string, reason?: string, code?: string, message?: string,
 *   iceServers?: IceServer[], roster?: any, waiting?: Knock[], title?: string, hostPresent?: boolean, locked?: boolean,
 *   role?: string, peers?: Peer[], maxPeers?: number, version?: number, resume?: string, resumed?: boolean}} Message
 */

/** An error from the server (an "error" message) or from the connection. */
export class SignalingError extends Error {
  /**
   * @param {string} code one of the codes in docs/protocol.md, or 'unreachable' / 'closed'
   * @param {string} message plain words for the user
   */
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/**
 * The WebSocket URL for this page's server. Built from location.host only,
 * so the URL fragment (which holds end-to-end keys) is never sent.
 * @param {Location} loc
 */
export function socketURL(loc) {
  return (loc.protocol === 'https:' ? 'wss://' : 'ws://') + loc.host + '/ws';
}

/**
 * @typedef {(m: Message) => void} Handler
 */

/** Reconnecting gives up after this long without getting back in. */
export const RECONNECT_GIVE_UP_MS = 2 * 60 * 1000;
/** Messages kept while reconnecting, sent once back in. */
const MAX_OUTBOX = 256;

/**
 * The delay before reconnect attempt n (0, 1, ...): exponential from
 * 500 ms up to 10 s, with jitter (between half and all of it) so that the
 * pages of a restarted server do not all come back at once.
 * @param {number} n @param {() => number} [random]
 */
export function backoff(n, random = Math.random) {
  const full = Math.min(10000, 500 * 2 ** Math.min(n, 10));
  return Math.round(full / 2 + random() * full / 2);
}

/**
 * Close codes after which reconnecting makes no sense: the server turned
 * us away (4003-4009) or the page misbehaved (1008, 1009).
 * @param {number} code
 */
export function isFinalClose(code) {
  return (code >= 4003 && code <= 4009) || code === 1008 || code === 1009;
}

export class SignalingClient {
  /** @param {string} url */
  constructor(url) {
    this.url = url;
    /** @type {WebSocket|null} */
    this.ws = null;
    /** @type {Map<string, Handler>} */
    this.handlers = new Map();
    /** The connection is gone for good (or turned away). @type {(e: SignalingError) => void} */
    this.onclose = () => {};
    /** Reconnecting after a drop: attempt number (from 1). @type {(attempt: number) => void} */
    this.onreconnecting = () => {};
    /** Back in, in our old place: the server's new welcome (or waiting). @type {(m: Message) => void} */
    this.onresumed = () => {};
    this.closedByUs = false;
    this.joined = false;
    /** The last error the server sent: the words to show when it closes right after. */
    this.lastError = '';
    /** What to resume with: the last token the server gave (kept in memory only). */
    this.resumeToken = '';
    /** @type {{room: string, name: string, token: string}|null} */
    this.joinArgs = null;
    /** @type {Message[]} */
    this.outbox = [];
    this.reconnecting = false;
    /** While reconnecting, between attempts: make the next attempt now. @type {(() => void)|null} */
    this.hurry = null;
  }

  /**
   * Registers the handler for one message type (peer-joined, peer-left,
   * offer, answer, candidate, e2ee, error).
   * @param {string} type
   * @param {Handler} fn
   */
  on(type, fn) { this.handlers.set(type, fn); }

  /**
   * Connects and joins a room. Resolves with the welcome, or in a
   * consultation with "waiting" (the welcome comes later, to the "welcome"
   * handler, when the host lets us in); rejects with a SignalingError
   * (room-not-found, room-full, bad-name, bad-token, link-expired, locked,
   * unreachable, ...). Once in, a dropped connection is reconnected and
   * resumed by itself (onreconnecting, onresumed), or reported (onclose).
   * @param {string} room
   * @param {string} name
   * @param {string} token the join token, b64url (docs/security.md §2.5)
   * @returns {Promise<Welcome|Waiting>}
   */
  join(room, name, token) {
    this.joinArgs = { room, name, token };
    return new Promise((resolve, reject) => {
      this.connect('', (m) => {
        this.joined = true;
        resolve(/** @type {Welcome} */ (/** @type {unknown} */ (m)));
      }, reject);
    });
  }

  /**
   * Opens a WebSocket and sends join (with a resume token when resuming).
   * @param {string} resume
   * @param {(m: Message) => void} onIn the welcome or waiting
   * @param {(e: SignalingError) => void} onRefused no welcome: refused or unreachable
   */
  connect(resume, onIn, onRefused) {
    const args = /** @type {{room: string, name: string, token: string}} */ (this.joinArgs);
    let settled = false;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      onRefused(new SignalingError('unreachable', 'Cannot reach the Parley server.'));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      /** @type {Record<string, unknown>} */
      const join = { type: 'join', version: PROTOCOL_VERSION, room: args.room, name: args.name, token: args.token };
      if (resume) join.resume = resume;
      ws.send(JSON.stringify(join));
    };
    ws.onmessage = (ev) => {
      /** @type {Message} */
      let m;
      try {
        m = JSON.parse(String(ev.data));
      } catch {
        return;
      }
      if (m.type === 'error') this.lastError = m.message || '';
      if ((m.type === 'welcome' || m.type === 'waiting') && typeof m.resume === 'string') this.resumeToken = m.resume;
      if (!settled) {
        if (m.type === 'welcome' || m.type === 'waiting') {
          settled = true;
          onIn(m);
        } else if (m.type === 'error') {
          settled = true;
          onRefused(new SignalingError(m.code || 'error', m.message || 'The server refused to join.'));
        }
        return;
      }
      const h = this.handlers.get(m.type);
      if (h) h(m);
    };
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (this.ws === ws) this.ws = null;
      if (!settled) {
        settled = true;
        onRefused(new SignalingError('unreachable', 'Cannot reach the Parley server. Check your internet connection and try again.'));
        return;
      }
      if (this.closedByUs || !this.joined || this.ws) return;
      if (isFinalClose(ev.code) || !this.resumeToken) {
        let text = 'The connection to the Parley server was lost.';
        // Denied, removed, ended, locked, replaced: the server said why just before.
        if (ev.code >= 4003 && ev.code <= 4009 && this.lastError) text = this.lastError;
        if (ev.code === 1008) text = 'The server closed the connection because this page sent too many messages.';
        if (ev.code === 1009) text = 'The server closed the connection because a message was too large.';
        this.onclose(new SignalingError(ev.code >= 4004 && ev.code <= 4009 ? `closed-${ev.code}` : 'closed', text));
        return;
      }
      this.reconnect();
    };
  }

  /**
   * Comes back after a drop (a network change, a server restart: close
   * 1012), with exponential backoff and jitter, and resumes our place.
   */
  reconnect() {
    if (this.reconnecting) return;
    this.reconnecting = true;
    const started = Date.now();
    let attempt = 0;
    /**
     * The next attempt after ms, or at once through hurry() (a network
     * change: the backoff starts again from its shortest delay, since the
     * network that failed the earlier attempts is gone).
     * @param {number} ms
     */
    const later = (ms) => {
      const timer = setTimeout(() => { this.hurry = null; tryOnce(); }, ms);
      this.hurry = () => { clearTimeout(timer); this.hurry = null; attempt = 0; tryOnce(); };
    };
    const tryOnce = () => {
      if (this.closedByUs) return;
      if (Date.now() - started > RECONNECT_GIVE_UP_MS) {
        this.reconnecting = false;
        this.onclose(new SignalingError('gave-up', 'The connection to the Parley server was lost and could not be restored. Check your internet connection, then rejoin.'));
        return;
      }
      this.onreconnecting(attempt + 1);
      this.connect(this.resumeToken, (m) => {
        this.reconnecting = false;
        this.onresumed(m);
        for (const out of this.outbox.splice(0)) this.send(out);
      }, (e) => {
        if (e.code === 'unreachable') {
          later(backoff(attempt++));
          return;
        }
        // Our place is gone (resume-failed) or the room is (link-expired, ...).
        this.reconnecting = false;
        this.onclose(new SignalingError(e.code === 'resume-failed' ? 'resume-failed' : e.code, e.message));
      });
    };
    later(backoff(attempt++));
  }

  /**
   * This device's network changed. The WebSocket may be tied to an address
   * the device no longer has, and TCP would not tell for minutes: replace
   * it now and resume our place (what is sent meanwhile waits in the
   * outbox, so an ICE restart's offer gets through). The old socket is
   * closed but may still deliver what the server wrote to it before the
   * resume. While already reconnecting, the next attempt is made at once.
   */
  renew() {
    if (!this.joined || this.closedByUs || !this.resumeToken) return;
    if (this.reconnecting) {
      this.hurry?.();
      return;
    }
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      try { ws.close(4000, 'network changed'); } catch { /* already closing */ }
    }
    this.reconnect();
  }

  /**
   * Sends a message. While reconnecting it is kept and sent once back in;
   * returns false if it cannot be sent at all.
   * @param {Message} m
   */
  send(m) {
    if (this.reconnecting || !this.ws || this.ws.readyState !== WebSocket.OPEN) {
      if (this.reconnecting && !this.closedByUs && this.outbox.length < MAX_OUTBOX) {
        this.outbox.push(m);
        return true;
      }
      return false;
    }
    this.ws.send(JSON.stringify(m));
    return true;
  }

  /** Says goodbye and closes. */
  leave() {
    this.closedByUs = true;
    this.send({ type: 'leave' });
    if (this.ws) this.ws.close(1000);
  }
}
