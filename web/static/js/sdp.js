// @ts-check
// Session-description edits the call page applies to every description it
// sets, local and remote (session.js). Plain functions on SDP text, with no
// browser API, so they are unit-tested in Node (tests/unit/sdp.test.mjs).

/**
 * Asks for constant-bitrate Opus without discontinuous transmission
 * (cbr=1; usedtx=0) and with in-band forward error correction
 * (useinbandfec=1) in our description, which tells the other side how to
 * send to us: encrypted frames then all have one size, so their sizes do
 * not reveal the rhythm of speech, and a lost packet is rebuilt from the
 * next one.
 * @param {string} sdp
 */
export function opusCBR(sdp) {
  const pts = [...sdp.matchAll(/^a=rtpmap:(\d+) opus\/48000/gim)].map((m) => m[1]);
  let out = sdp;
  for (const pt of pts) {
    out = out.replace(new RegExp(`^(a=fmtp:${pt} )(.*)$`, 'm'), (_, head, params) => {
      const kept = String(params).split(';').filter((p) => !/^\s*(cbr|usedtx|useinbandfec)=/.test(p));
      // In-band FEC: a lost Opus packet is rebuilt from the next one, so a
      // poor line keeps its sound.
      return head + [...kept, 'useinbandfec=1', 'cbr=1', 'usedtx=0'].join(';');
    });
  }
  return out;
}

/**
 * Removes the audio-level RTP header extensions (RFC 6464 ssrc-audio-level,
 * RFC 6465 csrc-audio-level). They travel outside SRTP's encryption, so
 * they would tell the network and the relay who speaks when, undoing
 * constant-bitrate Opus. Applied to every description we set, local and
 * remote, so neither side negotiates them.
 * @param {string} sdp
 */
export function stripAudioLevels(sdp) {
  return sdp.replace(/^a=extmap:\d+(?:\/\w+)? urn:ietf:params:rtp-hdrext:(?:ssrc|csrc)-audio-level[^\r\n]*\r?\n/gim, '');
}

/**
 * Keeps only VP8 (and the RTX that repairs it) in every video section of a
 * description. Firefox has no working setCodecPreferences, so this is how a
 * Firefox page makes sure it never sends a codec whose frames the
 * encryption worker does not know (docs/security.md §3.6). Throws when a
 * video section offers no VP8: the connection is refused rather than
 * negotiated with another codec.
 * @param {string} sdp
 */
export function vp8Only(sdp) {
  const nl = sdp.includes('\r\n') ? '\r\n' : '\n';
  const sections = sdp.split(/\r?\n(?=m=)/);
  const out = sections.map((sec) => {
    const lines = sec.split(/\r?\n/);
    const m = /^m=video (\S+) (\S+) (.*)$/.exec(lines[0]);
    if (!m) return sec;
    const pts = m[3].trim().split(/\s+/);
    const codec = (/** @type {string} */ pt) => {
      const l = lines.find((x) => x.startsWith(`a=rtpmap:${pt} `));
      return l ? l.slice(l.indexOf(' ') + 1).split('/')[0].toUpperCase() : '';
    };
    const vp8 = pts.filter((pt) => codec(pt) === 'VP8');
    if (vp8.length === 0) {
      if (m[1] === '0') return sec; // a rejected section stays rejected
      throw new Error('the other side offered no video codec this page can encrypt (VP8)');
    }
    const rtx = pts.filter((pt) => codec(pt) === 'RTX' &&
      lines.some((x) => vp8.some((v) => new RegExp(`^a=fmtp:${pt} .*\\bapt=${v}\\b`).test(x))));
    const keep = new Set([...vp8, ...rtx]);
    const kept = lines.slice(1).filter((x) => {
      const pm = /^a=(?:rtpmap|fmtp|rtcp-fb):(\d+)[ ]/.exec(x);
      return !pm || keep.has(pm[1]);
    });
    return [`m=video ${m[1]} ${m[2]} ${pts.filter((pt) => keep.has(pt)).join(' ')}`, ...kept].join(nl);
  });
  return out.join(nl);
}

/** What we set as our own description. @param {string} sdp */
export const localSDP = (sdp) => stripAudioLevels(opusCBR(sdp));
/** What we set as the other side's description. @param {string} sdp @param {boolean} firefox */
export const remoteSDP = (sdp, firefox) => stripAudioLevels(opusCBR(firefox ? vp8Only(sdp) : sdp));

