// Known-answer vectors for sframe.js, shared by the Node tests
// (e2ee/sframe.test.mjs) and a browser test: both hand the JSON text to
// runVectors() or listVectors() and compare results byte for byte.
//
// Input: the JSON of RFC 9605 Appendix C as published by the SFrame working
// group (sframe-wg/sframe, test-vectors/test-vectors.json), or Parley's own
// vectors in the same style. Integers are JSON numbers (kid and ctr go up to
// 2^64 - 1, so pass the JSON *text*: parseVectorsJson keeps them exact), byte
// strings are lowercase hex. Sections, each an array:
//
//   header            {kid, ctr, encoded}
//   aes_ctr_hmac      {cipher_suite, key, enc_key, auth_key, nonce, aad, pt, ct}   suites 1-3
//   aes_256_ctr_hmac  the same for suites 6-8 (AES-256-CTR + HMAC-SHA-512; in the
//                     sframe-wg repository, not registered by RFC 9605)
//   sframe            {cipher_suite, kid, ctr, base_key, metadata, pt, ct} and
//                     optionally sframe_key_label, sframe_salt_label, sframe_secret,
//                     sframe_key, sframe_salt, nonce, aad (each checked if present),
//                     and index, generation, step (checked against makeKid).
//                     base_key is the key fed to the key schedule for that KID
//                     (already ratcheted if the KID's step is not 0).
//   vectors           Parley's Go <-> JS ratchet chains (e2ee/testdata/parley-ratchet-vectors.json,
//                     written by e2ee/ratchet_test.go): {cipher_suite, index, generation,
//                     base_key, steps: [{step, base_key, kid, sframe_secret, sframe_key,
//                     sframe_salt, frame: {kid, ctr, metadata, nonce, aad, pt, ct}}]} where
//                     steps[i].base_key = Ratchet^step(base_key) (RFC 9605 §5.1) and
//                     kid = makeKid(index, generation, step). One case per step.
//
// Other top-level values that are not arrays (e.g. "source") are ignored; an
// unknown array section is reported as a failure rather than skipped.

import {
  SUITES, SFrameKey, SFrameReceiver, aeadOpen, aeadSeal, deriveKeySalt, encodeHeader,
  frameNonce, makeKid, parseHeader, ratchet,
} from './sframe.js';

/**
 * One runnable vector.
 * @typedef {object} VectorCase
 * @property {string} name          e.g. "sframe[3] suite 4"
 * @property {() => Promise<void>} run  rejects with an Error naming the first mismatch
 */

/**
 * @typedef {object} VectorFailure
 * @property {string} name
 * @property {string} message
 */

/**
 * @typedef {object} VectorResults
 * @property {number} passed
 * @property {number} failed
 * @property {VectorFailure[]} failures
 */

/**
 * AES-256-CTR + HMAC-SHA-512 suites of the sframe-wg repository's
 * aes_256_ctr_hmac vectors (ids 6-8 are not assigned by RFC 9605; they are
 * only used to exercise the compound AEAD with a 32-byte AES key).
 * @type {Readonly<Record<number, import('./sframe.js').Suite>>}
 */
const EXTRA_CTR_HMAC = Object.freeze({
  6: { id: 6, name: 'AES_256_CTR_HMAC_SHA512_80', aead: 'AES-CTR-HMAC', hash: 'SHA-512', Nh: 64, Nka: 32, Nk: 96, Nn: 12, Nt: 10 },
  7: { id: 7, name: 'AES_256_CTR_HMAC_SHA512_64', aead: 'AES-CTR-HMAC', hash: 'SHA-512', Nh: 64, Nka: 32, Nk: 96, Nn: 12, Nt: 8 },
  8: { id: 8, name: 'AES_256_CTR_HMAC_SHA512_32', aead: 'AES-CTR-HMAC', hash: 'SHA-512', Nh: 64, Nka: 32, Nk: 96, Nn: 12, Nt: 4 },
});

// ---------------------------------------------------------------------------
// Parsing helpers

/**
 * JSON.parse that keeps integers beyond 2^53 exact: such literals (outside
 * strings) come back as decimal strings, which the vector code turns into
 * BigInt. Everything else parses as usual.
 * @param {string} text
 * @returns {unknown}
 */
