// Firefox for Parley's cross-browser tests: Debian's firefox-esr driven by
// npm puppeteer-core over WebDriver BiDi (no geckodriver, no browser
// download), headless, with a fresh profile, Firefox's fake camera and
// microphone, and everything that calls home switched off. Also: page
// probes that work the same in Chromium (playwright) and Firefox
// (puppeteer) pages — media statistics, the e2ee worker's counters, the
// encryption badge.
import { execFileSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

export const FIREFOX = process.env.PARLEY_FIREFOX || '/usr/bin/firefox-esr';

/** @param {string} p */
function executable(p) {
  try { accessSync(p, constants.X_OK); return true; } catch { return false; }
}

/**
 * Makes sure Firefox is there: if it is missing and this is Debian's
 * default path, installs firefox-esr with apt-get (as scripts/test.sh does).
 * Returns '' when Firefox can be used, else why not.
 */
export function ensureFirefox() {
  if (executable(FIREFOX)) return '';
  if (FIREFOX !== '/usr/bin/firefox-esr') return `${FIREFOX} (PARLEY_FIREFOX) is not an executable`;
  const sudo = process.getuid?.() === 0 ? [] : ['sudo', '-n'];
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const run = (/** @type {string[]} */ args) => {
    const [cmd, ...rest] = [...sudo, ...args];
    execFileSync(cmd, rest, { env, stdio: ['ignore', 'ignore', 'pipe'], timeout: 600000 });
  };
  const install = ['apt-get', 'install', '-y', '-qq', '--no-install-recommends', 'firefox-esr'];
  let why = '';
  try {
    run(install);
  } catch {
    try {
      run(['apt-get', 'update', '-qq']);
      run(install);
    } catch (e) {
      why = String(/** @type {any} */ (e).stderr || e).trim().split('\n').slice(-2).join(' ');
    }
  }
  return executable(FIREFOX) ? '' : `/usr/bin/firefox-esr is missing and "apt-get install firefox-esr" failed: ${why}`;
}

/** Firefox preferences: fake devices, no permission prompts, and nothing that calls home. */
export const FIREFOX_PREFS = {
  // Fake camera (about 30 fps) and microphone (a tone), no prompts.
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  // Host candidates with real addresses instead of mDNS names.
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  // Remote video and audio play without a click.
  'media.autoplay.default': 0,
  // Nothing that calls home (the network is closed; puppeteer sets more).
  'app.update.auto': false,
  'app.update.disabledForTesting': true,
  'app.update.checkInstallTime': false,
  'app.normandy.enabled': false,
  'app.normandy.api_url': '',
  'app.shield.optoutstudies.enabled': false,
  'toolkit.telemetry.enabled': false,
  'toolkit.telemetry.unified': false,
  'toolkit.telemetry.archive.enabled': false,
  'toolkit.telemetry.server': '',
  'toolkit.telemetry.updatePing.enabled': false,
  'toolkit.telemetry.shutdownPingSender.enabled': false,
  'toolkit.telemetry.firstShutdownPing.enabled': false,
  'toolkit.telemetry.newProfilePing.enabled': false,
  'toolkit.telemetry.bhrPing.enabled': false,
  'datareporting.healthreport.uploadEnabled': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'browser.ping-centre.telemetry': false,
  'browser.newtabpage.activity-stream.feeds.telemetry': false,
  'browser.newtabpage.activity-stream.telemetry': false,
  'browser.safebrowsing.malware.enabled': false,
  'browser.safebrowsing.phishing.enabled': false,
  'browser.safebrowsing.downloads.enabled': false,
  'browser.safebrowsing.downloads.remote.enabled': false,
  'browser.safebrowsing.blockedURIs.enabled': false,
  'browser.safebrowsing.provider.google.updateURL': '',
  'browser.safebrowsing.provider.google4.updateURL': '',
  'browser.safebrowsing.provider.mozilla.updateURL': '',
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
  'network.trr.mode': 5,
  'network.dns.disablePrefetch': true,
  'network.prefetch-next': false,
  'network.predictor.enabled': false,
  'extensions.update.enabled': false,
  'extensions.blocklist.enabled': false,
  'extensions.getAddons.cache.enabled': false,
  'extensions.systemAddon.update.enabled': false,
  'browser.search.update': false,
  'browser.region.network.url': '',
  'browser.region.update.enabled': false,
  'media.gmp-manager.updateEnabled': false,
  'media.gmp-manager.url': '',
  'security.OCSP.enabled': 0,
  'security.remote_settings.crlite_filters.enabled': false,
  'services.settings.server': 'http://127.0.0.1:9/',
  'browser.shell.checkDefaultBrowser': false,
  'browser.startup.page': 0,
  'browser.startup.homepage_override.mstone': 'ignore',
  'browser.aboutwelcome.enabled': false,
  'browser.discovery.enabled': false,
  'browser.contentblocking.report.lockwise.enabled': false,
  'identity.fxaccounts.enabled': false,
  'privacy.sanitize.sanitizeOnShutdown': false,
};

// Recorded in every page before its scripts run (same as the Chromium
// harness's): each RTCPeerConnection the app makes, for getStats; and each
// Worker, with the last e2ee counters it reported to the page. Listening
// passively: the app asks its worker for counters once a second.
export const recordPageInternals = () => {
  const w = /** @type {any} */ (window);
  if (w.__parleyProbes) return;
  w.__parleyProbes = true;
  if (!w.__pcs) {
    // (The Chromium harness records them already.)
    const Orig = window.RTCPeerConnection;
    /** @type {RTCPeerConnection[]} */
    const pcs = [];
    w.__pcs = pcs;
    w.RTCPeerConnection = function (/** @type {any[]} */ ...args) {
      // @ts-ignore
      const pc = new Orig(...args);
      pcs.push(pc);
      return pc;
    };
    w.RTCPeerConnection.prototype = Orig.prototype;
    Object.setPrototypeOf(w.RTCPeerConnection, Orig);
  }
  const OrigWorker = window.Worker;
  w.__workers = [];
  w.__e2eeStats = null;
  w.Worker = function (/** @type {any[]} */ ...args) {
    // @ts-ignore
    const worker = new OrigWorker(...args);
    w.__workers.push(worker);
    worker.addEventListener('message', (/** @type {MessageEvent} */ ev) => {
      if (ev.data && ev.data.op === 'stats') w.__e2eeStats = ev.data.stats;
    });
    return worker;
  };
  w.Worker.prototype = OrigWorker.prototype;
  Object.setPrototypeOf(w.Worker, OrigWorker);
};

/**
 * Launches one Firefox participant with a fresh profile.
 * @param {{prefs?: Record<string, string|number|boolean>}} [opts] more preferences
 * @returns {Promise<{browser: import('puppeteer-core').Browser, page: import('puppeteer-core').Page, consoleLines: string[], version: string, close: () => Promise<void>}>}
 */
export async function launchFirefox(opts = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'parley-firefox-'));
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX,
    headless: true,
    protocol: 'webDriverBiDi',
    userDataDir: profile,
    extraPrefsFirefox: { ...FIREFOX_PREFS, ...(opts.prefs || {}) },
    env: { ...process.env, MOZ_CRASHREPORTER_DISABLE: '1' },
  });
  const version = await browser.version();
  const page = (await browser.pages())[0] || (await browser.newPage());
  await page.evaluateOnNewDocument(recordPageInternals);
  /** @type {string[]} */
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`[pageerror] ${e instanceof Error ? e.message : String(e)}`));
  return {
    browser, page, consoleLines, version,
    async close() {
      await browser.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Per-connection media statistics, in Chromium and Firefox alike (Firefox
 * has no 'transport' stats: its selected pair is marked on the pair).
 * @param {{evaluate: Function}} page a playwright or puppeteer page
 * @returns {Promise<Array<{state: string, videoFramesDecoded: number, videoFramesReceived: number,
 *   videoKeyFramesDecoded: number, pliSent: number, videoCodec: string, audioSamples: number, audioEnergy: number,
 *   outVideoBytes: number, outAudioBytes: number, local: string, remote: string}>>}
 */
export async function callStats(page) {
  return page.evaluate(async () => {
    // @ts-ignore
    const pcs = /** @type {RTCPeerConnection[]} */ (window.__pcs || []);
    const out = [];
    for (const pc of pcs) {
      if (pc.connectionState === 'closed') continue;
      const rep = await pc.getStats();
      /** @type {Map<string, any>} */
      const byId = new Map();
      rep.forEach((r) => byId.set(r.id, r));
      const s = {
        state: pc.connectionState,
        videoFramesDecoded: 0, videoFramesReceived: 0, videoKeyFramesDecoded: 0, pliSent: 0, videoCodec: '',
        audioSamples: 0, audioEnergy: 0, outVideoBytes: 0, outAudioBytes: 0, local: '', remote: '',
      };
      let pair = null;
      rep.forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') {
          s.videoFramesDecoded += r.framesDecoded || 0;
          s.videoFramesReceived += r.framesReceived || 0;
          s.videoKeyFramesDecoded += r.keyFramesDecoded || 0;
          s.pliSent += r.pliCount || 0;
          s.videoCodec = byId.get(r.codecId)?.mimeType || s.videoCodec;
        }
        if (r.type === 'inbound-rtp' && r.kind === 'audio') {
          s.audioSamples += r.totalSamplesReceived || 0;
          s.audioEnergy += r.totalAudioEnergy || 0;
        }
        if (r.type === 'outbound-rtp' && r.kind === 'video') s.outVideoBytes += r.bytesSent || 0;
        if (r.type === 'outbound-rtp' && r.kind === 'audio') s.outAudioBytes += r.bytesSent || 0;
        if (r.type === 'transport' && r.selectedCandidatePairId) pair = byId.get(r.selectedCandidatePairId) || pair;
        if (r.type === 'candidate-pair' && r.selected) pair = pair || r;
      });
      if (!pair) rep.forEach((r) => { if (!pair && r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r; });
      if (pair) {
        const desc = (/** @type {any} */ c) => c ? `${c.candidateType} ${c.protocol} ${c.address ?? c.ip}:${c.port}` : '';
        s.local = desc(byId.get(/** @type {any} */ (pair).localCandidateId));
        s.remote = desc(byId.get(/** @type {any} */ (pair).remoteCandidateId));
      }
      out.push(s);
    }
    return out;
  });
}

/**
 * The e2ee worker's last counters as the app received them: frames sealed
 * (sent), frames not sent for want of a key (unsent), and per remote peer
 * the frames opened and dropped.
 * @param {{evaluate: Function}} page
 * @returns {Promise<{sent: number, unsent: number, peers: Record<string, {opened: number, dropped: number, reasons: Record<string, number>}>} | null>}
 */
export async function e2eeCounters(page) {
  // @ts-ignore
  return page.evaluate(() => window.__e2eeStats);
}

/**
 * What the encryption badge shows.
 * @param {{evaluate: Function}} page
 * @returns {Promise<{className: string, code: string, codeShown: boolean, title: string}>}
 */
export async function badge(page) {
  return page.evaluate(() => {
    const b = document.getElementById('e2ee-badge');
    const line = document.getElementById('e2ee-code-line');
    return {
      className: b?.className || '',
      code: (document.getElementById('e2ee-code')?.textContent || '').trim(),
      codeShown: !!line && !line.hidden,
      title: (document.getElementById('e2ee-title')?.textContent || '').trim(),
    };
  });
}
