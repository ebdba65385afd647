// Key agreement in Node's WebCrypto: members exchange hello, confirm, key,
// commit and reveal messages over an in-memory "server", and must end with
// the same safety code, including after someone leaves and after a view
// that went away and came back.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { KeyAgreement, newLinkSecret, linkSecretFromHash, unb64url, joinToken, joinVerifier } from './keys.js';

const room = 'AAAAAAAAAAAAAAAAAAAAAA';

/** Every network made, so their rekey timers stop when the tests end. */
const nets = [];
after(() => { for (const n of nets) n.stopAll(); });

/**
 * A little server: delivers each member's messages to the others, in order,
 * unless blocked. With `seed`, each message waits a random 0–`jitterMs` ms
 * first, and messages between one pair stay in order (as over the real
 * server's WebSockets) while those of different pairs interleave at random.
 * @param {{seed?: number, jitterMs?: number}} [opt]
 */
function network(opt = {}) {
  /** @type {Map<string, KeyAgreement>} */
  const members = new Map();
  const blocked = new Set(); // "from>to"
  let inflight = Promise.resolve();
  let rnd = opt.seed || 0;
  const random = () => { rnd = (rnd * 1103515245 + 12345) % 2147483648; return rnd / 2147483648; };
  /** Per pair: the chain its messages wait on, so each pair stays in order. @type {Map<string, Promise<void>>} */
  const pairs = new Map();
  let pending = 0;
  const deliver = (from, to, payload) => {
    if (blocked.has(`${from}>${to}`)) return;
    if (net.drop && net.drop(from, to, payload)) return;
    const m = members.get(to);
    if (!m) return;
    const copy = JSON.parse(JSON.stringify(payload));
    if (!opt.seed) {
      inflight = inflight.then(() => m.onMessage(from, copy));
      return;
    }
    const key = `${from}>${to}`;
    const wait = random() * (opt.jitterMs || 20);
    pending++;
    const p = (pairs.get(key) || Promise.resolve())
      .then(() => new Promise((r) => setTimeout(r, wait)))
      .then(() => (members.get(to) === m ? m.onMessage(from, copy) : undefined))
      .finally(() => { pending--; });
    pairs.set(key, p);
  };
  const net = {
    members, blocked, rekeyMs: 0,
    /** @type {((from: string, to: string, payload: any) => boolean) | null} drops the messages it returns true for */
    drop: null,
    all: [],
    stopAll() { for (const m of net.all) m.stop(); },
    add(id, secret, opts = {}, extraHooks = {}) {
      const installed = [];
      const ka = new KeyAgreement(room, secret, {
        send: (payload, to) => {
          if (to) deliver(id, to, payload);
          else for (const other of members.keys()) if (other !== id) deliver(id, other, payload);
        },
        installSendKey: (kid) => installed.push(kid),
        installRecvKey: () => {},
        dropPeer: () => {},
        onChange: () => {},
        onWarning: (peer, text) => { ka.warnings.push(`${peer}: ${text}`); },
        switchDelayMs: 1,
        rekeyIntervalMs: net.rekeyMs || 3600000,
        ...extraHooks,
      }, opts);
      ka.warnings = [];
      net.all.push(ka);
      ka.installed = installed;
      members.set(id, ka);
      return ka;
    },
    async settle() {
      for (let i = 0; i < 400; i++) {
        const before = inflight;
        await before;
        await new Promise((r) => setTimeout(r, 5));
        if (inflight === before && pending === 0) return;
      }
    },
  };
  nets.push(net);
  return net;
}

// The same vector is in signaling/token_test.go (Go's crypto/hkdf).
test('join token and verifier of a fixed secret (shared vector with Go)', async () => {
  const s = new Uint8Array(16).map((_, i) => i);
  assert.equal(await joinToken(s), 'bK6gHxLUHo9_8-d_hmM5NKr3HNj0cJgoPsbEFWm34Jc');
  assert.equal(await joinVerifier(s), 'PKKO9z3C2pE9TnoxGmXDVW6kUd5_HmqAUzu10y6oFNw');
  assert.notEqual(await joinToken(s.map((x) => x ^ 1)), await joinToken(s));
});

test('link secrets: made with 128 bits, read back from the fragment, short ones refused', () => {
  const s = newLinkSecret();
  assert.equal(unb64url(s).length, 16);
  assert.deepEqual(linkSecretFromHash('#k=' + s), unb64url(s));
  assert.equal(linkSecretFromHash('#k=abc'), null);
  assert.equal(linkSecretFromHash(''), null);
});

test('three members agree on one safety code; it changes when one leaves', async () => {
  const secret = unb64url(newLinkSecret());
  const net = network();
  const a = net.add('pA', secret); await a.start('pA'); await net.settle();
  const b = net.add('pB', secret); await b.start('pB'); await net.settle();
  const c = net.add('pC', secret); await c.start('pC'); await net.settle();
  for (const m of [a, b, c]) {
    assert.equal(m.confirmed().length, 2, 'each confirms the two others');
    assert.match(m.code, /^\d{4} \d{4} \d{4}$/);
    assert.deepEqual(m.warnings, []);
  }
  assert.equal(a.code, b.code);
  assert.equal(b.code, c.code);
  const before = a.code;
  net.members.delete('pC');
  await a.peerLeft('pC'); await b.peerLeft('pC'); await net.settle();
  assert.equal(a.code, b.code);
  assert.notEqual(a.code, before, 'a new membership gives a new code');
  assert.ok(a.gen >= 2 && b.gen >= 2, 'senders start a new generation after a leave');
});