export function parseVectorsJson(text) {
  let out = '';
  let last = 0;
  let i = 0;
  const isDigit = (/** @type {string} */ c) => c >= '0' && c <= '9';
  while (i < text.length) {
    const c = text[i];
    if (c === '"') {
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
      i++;
    } else if (c === '-' || isDigit(c)) {
      let j = c === '-' ? i + 1 : i;
      while (j < text.length && isDigit(text[j])) j++;
      const integer = !(j < text.length && '.eE'.includes(text[j]));
      if (integer && !Number.isSafeInteger(Number(text.slice(i, j)))) {
        out += `${text.slice(last, i)}"${text.slice(i, j)}"`;
        last = j;
      }
      while (j < text.length && (isDigit(text[j]) || '.eE+-'.includes(text[j]))) j++;
      i = j;
    } else {
      i++;
    }
  }
  return JSON.parse(out + text.slice(last));
}

/**
 * @param {string} hex  even-length hex, whitespace ignored
 * @returns {Uint8Array}
 */
export function hexToBytes(hex) {
  const h = hex.replace(/\s+/g, '');
  if (h.length % 2 !== 0 || /[^0-9a-fA-F]/.test(h)) throw new Error(`not hex: ${hex.slice(0, 40)}`);
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * @param {Uint8Array} b
 * @returns {string} lowercase hex
 */
export function bytesToHex(b) {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

/**
 * @param {unknown} v
 * @returns {v is Record<string, unknown>}
 */
const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * @param {Record<string, unknown>} v
 * @param {string} field
 * @returns {Uint8Array}
 */
function hexField(v, field) {
  const x = v[field];
  if (typeof x !== 'string') throw new Error(`field ${field} missing or not a hex string`);
  return hexToBytes(x);
}

/**
 * @param {Record<string, unknown>} v
 * @param {string} field
 * @returns {bigint}
 */
function bigField(v, field) {
  const x = v[field];
  if (typeof x === 'bigint') return x;
  if (typeof x === 'number') {
    if (!Number.isSafeInteger(x)) throw new Error(`field ${field} lost precision: pass the JSON text, not a parsed object`);
    return BigInt(x);
  }
  if (typeof x === 'string' && /^(\d+|0x[0-9a-fA-F]+)$/.test(x)) return BigInt(x);
  throw new Error(`field ${field} missing or not an integer`);
}

/**
 * @param {Record<string, unknown>} v
 * @param {string} field
 * @returns {number}
 */
function intField(v, field) {
  const b = bigField(v, field);
  if (b > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`field ${field} too large`);
  return Number(b);
}

/**
 * @param {string} what
 * @param {Uint8Array | null} got
 * @param {Uint8Array} want
 */
function expectBytes(what, got, want) {
  if (got === null) throw new Error(`${what}: got null (authentication failed), want ${bytesToHex(want)}`);
  const g = bytesToHex(got);
  const w = bytesToHex(want);
  if (g !== w) throw new Error(`${what}: got ${g}, want ${w}`);
}

/**
 * @param {string} what
 * @param {unknown} got
 * @param {unknown} want
 */
function expectEqual(what, got, want) {
  if (got !== want) throw new Error(`${what}: got ${String(got)}, want ${String(want)}`);
}

/**
 * @param {...Uint8Array} parts
 * @returns {Uint8Array}
 */
function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

// ---------------------------------------------------------------------------
// Checks per section

/** @param {Record<string, unknown>} v */
async function checkHeader(v) {
  const kid = bigField(v, 'kid');
  const ctr = bigField(v, 'ctr');
  const encoded = hexField(v, 'encoded');
  expectBytes('encodeHeader', encodeHeader(kid, ctr), encoded);
  const h = parseHeader(concat(encoded, Uint8Array.of(0xaa, 0xbb)));
  expectEqual('parseHeader kid', h.kid, kid);
  expectEqual('parseHeader ctr', h.ctr, ctr);
  expectEqual('parseHeader length', h.length, encoded.length);
}

/**
 * @param {Record<string, unknown>} v
 * @param {Readonly<Record<number, import('./sframe.js').Suite>>} table
 */
async function checkCtrHmac(v, table) {
  const id = intField(v, 'cipher_suite');
  const s = Object.prototype.hasOwnProperty.call(table, id) ? table[id] : undefined;
  if (!s || s.aead !== 'AES-CTR-HMAC') throw new Error(`cipher_suite ${id} is not an AES-CTR+HMAC suite`);
  const key = hexField(v, 'key');
  if ('enc_key' in v) expectBytes('enc_key', key.subarray(0, s.Nka), hexField(v, 'enc_key'));
  if ('auth_key' in v) expectBytes('auth_key', key.subarray(s.Nka), hexField(v, 'auth_key'));
  const nonce = hexField(v, 'nonce');
  const aad = hexField(v, 'aad');
  const pt = hexField(v, 'pt');
  const ct = hexField(v, 'ct');
  expectBytes('seal', await aeadSeal(s, key, nonce, aad, pt), ct);
  expectBytes('open', await aeadOpen(s, key, nonce, aad, ct), pt);
  const bad = Uint8Array.from(ct);
  bad[bad.length - 1] ^= 1;
  expectEqual('open with a flipped tag bit', await aeadOpen(s, key, nonce, aad, bad), null);
}

/** @param {Record<string, unknown>} v */
async function checkSFrame(v) {
  const suite = intField(v, 'cipher_suite');
  const kid = bigField(v, 'kid');
  const ctr = bigField(v, 'ctr');
  const baseKey = hexField(v, 'base_key');
  const metadata = hexField(v, 'metadata');
  const pt = hexField(v, 'pt');
  const ct = hexField(v, 'ct');

  if ('index' in v || 'generation' in v || 'step' in v) {
    expectEqual('makeKid(index, generation, step)', makeKid(intField(v, 'index'), intField(v, 'generation'), intField(v, 'step')), kid);
  }

  const m = await deriveKeySalt(suite, kid, baseKey);
  if ('sframe_key_label' in v) expectBytes('sframe_key_label', m.keyLabel, hexField(v, 'sframe_key_label'));
  if ('sframe_salt_label' in v) expectBytes('sframe_salt_label', m.saltLabel, hexField(v, 'sframe_salt_label'));
  if ('sframe_secret' in v) expectBytes('sframe_secret', m.secret, hexField(v, 'sframe_secret'));
  if ('sframe_key' in v) expectBytes('sframe_key', m.key, hexField(v, 'sframe_key'));
  if ('sframe_salt' in v) expectBytes('sframe_salt', m.salt, hexField(v, 'sframe_salt'));
  if ('nonce' in v) expectBytes('nonce', frameNonce(m.salt, ctr), hexField(v, 'nonce'));
  if ('aad' in v) expectBytes('aad', concat(encodeHeader(kid, ctr), metadata), hexField(v, 'aad'));

  // Encrypt direction: the same key schedule and counter give the same bytes.
  const key = await SFrameKey.derive(suite, kid, baseKey);
  expectBytes('sealAt', await key.sealAt(ctr, metadata, pt), ct);

  // Decrypt direction, through the receiver (replay window included).
  const h = parseHeader(ct);
  expectEqual('header kid', h.kid, kid);
  expectEqual('header ctr', h.ctr, ctr);
  const rx = new SFrameReceiver(suite);
  await rx.addKey(kid, baseKey);
  expectBytes('open', await rx.open(metadata, ct), pt);
  expectEqual('open again (replay)', await rx.open(metadata, ct), null);
  expectEqual('stats.opened', rx.stats.opened, 1);
  expectEqual('stats.replay', rx.stats.replay, 1);
}

/**
 * One step of a Parley ratchet chain: the ratcheted base key, the KID, the key
 * schedule under that KID, and a frame sealed with it.
 * @param {Record<string, unknown>} chain
 * @param {Record<string, unknown>} st
 */
async function checkChainStep(chain, st) {
  const suite = intField(chain, 'cipher_suite');
  const index = intField(chain, 'index');
  const generation = intField(chain, 'generation');
  const step = intField(st, 'step');
  let key = hexField(chain, 'base_key');
  for (let i = 0; i < step; i++) key = await ratchet(suite, key);
  expectBytes(`base_key after ${step} ratchets`, key, hexField(st, 'base_key'));
  const kid = makeKid(index, generation, step);
  expectEqual('kid = makeKid(index, generation, step)', kid, bigField(st, 'kid'));
  const m = await deriveKeySalt(suite, kid, key);
  if ('sframe_secret' in st) expectBytes('sframe_secret', m.secret, hexField(st, 'sframe_secret'));
  if ('sframe_key' in st) expectBytes('sframe_key', m.key, hexField(st, 'sframe_key'));
  if ('sframe_salt' in st) expectBytes('sframe_salt', m.salt, hexField(st, 'sframe_salt'));
  const frame = st.frame;
  if (frame === undefined) return;
  if (!isObject(frame)) throw new Error('frame is not an object');
  expectEqual('frame.kid', bigField(frame, 'kid'), kid);
  await checkSFrame({ ...frame, cipher_suite: suite, base_key: bytesToHex(key), index, generation, step });
}

/** @type {Record<string, (v: Record<string, unknown>) => Promise<void>>} */
const SECTIONS = {
  header: checkHeader,
  aes_ctr_hmac: (v) => checkCtrHmac(v, SUITES),
  aes_256_ctr_hmac: (v) => checkCtrHmac(v, EXTRA_CTR_HMAC),
  sframe: checkSFrame,
};

/**
 * A short name for a vector: section, index and the fields that tell it apart.
 * @param {string} section
 * @param {number} i
 * @param {unknown} v
 * @returns {string}
 */
function caseName(section, i, v) {
  if (!isObject(v)) return `${section}[${i}]`;
  const parts = [];
  if ('cipher_suite' in v) parts.push(`suite ${String(v.cipher_suite)}`);
  if ('kid' in v) parts.push(`kid ${String(v.kid)}`);
  if ('ctr' in v) parts.push(`ctr ${String(v.ctr)}`);
  return `${section}[${i}]${parts.length ? ` ${parts.join(' ')}` : ''}`;
}

/**
 * Turns a vector file into one runnable case per vector (section order, then
 * file order). Unknown sections and malformed entries become failing cases.
 * @param {string | unknown} vectorsJson  JSON text (preferred: keeps 64-bit integers exact) or an already parsed object
 * @returns {VectorCase[]}
 */
export function listVectors(vectorsJson) {
  /** @type {unknown} */
  let doc;
  try {
    doc = typeof vectorsJson === 'string' ? parseVectorsJson(vectorsJson) : vectorsJson;
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    return [{ name: 'parse', run: async () => { throw new Error(`vector file is not valid JSON: ${message}`); } }];
  }
  if (!isObject(doc)) {
    return [{ name: 'parse', run: async () => { throw new Error('vector file must be a JSON object of sections'); } }];
  }
  /** @type {VectorCase[]} */
  const cases = [];
  for (const [section, list] of Object.entries(doc)) {
    if (!Array.isArray(list)) continue; // "source", comments, ...
    if (section === 'vectors') {
      list.forEach((chain, i) => {
        const steps = isObject(chain) && Array.isArray(chain.steps) ? chain.steps : [undefined];
        steps.forEach((st, j) => {
          const name = `${caseName(section, i, chain)}${isObject(st) && 'step' in st ? ` step ${String(st.step)}` : ` [${j}]`}`;
          cases.push({
            name,
            run: async () => {
              if (!isObject(chain)) throw new Error('chain is not an object');
              if (!isObject(st)) throw new Error('chain needs a "steps" array of objects');
              await checkChainStep(chain, st);
            },
          });
        });
      });
      continue;
    }
    const check = Object.prototype.hasOwnProperty.call(SECTIONS, section) ? SECTIONS[section] : undefined;
    if (!check) {
      cases.push({ name: section, run: async () => { throw new Error(`unknown vector section "${section}"`); } });
      continue;
    }
    list.forEach((v, i) => {
      cases.push({
        name: caseName(section, i, v),
        run: async () => {
          if (!isObject(v)) throw new Error('vector is not an object');
          await check(v);
        },
      });
    });
  }
  return cases;
}

/**
 * Runs every vector and collects the results; never throws.
 * @param {string | unknown} vectorsJson  JSON text (preferred) or an already parsed object
 * @returns {Promise<VectorResults>}
 */
export async function runVectors(vectorsJson) {
  /** @type {VectorResults} */
  const res = { passed: 0, failed: 0, failures: [] };
  for (const c of listVectors(vectorsJson)) {
    try {
      await c.run();
      res.passed++;
    } catch (e) {
      res.failed++;
      res.failures.push({ name: c.name, message: e instanceof Error ? e.message : String(e) });
    }
  }
  return res;
}
