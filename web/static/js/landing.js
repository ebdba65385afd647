// @ts-check
// The landing page. What it offers depends on GET /api/info:
//   - closed (the default) and not signed in: "Sign in to start a
//     consultation", and a word for guests that the link they were sent is
//     all they need;
//   - signed in: "Go to your consultations" (/host);
//   - -open-rooms: "Start a consultation", which creates a plain room and
//     shows its link. The link's secret (#k=...) is made here, in the
//     creator's browser: it is never sent to the server.

import { newLinkSecret, unb64url, joinVerifier } from '../e2ee/keys.js';

/** @param {string} id */
function el(id) {
  const e = document.getElementById(id);
  if (!e) throw new Error('missing #' + id);
  return e;
}

const start = /** @type {HTMLButtonElement} */ (el('start'));
const link = /** @type {HTMLInputElement} */ (el('link'));
const errorBox = el('error');

/** Shows what this server and this browser's sign-in allow. */
async function showEntry() {
  /** @type {{openRooms?: boolean, signedIn?: boolean, email?: string}|null} */
  let info = null;
  try {
    const res = await fetch('/api/info', { headers: { Accept: 'application/json' }, cache: 'no-store' });
    if (res.ok) info = await res.json();
  } catch { /* shown below as "unknown" */ }
  if (!info) {
    // A server without host accounts, or one that cannot be reached: offer
    // what the page always offered; the server says if it refuses.
    start.hidden = false;
    el('host-signin').hidden = false;
    return;
  }
  if (info.signedIn) {
    el('host-email').textContent = info.email || '';
    el('host-home').hidden = false;
  } else if (!info.openRooms) {
    el('host-entry').hidden = false;
  }
  if (info.openRooms) {
    start.hidden = false;
    el('host-signin').hidden = !!info.signedIn;
  }
}
showEntry();

start.addEventListener('click', async () => {
  start.disabled = true;
  errorBox.hidden = true;
  try {
    // The secret is made here; the server gets only the verifier of the
    // join token derived from it (docs/security.md §2.5).
    const secret = newLinkSecret();
    const res = await fetch('/api/rooms', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ joinVerifier: await joinVerifier(unb64url(secret)) }),
    });
    /** @type {{id?: string, url?: string, message?: string}} */
    const body = await res.json().catch(() => ({}));
    if (!res.ok || !body.url) {
      throw new Error(body.message || 'The server could not create a consultation. Please try again.');
    }
    const url = new URL(body.url, location.origin);
    url.hash = 'k=' + secret;
    link.value = url.href;
    /** @type {HTMLAnchorElement} */ (el('open')).href = url.pathname + url.search + url.hash;
    el('created').hidden = false;
    start.hidden = true;
    link.focus();
    link.select();
  } catch (e) {
    const msg = e instanceof TypeError
      ? 'Cannot reach the Parley server. Check your internet connection and try again.'
      : (e instanceof Error ? e.message : String(e));
    errorBox.textContent = msg;
    errorBox.hidden = false;
    start.disabled = false;
  }
});

el('copy').addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText(link.value);
    el('copied').textContent = 'Link copied. Paste it into an email or message.';
  } catch {
    link.select();
    el('copied').textContent = 'Select the link and copy it (Ctrl+C, or long-press on a phone).';
  }
});
