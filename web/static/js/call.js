// @ts-check
// The call page UI: pre-join screen, then the call. Talks to the server
// only through CallSession (session.js) and SignalingClient (protocol.js).
//
// URL contract (kiosks and tests rely on it):
//   /c/<room>?name=<display name>&join=1  joins at once, skipping the pre-join click
//   &audio=1                               joins audio-only (no camera)
//   &relay=1                               sends all media through the TURN relay (hides your IP address)
// The fragment (#...) is reserved for end-to-end keys and never sent to the server:
//   #k=<secret>                 an open room's link
//   #c=<secret and host key>    a consultation's guest link (docs/security.md §9.1)

import { CallSession } from './session.js';
import { socketURL, SignalingError } from './protocol.js';
import { linkSecretFromHash, e2eeSupported, joinToken } from '../e2ee/keys.js';
import { consultationFromHash, sameBytes } from '../e2ee/roster.js';
import { sizeText } from './datachan.js';

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
function el(id) {
  const e = document.getElementById(id);
  if (!e) throw new Error('missing #' + id);
  return e;
}
const $video = (/** @type {string} */ id) => /** @type {HTMLVideoElement} */ (el(id));
const $input = (/** @type {string} */ id) => /** @type {HTMLInputElement} */ (el(id));
const $select = (/** @type {string} */ id) => /** @type {HTMLSelectElement} */ (el(id));
const $button = (/** @type {string} */ id) => /** @type {HTMLButtonElement} */ (el(id));

const roomId = decodeURIComponent(location.pathname.replace(/^\/c\//, '').replace(/\/$/, ''));
const params = new URLSearchParams(location.search);
const opts = {
  name: params.get('name') || '',
  autoJoin: params.get('join') === '1',
  audioOnly: params.get('audio') === '1',
  relay: params.get('relay') === '1',
};

/** A consultation link's secret and host key, from the fragment (#c=...). */
const consultLink = consultationFromHash(location.hash);
/** The link secret from the fragment: end-to-end keys derive from it; the server never sees it. */
const linkSecret = consultLink ? consultLink.secret : linkSecretFromHash(location.hash);
/** This browser's host record of the consultation, if it made it (IndexedDB). @type {any} */
let hostRecord = null;
/** @type {any} */
let hostStore = null;
/** Close codes after which there is nothing to rejoin: denied, removed, ended, locked, replaced. */
const finalCodes = ['closed-4005', 'closed-4006', 'closed-4007', 'closed-4008', 'closed-4009'];

/** @type {MediaStream|null} */
let preview = null;
/** @type {CallSession|null} */
let session = null;

// ---- messages in plain words ----

/**
 * Shows an error with an optional action button.
 * @param {string} text
 * @param {{label: string, run: () => void}} [action]
 */
function showError(text, action) {
  el('error-text').textContent = text;
  const b = $button('error-action');
  if (action) {
    b.textContent = action.label;
    b.onclick = () => { el('error').hidden = true; action.run(); };
    b.hidden = false;
  } else {
    b.hidden = true;
  }
  el('error').hidden = false;
}

function clearError() { el('error').hidden = true; }

/** @param {string} text */
function status(text) { el('status').textContent = text; }

/**
 * Explains a getUserMedia failure.
 * @param {unknown} e
 */
function mediaErrorText(e) {
  const name = e instanceof DOMException ? e.name : '';
  switch (name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'Your browser blocked the camera and microphone. Click the camera icon in the address bar, choose "Allow", then press "Try again".';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No camera or microphone was found. Plug one in and press "Try again", or choose "Audio only".';
    case 'NotReadableError':
    case 'AbortError':
      return 'Your camera or microphone is being used by another program. Close that program, then press "Try again".';
    default:
      return 'The camera and microphone could not be started. Press "Try again"; if it keeps failing, try another browser.';
  }
}

/**
 * Gets the microphone and, unless audio-only, the camera. Falls back to
 * audio-only when only the camera fails.
 * @param {{audioOnly: boolean, camId?: string, micId?: string}} o
 * @returns {Promise<{stream: MediaStream, note: string}>}
 */
async function getMedia(o) {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error('This page needs a secure connection (https) and a current browser to use your camera and microphone.');
  }
  /** @type {MediaTrackConstraints} */
  const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  if (o.micId) audio.deviceId = { exact: o.micId };
  /** @type {MediaTrackConstraints} */
  const video = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 20, max: 30 } };
  if (o.camId) video.deviceId = { exact: o.camId };
  if (o.audioOnly) return { stream: await navigator.mediaDevices.getUserMedia({ audio }), note: '' };
  try {
    return { stream: await navigator.mediaDevices.getUserMedia({ audio, video }), note: '' };
  } catch (e) {
    const name = e instanceof DOMException ? e.name : '';
    if (name === 'NotFoundError' || name === 'NotReadableError' || name === 'OverconstrainedError') {
      const stream = await navigator.mediaDevices.getUserMedia({ audio });
      return { stream, note: 'Your camera is not available, so you will join with audio only.' };
    }
    throw e;
  }
}