test('a view that goes away and comes back still converges on one code', async () => {
  const secret = unb64url(newLinkSecret());
  const net = network();
  const a = net.add('pA', secret); await a.start('pA'); await net.settle();
  const b = net.add('pB', secret); await b.start('pB'); await net.settle();
  const ab = a.code;
  assert.equal(a.code, b.code);
  // C reaches A but not B, then leaves: A's view goes AB → ABC → AB while
  // B never leaves AB, whose round it finished long ago.
  net.blocked.add('pC>pB'); net.blocked.add('pB>pC');
  const c = net.add('pC', secret);
  await c.start('pC'); await net.settle();
  assert.deepEqual(a.confirmed().sort(), ['pB', 'pC']);
  net.members.delete('pC');
  await a.peerLeft('pC'); await net.settle();
  assert.match(a.code, /^\d{4} \d{4} \d{4}$/, 'A has a code again');
  assert.equal(a.code, b.code, 'A and B agree again');
  assert.notEqual(a.code, ab, 'with fresh randomness');
  assert.deepEqual(a.warnings, []);
  assert.deepEqual(b.warnings, []);
});

/**
 * Joins, a leave and a membership that comes back, over a server that
 * delays every message at random (each pair in order): Ann, Ben and an
 * inspector are in a call, Dan joins (so Dan's own rounds for Ann+Dan and
 * Ann+Ben+Dan reach pages already past them), the inspector leaves (Ann, Ben
 * and Dan again). Every page must end with one code and warn about nobody.
 * The rule this replaces, "restart on any different commitment", bounced
 * between pages here and ended with an honest member reported as cheating.
 */
for (const seed of Array.from({ length: 16 }, (_, i) => i + 1)) {
  test(`four members, a join and a leave over a jittery server converge on one code (seed ${seed})`, async () => {
    const secret = unb64url(newLinkSecret());
    const net = network({ seed, jitterMs: 30 });
    const ids = ['pA', 'pB', 'pI'];
    /** @type {Map<string, KeyAgreement>} */
    const kas = new Map();
    for (const id of ids) { const k = net.add(id, secret); kas.set(id, k); await k.start(id); await new Promise((r) => setTimeout(r, 10)); }
    await net.settle();
    const d = net.add('pD', secret); kas.set('pD', d); await d.start('pD');
    // The leave comes while Dan's rounds are still in flight on some pages.
    await new Promise((r) => setTimeout(r, 15 + seed * 3));
    await net.settle();
    net.members.delete('pI');
    kas.get('pI')?.stop();
    kas.delete('pI');
    await Promise.all([...kas.values()].map((k) => k.peerLeft('pI')));
    await net.settle();
    const codes = [...kas.values()].map((k) => k.code);
    if (new Set(codes).size !== 1 || codes.includes('')) {
      // What each page holds, to tell a stuck round from a split view.
      for (const [id, k] of kas) {
        const got = [...(k.rounds.get(k.round?.tag ?? '')?.got ?? new Map())].map(([p, e]) => `${p}:${e.commit ? 'c' : ''}${e.r ? 'r' : ''}`);
        console.log(`${id}: code "${k.code}", attempt ${k.round?.attempt}, moves ${k.moves}, revealed ${k.round?.revealed}, holds ${got.join(' ')}, confirmed ${k.confirmed().join(',')}`);
      }
    }
    for (const [id, k] of kas) {
      assert.deepEqual(k.confirmed().sort(), [...kas.keys()].filter((x) => x !== id).sort(), `${id}'s view`);
      assert.match(k.code, /^\d{4} \d{4} \d{4}$/, `${id} has a code`);
      assert.deepEqual(k.warnings, [], `${id} warns about nobody`);
    }
    assert.equal(new Set(codes).size, 1, `one code: ${codes.join(', ')}`);
  });
}

test('a round of a membership that came back on one page only: the others follow its higher attempt', async () => {
  const secret = unb64url(newLinkSecret());
  const net = network();
  const a = net.add('pA', secret); await a.start('pA'); await net.settle();
  const b = net.add('pB', secret); await b.start('pB'); await net.settle();
  const first = a.round?.attempt;
  net.blocked.add('pC>pB'); net.blocked.add('pB>pC');
  const c = net.add('pC', secret); await c.start('pC'); await net.settle();
  net.members.delete('pC');
  await a.peerLeft('pC'); await net.settle();
  assert.equal(first, 0);
  assert.equal(a.round?.attempt, 1, 'A came back to A+B at the next attempt');
  assert.equal(b.round?.attempt, 1, 'B, which never left A+B, followed');
  assert.equal(a.code, b.code);
  assert.match(a.code, /^\d{4} \d{4} \d{4}$/);
});

test('injected safety-code messages: a malformed attempt is refused, moves are limited, stale attempts are ignored', async () => {
  const secret = unb64url(newLinkSecret());
  const net = network();
  const a = net.add('pA', secret); await a.start('pA'); await net.settle();
  const b = net.add('pB', secret); await b.start('pB'); await net.settle();
  const code = a.code;
  assert.match(code, /^\d{4} \d{4} \d{4}$/);
  const tag = /** @type {NonNullable<typeof a.round>} */ (a.round).tag;
  const c = Buffer.from(new Uint8Array(32).fill(7)).toString('base64url');
  // Malformed attempts.
  for (const attempt of [-1, 1.5, 2 ** 31, '3', undefined]) await a.onMessage('pB', { t: 'commit', epoch: tag, attempt, c });
  assert.ok(a.warnings.some((w) => w.includes('malformed safety-code message')), a.warnings.join('; '));
  assert.equal(a.code, code, 'the code stands');
  // A stale attempt (lower than the current one) changes nothing.
  net.blocked.add('pA>pB');
  await a.onMessage('pB', { t: 'commit', epoch: tag, attempt: 0, c });
  assert.equal(a.code, code);
  // A flood of higher attempts: ten moves, then the rest waits.
  for (let i = 1; i <= 15; i++) await a.onMessage('pB', { t: 'commit', epoch: tag, attempt: i * 2, c });
  assert.equal(a.round?.attempt, 20, 'ten moves in the window');
  assert.equal(a.deferred?.attempt, 30, 'the highest of the rest kept for later');
  assert.equal(a.code, '', 'no code while the round is open');
});

