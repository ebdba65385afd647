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
 *   role?: string, peers?: Peer[], maxPeers?: number, version?: number}} Message
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

export class SignalingClient {
  /** @param {string} url */
  constructor(url) {
    this.url = url;
    /** @type {WebSocket|null} */
    this.ws = null;
    /** @type {Map<string, Handler>} */
    this.handlers = new Map();
    /** @type {(e: SignalingError) => void} */
    this.onclose = () => {};
    this.closedByUs = false;
    this.joined = false;
    /** The last error the server sent: the words to show when it closes right after. */
    this.lastError = '';
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
   * unreachable, ...).
   * @param {string} room
   * @param {string} name
   * @param {string} token the join token, b64url (docs/security.md §2.5)
   * @returns {Promise<Welcome|Waiting>}
   */
  join(room, name, token) {
    return new Promise((resolve, reject) => {
      let settled = false;
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (e) {
        reject(new SignalingError('unreachable', 'Cannot reach the Parley server.'));
        return;
      }
      this.ws = ws;
      ws.onopen = () => {
        ws.send(JSON.stringify({ type: 'join', version: PROTOCOL_VERSION, room, name, token }));
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
        if (!settled) {
          if (m.type === 'welcome' || m.type === 'waiting') {
            settled = true;
            this.joined = true;
            resolve(/** @type {Welcome} */ (/** @type {unknown} */ (m)));
          } else if (m.type === 'error') {
            settled = true;
            reject(new SignalingError(m.code || 'error', m.message || 'The server refused to join.'));
          }
          return;
        }
        const h = this.handlers.get(m.type);
        if (h) h(m);
      };
      ws.onerror = () => {};
      ws.onclose = (ev) => {
        this.ws = null;
        if (!settled) {
          settled = true;
          reject(new SignalingError('unreachable', 'Cannot reach the Parley server. Check your internet connection and try again.'));
          return;
        }
        // A refused join already rejected with the server's own words.
        if (this.closedByUs || !this.joined) return;
        let text = 'The connection to the Parley server was lost.';
        // Denied, removed, ended, locked, replaced: the server said why just before.
        if (ev.code >= 4004 && ev.code <= 4009 && this.lastError) text = this.lastError;
        if (ev.code === 1001) text = 'The Parley server is restarting.';
        if (ev.code === 1008) text = 'The server closed the connection because this page sent too many messages.';
        if (ev.code === 1009) text = 'The server closed the connection because a message was too large.';
        if (ev.code === 4000) text = 'Your connection was too slow to keep up with the call.';
        if (ev.code === 4001) text = 'The connection to the Parley server stopped answering.';
        this.onclose(new SignalingError(ev.code >= 4004 && ev.code <= 4009 ? `closed-${ev.code}` : 'closed', text));
      };
    });
  }

  /**
   * Sends a message. Returns false if the connection is not open.
   * @param {Message} m
   */
  send(m) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
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
