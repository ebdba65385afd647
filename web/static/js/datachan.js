// @ts-check
// Chat, files and the consultation's freshness messages on each peer
// connection's data channel, sealed end to end with the pair's K_data
// (e2ee/channel.js, docs/security.md §9.5). The signaling server never
// carries any of it; the TURN relay, if used, carries DTLS it cannot read.
//
// Plaintext = u8(type) || body:
//   1 chat        UTF-8 JSON {"text"} (at most MAX_CHAT characters)
//   2 file offer  UTF-8 JSON {"id","name","size","mime"}   (id: b64url of 16 random bytes)
//   3 file chunk  id(16) || u64(offset) || bytes (at most CHUNK)
//   4 file end    id(16) || SHA-256(file)
//   5 cancel      id(16) || UTF-8 reason
//   6 accept      id(16)                      the receiver's person said yes
//   7 ping        u32(seq) || u64(t_ms)       guest → host, every 2 s (§9.4)
//   8 pong        u32(seq) || SHA-256(signed roster) || u64(t_echo)
//   9 roster      UTF-8 JSON roster            host → guest

import { sealData, openData, ChannelError } from '../e2ee/channel.js';
import { b64url, unb64url } from '../e2ee/keys.js';

export const T_CHAT = 1, T_OFFER = 2, T_CHUNK = 3, T_END = 4, T_CANCEL = 5, T_ACCEPT = 6, T_PING = 7, T_PONG = 8, T_ROSTER = 9;
/** Bytes of file per chunk message. */
export const CHUNK = 64 * 1024;
/** Longest chat message, in characters. */
export const MAX_CHAT = 4000;
/** Transfers one peer may have going at once, each way. */
export const MAX_TRANSFERS = 4;

const te = new TextEncoder();
const td = new TextDecoder('utf-8', { fatal: true });

/** @param {number} t @param {...Uint8Array} parts */
function msg(t, ...parts) {
  const out = new Uint8Array(1 + parts.reduce((n, b) => n + b.length, 0));
  out[0] = t;
  let o = 1;
  for (const b of parts) { out.set(b, o); o += b.length; }
  return out;
}
/** @param {bigint|number} n */
export function u64(n) { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt(n)); return b; }
/** @param {number} n */
export function u32(n) { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, n); return b; }
/** @param {Uint8Array} b @param {number} o */
const getU64 = (b, o) => new DataView(b.buffer, b.byteOffset + o, 8).getBigUint64(0);
/** @param {Uint8Array} b @param {number} o */
const getU32 = (b, o) => new DataView(b.buffer, b.byteOffset + o, 4).getUint32(0);

/**
 * A file name as it may be shown and saved: no control or bidirectional
 * characters, no path separators, at most 255 bytes; never empty.
 * @param {unknown} name
 */
export function cleanFileName(name) {
  let s = String(name ?? '').replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069/\\]/g, '').trim();
  while (te.encode(s).length > 255) s = s.slice(0, -1);
  return s || 'file';
}