test('a deferred move belongs to its epoch: after a leave, the new membership\'s commitments wait, not vanish; no code while a move waits', async () => {
  const secret = unb64url(newLinkSecret());
  const net = network();
  const a = net.add('pA', secret); await a.start('pA'); await net.settle();
  const b = net.add('pB', secret); await b.start('pB'); await net.settle();
  const tagAB = /** @type {NonNullable<typeof a.round>} */ (a.round).tag;
  const c = net.add('pC', secret); await c.start('pC'); await net.settle();
  b.lastAttempt.set(tagAB, 3); // B went through A+B more often than A
  a.moves = 10; a.moveWindow = Date.now(); // A used up its moves
  const x = Buffer.from(new Uint8Array(32).fill(7)).toString('base64url');
  await a.onMessage('pC', { t: 'commit', epoch: a.round?.tag, attempt: 5, c: x });
  assert.equal(a.code, '', 'no code while a higher attempt waits');
  net.members.delete('pC'); c.stop();
  await a.peerLeft('pC'); await b.peerLeft('pC'); await net.settle();
  assert.equal(a.round?.tag, tagAB);
  assert.equal(a.deferred?.epoch, tagAB, 'the deferred move is for A+B now');
  assert.ok(a.deferred?.msgs.has('pB'), 'with B\'s commitment');
  assert.equal(a.code, '');
  a.stop();
});

test('a membership whose attempts are used up says so instead of starting a round no peer can finish', async () => {
  const secret = unb64url(newLinkSecret());
  const net = network();
  const a = net.add('pA', secret); await a.start('pA'); await net.settle();
  const b = net.add('pB', secret); await b.start('pB'); await net.settle();
  const tag = /** @type {NonNullable<typeof a.round>} */ (a.round).tag;
  a.lastAttempt.set(tag, 2 ** 31 - 2); b.lastAttempt.set(tag, 2 ** 31 - 2); // as after an injected push to the top
  const c = net.add('pC', secret); await c.start('pC'); await net.settle();
  net.members.delete('pC'); c.stop();
  await a.peerLeft('pC'); await b.peerLeft('pC'); await net.settle();
  assert.equal(a.round?.attempt, 2 ** 31 - 1);
  assert.equal(a.code, b.code);
  // D reaches A only and leaves: A comes back to A+B, where B still is.
  net.blocked.add('pD>pB'); net.blocked.add('pB>pD');
  const d = net.add('pD', secret); await d.start('pD'); await net.settle();
  net.members.delete('pD'); d.stop();
  await a.peerLeft('pD'); await net.settle();
  assert.equal(a.code, '', 'no code');
  assert.ok(a.warnings.some((w) => w.includes('attempts are used up')), a.warnings.join('; '));
});

test('a lost commitment does not leave the round stuck: its reveal starts the next attempt', async () => {
  const secret = unb64url(newLinkSecret());
  const net = network();
  const a = net.add('pA', secret); await a.start('pA'); await net.settle();
  const b = net.add('pB', secret); await b.start('pB'); await net.settle();
  const c = net.add('pC', secret); await c.start('pC'); await net.settle();
  // C leaves; B's first commitment for A+B on its way to A is lost.
  let lost = 0;
  net.drop = (from, to, p) => { if (lost || from !== 'pB' || to !== 'pA' || p.t !== 'commit') return false; lost++; return true; };
  net.members.delete('pC'); c.stop();
  await a.peerLeft('pC'); await b.peerLeft('pC'); await net.settle();
  assert.equal(lost, 1, 'one commitment was dropped');
  assert.match(a.code, /^\d{4} \d{4} \d{4}$/, 'A has a code');
  assert.equal(a.code, b.code);
  assert.ok((a.round?.attempt ?? 0) >= 1, `a later attempt finished it (${a.round?.attempt})`);
  assert.deepEqual([...a.warnings, ...b.warnings], []);
});

test('a peer that is behind gets our commitment again; a reveal past the last attempt is refused with a warning', async () => {
  const secret = unb64url(newLinkSecret());
  const net = network();
  const a = net.add('pA', secret); await a.start('pA'); await net.settle();
  const b = net.add('pB', secret); await b.start('pB'); await net.settle();
  const round = /** @type {NonNullable<typeof a.round>} */ (a.round);
  const c = Buffer.from(new Uint8Array(32).fill(9)).toString('base64url');
  // A moves on to attempt 3 (B follows); then an old commitment of B's
  // at attempt 1 comes in: A sends B its current commitment again, once.
  await a.onMessage('pB', { t: 'commit', epoch: round.tag, attempt: 3, c });
  await net.settle();
  /** @type {any[]} */
  const sent = [];
  const send = a.hooks.send;
  a.hooks.send = (p, to) => { sent.push({ p, to }); send(p, to); };
  await a.onMessage('pB', { t: 'commit', epoch: round.tag, attempt: 1, c });
  await a.onMessage('pB', { t: 'commit', epoch: round.tag, attempt: 1, c });
  assert.equal(sent.length, 1, 'sent again once');
  assert.equal(sent[0].p.t, 'commit');
  assert.equal(sent[0].p.attempt, a.round?.attempt);
  a.hooks.send = send;
  // The last attempt: a reveal there without its commitment has nowhere to go.
  const top = 2 ** 31 - 1;
  await a.onMessage('pB', { t: 'commit', epoch: round.tag, attempt: top, c });
  assert.equal(a.round?.attempt, top);
  await a.onMessage('pB', { t: 'reveal', epoch: round.tag, attempt: top, r: c });
  await a.onMessage('pB', { t: 'reveal', epoch: round.tag, attempt: top, r: c });
  assert.equal(a.code, '');
  assert.ok(a.warnings.some((w) => w.includes('past its last attempt')) || a.warnings.some((w) => w.includes('does not match its commitment')), a.warnings.join('; '));
});

