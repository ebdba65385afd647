// A recording, rewriting reverse proxy for Parley's browser tests. It stands
// where a malicious or curious server operator (or anyone on the signaling
// path) would: browsers open the proxy's URL, so the page, its scripts,
// the REST calls and the /ws signaling socket all pass through it.
//
// - Plain HTTP requests are forwarded as they are (Host unchanged, so the
//   server's same-origin checks see the proxy's host, which is the page's
//   origin) and recorded: method, URL, raw headers, body.
// - A WebSocket upgrade on /ws is forwarded over raw TCP; after the
//   handshake a frame-level relay decodes every text message in both
//   directions, records it, and passes it through a hook that may rewrite,
//   drop or multiply it. proxy.send() injects messages on any connection,
//   in either direction.
//
// No dependency beyond Node: the WebSocket framing (RFC 6455) is done here.
// Client-to-server frames are masked, server-to-client frames are not.
// Compression is not negotiated (the proxy strips Sec-WebSocket-Extensions
// from the forwarded upgrade, and Parley does not enable it anyway).
import { createServer, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { randomBytes } from 'node:crypto';

/**
 * @typedef {'c2s'|'s2c'} Direction  c2s: browser → server; s2c: server → browser
 * @typedef {{method: string, url: string, rawHeaders: string[], body: Buffer, upgrade: boolean, status?: number, at: number}} RecordedRequest
 * @typedef {{conn: number, dir: Direction, text: string, json: any, action: 'forwarded'|'rewritten'|'dropped'|'injected', at: number}} RecordedMessage
 * @typedef {{conn: number, dir: Direction, opcode: number, payload: Buffer, at: number}} RecordedControl
 * @typedef {(dir: Direction, conn: number, msg: any) => any[]|undefined|void|Promise<any[]|undefined|void>} Hook
 *   Returns the messages to send on in the same direction on the same
 *   connection (an empty array drops the message); undefined forwards it
 *   unchanged. To send elsewhere (the other direction, another connection)
 *   call proxy.send().
 */

const OP_CONT = 0x0, OP_TEXT = 0x1, OP_BINARY = 0x2, OP_CLOSE = 0x8;

/**
 * Serialises one frame (FIN set). Masked when it goes to the server.
 * @param {number} opcode @param {Buffer} payload @param {boolean} mask
 */
export function encodeFrame(opcode, payload, mask) {
  const n = payload.length;
  let head;
  if (n < 126) {
    head = Buffer.alloc(2);
    head[1] = n;
  } else if (n < 65536) {
    head = Buffer.alloc(4);
    head[1] = 126;
    head.writeUInt16BE(n, 2);
  } else {
    head = Buffer.alloc(10);
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  head[0] = 0x80 | opcode;
  if (!mask) return Buffer.concat([head, payload]);
  head[1] |= 0x80;
  const key = randomBytes(4);
  const body = Buffer.alloc(n);
  for (let i = 0; i < n; i++) body[i] = payload[i] ^ key[i & 3];
  return Buffer.concat([head, key, body]);
}

/**
 * Incremental frame parser: push() bytes, get complete frames (unmasked).
 */
export class FrameReader {
  constructor() {
    /** @type {Buffer} */
    this.buf = Buffer.alloc(0);
  }

  /** @param {Buffer} chunk @returns {{fin: boolean, opcode: number, rsv: number, masked: boolean, payload: Buffer}[]} */
  push(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out = [];
    for (;;) {
      const b = this.buf;
      if (b.length < 2) break;
      const fin = (b[0] & 0x80) !== 0;
      const rsv = (b[0] >> 4) & 0x7;
      const opcode = b[0] & 0x0f;
      const masked = (b[1] & 0x80) !== 0;
      let len = b[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) break;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) break;
        const big = b.readBigUInt64BE(2);
        if (big > 1n << 24n) throw new Error(`websocket frame of ${big} bytes: larger than this proxy handles`);
        len = Number(big);
        off = 10;
      }
      const keyOff = off;
      if (masked) off += 4;
      if (b.length < off + len) break;
      const payload = Buffer.from(b.subarray(off, off + len));
      if (masked) for (let i = 0; i < len; i++) payload[i] ^= b[keyOff + (i & 3)];
      out.push({ fin, opcode, rsv, masked, payload });
      this.buf = b.subarray(off + len);
    }
    return out;
  }
}

/**
 * Starts the proxy on 127.0.0.1 (a free port) in front of `target`
 * (e.g. parley.base, "http://127.0.0.1:PORT").
 * @param {string} target
 * @param {{hook?: Hook}} [opts]
 */
