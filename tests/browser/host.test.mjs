// The host pages (issue 8) in a real browser against the real binary,
// closed by default (host accounts) and with -open-rooms:
//   - the landing page offers "Sign in" when closed, "Go to your
//     consultations" when signed in, and keeps "Start a consultation" with
//     -open-rooms;
//   - /host without a session is the server's 401 page with a sign-in link;
//   - sign-in errors in plain words (wrong password, rate-limited with the
//     wait, server unreachable), then a keyboard-only sign-in;
//   - a consultation made in the browser: a #c= link of 64 characters whose
//     secret and key stay in IndexedDB (Ed25519 key non-extractable), the
//     list, Copy, the mailto link; the host key store's add-only and
//     roster rules; a consultation from another browser shown as such;
//     revoke (the room answers 410); sign out;
//   - end to end with the call page: Open from /host makes this browser
//     the host (the key store's record), a guest knocks and sees the host's
//     name, is let in, media decodes both ways, and the signed roster is
//     in the host's IndexedDB;
//   - the same sign-in and creation in Firefox (Ed25519 keys in IndexedDB);
//   - screenshots at 360x740 and 1280x800 with no text overflowing its box
//     and no controls overlapping.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startParley, launchBrowser, dumpOnFailure, until, waitForStats, layoutProblems, checkLayouts, SHOTS } from './harness.mjs';
import { ensureFirefox, launchFirefox } from './firefox.mjs';

const EMAIL = 'host@example.com';
const PASSWORD = 'a long password';

/** @type {Awaited<ReturnType<typeof startParley>>} */
let parley;
/** @type {Awaited<ReturnType<typeof launchBrowser>>} */
let host;
/** @type {Array<Awaited<ReturnType<typeof launchBrowser>>>} */
const open = [];

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  parley = await startParley([], { accounts: true });
  // The CLI beside the running server, on the same data directory.
  execFileSync(parley.bin, ['user', 'add', EMAIL, '-data-dir', parley.dataDir], { input: PASSWORD + '\n' });
  host = await launchBrowser();
  open.push(host);
  await host.ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: parley.base });
});
after(async () => {
  for (const b of open) await b.close();
  await parley?.stop();
});

const onFailure = (/** @type {(t: any) => Promise<void>} */ fn) => dumpOnFailure(() => open, () => ({ 'parley log': parley.logs }), fn);

/**
 * Signs in from Node (as another browser would) and returns the cookie and CSRF token.
 * @param {string} base
 */
async function apiSession(base) {
  const r = await fetch(base + '/api/login', {
    method: 'POST', headers: { Origin: base, 'Content-Type': 'application/json' },
    body: JSON.stringify({ email: EMAIL, password: PASSWORD }),
  });
  assert.equal(r.status, 204, 'API sign-in');
  const cookie = (r.headers.get('set-cookie') || '').split(';')[0];
  const me = await (await fetch(base + '/api/me', { headers: { Cookie: cookie } })).json();
  return { cookie, csrf: me.csrf };
}

const text = (/** @type {import('playwright-core').Page} */ page, /** @type {string} */ sel) => page.locator(sel).innerText();

test('landing page when closed: sign in, and a word for guests', onFailure(async () => {
  const { page } = host;
  await page.goto(parley.base + '/');
  await page.locator('#signin-link').waitFor({ state: 'visible' });
  assert.equal(await page.getAttribute('#signin-link', 'href'), '/signin');
  assert.match(await text(page, '#signin-link'), /Sign in to start a consultation/);
  assert.match(await text(page, '#host-entry'), /open the link you were sent/);
  assert.equal(await page.isVisible('#start'), false, 'no Start button on a closed server');
  const info = await (await fetch(parley.base + '/api/info')).json();
  assert.deepEqual(info, { openRooms: false, signedIn: false });
}));

test('/host without a session is the 401 page with a sign-in link', onFailure(async () => {
  const { page } = host;
  const res = await page.goto(parley.base + '/host');
  assert.equal(res?.status(), 401);
  const a = page.locator('a[href="/signin"]');
  assert.equal(await a.count(), 1);
  assert.match(await page.locator('h1').innerText(), /Please sign in/);
}));

