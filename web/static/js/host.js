// @ts-check
// The host page (/host): who is signed in, sign out, create a consultation,
// and the list of upcoming and past ones with their guest links.
//
// Creating a consultation (docs/design/membership-review.md R6, R8): this
// browser makes the link secret S and an Ed25519 key pair (private key
// non-extractable), sends the server only the join verifier of S, and keeps
// S and the keys in IndexedDB (hoststore.js). The guest link is
// /c/<id>#c=b64url(S || H): the fragment never reaches the server, so only
// the browser that created a consultation can show its link.

import { api, ApiError, el, showError } from './api.js';
import { addConsultation, getConsultation, checkAvailable, HostStoreError } from './hoststore.js';
import { newHostKey, consultationHash } from '../e2ee/roster.js';
import { joinVerifier } from '../e2ee/keys.js';

/**
 * A consultation as GET /api/consultations shows it (docs/accounts.md).
 * @typedef {{id: string, title: string, scheduledAt: string|null, createdAt: string, expiresAt: string,
 *   revokedAt?: string, endedAt?: string, url: string, state: string, locked: boolean}} Consultation
 * @typedef {import('./hoststore.js').HostRecord} HostRecord
 */

const status = el('host-status');
const errorBox = el('host-error');
const content = el('host-content');
const form = /** @type {HTMLFormElement} */ (el('new-form'));
const titleIn = /** @type {HTMLInputElement} */ (el('title'));
const hostNameIn = /** @type {HTMLInputElement} */ (el('host-name'));
const dateIn = /** @type {HTMLInputElement} */ (el('date'));
const timeIn = /** @type {HTMLInputElement} */ (el('time'));
const createBtn = /** @type {HTMLButtonElement} */ (el('create'));
const newError = el('new-error');
const signoutBtn = /** @type {HTMLButtonElement} */ (el('signout'));

const MSG_NO_ED25519 = 'This browser is too old to create consultations (it cannot make the signing key they need). ' +
  'Use a current version of Chrome, Edge, Firefox or Safari.';
const MSG_SIGNED_OUT = 'Your sign-in has ended, so this page cannot show or change your consultations. Please sign in again.';

/** The session's CSRF token (GET /api/me), sent with every change. */
let csrf = '';
/** Keys this browser holds, by room; filled as the list is shown. @type {Map<string, HostRecord>} */
const records = new Map();
/** Why this browser cannot hold keys, if it cannot. */
let storeProblem = '';

/** The host name is remembered in this browser for the next consultation. */
const HOST_NAME_KEY = 'parley-host-name';
/** @param {string} [v] */
function rememberedHostName(v) {
  try {
    if (v === undefined) return localStorage.getItem(HOST_NAME_KEY) || '';
    if (v) localStorage.setItem(HOST_NAME_KEY, v); else localStorage.removeItem(HOST_NAME_KEY);
  } catch { /* storage refused: nothing remembered */ }
  return v || '';
}
hostNameIn.value = rememberedHostName();

// ---- time in words ----

const whenFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });
/** @param {string} iso */
const when = (iso) => whenFormat.format(new Date(iso));

