// The signaling client's reconnect rules (web/static/js/protocol.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoff, isFinalClose, RECONNECT_GIVE_UP_MS } from '../../web/static/js/protocol.js';

test('reconnect backoff grows exponentially to 10 s, with jitter between half and all', () => {
  assert.equal(backoff(0, () => 0), 250);
  assert.equal(backoff(0, () => 1), 500);
  assert.equal(backoff(3, () => 1), 4000);
  assert.equal(backoff(3, () => 0), 2000);
  assert.equal(backoff(10, () => 1), 10000);
  assert.equal(backoff(50, () => 1), 10000, 'capped');
  const seen = new Set(Array.from({ length: 50 }, () => backoff(4)));
  assert.ok(seen.size > 10, 'random jitter spreads the pages of a restarted server');
  for (const d of seen) assert.ok(d >= 4000 && d <= 8000);
  // The attempts before giving up: a two-minute outage gets about 15 tries.
  let t = 0, n = 0;
  while (t < RECONNECT_GIVE_UP_MS) t += backoff(n++, () => 1);
  assert.ok(n >= 12 && n <= 20, `${n} attempts`);
});

test('closes that end the call for good, and closes after which the page reconnects', () => {
  for (const c of [4003, 4004, 4005, 4006, 4007, 4008, 4009, 1008, 1009]) assert.ok(isFinalClose(c), String(c));
  for (const c of [1000, 1001, 1006, 1011, 1012, 4000, 4001]) assert.ok(!isFinalClose(c), String(c));
});