test('sign-in errors in plain words, then a keyboard-only sign-in', onFailure(async () => {
  const { page } = host;
  await page.goto(parley.base + '/signin');
  await checkLayouts(page, 'signin');

  // Wrong password.
  await page.fill('#email', EMAIL);
  await page.fill('#password', 'not the password');
  await page.click('#signin-submit');
  await page.locator('#signin-error').waitFor({ state: 'visible' });
  assert.match(await text(page, '#signin-error'), /do not match a host account here/);
  assert.equal(await page.getAttribute('#signin-error', 'role'), 'alert');
  assert.equal(new URL(page.url()).pathname, '/signin');

  // Nothing typed.
  await page.fill('#email', '');
  await page.fill('#password', '');
  await page.click('#signin-submit');
  assert.match(await text(page, '#signin-error'), /Enter your email address and your password/);

  // The server cannot be reached.
  await page.route('**/api/login', (r) => r.abort('connectionrefused'));
  await page.fill('#email', EMAIL);
  await page.fill('#password', PASSWORD);
  await page.click('#signin-submit');
  await until(async () => /Cannot reach the Parley server/.test(await text(page, '#signin-error')), 'the unreachable message');
  await page.unroute('**/api/login');

  // Rate-limited: five failures for one account, and the sixth attempt is
  // told how long to wait (from Retry-After).
  for (let i = 0; i < 5; i++) {
    const r = await fetch(parley.base + '/api/login', {
      method: 'POST', headers: { Origin: parley.base, 'Content-Type': 'application/json' },
      body: JSON.stringify({ email: 'someone@example.com', password: 'wrong password ' + i }),
    });
    assert.equal(r.status, 401);
  }
  await page.fill('#email', 'someone@example.com');
  await page.fill('#password', 'yet another guess');
  await page.click('#signin-submit');
  await until(async () => /please wait about 1[45] minutes \(until \d\d:\d\d/.test(await text(page, '#signin-error')), 'the rate-limit message');
  await checkLayouts(page, 'signin-error');

  // Right, with the keyboard only: Tab from the page's start.
  await page.goto(parley.base + '/signin');
  await page.locator('#email').waitFor();
  await page.keyboard.press('Tab'); // the Parley link
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'email');
  await page.keyboard.type(EMAIL);
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'password');
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press('Enter');
  await page.waitForURL(parley.base + '/host');
  await page.locator('#who-email').waitFor({ state: 'visible' });
  assert.equal(await text(page, '#who-email'), EMAIL);

  // Signed in: /signin goes straight on, and the landing page says where to go.
  await page.goto(parley.base + '/signin');
  await page.waitForURL(parley.base + '/host');
  await page.goto(parley.base + '/');
  await page.locator('#host-link').waitFor({ state: 'visible' });
  assert.equal(await page.getAttribute('#host-link', 'href'), '/host');
  assert.match(await text(page, '#host-home'), /host@example\.com/);
  assert.equal(await page.isVisible('#signin-link'), false);
}));

/** @type {{id: string, link: string, title: string}} */
let made;