/** Fills the device pickers. */
async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  const fill = (/** @type {HTMLSelectElement} */ sel, /** @type {string} */ kind, /** @type {string} */ current) => {
    sel.replaceChildren();
    let n = 0;
    for (const d of devices) {
      if (d.kind !== kind) continue;
      n++;
      const opt = document.createElement('option');
      opt.value = d.deviceId;
      opt.textContent = d.label || (kind === 'videoinput' ? `Camera ${n}` : `Microphone ${n}`);
      if (d.deviceId === current) opt.selected = true;
      sel.append(opt);
    }
    if (n === 0) {
      const opt = document.createElement('option');
      opt.textContent = kind === 'videoinput' ? 'No camera found' : 'No microphone found';
      opt.value = '';
      sel.append(opt);
    }
  };
  const stream = session ? session.stream : preview;
  const cam = stream?.getVideoTracks()[0]?.getSettings().deviceId || '';
  const mic = stream?.getAudioTracks()[0]?.getSettings().deviceId || '';
  fill($select('camera-select'), 'videoinput', cam);
  fill($select('mic-select'), 'audioinput', mic);
  fill($select('call-camera-select'), 'videoinput', cam);
  fill($select('call-mic-select'), 'audioinput', mic);
}

// ---- pre-join ----

async function startPreview() {
  clearError();
  const audioOnly = $input('audio-only').checked;
  if (preview) for (const t of preview.getTracks()) t.stop();
  preview = null;
  try {
    const { stream, note } = await getMedia({
      audioOnly,
      camId: $select('camera-select').value || undefined,
      micId: $select('mic-select').value || undefined,
    });
    preview = stream;
    $video('preview').srcObject = stream;
    el('preview-note').textContent = note || (audioOnly ? 'Audio only: your camera stays off.' : '');
    if (note) $input('audio-only').checked = true;
    await listDevices();
  } catch (e) {
    showError(e instanceof Error && !(e instanceof DOMException) ? e.message : mediaErrorText(e), { label: 'Try again', run: startPreview });
  }
}

async function checkRoom() {
  try {
    // The join token proves we hold the link; without it the server says
    // only whether the room exists.
    const token = await joinToken(/** @type {Uint8Array} */ (linkSecret));
    const res = await fetch('/api/rooms/' + encodeURIComponent(roomId), { headers: { 'Parley-Join-Token': token } });
    if (res.status === 404) {
      return 'This call link is not valid any more. Ask the person who sent it for a new link.';
    }
    if (res.status === 410) {
      // An expired, revoked or ended consultation: the server says which, in plain words.
      const body = await res.json().catch(() => ({}));
      return body.message || 'This consultation link no longer works. Ask the person who invited you for a new link.';
    }
    if (!res.ok) return '';
    /** @type {{participants?: number, maxPeers?: number, consultation?: boolean, title?: string, hostName?: string, scheduledAt?: string}} */
    const info = await res.json();
    if (consultLink && info.participants !== undefined && !info.consultation) {
      return 'This link does not belong to a consultation. Ask the person who invited you for the right link.';
    }
    if (!consultLink && info.consultation) {
      return 'This link is incomplete, so you cannot join. Ask the person who invited you to copy the whole link, including the part after "#", and send it again.';
    }
    if (info.consultation && info.title) {
      const when = info.scheduledAt ? ' · ' + new Date(info.scheduledAt).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' }) : '';
      el('consult-title').textContent = `Consultation: ${info.title}${when}`;
      el('consult-title').hidden = false;
      el('prejoin-title').textContent = 'Join the consultation';
      const withWhom = info.hostName ? ` with ${info.hostName}` : '';
      el('waiting-what').textContent = `You are joining “${info.title}”${withWhom}${when}.`;
      if (info.hostName) el('waiting-title').textContent = `Waiting for ${info.hostName}`;
      el('consult-title').textContent = `Consultation: ${info.title}${withWhom}${when}`;
    }
    if (info.participants !== undefined && info.maxPeers !== undefined && info.participants >= info.maxPeers) {
      return 'This call already has the most people it can hold. Ask the organiser to start a new call.';
    }
    return '';
  } catch {
    throw new SignalingError('unreachable', 'Cannot reach the Parley server. Check your internet connection and try again.');
  }
}