const sleepMs = (/** @type {number} */ ms) => new Promise((r) => setTimeout(r, ms));

test('no code for the timeout: the members whose part is missing are named, moves without a code do not reset it, the code clears it (§4.5)', async () => {
  const secret = unb64url(newLinkSecret());
  const net = network();
  let wakes = 0;
  const hooks = { codeTimeoutMs: 300, codeStableMs: 150, codeGraceMs: 300, codeCheckMs: 20 };
  const a = net.add('pA', secret, {}, { ...hooks, onChange: () => { wakes++; } }); await a.start('pA'); await net.settle();
  assert.match(a.code, /^\d{4} \d{4} \d{4}$/, 'alone, A has its own code');
  assert.equal(a.codeStall(), null, 'nobody to compare with: no warning');
  await sleepMs(400);
  assert.equal(a.codeStall(), null, 'still nobody to compare with');
  // B's reveals to A are withheld (a server hiding a listener would).
  /** @type {any[]} */
  const held = [];
  net.drop = (from, to, p) => { if (from === 'pB' && to === 'pA' && p.t === 'reveal') { held.push(p); return true; } return false; };
  const b = net.add('pB', secret, {}, hooks); await b.start('pB'); await net.settle();
  assert.equal(held.length, 1, 'B\'s reveal was withheld');
  assert.equal(a.code, '', 'no code without B\'s reveal');
  assert.equal(a.codeStall(), null, 'no warning before the timeout');
  const w0 = wakes;
  await sleepMs(400);
  assert.ok(wakes > w0, 'the watch woke the badge');
  assert.deepEqual(a.codeStall(), { why: 'missing', pids: ['pB'] }, 'B\'s reveal is what A waits for');
  assert.equal(b.codeStall(), null, 'B has its code, so B is not warned');
  assert.ok(b.code);
  // The withheld reveal arrives: the code appears and the warning goes.
  net.drop = null;
  await a.onMessage('pB', held[0]);
  assert.match(a.code, /^\d{4} \d{4} \d{4}$/, 'A has its code');
  assert.equal(a.code, b.code);
  assert.equal(a.codeStall(), null, 'the code clears the warning');
  assert.deepEqual([...a.warnings, ...b.warnings], [], 'a warning on the badge, not a rejection');

  // Flicker: a code shown only briefly before an injected commitment of a
  // higher attempt blanks it does not restart the clock: the warning is
  // back once the grace after the blank is over ...
  const c = Buffer.from(new Uint8Array(32).fill(7)).toString('base64url');
  const tag = /** @type {NonNullable<typeof a.round>} */ (a.round).tag;
  const move = async () => {
    const to = (a.round?.attempt ?? 0) + 1;
    await a.onMessage('pB', { t: 'commit', epoch: tag, attempt: to, c });
    assert.equal(a.round?.attempt, to, 'the round moved');
    assert.equal(a.code, '');
  };
  await move();
  assert.equal(a.codeStall(), null, 'within the grace after a blank');
  await sleepMs(400);
  assert.ok(a.codeStall(), 'a code shown for less than the stable time: the clock went on');
  // ... and a move while no code is shown does not restart it either.
  await move();
  await net.settle();
  assert.ok(a.codeStall(), 'a move while no code is shown does not restart the clock');
});

