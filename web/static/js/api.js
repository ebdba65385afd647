// @ts-check
// The account API as the host pages use it (docs/accounts.md): one fetch
// wrapper that turns every refusal, and a server that cannot be reached,
// into an ApiError whose message is plain words to show as is.

/** The host pages' own words for what the server cannot say itself. */
export const MSG_UNREACHABLE = 'Cannot reach the Parley server. Check your internet connection and try again.';

/** A refused or failed API request. `message` is meant for the person at the screen. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status; 0 when the server could not be reached
   * @param {string} code the API's error code ("bad-login", "rate-limited", ...), or "unreachable"
   * @param {string} message plain words to show
   * @param {number} [retryAfter] seconds, from Retry-After (rate-limited)
   */
  constructor(status, code, message, retryAfter = 0) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/**
 * Calls the API on this origin (the browser sends Origin, which the
 * state-changing endpoints require, and the HttpOnly session cookie).
 * Resolves to the parsed JSON body, or null for 204. Rejects with ApiError.
 * @param {string} path
 * @param {{method?: string, body?: unknown, csrf?: string}} [opts]
 * @returns {Promise<any>}
 */
export async function api(path, opts = {}) {
  /** @type {Record<string, string>} */
  const headers = { Accept: 'application/json' };
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  if (opts.csrf) headers['X-CSRF-Token'] = opts.csrf;
  /** @type {Response} */
  let res;
  try {
    res = await fetch(path, {
      method: opts.method || 'GET',
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'unreachable', MSG_UNREACHABLE);
  }
  if (res.status === 204) return null;
  const isJSON = (res.headers.get('Content-Type') || '').startsWith('application/json');
  /** @type {any} */
  let body = null;
  if (isJSON) {
    try {
      body = await res.json();
    } catch {
      body = null;
    }
  }
  if (res.ok) {
    if (body === null) throw new ApiError(res.status, 'bad-response', 'The server gave an answer this page does not understand. Reload the page and try again.');
    return body;
  }
  const retryAfter = Math.max(0, parseInt(res.headers.get('Retry-After') || '0', 10) || 0);
  if (body && typeof body.error === 'string' && typeof body.message === 'string') {
    throw new ApiError(res.status, body.error, body.message, retryAfter);
  }
  // Not the API's own refusal: a reverse proxy's error page, or a server
  // without host accounts.
  const msg = res.status >= 500
    ? `The Parley server is not answering properly at the moment (error ${res.status}). Please try again in a minute.`
    : `The server refused the request (error ${res.status}). Reload the page and try again.`;
  throw new ApiError(res.status, 'http-' + res.status, msg, retryAfter);
}

/**
 * "about 12 minutes (until 14:32)" for a wait of `seconds`.
 * @param {number} seconds
 * @param {Date} [now]
 */
export function waitWords(seconds, now = new Date()) {
  const until = new Date(now.getTime() + seconds * 1000);
  const clock = until.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  if (seconds <= 60) return `about a minute (until ${clock})`;
  return `about ${Math.ceil(seconds / 60)} minutes (until ${clock})`;
}

/**
 * The element with this id, or an Error naming it.
 * @param {string} id
 */
export function el(id) {
  const e = document.getElementById(id);
  if (!e) throw new Error('missing #' + id);
  return e;
}

/**
 * Shows a message in an error box (role=alert), or hides the box when the
 * message is empty.
 * @param {HTMLElement} box
 * @param {string} message
 */
export function showError(box, message) {
  box.textContent = message;
  box.hidden = !message;
}
