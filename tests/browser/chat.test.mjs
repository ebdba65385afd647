// Chat and files in an open-room call (issue 8): messages and a 20 MB file
// each way, sealed end to end on the peer connections' data channels. A
// recording proxy stands where the server is and finds no message text, no
// file name and no file bytes in anything it received.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startParley, launchBrowser, joinCall, waitForStats, dumpOnFailure } from './harness.mjs';
import { startProxy } from './proxy.mjs';
import { sendChat, chatLine, randomFile, sendFile, assertServerNeverSaw } from './chat.helpers.mjs';

/** @type {Awaited<ReturnType<typeof startParley>>} */
let parley;
/** @type {Array<Awaited<ReturnType<typeof launchBrowser>>>} */
const open = [];
/** @type {Awaited<ReturnType<typeof startProxy>>|null} */
let proxy = null;

before(async () => { parley = await startParley(); });
after(async () => {
  for (const b of open) await b.close();
  await proxy?.close();
  await parley?.stop();
});

test('chat and a 20 MB file each way arrive intact; the server sees none of it', { timeout: 300000 },
  dumpOnFailure(() => open, () => ({ 'parley log': parley.logs }), async () => {
    const room = await parley.room();
    proxy = await startProxy(parley.base);
    const link = (/** @type {string} */ q) => `${proxy?.base}${room.url}?${q}#k=${room.secret}`;
    const a = await launchBrowser(), b = await launchBrowser();
    open.push(a, b);
    await joinCall(a, link('name=Alice&join=1'));
    await joinCall(b, link('name=Bob&join=1'));
    for (const p of [a.page, b.page]) await waitForStats(p, (s) => s.length === 1 && s[0].videoFramesDecoded > 20, 'the call is up');

    const hello = 'Privileged: the settlement figure is 1,250,000. See https://example.com/brief.pdf';
    await sendChat(a.page, hello);
    const atBob = await chatLine(b.page, hello);
    assert.equal(atBob.from, 'Alice:');
    assert.equal(atBob.links, 0, 'a link in chat stays plain text (nothing fetched, nothing clickable)');
    assert.equal((await chatLine(a.page, hello)).from, 'You:');
    const reply = 'Understood — counter at 1,100,000.';
    await sendChat(b.page, reply);
    assert.equal((await chatLine(a.page, reply)).from, 'Bob:');

    const size = 20 * 1024 * 1024;
    const f1 = { name: 'Client-Confidential-Statement.pdf', ...randomFile(size) };
    const r1 = await sendFile(a.page, b.page, f1);
    assert.equal(r1.size, size);
    assert.equal(r1.sha256, f1.sha256, 'the file Bob saved is the file Alice sent');
    assert.equal(r1.suggested, f1.name);
    assert.ok(r1.seenTo.some((v) => v > 0 && v < size), `Bob saw the progress bar move (${r1.seenTo.length} samples)`);
    const f2 = { name: 'Signed-Reply.pdf', ...randomFile(size) };
    const r2 = await sendFile(b.page, a.page, f2);
    assert.equal(r2.sha256, f2.sha256, 'the file Alice saved is the file Bob sent');

    const searched = assertServerNeverSaw(proxy, [
      { what: 'the chat text', needle: 'settlement figure' },
      { what: 'the reply', needle: 'counter at' },
      { what: 'a file name', needle: 'Client-Confidential' },
      { what: 'the other file name', needle: 'Signed-Reply' },
      { what: 'bytes of the first file', needle: f1.buffer.subarray(1 << 20, (1 << 20) + 32) },
      { what: 'bytes of the second file', needle: f2.buffer.subarray(5 << 20, (5 << 20) + 32) },
    ]);
    console.log(`searched ${searched} requests and messages the server received: no chat text, file name or file bytes`);
  }));
