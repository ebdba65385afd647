// @ts-check
// The consultation side of a call session (docs/security.md §9): the
// host's page signs rosters (who is admitted, each with the key the host
// saw) and the guests' pages check that the host keeps confirming the one
// they are at. No DOM here: the UI listens through the session's events.

import { signRoster, verifyRoster, rosterHash, sameBytes, ROLE_HOST, ROLE_GUEST } from '../e2ee/roster.js';

/** A guest pings the host this often over the data channel (§9.4). */
export const PING_MS = 2000;
/** A guest is fresh while the host's last matching echo is at most this old. */
export const FRESH_MS = 6000;

/**
 * @typedef {{room: string, secret: Uint8Array, sk: CryptoKey, pub: Uint8Array, roster?: {signed: Uint8Array, json: any}}} HostRecord
 *   the host browser's record of a consultation (hoststore.js)
 * @typedef {{saveRoster: (room: string, r: {signed: Uint8Array, json: any}) => Promise<void>}} HostStore
 * @typedef {{id: string, name: string, pub: Uint8Array|null, checked: boolean}} KnockInfo
 * @typedef {import('../e2ee/roster.js').RosterEntry} RosterEntry
 */

export class Consult {
  /**
   * @param {import('./session.js').CallSession} session
   * @param {{hostKey: Uint8Array, record?: HostRecord|null, store?: HostStore|null}} opts
   */
  constructor(session, opts) {
    this.s = session;
    this.hostKey = opts.hostKey;
    this.record = opts.record || null;
    this.store = opts.store || null;
    /** Waiting guests, for the host. @type {Map<string, KnockInfo>} */
    this.knocks = new Map();
    /** Keys of guests this host removed: their knocks are refused. @type {Set<string>} */
    this.removedKeys = new Set();
    /** The last roster this page signed (host). @type {{roster: import('../e2ee/roster.js').Roster, signed: Uint8Array, json: any}|null} */
    this.mine = null;
    this.locked = false;
    /** Per guest: the roster seq of its last ping (host). @type {Map<string, number>} */
    this.pingSeq = new Map();
    /** When the last matching pong's echoed time was (guest, ms). */
    this.freshAt = 0;
    this.admittedAt = 0;
    this.pingTimer = 0;
    /** Serialises the host's roster changes. @type {Promise<void>} */
    this.chain = Promise.resolve();
  }

  get isHost() { return this.s.role === 'host'; }

  // ---- host ----

  /**
   * The host joined: the roster to build on is the one this browser signed
   * last (IndexedDB); one the server holds counts only if it verifies and is
   * newer (then another browser hosted meanwhile). The new roster keeps
   * every guest entry and replaces the host's own (a reload changes our pid
   * and key), at seq + 1 (docs/security.md §9.2).
   * Guests no longer in the room (they left while the host was away) are
   * dropped: the server's welcome lists who is there.
   * @param {any} serverRoster @param {Set<string>} present peer ids in the room
   */
  async hostStart(serverRoster, present) {
    /** @type {{roster: import('../e2ee/roster.js').Roster, signed: Uint8Array, json: any}|null} */
    let base = null;
    if (this.record?.roster) {
      try {
        base = await verifyRoster(this.s.room, this.hostKey, this.record.roster.json);
      } catch {
        base = null;
      }
    }
    if (serverRoster) {
      try {
        const v = await verifyRoster(this.s.room, this.hostKey, serverRoster);
        if (!base || v.roster.seq > base.roster.seq) {
          if (base) this.s.events.onNotice?.('This consultation was hosted from another browser since you last had it open here.');
          base = v;
        }
      } catch {
        this.s.keyProblems.set(':roster', 'the server holds a list of participants this browser did not sign; it was ignored');
      }
    }
    this.locked = base?.roster.locked || false;
    const guests = (base?.roster.members || []).filter((e) => e.role !== ROLE_HOST && present.has(e.pid));
    await this.publish(guests, this.locked, base?.roster.seq || 0, null);
  }

  /** The guests of the current roster. @returns {RosterEntry[]} */
  guests() {
    return (this.mine?.roster.members || []).filter((e) => e.role !== ROLE_HOST);
  }

  /**
   * Signs, stores (durably, before anything is sent), sends and applies a
   * roster of the host and these guests.
   * @param {RosterEntry[]} guests @param {boolean} locked @param {number} [fromSeq]
   * @param {null|{type: 'admit'|'remove', to: string}} [action]
   */
  publish(guests, locked, fromSeq, action) {
    const run = this.chain.then(async () => {
      const rec = /** @type {HostRecord} */ (this.record);
      const seq = Math.max(fromSeq ?? 0, this.mine?.roster.seq ?? 0) + 1;
      const members = [{ pid: this.s.myId, pub: this.s.keys.pub, role: ROLE_HOST }, ...guests.map((g) => ({ pid: g.pid, pub: g.pub, role: ROLE_GUEST }))];
      const signed = await signRoster(this.s.room, this.hostKey, rec.sk, { seq, locked, members });
      // Written (and the write complete) before it leaves this browser, so
      // a reload never signs an older list again (R8).
      if (this.store) await this.store.saveRoster(this.s.room, { signed: signed.signed, json: signed.json });
      this.mine = signed;
      this.locked = locked;
      if (action) this.s.sig.send({ type: action.type, to: action.to, roster: signed.json });
      else this.s.sig.send({ type: 'roster', roster: signed.json, locked });
      await this.s.keys.onRoster(signed.json);
      for (const r of this.s.remotes.values()) r.data?.roster(signed.json).catch(() => {});
      this.s.consultChanged();
    });
    this.chain = run.catch((e) => console.warn('roster', e));
    return run;
  }

