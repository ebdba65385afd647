// @ts-check
// The host key store: what a host's browser keeps for each consultation it
// created (docs/design/membership-review.md R6, R8). The link secret S and
// the Ed25519 signing key never leave this browser: the server has only the
// join verifier, and the guests only S and the public key (in the link's
// fragment).
//
// IndexedDB database "parley-host", object store "consultations", keyPath
// "room". One record per consultation:
//
//   {room:    string      the consultation id (= room id, 22 chars b64url)
//    secret:  Uint8Array  S, 16 random bytes
//    sk:      CryptoKey   Ed25519 private key, non-extractable
//    pub:     Uint8Array  H, the raw Ed25519 public key, 32 bytes
//    created: number      ms since the epoch, this browser's clock
//    roster?: {signed: Uint8Array, json: object}   the last roster this
//             browser signed (saveRoster), absent until the first}
//
// Records are created with add, never put: a record, once made, is never
// replaced by another for the same room (a server handing back an id this
// browser already holds gets an error, not our keys overwritten). Only the
// roster field ever changes (saveRoster), in place.
//
// API (all async; failures reject with HostStoreError, whose message is
// plain words to show):
//   addConsultation(rec)        store a new record; code "exists" if the room is already held
//   getConsultation(room)       the record, or null
//   listRooms()                 the rooms this browser holds
//   saveRoster(room, {signed, json})   write the last signed roster; resolves once durable

const DB_NAME = 'parley-host';
const DB_VERSION = 1;
const STORE = 'consultations';

/**
 * @typedef {{signed: Uint8Array, json: object}} StoredRoster
 * @typedef {{room: string, secret: Uint8Array, sk: CryptoKey, pub: Uint8Array, created: number, roster?: StoredRoster}} HostRecord
 */

/**
 * A failure of the host key store.
 *   unavailable: this browser gives the page no IndexedDB (private windows
 *                of some browsers, storage switched off)
 *   exists:      addConsultation for a room already held
 *   not-found:   saveRoster for a room this browser does not hold
 *   stale:       saveRoster with a roster older than the stored one, or
 *                another with the same seq (two writers)
 *   invalid:     a record or roster of the wrong shape
 *   failed:      anything else (disk full, the browser aborted)
 */
export class HostStoreError extends Error {
  /** @param {string} code @param {string} message @param {unknown} [cause] */
  constructor(code, message, cause) {
    super(message, { cause });
    this.name = 'HostStoreError';
    this.code = code;
  }
}

const MSG_UNAVAILABLE = 'This browser does not let Parley store the consultation\'s keys (this happens in private or incognito windows, ' +
  'or when site data is switched off). Open Parley in a normal window of this browser to create and host consultations.';
const MSG_FAILED = 'This browser could not save the consultation\'s keys. Check that the device is not out of space, then reload the page and try again.';

/** @type {Promise<IDBDatabase>|null} */
let dbPromise = null;

/** Opens (once) the database, creating the object store on first use. */
function db() {
  if (dbPromise) return dbPromise;
  dbPromise = new Promise((resolve, reject) => {
    /** @type {IDBOpenDBRequest} */
    let req;
    try {
      if (typeof indexedDB === 'undefined' || !indexedDB) throw new Error('no indexedDB');
      req = indexedDB.open(DB_NAME, DB_VERSION);
    } catch (e) {
      reject(new HostStoreError('unavailable', MSG_UNAVAILABLE, e));
      return;
    }
    req.onupgradeneeded = () => {
      const d = req.result;
      if (!d.objectStoreNames.contains(STORE)) d.createObjectStore(STORE, { keyPath: 'room' });
    };
    req.onsuccess = () => {
      const d = req.result;
      // Another tab with a newer version of the page wants to upgrade: let it.
      d.onversionchange = () => { d.close(); dbPromise = null; };
      d.onclose = () => { dbPromise = null; };
      resolve(d);
    };
    req.onerror = () => reject(new HostStoreError('unavailable', MSG_UNAVAILABLE, req.error));
    req.onblocked = () => reject(new HostStoreError('failed', 'Parley is open in another tab with an older version of this page. Close the other Parley tabs, then reload this one.'));
  });
  dbPromise.catch(() => { dbPromise = null; });
  return dbPromise;
}

/**
 * Checks that the store can be used at all (IndexedDB available), so that a
 * page can refuse before asking the server for anything.
 * @returns {Promise<void>}
 */
export async function checkAvailable() {
  await db();
}

/**
 * Runs one transaction and resolves with what `fn` returns once the
 * transaction has completed (committed), or rejects with a HostStoreError:
 * the one `fn` passed to `refuse` (which aborts the transaction), or one
 * made from the transaction's error.
 * @template T
 * @param {IDBTransactionMode} mode
 * @param {(store: IDBObjectStore, refuse: (err: HostStoreError) => void) => T} fn
 * @param {IDBTransactionOptions} [options]
 * @returns {Promise<T>}
 */
