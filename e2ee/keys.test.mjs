// Key agreement in Node's WebCrypto: members exchange hello, confirm, key,
// commit and reveal messages over an in-memory "server", and must end with
// the same safety code, including after someone leaves and after a view
// that went away and came back.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { KeyAgreement, newLinkSecret, linkSecretFromHash, unb64url } from './keys.js';

const room = 'AAAAAAAAAAAAAAAAAAAAAA';

/** Every network made, so their rekey timers stop when the tests end. */
const nets = [];
after(() => { for (const n of nets) n.stopAll(); });

/** A little server: delivers each member's messages to the others, in order, unless blocked. */
function network() {
  /** @type {Map<string, KeyAgreement>} */
  const members = new Map();
  const blocked = new Set(); // "from>to"
  let inflight = Promise.resolve();
  const deliver = (from, to, payload) => {
    if (blocked.has(`${from}>${to}`)) return;
    const m = members.get(to);
    if (!m) return;
    const copy = JSON.parse(JSON.stringify(payload));
    inflight = inflight.then(() => m.onMessage(from, copy));
  };
  const net = {
    members, blocked, rekeyMs: 0,
    all: [],
    stopAll() { for (const m of net.all) m.stop(); },
    add(id, secret) {
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
      });
      ka.warnings = [];
      net.all.push(ka);
      ka.installed = installed;
      members.set(id, ka);
      return ka;
    },
    async settle() {
      for (let i = 0; i < 50; i++) {
        const before = inflight;
        await before;
        await new Promise((r) => setTimeout(r, 5));
        if (inflight === before) return;
      }
    },
  };
  nets.push(net);
  return net;
}

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