async function init() {
  if (!linkSecret) {
    el('prejoin').hidden = true;
    showError(/(?:^#|&)c=/.test(location.hash)
      ? 'This consultation link is cut short or damaged, so you cannot join. Ask the person who invited you to copy the whole link and send it again.'
      : 'This link is missing its secret key, so the call cannot be end-to-end encrypted and you cannot join. ' +
        'Ask the person who sent it to copy the whole link, including the part after "#k=", and send it again.');
    return;
  }
  if (consultLink) {
    // Did this browser make the consultation? Then it holds the host's
    // signing key for it (hoststore.js, IndexedDB).
    try {
      hostStore = await import('./hoststore.js');
      const rec = await hostStore.getConsultation(roomId);
      if (rec && rec.pub && sameBytes(new Uint8Array(rec.pub), consultLink.hostKey)) hostRecord = rec;
    } catch {
      hostStore = null;
    }
  }
  if (!(await e2eeSupported())) {
    el('prejoin').hidden = true;
    showError('This browser cannot encrypt calls end to end. Please open the link in a current Chrome, Edge, Firefox or Safari.');
    return;
  }
  $input('name').value = opts.name;
  $input('audio-only').checked = opts.audioOnly;
  $input('relay').checked = opts.relay;
  let problem = '';
  try {
    problem = await checkRoom();
  } catch (e) {
    showError(e instanceof Error ? e.message : String(e), { label: 'Try again', run: () => location.reload() });
    return;
  }
  if (problem) {
    el('prejoin').hidden = true;
    showError(problem);
    return;
  }
  if (opts.autoJoin && opts.name.trim()) {
    await joinCall();
    return;
  }
  await startPreview();
  $input('audio-only').addEventListener('change', startPreview);
  $select('camera-select').addEventListener('change', startPreview);
  $select('mic-select').addEventListener('change', startPreview);
  el('join-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    joinCall();
  });
  $input('name').focus();
}

// ---- the call ----