test('create a consultation: the #c= link, the key store, the list, copy and mailto', onFailure(async (t) => {
  const { page } = host;
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.goto(parley.base + '/host');
  await page.locator('#new-form').waitFor({ state: 'visible' });
  await until(async () => (await text(page, '#host-status')) === '', 'the list to load');
  assert.equal(await page.isVisible('#upcoming-empty'), true);

  // No title: refused on the page.
  await page.click('#create');
  assert.match(await text(page, '#new-error'), /Give the consultation a title/);
  assert.equal(await page.getAttribute('#title', 'aria-invalid'), 'true');

  const title = 'Follow-up with Ms Example';
  const day = await page.evaluate(() => {
    const d = new Date(Date.now() + 2 * 86400e3);
    return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
  });
  await page.fill('#title', title);
  await page.fill('#host-name', 'Dr Ana Ruiz');
  await page.fill('#date', day);
  await page.fill('#time', '14:30');
  await page.click('#create');
  await page.locator('#created').waitFor({ state: 'visible' });
  const link = await page.inputValue('#created-link');
  const m = /^(http:\/\/127\.0\.0\.1:\d+)\/c\/([A-Za-z0-9_-]{22})#c=([A-Za-z0-9_-]+)$/.exec(link);
  assert.ok(m, 'link shape: ' + link);
  assert.equal(m[1], parley.base);
  assert.equal(m[3].length, 64, 'the c= parameter is 64 characters');
  const id = m[2];
  made = { id, link, title };
  assert.equal(await page.getAttribute('#created-open', 'href'), link);
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'created-title', 'focus moves to the new link');
  await checkLayouts(page, 'host-created');
  await page.setViewportSize({ width: 1280, height: 800 });

  // What the server holds: the title and time, never the fragment.
  const { cookie } = await apiSession(parley.base);
  const c = await (await fetch(`${parley.base}/api/consultations/${id}`, { headers: { Cookie: cookie } })).json();
  assert.equal(c.title, title);
  const local = await page.evaluate((d) => new Date(`${d}T14:30`).getTime(), day);
  assert.equal(Date.parse(c.scheduledAt), local, 'scheduled at the local 14:30');
  assert.equal(c.state, 'active');
  assert.equal(c.hostName, 'Dr Ana Ruiz');
  assert.equal(await page.inputValue('#host-name'), 'Dr Ana Ruiz', 'the host name is kept for the next one');
  assert.ok(!parley.logs.includes(m[3]) && !parley.logs.includes(m[3].slice(0, 22)), 'the fragment never reaches the server');

  // The key store: S and H are the link's, the signing key is non-extractable and signs for H.
  const rec = await page.evaluate(async ({ id, frag }) => {
    const hs = await import('/js/hoststore.js');
    const roster = await import('/e2ee/roster.js');
    const r = await hs.getConsultation(id);
    if (!r) return null;
    const msg = new TextEncoder().encode('check');
    const sig = await crypto.subtle.sign('Ed25519', r.sk, msg);
    const pk = await crypto.subtle.importKey('raw', r.pub, { name: 'Ed25519' }, false, ['verify']);
    let exported = 'refused';
    try { await crypto.subtle.exportKey('pkcs8', r.sk); exported = 'exported!'; } catch { /* non-extractable */ }
    return {
      secret: r.secret.length, pub: r.pub.length, extractable: r.sk.extractable, alg: r.sk.algorithm.name, exported,
      verifies: await crypto.subtle.verify('Ed25519', pk, sig, msg),
      sameLink: roster.consultationHash(r.secret, r.pub) === 'c=' + frag,
      created: typeof r.created, rooms: await hs.listRooms(),
    };
  }, { id, frag: m[3] });
  assert.deepEqual(rec, {
    secret: 16, pub: 32, extractable: false, alg: 'Ed25519', exported: 'refused', verifies: true, sameLink: true, created: 'number', rooms: [id],
  });

  // The list.
  const item = page.locator(`#upcoming li[data-id="${id}"]`);
  await item.waitFor();
  assert.match(await item.locator('h3').innerText(), new RegExp(title));
  assert.match(await item.locator('.c-state').innerText(), /^Active\b.*The link works until/);
  assert.match(await item.locator('.c-when').innerText(), /2:30|14:30/);
  assert.equal(await item.locator('.c-open').getAttribute('href'), link);

  // Copy puts the link on the clipboard (or, where the browser refuses, shows it to copy by hand).
  await item.locator('.c-copy').click();
  await until(async () => (await item.locator('.c-copied').innerText()) !== '', 'the copy message');
  const copied = await item.locator('.c-copied').innerText();
  t.diagnostic(/Link copied/.test(copied) ? 'Copy: the clipboard' : 'Copy: the browser refused, the fallback field');
  if (/Link copied/.test(copied)) {
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), link);
  } else {
    assert.match(copied, /Select the link above and copy it/);
    assert.equal(await item.locator('.c-link').inputValue(), link);
  }

  // Email link: the title as subject and the link in the body.
  const href = /** @type {string} */ (await item.locator('.c-mail').getAttribute('href'));
  assert.ok(href.startsWith('mailto:?subject=' + encodeURIComponent(title) + '&body='), href);
  const body = decodeURIComponent(href.split('&body=')[1]);
  assert.ok(body.includes(link), 'the body has the link');
  assert.match(body, /allow your camera and microphone/);
}));