/** @param {Date} d yyyy-mm-dd of d in local time */
function localDate(d) {
  const p = (/** @type {number} */ n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

/** The state of a consultation in words: [label, sentence]. @param {Consultation} c */
function stateWords(c) {
  switch (c.state) {
    case 'active': return ['Active', `The link works until ${when(c.expiresAt)}.`];
    case 'expired': return ['Expired', `The link expired on ${when(c.expiresAt)}.`];
    case 'revoked': return ['Revoked', `You withdrew the link on ${when(c.revokedAt || c.expiresAt)}.`];
    case 'ended': return ['Ended', `The consultation ended on ${when(c.endedAt || c.expiresAt)}.`];
  }
  return [c.state, ''];
}

/** @param {Consultation} c */
const scheduleWords = (c) => (c.scheduledAt ? when(c.scheduledAt) : `No time set (created ${when(c.createdAt)})`);

// ---- links ----

/** The guest link (also the host's own). @param {Consultation} c @param {HostRecord} rec */
function linkFor(c, rec) {
  return location.origin + c.url + '#' + consultationHash(rec.secret, rec.pub);
}

/** A mailto: link with the title as subject and the link in the body. @param {Consultation} c @param {string} link */
function mailtoFor(c, link) {
  const at = c.scheduledAt ? ` on ${when(c.scheduledAt)}` : '';
  const body = `Here is the link to our video consultation "${c.title}"${at}:\r\n\r\n${link}\r\n\r\n` +
    'Open the link on your phone or computer a few minutes before the time and allow your camera and microphone when asked; you need no account and nothing to install.\r\n';
  return 'mailto:?subject=' + encodeURIComponent(c.title) + '&body=' + encodeURIComponent(body);
}

/**
 * Copies text to the clipboard; when the browser refuses, shows the link
 * in a field to copy by hand.
 * @param {string} text @param {HTMLElement} statusEl @param {HTMLInputElement} field
 */
async function copyLink(text, statusEl, field) {
  try {
    await navigator.clipboard.writeText(text);
    statusEl.textContent = 'Link copied. Paste it into an email or message to your guest.';
  } catch {
    field.value = text;
    field.hidden = false;
    field.focus();
    field.select();
    statusEl.textContent = 'This browser did not let Parley copy the link. Select the link above and copy it (Ctrl+C, or press and hold on a phone).';
  }
}

// ---- the session ----

/** Shows "Please sign in" instead of the page. @param {string} [why] */
function showSignedOut(why) {
  content.hidden = true;
  el('who').hidden = true;
  signoutBtn.hidden = true;
  status.textContent = '';
  showError(errorBox, '');
  if (why) el('signed-out-text').textContent = why;
  el('signed-out').hidden = false;
}

async function refreshMe() {
  const me = await api('/api/me');
  csrf = me.csrf;
  el('who-email').textContent = me.email;
  return me;
}

/**
 * Runs a request that needs the session: retries once with a fresh CSRF
 * token if the session's changed (signed in again in another tab), and
 * shows "Please sign in" if the session has ended.
 * @template T @param {() => Promise<T>} fn @returns {Promise<T>}
 */
async function withSession(fn) {
  try {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof ApiError) || e.code !== 'csrf') throw e;
      await refreshMe();
      return await fn();
    }
  } catch (e) {
    if (e instanceof ApiError && e.code === 'sign-in-required') showSignedOut(MSG_SIGNED_OUT);
    throw e;
  }
}

/** @param {unknown} e */
const message = (e) => (e instanceof Error ? e.message : String(e));

// ---- the list ----

/**
 * A button.
 * @param {string} text @param {string} [cls] @param {string} [describedBy]
 */
function button(text, cls, describedBy) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  if (cls) b.className = cls;
  if (describedBy) b.setAttribute('aria-describedby', describedBy);
  return b;
}

/**
 * A link styled as a button.
 * @param {string} text @param {string} href @param {string} [cls] @param {string} [describedBy]
 */
function linkButton(text, href, cls, describedBy) {
  const a = document.createElement('a');
  a.className = 'button' + (cls ? ' ' + cls : '');
  a.href = href;
  a.textContent = text;
  if (describedBy) a.setAttribute('aria-describedby', describedBy);
  return a;
}

/** @param {string} tag @param {string} cls @param {string} text */
function textEl(tag, cls, text) {
  const e = document.createElement(tag);
  e.className = cls;
  e.textContent = text;
  return e;
}

/**
 * One consultation in a list.
 * @param {Consultation} c @param {boolean} upcoming
 */