/** @param {number} n */
export function sizeText(n) {
  if (n < 1024) return `${n} bytes`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(n < 10 * 1024 * 1024 ? 1 : 0)} MB`;
}

/**
 * @typedef {{id: string, dir: 'out'|'in', peer: string, name: string, size: number, mime: string, done: number,
 *   state: 'offered'|'waiting'|'sending'|'receiving'|'done'|'failed'|'declined', error?: string,
 *   file?: Blob, parts?: Uint8Array[], blob?: Blob}} Transfer
 * @typedef {{
 *   room: string, myId: () => string, member: (pid: string) => import('../e2ee/channel.js').DataKeys|undefined,
 *   mayShare: (pid: string) => boolean, maxFileBytes: () => number,
 *   onChat: (pid: string, text: string, at: number) => void,
 *   onTransfer: (t: Transfer) => void,
 *   onPing?: (pid: string, seq: number, t: bigint) => void,
 *   onPong?: (pid: string, seq: number, hash: Uint8Array, tEcho: bigint) => void,
 *   onRoster?: (pid: string, json: any) => void,
 *   onProblem: (pid: string, text: string) => void,
 * }} DataHooks
 */

/** One peer's data channel: sealing, order, chat, files. */
export class PeerData {
  /**
   * @param {string} pid @param {RTCDataChannel} dc @param {DataHooks} hooks
   */
  constructor(pid, dc, hooks) {
    this.pid = pid;
    this.dc = dc;
    this.hooks = hooks;
    dc.binaryType = 'arraybuffer';
    dc.bufferedAmountLowThreshold = 1 << 20;
    this.first = true;
    /** @type {Promise<void>} */
    this.rx = Promise.resolve();
    /** @type {Promise<void>} */
    this.tx = Promise.resolve();
    /** @type {Map<string, Transfer>} */
    this.transfers = new Map();
    this.closed = false;
    dc.onopen = () => { this.first = true; };
    dc.onmessage = (ev) => {
      const wire = new Uint8Array(/** @type {ArrayBuffer} */ (ev.data));
      this.rx = this.rx.then(() => this.receive(wire)).catch((e) => console.warn('data channel', e));
    };
    dc.onclose = () => this.cutOff('the connection dropped');
  }

  get open() { return this.dc.readyState === 'open'; }

  /**
   * Seals and sends, in counter order. Resolves once handed to the channel.
   * @param {Uint8Array} plaintext
   */
  send(plaintext) {
    const run = this.tx.then(async () => {
      const m = this.hooks.member(this.pid);
      if (!m || !this.open) throw new ChannelError('not connected');
      const wire = await sealData(this.hooks.room, this.hooks.myId(), this.pid, m, plaintext);
      if (this.dc.bufferedAmount > 4 << 20) {
        await new Promise((resolve) => {
          const done = () => { this.dc.removeEventListener('bufferedamountlow', done); this.dc.removeEventListener('close', done); resolve(undefined); };
          this.dc.addEventListener('bufferedamountlow', done);
          this.dc.addEventListener('close', done);
        });
      }
      if (!this.open) throw new ChannelError('not connected');
      this.dc.send(/** @type {ArrayBuffer} */ (wire.buffer));
    });
    this.tx = run.catch(() => {});
    return run;
  }

  /** @param {string} text */
  chat(text) {
    return this.send(msg(T_CHAT, te.encode(JSON.stringify({ text: text.slice(0, MAX_CHAT) }))));
  }

  /** @param {number} seq @param {bigint} t */
  ping(seq, t) { return this.send(msg(T_PING, u32(seq), u64(t))); }
  /** @param {number} seq @param {Uint8Array} hash @param {bigint} t */
  pong(seq, hash, t) { return this.send(msg(T_PONG, u32(seq), hash, u64(t))); }
  /** @param {object} json */
  roster(json) { return this.send(msg(T_ROSTER, te.encode(JSON.stringify(json)))); }

  /**
   * Offers a file; it is sent once the other person accepts.
   * @param {File} file
   */
  offerFile(file) {
    const outgoing = [...this.transfers.values()].filter((t) => t.dir === 'out' && ['offered', 'sending'].includes(t.state));
    /** @type {Transfer} */
    const t = {
      id: b64url(crypto.getRandomValues(new Uint8Array(16))), dir: 'out', peer: this.pid, name: cleanFileName(file.name),
      size: file.size, mime: String(file.type || 'application/octet-stream').slice(0, 100), done: 0, state: 'offered', file,
    };
    if (outgoing.length >= MAX_TRANSFERS) {
      t.state = 'failed';
      t.error = `You are already sending ${MAX_TRANSFERS} files to this person. Wait until one has finished.`;
      this.hooks.onTransfer(t);
      return t;
    }
    if (file.size > this.hooks.maxFileBytes()) {
      t.state = 'failed';
      t.error = `"${t.name}" is ${sizeText(file.size)}, more than the ${sizeText(this.hooks.maxFileBytes())} this server allows. Send a smaller file.`;
      this.hooks.onTransfer(t);
      return t;
    }
    this.transfers.set(t.id, t);
    this.send(msg(T_OFFER, te.encode(JSON.stringify({ id: t.id, name: t.name, size: t.size, mime: t.mime })))).catch(() => this.fail(t, 'The file could not be offered: the connection dropped.'));
    this.hooks.onTransfer(t);
    return t;
  }

  /** The person agreed to receive an offered file. @param {string} id */
  accept(id) {
    const t = this.transfers.get(id);
    if (!t || t.dir !== 'in' || t.state !== 'offered') return;
    t.state = 'receiving';
    t.parts = [];
    this.send(msg(T_ACCEPT, unb64url(id))).catch(() => this.fail(t, 'The file could not be accepted: the connection dropped.'));
    this.hooks.onTransfer(t);
  }

  /** Declines or stops a transfer. @param {string} id @param {string} [why] */
  cancel(id, why = 'cancelled') {
    const t = this.transfers.get(id);
    if (!t || t.state === 'done' || t.state === 'failed' || t.state === 'declined') return;
    this.send(msg(T_CANCEL, unb64url(id), te.encode(why))).catch(() => {});
    if (t.dir === 'in' && t.state === 'offered') {
      t.state = 'declined';
      delete t.parts;
      this.hooks.onTransfer(t);
    } else {
      this.fail(t, t.dir === 'in' ? 'You stopped this transfer.' : 'You stopped sending this file.');
    }
  }

  /** @param {Transfer} t @param {string} text */
  fail(t, text) {
    if (t.state === 'done' || t.state === 'failed') return;
    t.state = 'failed';
    t.error = text;
    delete t.parts;
    this.hooks.onTransfer(t);
  }

  /** The channel closed or the peer went: every unfinished transfer is cut off. @param {string} why */
  cutOff(why) {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.transfers.values()) {
      if (['offered', 'sending', 'receiving'].includes(t.state)) {
        this.fail(t, `The transfer of "${t.name}" was cut off (${why}). ${t.dir === 'in' ? 'Ask them to send it again.' : 'Send it again once they are back.'}`);
      }
    }
  }

  /** @param {Transfer} t */
  async sendFile(t) {
    const file = /** @type {Blob} */ (t.file);
    t.state = 'sending';
    this.hooks.onTransfer(t);
    const id = unb64url(t.id);
    let lastShown = 0;
    try {
      for (let off = 0; off < t.size; off += CHUNK) {
        if (t.state !== 'sending') return;
        const part = new Uint8Array(await file.slice(off, off + CHUNK).arrayBuffer());
        await this.send(msg(T_CHUNK, id, u64(off), part));
        t.done = off + part.length;
        if (t.done - lastShown >= t.size / 100 || t.done === t.size) { lastShown = t.done; this.hooks.onTransfer(t); }
      }
      const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', await file.arrayBuffer()));
      await this.send(msg(T_END, id, hash));
      t.state = 'done';
      delete t.file;
      this.hooks.onTransfer(t);
    } catch {
      this.fail(t, `Sending "${t.name}" was cut off (the connection dropped). Send it again once they are back.`);
    }
  }

  /** @param {Uint8Array} wire */
  async receive(wire) {
    const m = this.hooks.member(this.pid);
    if (!m) return;
    let pt;
    try {
      const r = await openData(this.hooks.room, this.pid, this.hooks.myId(), m, wire, this.first);
      this.first = false;
      pt = r.plaintext;
      if (r.gap) this.hooks.onProblem(this.pid, 'some of their messages were lost on the way');
    } catch (e) {
      this.hooks.onProblem(this.pid, `sent a chat or file message that could not be opened (${e instanceof Error ? e.message : e}); it was dropped`);
      return;
    }
    if (pt.length < 1) return;
    const type = pt[0], body = pt.subarray(1);
    try {
      switch (type) {
        case T_PING: if (body.length === 12) this.hooks.onPing?.(this.pid, getU32(body, 0), getU64(body, 4)); return;
        case T_PONG: if (body.length === 44) this.hooks.onPong?.(this.pid, getU32(body, 0), body.slice(4, 36), getU64(body, 36)); return;
        case T_ROSTER: this.hooks.onRoster?.(this.pid, JSON.parse(td.decode(body))); return;
      }
      // Chat and files only from someone we share with (a consultation's
      // roster lists them and we are fresh).
      if (!this.hooks.mayShare(this.pid)) return;
      switch (type) {
        case T_CHAT: {
          const text = String(JSON.parse(td.decode(body))?.text ?? '').slice(0, MAX_CHAT);
          if (text) this.hooks.onChat(this.pid, text, Date.now());
          return;
        }
        case T_OFFER: return this.onOffer(JSON.parse(td.decode(body)));
        case T_ACCEPT: {
          const t = this.transfers.get(b64url(body.subarray(0, 16)));
          if (t && t.dir === 'out' && t.state === 'offered') this.sendFile(t);
          return;
        }
        case T_CHUNK: return this.onChunk(b64url(body.subarray(0, 16)), getU64(body, 16), body.subarray(24));
        case T_END: return this.onEnd(b64url(body.subarray(0, 16)), body.subarray(16, 48));
        case T_CANCEL: {
          const t = this.transfers.get(b64url(body.subarray(0, 16)));
          if (!t) return;
          const why = td.decode(body.subarray(16)).slice(0, 40);
          if (t.dir === 'out' && t.state === 'offered' && why === 'declined') {
            t.state = 'declined';
            this.hooks.onTransfer(t);
          } else if (why === 'too large') {
            this.fail(t, `"${t.name}" is larger than the other side accepts.`);
          } else {
            this.fail(t, t.dir === 'out' ? `They stopped receiving "${t.name}".` : `They stopped sending "${t.name}".`);
          }
          return;
        }
      }
    } catch {
      this.hooks.onProblem(this.pid, 'sent a malformed chat or file message; it was dropped');
    }
  }

  /** @param {any} o */
  onOffer(o) {
    const id = typeof o?.id === 'string' ? o.id : '';
    if (unb64url(id).length !== 16 || this.transfers.has(id)) return;
    const size = Number(o.size);
    /** @type {Transfer} */
    const t = { id, dir: 'in', peer: this.pid, name: cleanFileName(o.name), size, mime: String(o.mime || '').slice(0, 100), done: 0, state: 'offered' };
    const incoming = [...this.transfers.values()].filter((x) => x.dir === 'in' && ['offered', 'receiving'].includes(x.state));
    if (!Number.isSafeInteger(size) || size < 0) return;
    this.transfers.set(id, t);
    if (size > this.hooks.maxFileBytes()) {
      this.send(msg(T_CANCEL, unb64url(id), te.encode('too large'))).catch(() => {});
      this.fail(t, `They tried to send "${t.name}" (${sizeText(size)}), more than the ${sizeText(this.hooks.maxFileBytes())} this server allows. Ask them to send a smaller file.`);
      return;
    }
    if (incoming.length >= MAX_TRANSFERS) {
      this.send(msg(T_CANCEL, unb64url(id), te.encode('busy'))).catch(() => {});
      this.fail(t, `They tried to send "${t.name}" while ${MAX_TRANSFERS} files were already on the way.`);
      return;
    }
    this.hooks.onTransfer(t);
  }

  /** @param {string} id @param {bigint} offset @param {Uint8Array} bytes */
  onChunk(id, offset, bytes) {
    const t = this.transfers.get(id);
    if (!t || t.dir !== 'in' || t.state !== 'receiving' || !t.parts) return;
    if (offset !== BigInt(t.done) || t.done + bytes.length > t.size) {
      this.send(msg(T_CANCEL, unb64url(id), te.encode('broken'))).catch(() => {});
      this.fail(t, `"${t.name}" did not arrive intact (its pieces came out of order). Ask them to send it again.`);
      return;
    }
    t.parts.push(bytes.slice());
    const before = t.done;
    t.done += bytes.length;
    if (Math.floor(t.done * 100 / Math.max(t.size, 1)) !== Math.floor(before * 100 / Math.max(t.size, 1))) this.hooks.onTransfer(t);
  }

  /** @param {string} id @param {Uint8Array} hash */
  async onEnd(id, hash) {
    const t = this.transfers.get(id);
    if (!t || t.dir !== 'in' || t.state !== 'receiving' || !t.parts) return;
    // Delivered as bytes to save, never as a page or an image to render.
    const blob = new Blob(/** @type {BlobPart[]} */ (t.parts), { type: 'application/octet-stream' });
    delete t.parts;
    const got = new Uint8Array(await crypto.subtle.digest('SHA-256', await blob.arrayBuffer()));
    let diff = got.length ^ hash.length;
    for (let i = 0; i < Math.min(got.length, hash.length); i++) diff |= got[i] ^ hash[i];
    if (t.done !== t.size || diff !== 0) {
      this.fail(t, `"${t.name}" did not arrive intact (the check failed). Ask them to send it again.`);
      return;
    }
    t.blob = blob;
    t.state = 'done';
    this.hooks.onTransfer(t);
  }
}
