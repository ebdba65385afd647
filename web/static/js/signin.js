// @ts-check
// The sign-in page (/signin): email and password, POST /api/login, then
// on to the host page. Every refusal is shown in plain words.

import { api, ApiError, el, showError, waitWords } from './api.js';

const form = /** @type {HTMLFormElement} */ (el('signin-form'));
const email = /** @type {HTMLInputElement} */ (el('email'));
const password = /** @type {HTMLInputElement} */ (el('password'));
const submit = /** @type {HTMLButtonElement} */ (el('signin-submit'));
const status = el('signin-status');
const errorBox = el('signin-error');

const HOST_PAGE = '/host';

// Already signed in: nothing to do here.
api('/api/info').then((info) => {
  if (info && info.signedIn) location.replace(HOST_PAGE);
}).catch(() => { /* the form still works; the sign-in itself reports problems */ });

const params = new URLSearchParams(location.search);
if (params.get('signedout') === '1') {
  const note = el('signin-note');
  note.textContent = 'You have signed out.';
  note.hidden = false;
}

/** @type {HTMLInputElement} */ (el('show-password')).addEventListener('change', (ev) => {
  password.type = /** @type {HTMLInputElement} */ (ev.target).checked ? 'text' : 'password';
});

/**
 * What to show for a refused sign-in.
 * @param {unknown} e
 */
function explain(e) {
  if (!(e instanceof ApiError)) return e instanceof Error ? e.message : String(e);
  switch (e.code) {
    case 'bad-login':
      return 'That email address and password do not match a host account here. Check both (is Caps Lock on?) and try again.';
    case 'rate-limited':
      return e.retryAfter > 0
        ? `Too many failed sign-in attempts. To protect your account, signing in is paused: please wait ${waitWords(e.retryAfter)} and try again.`
        : e.message;
    default:
      return e.message;
  }
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  showError(errorBox, '');
  const addr = email.value.trim();
  if (!addr || !password.value) {
    showError(errorBox, 'Enter your email address and your password.');
    (addr ? password : email).focus();
    return;
  }
  submit.disabled = true;
  status.textContent = 'Signing in…';
  try {
    await api('/api/login', { method: 'POST', body: { email: addr, password: password.value } });
    status.textContent = 'Signed in. Opening your consultations…';
    location.assign(HOST_PAGE);
  } catch (e) {
    status.textContent = '';
    showError(errorBox, explain(e));
    submit.disabled = false;
    if (e instanceof ApiError && e.code === 'bad-login') {
      password.select();
      password.focus();
    }
  }
});