test('no code for the timeout: a code shown long enough restarts the clock; churn and a moment alone do not; codes that never stay warn; deferred moves and used-up attempts are told apart (§4.5)', async () => {
  const secret = unb64url(newLinkSecret());
  const net = network();
  const hooks = { codeTimeoutMs: 600, codeStableMs: 400, codeGraceMs: 150, codeCheckMs: 20 };
  const a = net.add('pA', secret, {}, hooks); await a.start('pA'); await net.settle();
  const b = net.add('pB', secret, {}, hooks); await b.start('pB'); await net.settle();
  assert.ok(a.code && a.code === b.code);
  await sleepMs(450); // shown longer than the stable time
  /** @param {string} id */
  const join = async (id) => { const k = net.add(id, secret, {}, hooks); await k.start(id); await net.settle(); return k; };
  /** @param {string} id @param {any} k */
  const leave = async (id, k) => {
    net.members.delete(id); k.stop();
    for (const [, m] of net.members) await m.peerLeft(id);
    await net.settle();
  };
  // Churn: C joins and leaves again and again. Each membership change
  // blanks the code; rounds finish, but no code stays up for the stable
  // time, so only the first blank (of a code shown long enough) starts the
  // clock.
  let n = 0;
  const t0 = Date.now();
  const churn = async () => { const id = `pC${n++}`; const k = await join(id); await sleepMs(20); await leave(id, k); };
  await churn();
  const since = a.noCodeSince;
  assert.ok(since >= t0, 'a code shown longer than the stable time, blanked: the clock started');
  while (Date.now() - t0 < 500) await churn();
  assert.ok(n >= 3, `churned ${n} times`);
  assert.equal(a.noCodeSince, since, 'codes shown only briefly between changes did not restart the clock');
  // A moment alone (the server says B left; B comes back as a new peer)
  // does not restart it either: a lone code is compared with nobody.
  await leave('pB', b);
  assert.match(a.code, /^\d{4} \d{4} \d{4}$/, 'alone: A\'s own code');
  const b2 = await join('pB2');
  assert.ok(a.noCodeSince - since < 100, `a lone code shown for a moment did not restart the clock (moved ${a.noCodeSince - since} ms)`);
  assert.ok(a.code && a.code === b2.code, 'A and the new B have a code');
  // Codes that never stay: blanked every 50 ms, each time inside the grace,
  // so never "still no code"; after twice the timeout, "keeps changing".
  const c = Buffer.from(new Uint8Array(32).fill(7)).toString('base64url');
  const tag = () => /** @type {NonNullable<typeof a.round>} */ (a.round).tag;
  assert.equal(a.codeStall(), null, 'a code on screen, inside twice the timeout');
  let flickers = 0;
  while (Date.now() - since < 1250) {
    // B2 moves the round on (as an injected commitment would make it), A
    // follows, the round finishes with a new code, and again.
    a.moves = 0; b2.moves = 0; // (the move limit is not what is tested here)
    assert.ok(await b2.moveTo((b2.round?.attempt ?? 0) + 1));
    await net.settle();
    if (a.code && a.code === b2.code) flickers++;
    await sleepMs(50);
  }
  assert.ok(flickers >= 2, `codes came and went (${flickers})`);
  assert.equal(a.codeStall()?.why, 'changing', `codes that never stay: ${JSON.stringify(a.codeStall())}`);
  a.warnings.length = 0;
  // A code that stays the stable time clears it.
  await leave('pB2', b2);
  const b3 = await join('pB3');
  assert.ok(a.code && a.code === b3.code);
  await sleepMs(450);
  assert.equal(a.codeStall(), null, 'a code shown the stable time: no warning');
  const shownAt = a.codeShownAt;
  await a.progress(); // the round finishing again (a message repeated) keeps the code's time
  assert.equal(a.codeShownAt, shownAt);
  // A move over the limit is deferred: "starting over", everyone named.
  a.moves = 10; a.moveWindow = Date.now();
  net.drop = () => true;
  await a.onMessage('pB3', { t: 'commit', epoch: tag(), attempt: (a.round?.attempt ?? 0) + 1, c });
  assert.equal(a.code, '');
  await sleepMs(200);
  assert.equal(a.codeStall(), null, 'the code stayed long enough: the clock started again at the blank');
  await sleepMs(500);
  assert.deepEqual(a.codeStall(), { why: 'restarting', pids: ['pB3'] });
  // A membership whose attempts are used up says so.
  a.sawAttempt(tag(), 2 ** 31 - 1);
  a.round = null;
  await a.updateCode();
  await sleepMs(150);
  assert.deepEqual(a.codeStall(), { why: 'used-up', pids: ['pB3'] });
});

test('no code for the timeout: time alone pauses the clock, it does not restart it; a code after a long stall clears the warning at once (§4.5)', async () => {
  const secret = unb64url(newLinkSecret());
  const net = network();
  const hooks = { codeTimeoutMs: 600, codeStableMs: 200, codeGraceMs: 100, codeCheckMs: 20 };
  const a = net.add('pA', secret, {}, hooks); await a.start('pA'); await net.settle();
  /** @type {any[]} */
  const held = [];
  net.drop = (from, to, p) => { if (from !== 'pA' && to === 'pA' && p.t === 'reveal') { held.push({ from, p }); return true; } return false; };
  const b = net.add('pB', secret, {}, hooks); await b.start('pB'); await net.settle();
  const t0 = Date.now();
  await sleepMs(400);
  assert.equal(a.code, '');
  assert.equal(a.codeStall(), null, '400 ms of 600');
  // The server says B left: A is alone with its own code, longer than the stable time ...
  net.members.delete('pB'); b.stop(); await a.peerLeft('pB'); await net.settle();
  assert.match(a.code, /^\d{4} \d{4} \d{4}$/);
  const alone0 = Date.now();
  await sleepMs(300);
  // ... and brings "B" back under a new id, its reveals withheld again.
  const b2 = net.add('pB2', secret, {}, hooks); await b2.start('pB2'); await net.settle();
  const alone = Date.now() - alone0;
  await sleepMs(250);
  assert.deepEqual(a.codeStall(), { why: 'missing', pids: ['pB2'] }, `the 400 ms before and the 250 ms after the time alone (${alone} ms) add up past the timeout`);
  // An honest stall that goes on past twice the timeout, then the code: cleared at once.
  await sleepMs(700);
  assert.ok(Date.now() - t0 - alone >= 1200, 'past twice the timeout with someone to compare with');
  for (const h of held.filter((x) => x.from === 'pB2')) await a.onMessage('pB2', h.p);
  assert.match(a.code, /^\d{4} \d{4} \d{4}$/, 'the code appears');
  assert.equal(a.codeStall(), null, 'the code clears the warning at once: nothing came and went lately');
});

test('a member with another link secret is refused and warned about', async () => {
  const net = network();
  const a = net.add('pA', unb64url(newLinkSecret())); await a.start('pA'); await net.settle();
  const m = net.add('pM', unb64url(newLinkSecret())); await m.start('pM'); await net.settle();
  assert.equal(a.confirmed().length, 0);
  assert.ok(a.warnings.some((w) => w.startsWith('pM: ') && w.includes('does not match this call link')), a.warnings.join('; '));
});