async function joinCall() {
  clearError();
  const name = $input('name').value.trim();
  if (!name) {
    showError('Please enter your name so the others know who you are.');
    $input('name').focus();
    return;
  }
  const audioOnly = $input('audio-only').checked;
  const relay = $input('relay').checked;
  $button('join').disabled = true;
  status('Joining…');
  let stream = preview;
  preview = null;
  if (!stream) {
    try {
      const got = await getMedia({ audioOnly });
      stream = got.stream;
      if (got.note) status(got.note);
    } catch (e) {
      $button('join').disabled = false;
      status('');
      showError(e instanceof Error && !(e instanceof DOMException) ? e.message : mediaErrorText(e), { label: 'Try again', run: joinCall });
      return;
    }
  }
  const consultation = consultLink ? { hostKey: consultLink.hostKey, record: hostRecord, store: hostStore } : null;
  const s = new CallSession({ room: roomId, name, stream, relay, wsURL: socketURL(location), secret: /** @type {Uint8Array} */ (linkSecret), consultation }, {
    onSecurity: showSecurity,
    onRemoteAdded: addTile,
    onRemoteUpdated: updateTile,
    onRemoteRemoved: (r, reason) => {
      removeTile(r.id);
      if (reason !== 'hangup') status(`${r.name} left the call.`);
    },
    onNotice: status,
    onReconnecting: () => {
      el('reconnecting').hidden = false;
      status('Reconnecting…');
    },
    onResumed: () => {
      el('reconnecting').hidden = true;
      status('Reconnected.');
    },
    onFatal: (e) => {
      el('reconnecting').hidden = true;
      if (finalCodes.includes(e.code)) {
        endCall(e.message);
        return;
      }
      if (e.code === 'resume-failed') {
        // Our place is gone: come back as a new participant.
        status('Your place in the call could not be kept. Joining again…');
        rejoin();
        return;
      }
      if (e.code === 'gave-up') {
        showError(e.message, { label: 'Rejoin', run: rejoin });
        return;
      }
      showError(e.message + ' Your call may go on for now, but nobody new can join.', { label: 'Rejoin', run: rejoin });
    },
    onWaiting: ({ hostPresent }) => {
      el('prejoin').hidden = true;
      el('waiting-room').hidden = false;
      el('waiting-status').textContent = hostPresent
        ? 'Your host knows you are here and will let you in shortly. Please keep this page open.'
        : 'Your host has not arrived yet. You will be let in when they do. Please keep this page open.';
      status('');
      /** @type {HTMLElement} */ (el('waiting-title')).focus();
    },
    onAdmitted: () => {
      el('waiting-room').hidden = true;
      showCall(s, stream, relay);
      status('The host let you in. You are in the consultation.');
    },
    onConsultation: showConsultation,
    onChat: addChat,
    onTransfer: showTransfer,
    onRemoved: () => endCall('The host removed you from this consultation.'),
  });
  session = s;
  try {
    await s.join();
  } catch (e) {
    session = null;
    for (const t of stream.getTracks()) t.stop();
    $button('join').disabled = false;
    status('');
    const msg = e instanceof Error ? e.message : String(e);
    const code = e instanceof SignalingError ? e.code : '';
    if (code === 'unreachable') showError(msg, { label: 'Try again', run: joinCall });
    else showError(msg);
    return;
  }
  if (s.waiting) return; // in the waiting room until the host lets us in
  showCall(s, stream, relay);
}

/**
 * Shows the call screen.
 * @param {CallSession} s @param {MediaStream} stream @param {boolean} relay
 */
function showCall(s, stream, relay) {
  el('prejoin').hidden = true;
  el('call').hidden = false;
  $video('local-video').srcObject = stream;
  el('local-tile').classList.toggle('audio-only', stream.getVideoTracks().length === 0);
  $button('camera').disabled = stream.getVideoTracks().length === 0;
  el('local-state').textContent = relay ? '(through the relay)' : '';
  status(relay ? 'You are in the call. Your media goes through the relay, so others do not see your IP address.' : 'You are in the call.');
  refreshWaiting();
  showSecurity(s.security());
  listDevices().catch(() => {});
}

/** "Bob", "Bob and Cat", "Bob, Cat and Dan". @param {string[]} names */
function listNames(names) {
  return names.length < 2 ? names.join('') : names.slice(0, -1).join(', ') + ' and ' + names[names.length - 1];
}

/**
 * The always-visible encryption badge: green with the safety code, or red
 * naming whoever's media or key failed.
 * @param {import('./session.js').Security} sec
 */