async function inTransaction(mode, fn, options) {
  const d = await db();
  return new Promise((resolve, reject) => {
    /** @type {IDBTransaction} */
    let tx;
    try {
      tx = d.transaction(STORE, mode, options);
    } catch (e) {
      reject(new HostStoreError('failed', MSG_FAILED, e));
      return;
    }
    /** @type {HostStoreError|null} */
    let refusal = null;
    /** @param {HostStoreError} err */
    const refuse = (err) => {
      refusal = refusal || err;
      try { tx.abort(); } catch { /* already finished */ }
    };
    /** @type {T} */
    let result;
    tx.oncomplete = () => resolve(result);
    tx.onabort = () => reject(refusal || failure(tx.error));
    try {
      result = fn(tx.objectStore(STORE), refuse);
    } catch (e) {
      refuse(e instanceof HostStoreError ? e : new HostStoreError('failed', MSG_FAILED, e));
    }
  });
}

/** @param {DOMException|null} err */
function failure(err) {
  if (err && err.name === 'ConstraintError') {
    return new HostStoreError('exists', 'This browser already holds a consultation with that id. Nothing was overwritten.', err);
  }
  if (err && err.name === 'QuotaExceededError') {
    return new HostStoreError('failed', 'This browser has no room left to save the consultation\'s keys. Free some space on the device, then try again.', err);
  }
  return new HostStoreError('failed', MSG_FAILED, err);
}

/** @param {unknown} b @param {number} n */
const isBytes = (b, n) => b instanceof Uint8Array && b.length === n;

/**
 * Stores the record of a consultation this browser just created. Uses add:
 * rejects with code "exists" (and changes nothing) when this browser
 * already holds that room. Resolves once the record is committed.
 * @param {HostRecord} rec
 * @returns {Promise<void>}
 */
export async function addConsultation(rec) {
  if (!rec || typeof rec.room !== 'string' || !/^[A-Za-z0-9_-]{22}$/.test(rec.room) || !isBytes(rec.secret, 16) ||
      !isBytes(rec.pub, 32) || !(rec.sk instanceof CryptoKey) || rec.sk.extractable || rec.sk.type !== 'private' ||
      typeof rec.created !== 'number' || 'roster' in rec) {
    throw new HostStoreError('invalid', 'The consultation\'s keys are not in the expected form, so they were not saved.');
  }
  const copy = { room: rec.room, secret: rec.secret.slice(), sk: rec.sk, pub: rec.pub.slice(), created: rec.created };
  await inTransaction('readwrite', (store) => { store.add(copy); }, { durability: 'strict' });
}

/**
 * The record of a consultation this browser created, or null.
 * @param {string} room
 * @returns {Promise<HostRecord|null>}
 */
export async function getConsultation(room) {
  const req = await inTransaction('readonly', (store) => store.get(room));
  return req.result ? /** @type {HostRecord} */ (req.result) : null;
}

/**
 * The rooms of every consultation this browser holds.
 * @returns {Promise<string[]>}
 */
export async function listRooms() {
  const req = await inTransaction('readonly', (store) => store.getAllKeys());
  return req.result.map(String);
}

/** @param {object} json */
const seqOf = (json) => /** @type {{seq?: unknown}} */ (json).seq;

/**
 * Writes the last roster this browser signed for `room` into its record,
 * in one readwrite transaction with durability "strict", and resolves only
 * once the transaction has completed: send the roster after this resolves
 * (R8: write, then send).
 *
 * It only updates an existing record (never creates one: code "not-found")
 * and refuses (code "stale", nothing written) a roster whose json.seq is
 * lower than the stored one's, or equal with other signed bytes: one seq,
 * one roster.
 * @param {string} room
 * @param {StoredRoster} roster {signed: the signed bytes, json: the JSON form with its sig}
 * @returns {Promise<void>}
 */
export async function saveRoster(room, roster) {
  if (!roster || !(roster.signed instanceof Uint8Array) || !roster.json || typeof roster.json !== 'object' ||
      !Number.isInteger(seqOf(roster.json))) {
    throw new HostStoreError('invalid', 'The member list to save is not in the expected form.');
  }
  const value = { signed: roster.signed.slice(), json: structuredClone(roster.json) };
  await inTransaction('readwrite', (store, refuse) => {
    const req = store.openCursor(room);
    req.onsuccess = () => {
      const cur = req.result;
      if (!cur) {
        refuse(new HostStoreError('not-found', 'This browser does not hold the keys of this consultation.'));
        return;
      }
      const rec = /** @type {HostRecord} */ (cur.value);
      const old = rec.roster;
      if (old) {
        const was = Number(seqOf(old.json)), now = Number(seqOf(value.json));
        if (now < was || (now === was && !sameBytes(old.signed, value.signed))) {
          refuse(new HostStoreError('stale', 'A newer member list for this consultation was saved in another tab or window. Close the other Parley tabs and reload this one.'));
          return;
        }
      }
      rec.roster = value;
      cur.update(rec);
    };
  }, { durability: 'strict' });
}

/** @param {Uint8Array} a @param {Uint8Array} b */
function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