test('a commitment that does not match its reveal is caught', async () => {
  const secret = unb64url(newLinkSecret());
  const net = network();
  const a = net.add('pA', secret);
  await a.start('pA'); await net.settle();
  const b = net.add('pB', secret);
  // B's reveals are replaced in transit by other random values.
  const send = b.hooks.send;
  b.hooks.send = (payload, to) => {
    if (payload.t === 'reveal') payload = { ...payload, r: Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString('base64url') };
    send(payload, to);
  };
  await b.start('pB'); await net.settle();
  assert.equal(a.code, '', 'no code from a bad reveal');
  assert.ok(a.warnings.some((w) => w.includes('does not match its commitment')), a.warnings.join('; '));
});

test('senders start a fresh generation periodically, and the others get it', async () => {
  const secret = unb64url(newLinkSecret());
  const net = network();
  net.rekeyMs = 150;
  const a = net.add('pA', secret); await a.start('pA'); await net.settle();
  const b = net.add('pB', secret); await b.start('pB'); await net.settle();
  const gen = a.gen;
  await new Promise((r) => setTimeout(r, 400));
  await net.settle();
  net.stopAll();
  assert.ok(a.gen > gen, `A rekeyed (generation ${gen} -> ${a.gen})`);
  assert.equal(b.members.get('pA').gen, a.gen, 'B holds A\'s newest generation');
});

/** Records every payload a member sends, to replay later. */
function recordSends(net, id) {
  const ka = net.members.get(id);
  const sent = [];
  const orig = ka.hooks.send;
  ka.hooks.send = (payload, to) => { sent.push({ payload: JSON.parse(JSON.stringify(payload)), to }); orig(payload, to); };
  return sent;
}

test('a departed member cannot come back under its old id or key (a replayed hello is refused)', async () => {
  const secret = unb64url(newLinkSecret());
  const net = network();
  const a = net.add('pA', secret); await a.start('pA'); await net.settle();
  const b = net.add('pB', secret); await b.start('pB'); await net.settle();
  const c = net.add('pC', secret);
  const cSent = recordSends(net, 'pC');
  await c.start('pC'); await net.settle();
  assert.deepEqual(a.confirmed().sort(), ['pB', 'pC']);
  const genBefore = a.gen;
  // C leaves; the server announces it. (A colluding server keeps C's page alive.)
  net.members.delete('pC');
  await a.peerLeft('pC', true); await b.peerLeft('pC', true); await net.settle();
  assert.ok(a.gen > genBefore, 'A started a generation C never had');
  // The server replays C's hello under its old id, and C's later messages.
  net.members.set('pC', c);
  const hello = cSent.find((s) => s.payload.t === 'hello' && !s.to).payload;
  for (const [id, ka] of [['pA', a], ['pB', b]]) {
    await ka.onMessage('pC', hello);
    for (const s of cSent.filter((x) => x.to === id)) await ka.onMessage('pC', s.payload);
  }
  await net.settle();
  for (const ka of [a, b]) {
    assert.ok(!ka.members.has('pC'), 'no member is created for the departed id');
    assert.ok(!ka.confirmed().includes('pC'));
    assert.ok(ka.warnings.some((w) => w.startsWith('pC: left the call')), ka.warnings.join('; '));
  }
  // C's page never receives the new generation: the last key it holds from A is older.
  assert.ok((c.members.get('pA')?.gen ?? 0) < a.gen, `C holds A's generation ${c.members.get('pA')?.gen}, A is at ${a.gen}`);
});

test('forged peer-left for ids nobody announced is not recorded; the departed set fails closed when full', async () => {
  const secret = unb64url(newLinkSecret());
  const net = network();
  const a = net.add('pA', secret); await a.start('pA'); await net.settle();
  for (let i = 0; i < 100; i++) await a.peerLeft('invented' + i);
  assert.equal(a.departed.size, 0, 'unknown ids are not recorded (they cannot push real ones out)');
  await a.peerLeft('pX', true);
  assert.ok(a.departed.has('pX'), 'an announced peer is recorded');
  // Filled to the cap, the page refuses new hellos rather than forget anyone.
  for (let i = 0; a.departed.size < 4096; i++) a.departed.set('filler' + i, null);
  const b = net.add('pB', secret); await b.start('pB'); await net.settle();
  assert.ok(!a.members.has('pB'), 'a new hello is refused once the set is full');
  assert.ok(a.warnings.some((w) => w.includes('too many people have come and gone')), a.warnings.join('; '));
});

test('a suspended peer gets no new generation; after it comes back it gets the current key', async () => {
  const secret = unb64url(newLinkSecret());
  const net = network();
  const a = net.add('pA', secret); await a.start('pA'); await net.settle();
  const b = net.add('pB', secret); await b.start('pB'); await net.settle();
  const c = net.add('pC', secret); await c.start('pC'); await net.settle();
  const code = a.code;
  await a.suspend('pB'); await net.settle();
  assert.deepEqual(a.recipients().sort(), ['pC']);
  assert.equal(c.members.get('pA').gen, a.gen, 'C has A\'s new generation');
  assert.ok(b.members.get('pA').gen < a.gen, 'B does not');
  assert.equal(a.code, code, 'a suspension does not change the safety code (same membership)');
  await a.unsuspend('pB'); await net.settle();
  assert.equal(b.members.get('pA').gen, a.gen, 'B gets the current generation back');
  assert.deepEqual(a.recipients().sort(), ['pB', 'pC']);
});

// ---- consultations: host-signed rosters (docs/security.md §9) ----

import { signRoster, verifyRoster, encodeRoster, newHostKey, consultationFromHash, consultationHash, ROLE_HOST, ROLE_GUEST } from './roster.js';
import { sealData, openData } from './channel.js';