function showSecurity(sec) {
  const badge = el('e2ee-badge');
  const title = el('e2ee-title');
  el('e2ee-code').textContent = sec.code;
  el('e2ee-holders').textContent = (sec.holders.length ? 'Keys shared with: ' + sec.holders.join(', ') + '.' : '') +
    (sec.suspended.length ? ` Connection lost with ${sec.suspended.join(', ')}: not sharing new keys until it is back.` : '');
  // A code means something only when there is someone to compare it with.
  el('e2ee-code-line').hidden = !sec.code || sec.confirmed.length === 0;
  if (sec.problems.length) {
    badge.className = 'badge bad';
    title.textContent = 'Warning: ' + sec.problems.map((p) => `${p.name}: ${p.text}`).join('; ') +
      '. Their audio and video are not shown. If this continues, hang up and start a new call.';
    el('e2ee-help').hidden = true;
    return;
  }
  const others = session ? session.remotes.size : 0;
  if (sec.codeStall) {
    // docs/security.md §4.5: a round that does not finish, or codes that
    // never stay, leave nothing to compare, which a server hiding a
    // listener would want.
    const st = sec.codeStall;
    const why = st.why === 'offline' ? 'Your connection to the server is down, so the check cannot finish.'
      : st.why === 'missing' ? `The check is waiting for ${listNames(st.names)} (their connection or the server may be holding it up).`
        : st.why === 'used-up' ? 'The check cannot finish in this call.'
          : st.why === 'changing' ? 'The code keeps changing before it can be compared.'
            : 'The check keeps starting over.';
    badge.className = 'badge bad';
    title.textContent = `Warning: no safety code to compare. ${why} Until a code stays, you cannot check that nobody else is listening. ` +
      'If this goes on, hang up and start a new call with a new link.';
    el('e2ee-help').hidden = true;
    return;
  }
  if (!sec.code) {
    badge.className = 'badge pending';
    title.textContent = 'End-to-end encrypted. Checking the keys of people who just joined…';
    el('e2ee-help').hidden = true;
    return;
  }
  badge.className = 'badge ok';
  title.textContent = others > 0 && sec.confirmed.length < others
    ? 'End-to-end encrypted. Checking the keys of people who just joined…'
    : 'End-to-end encrypted: only the people in this call can see and hear it.';
  el('e2ee-help').hidden = sec.confirmed.length === 0;
}

function rejoin() {
  const p = new URLSearchParams(location.search);
  p.set('join', '1');
  if (session) p.set('name', session.name);
  location.replace(location.pathname + '?' + p.toString() + location.hash);
}

const stateText = /** @type {Record<string, string>} */ ({
  new: 'Connecting…', connecting: 'Connecting…', connected: 'Connected',
  disconnected: 'Reconnecting…', failed: 'Connection failed: check your network', closed: 'Left',
});

/** @param {import('./session.js').Remote} r */
function addTile(r) {
  const fig = document.createElement('figure');
  fig.className = 'tile remote';
  fig.id = 'tile-' + r.id;
  fig.dataset.peer = r.id;
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.setAttribute('aria-label', `Video of ${r.name}`);
  video.srcObject = r.stream;
  const cap = document.createElement('figcaption');
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = r.name;
  const st = document.createElement('span');
  st.className = 'state';
  st.setAttribute('role', 'status');
  cap.append(who, ' · ', st);
  fig.append(video, cap);
  el('tiles').append(fig);
  updateTile(r);
  refreshWaiting();
}

/** @param {import('./session.js').Remote} r */
function updateTile(r) {
  const fig = document.getElementById('tile-' + r.id);
  if (!fig) return;
  const video = /** @type {HTMLVideoElement} */ (fig.querySelector('video'));
  if (video.srcObject !== r.stream) video.srcObject = r.stream;
  fig.classList.toggle('audio-only', r.stream.getVideoTracks().length === 0);
  const st = /** @type {HTMLElement} */ (fig.querySelector('.state'));
  let text = stateText[r.state] || r.state;
  if (r.state === 'failed' && session?.relay) text = 'Could not connect through the relay: your network may block it';
  st.textContent = text;
  st.classList.toggle('bad', r.state === 'failed' || r.state === 'disconnected');
  if (r.state === 'connected' && fig.dataset.announced !== '1') {
    fig.dataset.announced = '1';
    status(`${r.name} joined the call.`);
  }
  if (video.paused && r.stream.getTracks().length) {
    video.play().catch(() => { $button('sound').hidden = false; });
  }
}

/** @param {string} id */
function removeTile(id) {
  document.getElementById('tile-' + id)?.remove();
  refreshWaiting();
}

function refreshWaiting() {
  el('waiting').hidden = !session || session.remotes.size > 0;
}

$button('sound').addEventListener('click', () => {
  for (const v of document.querySelectorAll('.tile.remote video')) /** @type {HTMLVideoElement} */ (v).play().catch(() => {});
  $button('sound').hidden = true;
});