test('the host key store: add never overwrites, rosters only move forward', onFailure(async () => {
  const { page } = host;
  const out = await page.evaluate(async (id) => {
    const hs = await import('/js/hoststore.js');
    const before = await hs.getConsultation(id);
    if (!before) throw new Error('no record');
    /** @param {() => Promise<unknown>} f */
    const code = async (f) => { try { await f(); return 'ok'; } catch (e) { return /** @type {any} */ (e).code || String(e); } };
    const other = crypto.getRandomValues(new Uint8Array(16));
    const res = {
      addAgain: await code(() => hs.addConsultation({ room: id, secret: other, sk: before.sk, pub: before.pub, created: 1 })),
      rosterUnknown: await code(() => hs.saveRoster('AAAAAAAAAAAAAAAAAAAAAA', { signed: new Uint8Array([1]), json: { seq: 1 } })),
      roster2: await code(() => hs.saveRoster(id, { signed: new Uint8Array([2]), json: { t: 'roster', seq: 2 } })),
      roster2again: await code(() => hs.saveRoster(id, { signed: new Uint8Array([2]), json: { t: 'roster', seq: 2 } })),
      roster2other: await code(() => hs.saveRoster(id, { signed: new Uint8Array([9]), json: { t: 'roster', seq: 2 } })),
      roster1: await code(() => hs.saveRoster(id, { signed: new Uint8Array([1]), json: { t: 'roster', seq: 1 } })),
      roster3: await code(() => hs.saveRoster(id, { signed: new Uint8Array([3, 3]), json: { t: 'roster', seq: 3 } })),
      bad: await code(() => hs.saveRoster(id, { signed: new Uint8Array([4]), json: {} })),
    };
    const after = await hs.getConsultation(id);
    if (!after || !after.roster) throw new Error('no roster');
    return {
      ...res,
      secretKept: after.secret.every((b, i) => b === before.secret[i]),
      created: after.created === before.created,
      roster: { seq: /** @type {any} */ (after.roster.json).seq, signed: Array.from(after.roster.signed) },
    };
  }, made.id);
  assert.deepEqual(out, {
    addAgain: 'exists', rosterUnknown: 'not-found', roster2: 'ok', roster2again: 'ok', roster2other: 'stale',
    roster1: 'stale', roster3: 'ok', bad: 'invalid', secretKept: true, created: true, roster: { seq: 3, signed: [3, 3] },
  });
}));

test('a consultation from another browser, long titles, and the list at phone and desktop sizes', onFailure(async () => {
  const { page } = host;
  const { cookie, csrf } = await apiSession(parley.base);
  const verifier = Buffer.alloc(32, 7).toString('base64url');
  for (const title of ['Made elsewhere', 'A very long title: ' + 'Consultation'.repeat(8) + ' with words that wrap']) {
    const r = await fetch(parley.base + '/api/consultations', {
      method: 'POST', headers: { Origin: parley.base, Cookie: cookie, 'X-CSRF-Token': csrf, 'Content-Type': 'application/json' },
      body: JSON.stringify({ title: title.slice(0, 120), scheduledAt: null, joinVerifier: verifier }),
    });
    assert.equal(r.status, 201, await r.clone().text());
  }
  await page.reload();
  const elsewhere = page.locator('#upcoming li', { hasText: 'Made elsewhere' });
  await elsewhere.waitFor();
  assert.match(await elsewhere.innerText(), /Created in another browser: open it there/);
  assert.equal(await elsewhere.locator('.c-copy, .c-open, .c-mail').count(), 0);
  assert.equal(await elsewhere.locator('.c-revoke').count(), 1, 'it can still be revoked');
  assert.match(await elsewhere.locator('.c-when').innerText(), /No time set/);
  await checkLayouts(page, 'host-list');

  // The layout check itself sees what it is for: a line that cannot wrap,
  // and two buttons on top of each other.
  await page.setViewportSize({ width: 360, height: 740 });
  await page.evaluate(() => {
    const p = document.createElement('p');
    p.id = 'bad-line';
    p.textContent = 'x'.repeat(200);
    p.style.overflowWrap = 'normal';
    p.style.overflow = 'hidden';
    const a = document.createElement('button'), b = document.createElement('button');
    a.textContent = 'one'; b.textContent = 'two';
    b.style.marginLeft = '-40px';
    const row = document.createElement('div');
    row.id = 'bad-row';
    row.append(a, b);
    document.querySelector('main')?.append(p, row);
  });
  const seen = await layoutProblems(page);
  assert.ok(seen.some((x) => x.startsWith('text overflows: p#bad-line')), seen.join('\n'));
  assert.ok(seen.some((x) => x.startsWith('overlap: button') && x.includes('"two"')), seen.join('\n'));
  await page.evaluate(() => { document.getElementById('bad-line')?.remove(); document.getElementById('bad-row')?.remove(); });
  assert.deepEqual(await layoutProblems(page), []);
}));