export async function startProxy(target, opts = {}) {
  const t = new URL(target);
  const tHost = t.hostname;
  const tPort = Number(t.port || 80);
  /** @type {RecordedRequest[]} */
  const requests = [];
  /** @type {RecordedMessage[]} */
  const messages = [];
  /** @type {RecordedControl[]} */
  const controls = [];
  /** @type {string[]} anything unexpected the relay saw (fragmentation, binary frames, bad JSON, hook errors) */
  const problems = [];
  /**
   * Open WebSocket connections by id. peerId is learnt from the server's welcome.
   * @type {Map<number, {id: number, peerId: string, toClient: (m: any) => void, toServer: (m: any) => void, client: import('node:net').Socket, server: import('node:net').Socket, closed: boolean}>}
   */
  const conns = new Map();
  /** @type {Set<import('node:net').Socket>} */
  const sockets = new Set();
  let nextConn = 1;
  let hook = opts.hook;

  const server = createServer((req, res) => {
    /** @type {Buffer[]} */
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      /** @type {RecordedRequest} */
      const rec = { method: req.method || '', url: req.url || '', rawHeaders: [...req.rawHeaders], body, upgrade: false, at: Date.now() };
      requests.push(rec);
      const headers = { ...req.headers };
      // One request per upstream connection: no keep-alive state to manage.
      headers.connection = 'close';
      const up = httpRequest({ host: tHost, port: tPort, method: req.method, path: req.url, headers, agent: false }, (ures) => {
        rec.status = ures.statusCode;
        const h = { ...ures.headers };
        delete h.connection;
        res.writeHead(ures.statusCode || 502, h);
        ures.pipe(res);
      });
      up.on('error', (e) => {
        problems.push(`upstream ${req.method} ${req.url}: ${e.message}`);
        if (!res.headersSent) res.writeHead(502);
        res.end();
      });
      up.end(body);
    });
  });

  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  server.on('upgrade', (req, client, head) => {
    const id = nextConn++;
    requests.push({ method: req.method || '', url: req.url || '', rawHeaders: [...req.rawHeaders], body: Buffer.alloc(0), upgrade: true, at: Date.now() });
    const upstream = connect(tPort, tHost);
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    // The upgrade request as the browser sent it, minus extensions.
    const lines = [`${req.method} ${req.url} HTTP/1.1`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      if (/^sec-websocket-extensions$/i.test(req.rawHeaders[i])) continue;
      lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
    }
    upstream.write(lines.join('\r\n') + '\r\n\r\n');
    if (head.length) upstream.write(head);

    const conn = {
      id, peerId: '', client, server: upstream, closed: false,
      /** @param {any} m */
      toClient: (m) => { if (!client.destroyed) client.write(encodeFrame(OP_TEXT, Buffer.from(JSON.stringify(m)), false)); },
      /** @param {any} m */
      toServer: (m) => { if (!upstream.destroyed) upstream.write(encodeFrame(OP_TEXT, Buffer.from(JSON.stringify(m)), true)); },
    };
    conns.set(id, conn);

    const end = () => {
      if (conn.closed) return;
      conn.closed = true;
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);

    // Server → client: first the HTTP response head (verbatim), then frames.
    let handshake = Buffer.alloc(0);
    let upgraded = false;
    const fromServer = new FrameReader();
    const fromClient = new FrameReader();
    /** @type {Buffer[]} client frames that arrive before the server's 101 */
    const early = [];
    // Each direction is a promise chain: messages stay in order even when
    // the hook is async.
    /** @type {Record<Direction, Promise<void>>} */
    const chain = { c2s: Promise.resolve(), s2c: Promise.resolve() };
    /** @type {Record<Direction, {opcode: number, parts: Buffer[]}|null>} */
    const frag = { c2s: null, s2c: null };

    /**
     * @param {Direction} dir
     * @param {{fin: boolean, opcode: number, rsv: number, payload: Buffer}} f
     */
    const onFrame = (dir, f) => {
      const send = dir === 'c2s' ? conn.toServer : conn.toClient;
      const sendRaw = (/** @type {number} */ op, /** @type {Buffer} */ p) => {
        const sock = dir === 'c2s' ? upstream : client;
        if (!sock.destroyed) sock.write(encodeFrame(op, p, dir === 'c2s'));
      };
      if (f.rsv) problems.push(`conn ${id} ${dir}: frame with RSV bits ${f.rsv} (compression?)`);
      if (f.opcode >= 0x8) {
        controls.push({ conn: id, dir, opcode: f.opcode, payload: f.payload, at: Date.now() });
        // Control frames keep their place in the message order.
        chain[dir] = chain[dir].then(() => sendRaw(f.opcode, f.payload));
        if (f.opcode === OP_CLOSE) chain[dir] = chain[dir].then(() => { if (dir === 's2c') setTimeout(end, 1000); });
        return;
      }
      // Data frames; fragmentation is reassembled (browsers and gorilla
      // send small messages whole, but the relay does not rely on it).
      let opcode = f.opcode;
      let payload = f.payload;
      if (f.opcode === OP_CONT || !f.fin) {
        if (f.opcode !== OP_CONT) frag[dir] = { opcode: f.opcode, parts: [] };
        const fr = frag[dir];
        if (!fr) { problems.push(`conn ${id} ${dir}: continuation without a start`); return; }
        fr.parts.push(f.payload);
        problems.push(`conn ${id} ${dir}: fragmented message`);
        if (!f.fin) return;
        opcode = fr.opcode;
        payload = Buffer.concat(fr.parts);
        frag[dir] = null;
      }
      if (opcode === OP_BINARY) {
        problems.push(`conn ${id} ${dir}: binary message of ${payload.length} bytes`);
        messages.push({ conn: id, dir, text: payload.toString('latin1'), json: null, action: 'forwarded', at: Date.now() });
        chain[dir] = chain[dir].then(() => sendRaw(OP_BINARY, payload));
        return;
      }
      const text = payload.toString('utf8');
      /** @type {any} */
      let json = null;
      try { json = JSON.parse(text); } catch { problems.push(`conn ${id} ${dir}: not JSON: ${text.slice(0, 80)}`); }
      if (dir === 's2c' && json?.type === 'welcome' && typeof json.id === 'string') conn.peerId = json.id;
      /** @type {RecordedMessage} */
      const rec = { conn: id, dir, text, json, action: 'forwarded', at: Date.now() };
      messages.push(rec);
      chain[dir] = chain[dir].then(async () => {
        let out;
        if (hook && json !== null) {
          try {
            out = await hook(dir, id, json);
          } catch (e) {
            problems.push(`conn ${id} ${dir}: hook threw: ${e instanceof Error ? e.stack : e}`);
          }
        }
        if (out === undefined || out === null) {
          sendRaw(OP_TEXT, payload);
          return;
        }
        if (!Array.isArray(out)) throw new Error('hook must return an array or undefined');
        if (out.length === 0) rec.action = 'dropped';
        else if (out.length !== 1 || JSON.stringify(out[0]) !== text) rec.action = 'rewritten';
        for (const m of out) send(m);
      }).catch((e) => { problems.push(`conn ${id} ${dir}: ${e instanceof Error ? e.stack : e}`); });
    };

    upstream.on('data', (chunk) => {
      if (!upgraded) {
        handshake = Buffer.concat([handshake, chunk]);
        const i = handshake.indexOf('\r\n\r\n');
        if (i < 0) return;
        const headText = handshake.subarray(0, i + 4);
        const rest = handshake.subarray(i + 4);
        client.write(headText);
        if (!/^HTTP\/1\.1 101/.test(headText.toString('latin1'))) {
          // Refused (origin check and the like): pass the answer on, then close.
          problems.push(`conn ${id}: upgrade refused: ${headText.toString('latin1').split('\r\n')[0]}`);
          if (rest.length) client.write(rest);
          upstream.on('data', (c) => client.write(c));
          upstream.on('end', () => client.end());
          upgraded = true;
          conn.closed = true;
          return;
        }
        upgraded = true;
        for (const e of early.splice(0)) for (const f of fromClient.push(e)) onFrame('c2s', f);
        if (rest.length) for (const f of fromServer.push(rest)) onFrame('s2c', f);
        return;
      }
      if (conn.closed) return;
      try {
        for (const f of fromServer.push(chunk)) onFrame('s2c', f);
      } catch (e) {
        problems.push(`conn ${id} s2c: ${e instanceof Error ? e.message : e}`);
        end();
      }
    });
    client.on('data', (chunk) => {
      if (!upgraded) { early.push(chunk); return; }
      if (conn.closed) return;
      try {
        for (const f of fromClient.push(chunk)) onFrame('c2s', f);
      } catch (e) {
        problems.push(`conn ${id} c2s: ${e instanceof Error ? e.message : e}`);
        end();
      }
    });
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(undefined));
  });
  const port = /** @type {import('node:net').AddressInfo} */ (server.address()).port;
  const base = `http://127.0.0.1:${port}`;

  return {
    base, port, requests, messages, controls, problems, conns,
    /** Replaces the hook (undefined: forward everything untouched). @param {Hook|undefined} h */
    setHook(h) { hook = h; },
    /** The open connection of a participant, by the id the server gave it. @param {string} peerId */
    connOf(peerId) {
      for (const c of conns.values()) if (c.peerId === peerId) return c;
      return undefined;
    },
    /**
     * Injects a message on a connection: 's2c' as if the server sent it to
     * that browser, 'c2s' as if that browser sent it to the server.
     * @param {number} connId @param {Direction} dir @param {any} msg
     */
    send(connId, dir, msg) {
      const c = conns.get(connId);
      if (!c || c.closed) throw new Error(`proxy: connection ${connId} is not open`);
      messages.push({ conn: connId, dir, text: JSON.stringify(msg), json: msg, action: 'injected', at: Date.now() });
      if (dir === 's2c') c.toClient(msg);
      else c.toServer(msg);
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(() => r(undefined)));
    },
  };
}