$button('mute').addEventListener('click', () => {
  if (!session) return;
  const track = session.stream.getAudioTracks()[0];
  if (!track) return;
  track.enabled = !track.enabled;
  const muted = !track.enabled;
  $button('mute').setAttribute('aria-pressed', String(muted));
  $button('mute').textContent = muted ? 'Unmute' : 'Mute';
  status(muted ? 'Your microphone is off.' : 'Your microphone is on.');
});

$button('camera').addEventListener('click', async () => {
  if (!session) return;
  const b = $button('camera');
  const on = session.stream.getVideoTracks().length > 0;
  b.disabled = true;
  try {
    if (on) {
      await session.replaceTrack('video', null);
      status('Your camera is off.');
    } else {
      const camId = $select('call-camera-select').value || undefined;
      const s = await navigator.mediaDevices.getUserMedia({ video: camId ? { deviceId: { exact: camId } } : { width: 640, height: 480 } });
      await session.replaceTrack('video', s.getVideoTracks()[0]);
      status('Your camera is on.');
    }
    b.setAttribute('aria-pressed', String(on));
    b.textContent = on ? 'Camera on' : 'Camera off';
    $video('local-video').srcObject = session.stream;
    el('local-tile').classList.toggle('audio-only', on);
  } catch (e) {
    showError(mediaErrorText(e));
  } finally {
    b.disabled = false;
  }
});

$button('devices').addEventListener('click', () => {
  const panel = el('device-panel');
  panel.hidden = !panel.hidden;
  $button('devices').setAttribute('aria-expanded', String(!panel.hidden));
  if (!panel.hidden) listDevices().catch(() => {});
});

/**
 * @param {'audio'|'video'} kind
 * @param {string} deviceId
 */
async function switchDevice(kind, deviceId) {
  if (!session || !deviceId) return;
  if (kind === 'video' && session.stream.getVideoTracks().length === 0) return;
  try {
    const s = await navigator.mediaDevices.getUserMedia(kind === 'audio'
      ? { audio: { deviceId: { exact: deviceId }, echoCancellation: true, noiseSuppression: true } }
      : { video: { deviceId: { exact: deviceId }, width: { ideal: 640 }, height: { ideal: 480 } } });
    const track = kind === 'audio' ? s.getAudioTracks()[0] : s.getVideoTracks()[0];
    if (kind === 'audio') {
      const old = session.stream.getAudioTracks()[0];
      if (old) track.enabled = old.enabled;
    }
    await session.replaceTrack(kind, track);
    $video('local-video').srcObject = session.stream;
    status(kind === 'audio' ? 'Microphone switched.' : 'Camera switched.');
  } catch (e) {
    showError(mediaErrorText(e));
  }
}
$select('call-camera-select').addEventListener('change', () => switchDevice('video', $select('call-camera-select').value));
$select('call-mic-select').addEventListener('change', () => switchDevice('audio', $select('call-mic-select').value));

$button('hangup').addEventListener('click', () => {
  if (!session) return;
  const name = session.name;
  leaveSession();
  el('ended-title').textContent = 'You left the call';
  el('ended-text').textContent = '';
  const p = new URLSearchParams(location.search);
  p.set('join', '1');
  p.set('name', name);
  /** @type {HTMLAnchorElement} */ (el('rejoin')).href = location.pathname + '?' + p.toString() + location.hash;
  el('rejoin').hidden = false;
  status('You left the call.');
});

/** Leaves the session and clears the call screens. */
function leaveSession() {
  session?.leave();
  session = null;
  for (const t of el('tiles').querySelectorAll('.tile.remote')) t.remove();
  el('call').hidden = true;
  el('waiting-room').hidden = true;
  el('prejoin').hidden = true;
  el('ended').hidden = false;
}

/**
 * The consultation is over for us (the host denied, removed or ended it, or
 * it was locked): say so, with nothing to rejoin.
 * @param {string} text
 */
function endCall(text) {
  leaveSession();
  el('ended-title').textContent = 'The consultation is over for you';
  el('ended-text').textContent = text;
  el('rejoin').hidden = true;
  clearError();
  status(text);
  el('ended-title').focus();
}