test('revoke, with a confirm step: listed as revoked, the room answers 410', onFailure(async () => {
  const { page } = host;
  await page.setViewportSize({ width: 1280, height: 800 });
  const item = page.locator(`#upcoming li[data-id="${made.id}"]`);
  await item.locator('.c-revoke').click();
  await item.locator('.confirm').waitFor({ state: 'visible' });
  assert.match(await item.locator('.confirm-question').innerText(), /no longer be able to join/);
  // "Keep the link" changes nothing.
  await item.locator('.c-revoke-no').click();
  assert.equal(await item.locator('.confirm').isVisible(), false);
  assert.equal((await (await fetch(`${parley.base}/api/rooms/${made.id}`)).status), 200);

  await item.locator('.c-revoke').click();
  await item.locator('.c-revoke-yes').click();
  const past = page.locator(`#past li[data-id="${made.id}"]`);
  await past.waitFor();
  assert.match(await past.locator('.c-state').innerText(), /^Revoked\b.*withdrew the link/);
  assert.equal(await page.locator(`#upcoming li[data-id="${made.id}"]`).count(), 0);
  assert.equal(await past.locator('button, a').count(), 0, 'past ones are only listed');
  assert.match(await text(page, '#host-status'), /was revoked/);
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'past-title', 'focus follows the revoked consultation');
  assert.equal(await page.isVisible('#created'), false, 'the revoked link is no longer offered');
  const r = await fetch(`${parley.base}/api/rooms/${made.id}`);
  assert.equal(r.status, 410);
  assert.equal((await r.json()).error, 'link-revoked');
}));