  /** A knock, from welcome's waiting list or a "knock" message. @param {{id: string, name: string, payload?: any}} k */
  async onKnock(k) {
    const info = this.knocks.get(k.id) || { id: k.id, name: k.name, pub: null, checked: false };
    info.name = k.name;
    this.knocks.set(k.id, info);
    if (k.payload) {
      const pub = await this.s.keys.checkKnock(k.id, k.payload);
      info.pub = pub && !this.removedKeys.has(String(pub)) ? pub : null;
      info.checked = true;
    }
    this.s.consultChanged();
  }

  /** @param {string} id */
  onKnockLeft(id) {
    this.knocks.delete(id);
    this.s.consultChanged();
  }

  /** Lets a waiting guest in: a roster that names it with the key its hello showed. @param {string} id */
  async admit(id) {
    const k = this.knocks.get(id);
    if (!k?.pub) throw new Error('This guest has not shown the right link yet, so they cannot be let in.');
    this.knocks.delete(id);
    await this.publish([...this.guests(), { pid: id, pub: k.pub, role: ROLE_GUEST }], this.locked, 0, { type: 'admit', to: id });
  }

  /** @param {string} id */
  deny(id) {
    this.knocks.delete(id);
    this.s.sig.send({ type: 'deny', to: id });
    this.s.consultChanged();
  }

  /** Takes a member out: a roster without it, then a new key (§9.3). @param {string} pid */
  async remove(pid) {
    const g = this.guests().find((e) => e.pid === pid);
    if (g) this.removedKeys.add(String(g.pub));
    await this.publish(this.guests().filter((e) => e.pid !== pid), this.locked, 0, { type: 'remove', to: pid });
  }

  /** A guest left: the roster forgets it (the key agreement already refuses its id and key). @param {string} pid */
  async onLeft(pid) {
    this.pingSeq.delete(pid);
    if (!this.isHost || !this.guests().some((e) => e.pid === pid)) return;
    await this.publish(this.guests().filter((e) => e.pid !== pid), this.locked, 0, null);
  }

  /** @param {boolean} locked */
  async setLocked(locked) {
    await this.publish(this.guests(), locked, 0, null);
  }

  end() {
    this.s.sig.send({ type: 'end' });
  }

  /** A guest's ping: echo it with the roster we are at (§9.4). @param {string} pid @param {number} seq @param {bigint} t */
  async onPing(pid, seq, t) {
    const r = this.s.remotes.get(pid);
    if (!this.isHost || !this.mine || !r?.data) return;
    this.pingSeq.set(pid, seq);
    if (seq < this.mine.roster.seq) r.data.roster(this.mine.json).catch(() => {});
    r.data.pong(this.mine.roster.seq, await rosterHash(this.mine.signed), t).catch(() => {});
    this.s.consultChanged();
  }

  // ---- guest ----

  /** The guest was let in. */
  admitted() {
    this.admittedAt = Date.now();
    clearInterval(this.pingTimer);
    this.pingTimer = /** @type {any} */ (setInterval(() => this.tick(), 1000));
  }

  /** Once a second: ping the host every PING_MS, and work out freshness. */
  tick() {
    const keys = this.s.keys;
    const host = this.s.remotes.get(keys.hostPid());
    const now = Date.now();
    if (host?.data?.open && keys.roster && now - (this.lastPing || 0) >= PING_MS) {
      this.lastPing = now;
      host.data.ping(keys.roster.seq, BigInt(now)).catch(() => {});
    }
    keys.setFresh(now - this.freshAt <= FRESH_MS);
    this.s.consultChanged();
  }

  /**
   * The host's echo. Fresh only if it names our roster (seq and hash) and
   * echoes a time we sent recently: a delayed echo does not count.
   * @param {string} pid @param {number} seq @param {Uint8Array} hash @param {bigint} tEcho
   */
  async onPong(pid, seq, hash, tEcho) {
    const keys = this.s.keys;
    if (this.isHost || pid !== keys.hostPid() || !keys.roster || seq !== keys.roster.seq) return;
    if (!sameBytes(hash, await rosterHash(keys.roster.signed))) return;
    const t = Number(tEcho);
    if (t > Date.now() || Date.now() - t > FRESH_MS) return;
    if (t > this.freshAt) this.freshAt = t;
    if (!keys.fresh) keys.setFresh(true);
  }

  /** A roster sent by the host over the data channel. @param {string} pid @param {any} json */
  onRosterFromHost(pid, json) {
    if (pid === this.s.keys.hostPid()) this.s.keys.onRoster(json);
  }

  /** Whether the guest has waited long enough without an echo to say so. */
  staleTooLong() {
    return !this.isHost && this.admittedAt > 0 && Date.now() - this.admittedAt > 10000 && !this.s.keys.fresh;
  }

  stop() {
    clearInterval(this.pingTimer);
  }
}