$button('waiting-leave').addEventListener('click', () => {
  leaveSession();
  el('ended-title').textContent = 'You left the waiting room';
  el('ended-text').textContent = 'You can open the link again to ask to join.';
  /** @type {HTMLAnchorElement} */ (el('rejoin')).href = location.pathname + location.search + location.hash;
  el('rejoin').textContent = 'Wait again';
  el('rejoin').hidden = false;
});

// ---- the host's panel ----

/**
 * @param {HTMLElement} list @param {string} who @param {string} note
 * @param {{label: string, cls?: string, disabled?: boolean, run: () => void}[]} actions
 */
function personRow(list, who, note, actions) {
  const li = document.createElement('li');
  const w = document.createElement('span');
  w.className = 'who';
  w.textContent = who;
  li.append(w);
  for (const a of actions) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = a.label;
    if (a.cls) b.className = a.cls;
    b.disabled = !!a.disabled;
    b.addEventListener('click', a.run);
    li.append(b);
  }
  if (note) {
    const n = document.createElement('span');
    n.className = 'note';
    n.textContent = note;
    li.append(n);
  }
  list.append(li);
}

/** @param {import('./session.js').ConsultState} c */
function showConsultation(c) {
  const panel = el('host-panel');
  panel.hidden = !c.isHost;
  if (!c.isHost || !session) return;
  const s = session;
  const consult = /** @type {import('./consult.js').Consult} */ (s.consult);
  const knocks = el('knocks');
  knocks.replaceChildren();
  el('knocks-empty').hidden = c.knocks.length > 0;
  const act = (/** @type {() => Promise<void>|void} */ fn, /** @type {string} */ failText) => async () => {
    try { await fn(); } catch (e) { showError(e instanceof Error && e.message ? e.message : failText); }
  };
  for (const k of c.knocks) {
    const note = !k.checked ? 'Checking their link…' : k.verified ? 'Has the right link.' : 'Their link does not match this consultation: they cannot be let in.';
    personRow(knocks, k.name, note, [
      { label: `Let ${k.name} in`, cls: 'primary', disabled: !k.verified, run: act(() => consult.admit(k.id), 'Could not let them in. Try again.') },
      { label: 'Turn away', run: act(() => consult.deny(k.id), 'Could not turn them away.') },
    ]);
  }
  const members = el('members');
  members.replaceChildren();
  for (const m of c.members) {
    if (m.me) continue;
    personRow(members, m.name, m.stale ? 'Has not received your latest list of participants yet.' : '', [
      { label: `Remove ${m.name}`, cls: 'danger', run: act(async () => {
        if (!confirm(`Remove ${m.name} from the consultation? They will not be able to see or hear anything after this.`)) return;
        await consult.remove(m.pid);
        status(`${m.name} was removed. New keys were made, so they cannot decrypt anything from now on.`);
      }, 'Could not remove them.') },
    ]);
  }
  if (!c.members.some((m) => !m.me)) {
    const li = document.createElement('li');
    li.className = 'hint';
    li.textContent = 'Nobody else yet.';
    members.append(li);
  }
  const lock = $button('lock');
  lock.setAttribute('aria-pressed', String(c.locked));
  lock.textContent = c.locked ? 'Unlock the consultation' : 'Lock the consultation';
}

$button('lock').addEventListener('click', async () => {
  const consult = session?.consult;
  if (!consult) return;
  try {
    await consult.setLocked(!consult.locked);
    status(consult.locked ? 'The consultation is locked: nobody new can ask to join.' : 'The consultation is open again for people with the link.');
  } catch {
    showError('The lock could not be changed. Try again.');
  }
});

$button('end').addEventListener('click', () => {
  const consult = session?.consult;
  if (!consult) return;
  if (!confirm('End the consultation for everyone? The link will stop working.')) return;
  consult.end();
  endCall('You ended the consultation. Its link no longer works.');
});

// ---- chat and files ----