function item(c, upcoming) {
  const li = document.createElement('li');
  li.className = 'consultation';
  li.dataset.id = c.id;
  const titleId = 'c-' + c.id + '-title';
  const h = textEl('h3', 'c-title', c.title);
  h.id = titleId;
  li.append(h, textEl('p', 'c-when', scheduleWords(c)));
  const [label, sentence] = stateWords(c);
  const st = document.createElement('p');
  st.className = 'c-state';
  st.append(textEl('span', 'state state-' + c.state, label), ' ' + sentence);
  li.append(st);
  if (!upcoming) return li;

  const actions = document.createElement('div');
  actions.className = 'actions';
  const rec = records.get(c.id);
  const copyStatus = textEl('p', 'hint c-copied', '');
  copyStatus.setAttribute('role', 'status');
  const field = document.createElement('input');
  field.type = 'text';
  field.readOnly = true;
  field.hidden = true;
  field.className = 'c-link';
  field.setAttribute('aria-label', 'Link for ' + c.title);
  if (rec) {
    const link = linkFor(c, rec);
    const copy = button('Copy link', 'c-copy', titleId);
    copy.addEventListener('click', () => copyLink(link, copyStatus, field));
    actions.append(copy, linkButton('Email link', mailtoFor(c, link), 'c-mail', titleId),
      linkButton('Open', link, 'primary c-open', titleId));
  } else {
    li.append(textEl('p', 'note c-elsewhere', storeProblem
      ? 'This window cannot hold the keys of consultations: open Parley in a normal window of the browser you created it in.'
      : 'Created in another browser: open it there.'));
  }
  const revoke = button('Revoke…', 'c-revoke', titleId);
  actions.append(revoke);
  li.append(actions, field, copyStatus);

  const confirm = document.createElement('div');
  confirm.className = 'confirm';
  confirm.hidden = true;
  confirm.setAttribute('role', 'group');
  confirm.setAttribute('aria-labelledby', 'c-' + c.id + '-confirm');
  const q = textEl('p', 'confirm-question', `Revoke the link for “${c.title}”? Your guest will no longer be able to join with it. This cannot be undone.`);
  q.id = 'c-' + c.id + '-confirm';
  const yes = button('Yes, revoke the link', 'danger c-revoke-yes');
  const no = button('Keep the link', 'c-revoke-no');
  const confirmActions = document.createElement('div');
  confirmActions.className = 'actions';
  confirmActions.append(yes, no);
  const confirmError = textEl('p', 'error', '');
  confirmError.setAttribute('role', 'alert');
  confirmError.hidden = true;
  confirm.append(q, confirmActions, confirmError);
  li.append(confirm);

  revoke.addEventListener('click', () => {
    confirm.hidden = false;
    revoke.setAttribute('aria-expanded', 'true');
    yes.focus();
  });
  no.addEventListener('click', () => {
    confirm.hidden = true;
    showError(confirmError, '');
    revoke.setAttribute('aria-expanded', 'false');
    revoke.focus();
  });
  yes.addEventListener('click', async () => {
    yes.disabled = no.disabled = true;
    showError(confirmError, '');
    try {
      await withSession(() => api(`/api/consultations/${encodeURIComponent(c.id)}/revoke`, { method: 'POST', csrf }));
      const created = el('created');
      if (created.dataset.id === c.id) created.hidden = true;
      await loadList();
      status.textContent = `The link for “${c.title}” was revoked. It is now listed under Past.`;
      el('past-title').focus();
    } catch (e) {
      yes.disabled = no.disabled = false;
      showError(confirmError, message(e));
    }
  });
  revoke.setAttribute('aria-expanded', 'false');
  return li;
}

let listGeneration = 0;

/** Fetches and shows the list of consultations. */
async function loadList() {
  const gen = ++listGeneration;
  /** @type {{upcoming: Consultation[], past: Consultation[]}} */
  const list = await withSession(() => api('/api/consultations'));
  if (!storeProblem) {
    for (const c of list.upcoming) {
      if (records.has(c.id)) continue;
      try {
        const rec = await getConsultation(c.id);
        if (rec) records.set(c.id, rec);
      } catch (e) {
        storeProblem = message(e);
        break;
      }
    }
  }
  if (gen !== listGeneration) return; // a newer load is showing
  for (const [key, items] of /** @type {const} */ ([['upcoming', list.upcoming], ['past', list.past]])) {
    const ul = el(key);
    ul.replaceChildren(...items.map((c) => item(c, key === 'upcoming')));
    el(key + '-empty').hidden = items.length > 0;
  }
}

// ---- creating ----

/**
 * The scheduled time from the date and time fields: null for "now", an
 * RFC 3339 string, or an Error with what to fix.
 * @returns {string|null|Error}
 */
function scheduledAt() {
  const d = dateIn.value.trim(), t = timeIn.value.trim();
  if (!d && !t) return null;
  if (!t) return new Error('Choose a time as well, or clear the date to meet now.');
  const at = new Date(`${d || localDate(new Date())}T${t}`); // local time
  if (Number.isNaN(at.getTime())) {
    return new Error('This page does not understand that date or time. Enter the date like 2025-03-24 and the time like 14:30.');
  }
  return at.toISOString();
}

/**
 * Shows the link of a consultation just created.
 * @param {Consultation} c @param {HostRecord} rec
 */