test('end to end: Open from /host hosts the call, a guest knocks and is let in, the roster is stored', onFailure(async () => {
  const { page } = host;
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.goto(parley.base + '/host');
  await page.locator('#new-form').waitFor({ state: 'visible' });
  await page.fill('#title', 'Call now');
  await page.click('#create');
  await page.locator('#created').waitFor({ state: 'visible' });
  const link = await page.inputValue('#created-link');
  const id = /\/c\/([A-Za-z0-9_-]{22})#/.exec(link)?.[1] || '';
  const item = page.locator(`#upcoming li[data-id="${id}"]`);
  assert.equal(await item.locator('.c-open').getAttribute('href'), link);
  const withQuery = (/** @type {string} */ name) => link.replace('#', `?name=${encodeURIComponent(name)}&join=1#`);

  // The host, as Open does, with the URL contract's name and join.
  await page.goto(withQuery('Ana'));
  await page.locator('#host-panel').waitFor({ state: 'visible', timeout: 20000 });

  const guest = await launchBrowser();
  open.push(guest);
  await guest.page.goto(withQuery('Guest'));
  await guest.page.locator('#waiting-room').waitFor({ state: 'visible', timeout: 20000 });
  assert.match(await guest.page.locator('#waiting-title').innerText(), /Waiting for Dr Ana Ruiz/);

  const letIn = page.getByRole('button', { name: 'Let Guest in' });
  await until(async () => (await letIn.count()) === 1 && (await letIn.isEnabled()), 'the knock, checked', 20000);
  await letIn.click();
  await guest.page.locator('#call').waitFor({ state: 'visible', timeout: 20000 });
  for (const b of [page, guest.page]) {
    await waitForStats(b, (st) => st.some((x) => x.videoFramesDecoded > 20), 'decoded video');
  }
  const stored = await page.evaluate(async (room) => {
    const hs = await import('/js/hoststore.js');
    const r = await hs.getConsultation(room);
    const j = /** @type {any} */ (r?.roster?.json);
    return j && { seq: j.seq, roles: j.members.map((/** @type {any} */ m) => m.role).sort() };
  }, id);
  assert.ok(stored && stored.seq >= 2, 'a roster after the admission: ' + JSON.stringify(stored));
  assert.deepEqual(stored.roles, [0, 1], 'the host and the guest');
  await guest.close();
  open.splice(open.indexOf(guest), 1);
  await page.goto(parley.base + '/host');
  await page.locator('#who-email').waitFor({ state: 'visible' });
}));

test('sign out', onFailure(async () => {
  const { page } = host;
  await page.click('#signout');
  await page.waitForURL(parley.base + '/signin?signedout=1');
  assert.match(await text(page, '#signin-note'), /You have signed out/);
  const info = await page.evaluate(async () => (await fetch('/api/info')).json());
  assert.deepEqual(info, { openRooms: false, signedIn: false });
  const res = await page.goto(parley.base + '/host');
  assert.equal(res?.status(), 401);
  assert.equal(await page.locator('a[href="/signin"]').count(), 1);
}));

test('landing page with -open-rooms keeps "Start a consultation"', onFailure(async () => {
  const openParley = await startParley(); // -open-rooms
  try {
    const { page } = host;
    await page.goto(openParley.base + '/');
    await page.click('#start');
    await page.locator('#created').waitFor({ state: 'visible' });
    assert.match(await page.inputValue('#link'), /\/c\/[A-Za-z0-9_-]{22}#k=[A-Za-z0-9_-]{22}$/);
    assert.equal(await page.isVisible('#host-entry'), false);
    assert.equal(await page.isVisible('#host-signin'), true);
    await checkLayouts(page, 'landing-open');
  } finally {
    await openParley.stop();
  }
}));

test('Firefox: sign in, create, and the keys stay in its IndexedDB', async (t) => {
  const why = ensureFirefox();
  if (why) { t.skip(why); return; }
  const ff = await launchFirefox();
  try {
    const { page } = ff;
    await page.goto(parley.base + '/signin');
    await page.waitForSelector('#email');
    await page.type('#email', EMAIL);
    await page.type('#password', PASSWORD);
    await Promise.all([page.waitForNavigation(), page.click('#signin-submit')]);
    assert.equal(new URL(page.url()).pathname, '/host');
    await page.waitForSelector('#new-form', { visible: true });
    await page.type('#title', 'Made in Firefox');
    await page.click('#create');
    await page.waitForSelector('#created', { visible: true, timeout: 15000 });
    const link = await page.$eval('#created-link', (e) => /** @type {HTMLInputElement} */ (e).value);
    const m = /\/c\/([A-Za-z0-9_-]{22})#c=([A-Za-z0-9_-]{64})$/.exec(link);
    assert.ok(m, 'link: ' + link + '\n' + ff.consoleLines.join('\n'));
    const rec = await page.evaluate(async (id) => {
      const hs = await import('/js/hoststore.js');
      const r = await hs.getConsultation(id);
      return r && { extractable: r.sk.extractable, alg: r.sk.algorithm.name, secret: r.secret.length, pub: r.pub.length };
    }, m[1]);
    assert.deepEqual(rec, { extractable: false, alg: 'Ed25519', secret: 16, pub: 32 });
  } finally {
    await ff.close();
  }
});