/** @param {{from: string, name: string, text: string, at: number, mine: boolean}} m */
function addChat(m) {
  const li = document.createElement('li');
  if (m.mine) li.className = 'mine';
  const from = document.createElement('span');
  from.className = 'from';
  from.textContent = m.mine ? 'You:' : `${m.name}:`;
  // Plain text: links are not made clickable and nothing is fetched for a preview.
  const text = document.createElement('span');
  text.textContent = m.text;
  const at = document.createElement('time');
  at.className = 'at';
  at.dateTime = new Date(m.at).toISOString();
  at.textContent = new Date(m.at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  li.append(from, text, at);
  el('chat-log').append(li);
  li.scrollIntoView({ block: 'nearest' });
}

el('chat-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const box = /** @type {HTMLTextAreaElement} */ (el('chat-text'));
  const text = box.value.trim();
  if (!text || !session) return;
  const n = await session.chat(text);
  if (n === 0) {
    showError('Nobody can receive your message yet: wait until someone is connected, then send it again.');
    return;
  }
  box.value = '';
  box.focus();
});

el('chat-text').addEventListener('keydown', (ev) => {
  const e = /** @type {KeyboardEvent} */ (ev);
  if (e.key === 'Enter' && !e.shiftKey) {
    e.preventDefault();
    /** @type {HTMLFormElement} */ (el('chat-form')).requestSubmit();
  }
});

$input('file-input').addEventListener('change', () => {
  const input = $input('file-input');
  const file = input.files?.[0];
  input.value = '';
  if (!file || !session) return;
  if (session.sendFile(file) === 0) showError('Nobody can receive a file yet: wait until someone is connected, then send it again.');
});

/** Rows of the file list, by transfer id and peer. @type {Map<string, HTMLLIElement>} */
const transferRows = new Map();

/**
 * @param {import('./datachan.js').Transfer} t @param {string} name
 */
function showTransfer(t, name) {
  const key = `${t.peer}/${t.id}`;
  let li = transferRows.get(key);
  if (!li) {
    li = document.createElement('li');
    transferRows.set(key, li);
    el('transfers').prepend(li);
  }
  li.replaceChildren();
  const what = document.createElement('span');
  what.className = 'what';
  const label = `“${t.name}” (${sizeText(t.size)})`;
  what.textContent = t.dir === 'out' ? `${label} to ${name}` : `${label} from ${name}`;
  li.append(what);
  const data = session?.remotes.get(t.peer)?.data;
  const button = (/** @type {string} */ text, /** @type {() => void} */ run, /** @type {string} */ cls = '') => {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = text;
    if (cls) b.className = cls;
    b.addEventListener('click', run);
    li?.append(b);
  };
  const progress = () => {
    const p = document.createElement('progress');
    p.max = Math.max(t.size, 1);
    p.value = t.done;
    p.setAttribute('aria-label', `${t.dir === 'out' ? 'Sending' : 'Receiving'} ${t.name}`);
    li?.append(p);
  };
  switch (t.state) {
    case 'offered':
      if (t.dir === 'in') {
        button('Accept', () => data?.accept(t.id), 'primary');
        button('Decline', () => data?.cancel(t.id, 'declined'));
      } else {
        what.textContent += ': waiting for them to accept';
        button('Stop', () => data?.cancel(t.id));
      }
      break;
    case 'sending':
    case 'receiving':
      progress();
      button('Stop', () => data?.cancel(t.id));
      break;
    case 'done':
      if (t.dir === 'in' && t.blob) {
        // Saved as a download, never opened in this page.
        const a = document.createElement('a');
        a.className = 'button primary';
        a.href = URL.createObjectURL(t.blob);
        a.download = t.name;
        a.textContent = `Save “${t.name}”`;
        li.append(a);
        what.textContent += ': received and checked';
      } else {
        what.textContent += ': sent';
      }
      break;
    case 'declined':
      what.textContent += t.dir === 'out' ? ': they declined it' : ': you declined it';
      break;
    case 'failed': {
      const bad = document.createElement('span');
      bad.className = 'bad';
      bad.setAttribute('role', 'alert');
      bad.textContent = t.error || 'The transfer failed.';
      li.append(bad);
      break;
    }
  }
}

window.addEventListener('pagehide', () => { session?.leave(); });

init().catch((e) => showError(e instanceof Error ? e.message : String(e)));