function showCreated(c, rec) {
  const link = linkFor(c, rec);
  const box = el('created');
  box.dataset.id = c.id;
  el('created-title').textContent = `“${c.title}” is ready`;
  el('created-what').textContent = (c.scheduledAt ? `Scheduled for ${when(c.scheduledAt)}. ` : 'For now. ') +
    `The link works until ${when(c.expiresAt)}.`;
  /** @type {HTMLInputElement} */ (el('created-link')).value = link;
  /** @type {HTMLAnchorElement} */ (el('created-mail')).href = mailtoFor(c, link);
  /** @type {HTMLAnchorElement} */ (el('created-open')).href = link;
  el('created-copied').textContent = '';
  box.hidden = false;
  el('created-title').focus();
}

el('created-copy').addEventListener('click', () => {
  const field = /** @type {HTMLInputElement} */ (el('created-link'));
  copyLink(field.value, el('created-copied'), field);
});

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  showError(newError, '');
  titleIn.removeAttribute('aria-invalid');
  const title = titleIn.value.trim();
  if (!title) {
    titleIn.setAttribute('aria-invalid', 'true');
    showError(newError, 'Give the consultation a title.');
    titleIn.focus();
    return;
  }
  const hostName = hostNameIn.value.trim();
  const at = scheduledAt();
  if (at instanceof Error) {
    showError(newError, at.message);
    (timeIn.value ? dateIn : timeIn).focus();
    return;
  }
  createBtn.disabled = true;
  status.textContent = 'Creating the consultation…';
  try {
    // Refuse before the server has anything when this browser cannot keep the keys.
    await checkAvailable();
    /** @type {{sk: CryptoKey, pub: Uint8Array}} */
    let key;
    try {
      key = await newHostKey();
    } catch {
      throw new Error(MSG_NO_ED25519);
    }
    const secret = crypto.getRandomValues(new Uint8Array(16));
    /** @type {Consultation} */
    const c = await withSession(async () => api('/api/consultations', {
      method: 'POST', csrf, body: { title, scheduledAt: at, joinVerifier: await joinVerifier(secret), ...(hostName ? { hostName } : {}) },
    }));
    /** @type {HostRecord} */
    const rec = { room: c.id, secret, sk: key.sk, pub: key.pub, created: Date.now() };
    try {
      await addConsultation(rec);
    } catch (e) {
      if (e instanceof HostStoreError && e.code === 'exists') {
        // Never touch the consultation this browser already holds under that id.
        throw new Error('The server gave the new consultation an id this browser already uses for another one. ' +
          'Nothing was overwritten, but the new consultation cannot be used. Please try again, and tell whoever runs Parley if it happens again.');
      }
      // Without its keys the new link can never be shown: withdraw it.
      await api(`/api/consultations/${encodeURIComponent(c.id)}/revoke`, { method: 'POST', csrf }).catch(() => {});
      throw e;
    }
    records.set(c.id, rec);
    rememberedHostName(hostName);
    form.reset();
    hostNameIn.value = hostName;
    status.textContent = `The consultation “${c.title}” was created.`;
    showCreated(c, rec);
    await loadList();
  } catch (e) {
    status.textContent = '';
    if (!(e instanceof ApiError && e.code === 'sign-in-required')) showError(newError, message(e));
  } finally {
    createBtn.disabled = false;
  }
});

// ---- signing out ----

signoutBtn.addEventListener('click', async () => {
  signoutBtn.disabled = true;
  try {
    await api('/api/logout', { method: 'POST', csrf });
  } catch (e) {
    if (!(e instanceof ApiError && (e.code === 'sign-in-required' || e.code === 'csrf'))) {
      signoutBtn.disabled = false;
      showError(errorBox, message(e));
      return;
    }
    // Already signed out (or signed in anew elsewhere): nothing left to end here.
  }
  location.assign('/signin?signedout=1');
});

// ---- start ----

async function start() {
  try {
    await refreshMe();
  } catch (e) {
    if (e instanceof ApiError && e.code === 'sign-in-required') {
      showSignedOut();
      return;
    }
    status.textContent = '';
    showError(errorBox, message(e));
    return;
  }
  el('who').hidden = false;
  signoutBtn.hidden = false;
  content.hidden = false;
  try {
    await checkAvailable();
  } catch (e) {
    storeProblem = message(e);
    showError(newError, storeProblem);
  }
  try {
    await loadList();
    status.textContent = '';
  } catch (e) {
    status.textContent = '';
    if (!(e instanceof ApiError && e.code === 'sign-in-required')) showError(errorBox, message(e));
  }
}

start();