const pidA = 'AAAAAAAAAAAA', pidB = 'BBBBBBBBBBBB', pidC = 'CCCCCCCCCCCC', pidH = 'HHHHHHHHHHHH';

test('rosters: signed bytes round-trip; any change, another host key or another room fails', async () => {
  const { sk, pub: H } = await newHostKey();
  const r = { seq: 3, locked: false, members: [
    { pid: pidH, pub: new Uint8Array(32).fill(1), role: ROLE_HOST },
    { pid: pidA, pub: new Uint8Array(32).fill(2), role: ROLE_GUEST },
  ] };
  const { json, signed } = await signRoster(room, H, sk, r);
  const v = await verifyRoster(room, H, JSON.parse(JSON.stringify(json)));
  assert.deepEqual(v.signed, signed);
  assert.equal(v.roster.seq, 3);
  const bad = async (mut, what) => {
    const j = JSON.parse(JSON.stringify(json));
    mut(j);
    await assert.rejects(verifyRoster(room, H, j), what);
  };
  await bad((j) => { j.seq = 4; }, 'seq');
  await bad((j) => { j.locked = true; }, 'locked');
  await bad((j) => { j.members[1].role = ROLE_HOST; }, 'two hosts');
  await bad((j) => { j.members[1].pid = pidB; }, 'another pid');
  await bad((j) => { j.members.pop(); }, 'a member dropped');
  await bad((j) => { j.members[1].pub = j.members[0].pub; }, 'a duplicate key');
  await bad((j) => { j.sig = j.sig.slice(0, 10); }, 'a short signature');
  await assert.rejects(verifyRoster('BBBBBBBBBBBBBBBBBBBBBB', H, json), 'another room');
  await assert.rejects(verifyRoster(room, (await newHostKey()).pub, json), 'another host key');
  assert.throws(() => encodeRoster(room, H, { seq: 1, locked: false, members: [r.members[1]] }), /one host/);
  assert.throws(() => encodeRoster(room, H, { seq: 0, locked: false, members: r.members }), /seq/);
  // Member order does not matter: the signed form sorts.
  const rev = await verifyRoster(room, H, { ...json, members: [...json.members].reverse() });
  assert.deepEqual(rev.signed, signed);
});

test('consultation links carry the secret and the host key in one parameter', async () => {
  const s = new Uint8Array(16).fill(7), { pub: H } = await newHostKey();
  const frag = '#' + consultationHash(s, H);
  assert.equal(frag.length, 1 + 2 + 64);
  const got = consultationFromHash(frag);
  assert.deepEqual(got?.secret, s);
  assert.deepEqual(got?.hostKey, H);
  assert.equal(consultationFromHash(frag.slice(0, -1)), null, 'a link cut short is refused');
  assert.equal(consultationFromHash('#k=' + frag.slice(3)), null, 'k= is not a consultation');
  assert.equal(linkSecretFromHash(frag), null, 'and c= is not an open-room link');
});

/** A consultation: the host and guests in one in-memory "server". */
async function consultation(n) {
  const secret = unb64url(newLinkSecret());
  const { sk, pub: H } = await newHostKey();
  const net = network();
  const events = { removed: new Set(), unlisted: [] };
  const host = net.add(pidH, secret, { hostKey: H, isHost: true });
  await host.start(pidH);
  const guests = [];
  for (const pid of [pidA, pidB, pidC].slice(0, n)) {
    const g = net.add(pid, secret, { hostKey: H }, {
      onRemoved: () => events.removed.add(pid),
      onUnlisted: (x) => events.unlisted.push(`${pid}:${x}`),
    });
    await g.start(pid);
    guests.push(g);
  }
  await net.settle();
  let seq = 0;
  /** The host signs a roster of itself and these guests and everyone gets it. */
  const publish = async (admitted, locked = false) => {
    const members = [{ pid: pidH, pub: host.pub, role: ROLE_HOST }, ...admitted.map((g) => ({ pid: g.myId, pub: g.pub, role: ROLE_GUEST }))];
    const { json } = await signRoster(room, H, sk, { seq: ++seq, locked, members });
    for (const ka of [host, ...guests]) await ka.onRoster(JSON.parse(JSON.stringify(json)));
    await net.settle();
    // Admitted guests say hello again, as the page does on welcome.
    for (const g of admitted) await g.rehello();
    await net.settle();
    return json;
  };
  return { net, host, guests, publish, events, H, sk, secret, nextSeq: () => ++seq };
}

test('a consultation: nobody gets keys before the host lists them; a removed guest gets nothing new', async () => {
  const { net, host, guests: [a, b], publish, events } = await consultation(2);
  for (const ka of [host, a, b]) assert.deepEqual(ka.confirmed(), [], 'no roster, no key agreement');
  await publish([a]);
  assert.deepEqual(host.confirmed(), [pidA]);
  assert.deepEqual(a.confirmed(), [pidH]);
  assert.deepEqual(b.confirmed(), [], 'B is not admitted');
  assert.equal(b.roster, null, 'B takes no roster that does not name it');
  assert.ok(!host.members.has(pidB) && !a.members.has(pidB), 'nobody makes a member of B');
  assert.equal(a.code, host.code);

  await publish([a, b]);
  for (const ka of [host, a, b]) assert.equal(ka.confirmed().length, 2, `${ka.myId} confirms the two others`);
  assert.equal(a.code, b.code);
  const genBefore = { h: host.gen, b: b.gen };

  // The host removes A; a patched server keeps A in the room.
  await publish([b]);
  assert.ok(events.removed.has(pidA), 'A is told it was removed');
  assert.ok(!host.confirmed().includes(pidA) && !b.confirmed().includes(pidA));
  assert.ok(host.gen > genBefore.h && b.gen > genBefore.b, 'host and B start new generations');
  assert.ok((a.members.get(pidH)?.gen ?? 0) < host.gen, 'A does not hold the host\'s new generation');
  assert.ok((a.members.get(pidB)?.gen ?? 0) < b.gen, 'A does not hold B\'s new generation');
  assert.ok(events.unlisted.includes(`${pidB}:${pidA}`), 'B closes its connection to A');
  // A's hello replayed: refused (A left the list for good).
  const before = b.warnings.length;
  await b.onMessage(pidA, await a.hello(false)); await net.settle();
  assert.ok(!b.members.has(pidA));
  assert.ok(b.warnings.length > before, b.warnings.join('; '));
});

