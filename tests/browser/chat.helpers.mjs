// Helpers for the chat and file tests (chat.test.mjs, consult.test.mjs):
// sending a message and a file through the call page as a person would, and
// checking what arrived.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Types a chat message and sends it with the button.
 * @param {import('playwright-core').Page} page @param {string} text
 */
export async function sendChat(page, text) {
  await page.fill('#chat-text', text);
  await page.click('#chat-send');
}

/**
 * Waits until a chat line with this text shows, and returns its parts.
 * @param {import('playwright-core').Page} page @param {string} text
 */
export async function chatLine(page, text) {
  const li = page.locator('#chat-log li', { hasText: text }).first();
  await li.waitFor({ timeout: 20000 });
  return {
    from: await li.locator('.from').innerText(),
    links: await li.locator('a').count(),
    text: await li.innerText(),
  };
}

/** A file of random bytes (incompressible), with its SHA-256. @param {number} size */
export function randomFile(size) {
  const buffer = randomBytes(size);
  return { buffer, sha256: createHash('sha256').update(buffer).digest('hex') };
}

/**
 * Sends a file from one page to another, as people would: the sender picks
 * it, the receiver clicks Accept, waits for it to arrive and saves it.
 * Returns the saved bytes' SHA-256 and the progress values seen on both sides.
 *
 * The file is picked from disk (a temporary directory, removed after the
 * transfer): a path goes to the local Chromium as a path, while a buffer
 * of 20 MB goes through the DevTools protocol in base64 (~20 s here).
 * @param {import('playwright-core').Page} from @param {import('playwright-core').Page} to
 * @param {{name: string, buffer: Buffer}} file
 */
export async function sendFile(from, to, file) {
  const dir = mkdtempSync(join(tmpdir(), 'parley-file-'));
  try {
    const path = join(dir, file.name);
    writeFileSync(path, file.buffer);
    await from.setInputFiles('#file-input', path);
    // The browser reads the picked file from disk as it sends it: the
    // directory goes only once the transfer is over.
    return await receiveFile(from, to, file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The receiving half of sendFile: Accept, wait, save.
 * @param {import('playwright-core').Page} from @param {import('playwright-core').Page} to
 * @param {{name: string}} file
 */
async function receiveFile(from, to, file) {
  const row = to.locator('#transfers li', { hasText: file.name }).first();
  await row.locator('button', { hasText: 'Accept' }).click({ timeout: 20000 });
  /** @type {number[]} */
  const seenTo = [], seenFrom = [];
  const save = row.locator('a', { hasText: 'Save' });
  const sendRow = from.locator('#transfers li', { hasText: file.name }).first();
  // A row's progress bar, or -1 without one. evaluateAll does not wait for
  // the element (locator.evaluate would, for the whole action timeout, once
  // a finished transfer has taken its bar away).
  /** @param {import('playwright-core').Locator} r */
  const progress = (r) => r.locator('progress').evaluateAll((ps) => ps.length ? /** @type {HTMLProgressElement} */ (ps[0]).value : -1).catch(() => -1);
  const deadline = Date.now() + 120000;
  while (!(await save.count())) {
    const pt = await progress(row);
    if (pt >= 0) seenTo.push(pt);
    const pf = await progress(sendRow);
    if (pf >= 0) seenFrom.push(pf);
    const bad = await row.locator('.bad').count();
    if (bad) assert.fail('the transfer failed: ' + await row.innerText());
    if (Date.now() > deadline) assert.fail('the file did not arrive: ' + await row.innerText());
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.match(await row.innerText(), /received and checked/);
  const [download] = await Promise.all([to.waitForEvent('download'), save.click()]);
  const path = await download.path();
  const got = readFileSync(/** @type {string} */ (path));
  return { sha256: createHash('sha256').update(got).digest('hex'), size: got.length, suggested: download.suggestedFilename(), seenTo, seenFrom };
}

/**
 * Asserts that nothing the server received carries the given plaintexts:
 * every recorded HTTP request (URL, headers, body) and WebSocket message.
 * @param {{requests: {url: string, rawHeaders: string[], body: Buffer}[], messages: {text: string}[]}} proxy
 * @param {{what: string, needle: string|Buffer}[]} needles
 */
export function assertServerNeverSaw(proxy, needles) {
  const hay = [
    ...proxy.requests.map((r) => Buffer.concat([Buffer.from(r.url + '\n' + r.rawHeaders.join('\n') + '\n'), r.body])),
    ...proxy.messages.map((m) => Buffer.from(m.text)),
  ];
  for (const { what, needle } of needles) {
    const n = typeof needle === 'string' ? Buffer.from(needle) : needle;
    for (const h of hay) assert.equal(h.indexOf(n), -1, `the server received ${what}`);
  }
  return hay.length;
}
