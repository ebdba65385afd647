// Tests for recent.js: telling a frame delivered twice from a replay.
//   node --test e2ee/

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { SFrameSender, SFrameReceiver, AES_128_GCM_SHA256_128, getSuite } from './sframe.js';
import { RecentFrames, RECENT_FRAMES } from './recent.js';

const SUITE = AES_128_GCM_SHA256_128;
const NT = getSuite(SUITE).Nt;
const key = new Uint8Array(16).fill(7);
const md = (/** @type {Uint8Array} */ prefix) => new Uint8Array([...new TextEncoder().encode('parley/1 media'), 1, ...prefix]);

test('a frame opened before is a copy; the same counter with another tag or prefix is not', async () => {
  const tx = new SFrameSender(SUITE, 5, key);
  const rx = new SFrameReceiver(SUITE);
  await rx.addKey(5, key);
  const recent = new RecentFrames(NT);
  const prefix = new Uint8Array([0x31, 0x02, 0x00]);
  const a = await tx.seal(md(prefix), new Uint8Array([1, 2, 3, 4]));
  const b = await tx.seal(md(prefix), new Uint8Array([5, 6, 7, 8]));
  assert.ok(await rx.open(md(prefix), a));
  recent.add(prefix, a);
  // Delivered again: SFrame refuses it as a replay; it is a copy.
  assert.equal(await rx.open(md(prefix), a), null);
  assert.equal(rx.stats.replay, 1);
  assert.equal(recent.has(prefix, a), true);
  // Never opened: not a copy.
  assert.equal(recent.has(prefix, b), false);
  // Same header, another tag (a forgery under a used counter): not a copy.
  const forged = a.slice();
  forged[forged.length - 1] ^= 1;
  assert.equal(recent.has(prefix, forged), false);
  // Same frame behind another clear prefix: not a copy.
  assert.equal(recent.has(new Uint8Array([0x31, 0x02, 0x01]), a), false);
  // Junk: no header, or no room for a tag.
  assert.equal(recent.has(prefix, new Uint8Array(0)), false);
  assert.equal(recent.has(prefix, a.subarray(0, 3)), false);
});

test('bounded: the oldest frames are forgotten', async () => {
  const tx = new SFrameSender(SUITE, 9, key);
  const recent = new RecentFrames(NT, 4);
  const p = new Uint8Array(0);
  const frames = [];
  for (let i = 0; i < 6; i++) frames.push(await tx.seal(md(p), new Uint8Array([i])));
  for (const f of frames) recent.add(p, f);
  assert.equal(recent.size, 4);
  assert.deepEqual(frames.map((f) => recent.has(p, f)), [false, false, true, true, true, true]);
  assert.ok(RECENT_FRAMES >= 256, 'the default keeps a few seconds of frames');
});