test('a consultation: an old roster is refused, equivocation is warned about, a link without the host key gets nowhere', async () => {
  const { net, host, guests: [a, b], publish, H, sk } = await consultation(2);
  const first = await publish([a]);
  await publish([a, b]);
  assert.equal(await a.onRoster(first), 'old', 'an older roster is refused');
  assert.equal(a.roster?.seq, 2);
  // Same seq, different content: warning, first kept.
  const other = (await signRoster(room, H, sk, { seq: 2, locked: true, members: [{ pid: pidH, pub: host.pub, role: ROLE_HOST }, { pid: pidA, pub: a.pub, role: ROLE_GUEST }, { pid: pidB, pub: b.pub, role: ROLE_GUEST }] })).json;
  assert.equal(await a.onRoster(other), 'bad');
  assert.ok(a.warnings.some((w) => w.includes('two different lists')), a.warnings.join('; '));
  // A forged roster (signed by another key): refused.
  const forged = (await signRoster(room, H, (await newHostKey()).sk, { seq: 9, locked: false, members: [{ pid: pidH, pub: host.pub, role: ROLE_HOST }, { pid: pidA, pub: a.pub, role: ROLE_GUEST }] })).json;
  assert.equal(await a.onRoster(forged), 'bad');
  // A page whose link lost the host key derives other link keys: its hello does not verify.
  const stripped = net.add(pidC, a.secret);
  await stripped.start(pidC); await net.settle();
  assert.ok(!host.members.has(pidC) && !a.members.has(pidC));
  assert.ok(stripped.warnings.length > 0 || host.warnings.some((w) => w.startsWith(pidC)), 'the stripped link is noticed');
});

test('a consultation: a knock is checked against the link without answering it', async () => {
  const { host, guests: [a], net } = await consultation(1);
  const sent = [];
  a.hooks.send = (payload) => sent.push(payload);
  await a.rehello();
  const hello = sent.find((p) => p.t === 'hello');
  assert.deepEqual(await host.checkKnock(pidA, hello), a.pub);
  assert.equal(await host.checkKnock(pidB, hello), null, 'under another id');
  assert.equal(await host.checkKnock(pidA, { ...hello, mac: hello.nonce }), null, 'a bad MAC');
  assert.equal(host.members.size, 0, 'checking a knock makes no member');
  await net.settle();
});

test('a guest that is not fresh gives new keys to the host only; fresh again, to everyone listed', async () => {
  const { host, guests: [a, b], publish, net } = await consultation(2);
  await publish([a, b]);
  // Guests start fresh here (as if pongs had arrived).
  await a.setFresh(true); await b.setFresh(true); await net.settle();
  assert.equal(b.members.get(pidA)?.gen, a.gen);
  await a.setFresh(false); await net.settle();
  assert.equal(host.members.get(pidA)?.gen, a.gen, 'the host gets A\'s new generation');
  assert.ok((b.members.get(pidA)?.gen ?? 0) < a.gen, 'B does not, while A is not fresh');
  await a.setFresh(true); await net.settle();
  assert.equal(b.members.get(pidA)?.gen, a.gen, 'fresh again: B gets it');
});

test('data channel sealing: round trip, direction, replay, reorder, a gap on a new channel', async () => {
  const secret = unb64url(newLinkSecret());
  const net = network();
  const a = net.add('pA', secret); await a.start('pA'); await net.settle();
  const b = net.add('pB', secret); await b.start('pB'); await net.settle();
  const aToB = a.members.get('pB'), bFromA = b.members.get('pA');
  const msg = new TextEncoder().encode('hello, doctor');
  const w1 = await sealData(room, 'pA', 'pB', aToB, msg);
  const w2 = await sealData(room, 'pA', 'pB', aToB, msg);
  assert.notDeepEqual(w1, w2, 'a fresh nonce for each message');
  assert.deepEqual((await openData(room, 'pA', 'pB', bFromA, w1, true)).plaintext, msg);
  await assert.rejects(openData(room, 'pA', 'pB', bFromA, w1, false), /replayed/);
  const w3 = await sealData(room, 'pA', 'pB', aToB, msg);
  await assert.rejects(openData(room, 'pA', 'pB', bFromA, w3, false), /lost or reordered/);
  assert.equal((await openData(room, 'pA', 'pB', bFromA, w3, true)).gap, true, 'a new channel may skip ahead, with a warning');
  // Reflected back to its sender: the direction is wrong.
  const bToA = b.members.get('pA');
  const fromB = await sealData(room, 'pB', 'pA', bToA, msg);
  await assert.rejects(openData(room, 'pB', 'pA', a.members.get('pB'), w1, true), /authentication/);
  assert.deepEqual((await openData(room, 'pB', 'pA', a.members.get('pB'), fromB, true)).plaintext, msg);
  // Tampered: refused.
  const w4 = await sealData(room, 'pA', 'pB', aToB, msg);
  w4[w4.length - 1] ^= 1;
  await assert.rejects(openData(room, 'pA', 'pB', bFromA, w4, false), /authentication/);
});
