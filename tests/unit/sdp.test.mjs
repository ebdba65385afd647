// The page's SDP edits (web/static/js/sdp.js): audio-level extensions out,
// constant-bitrate Opus, and VP8 only for Firefox.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stripAudioLevels, vp8Only, opusCBR, localSDP, remoteSDP } from '../../web/static/js/sdp.js';

// An offer as Chromium writes it (shortened): audio with both level
// extensions, video with VP8, VP9, H.264 and their RTX.
const offer = [
  'v=0', 'o=- 1 2 IN IP4 127.0.0.1', 's=-', 't=0 0', 'a=group:BUNDLE 0 1',
  'm=audio 9 UDP/TLS/RTP/SAVPF 111 63',
  'a=mid:0',
  'a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level',
  'a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time',
  'a=extmap:3/sendrecv urn:ietf:params:rtp-hdrext:csrc-audio-level vad=on',
  'a=rtpmap:111 opus/48000/2', 'a=fmtp:111 minptime=10;useinbandfec=1', 'a=rtpmap:63 red/48000/2',
  'm=video 9 UDP/TLS/RTP/SAVPF 98 99 96 97 102 103',
  'a=mid:1',
  'a=extmap:4 urn:3gpp:video-orientation',
  'a=rtpmap:98 VP9/90000', 'a=rtcp-fb:98 nack', 'a=fmtp:98 profile-id=0',
  'a=rtpmap:99 rtx/90000', 'a=fmtp:99 apt=98',
  'a=rtpmap:96 VP8/90000', 'a=rtcp-fb:96 nack', 'a=rtcp-fb:96 nack pli',
  'a=rtpmap:97 rtx/90000', 'a=fmtp:97 apt=96',
  'a=rtpmap:102 H264/90000', 'a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f',
  'a=rtpmap:103 rtx/90000', 'a=fmtp:103 apt=102',
  '',
].join('\r\n');

test('audio-level extensions are removed, other extensions kept', () => {
  const out = stripAudioLevels(offer);
  assert.doesNotMatch(out, /audio-level/);
  assert.match(out, /abs-send-time/);
  assert.match(out, /video-orientation/);
  assert.equal(out.split('\r\n').length, offer.split('\r\n').length - 2);
  assert.doesNotMatch(localSDP(offer), /audio-level/);
  assert.doesNotMatch(remoteSDP(offer, false), /audio-level/);
  assert.doesNotMatch(remoteSDP(offer, true), /audio-level/);
});

test('Opus is asked for at constant bitrate without DTX, with in-band FEC', () => {
  assert.match(opusCBR(offer), /^a=fmtp:111 minptime=10;useinbandfec=1;cbr=1;usedtx=0$/m);
  assert.match(opusCBR(offer.replace('useinbandfec=1', 'cbr=0;usedtx=1;useinbandfec=0')), /^a=fmtp:111 minptime=10;useinbandfec=1;cbr=1;usedtx=0$/m, 'FEC on, CBR, no DTX whatever was asked');
});

test('vp8Only keeps VP8 and its RTX and nothing else in video', () => {
  const out = vp8Only(offer);
  assert.match(out, /^m=video 9 UDP\/TLS\/RTP\/SAVPF 96 97$/m);
  for (const pt of ['98', '99', '102', '103']) assert.doesNotMatch(out, new RegExp(`^a=(rtpmap|fmtp|rtcp-fb):${pt} `, 'm'));
  assert.match(out, /^a=rtpmap:96 VP8\/90000$/m);
  assert.match(out, /^a=fmtp:97 apt=96$/m);
  assert.match(out, /^m=audio 9 UDP\/TLS\/RTP\/SAVPF 111 63$/m, 'audio untouched');
  assert.match(out, /^a=mid:1$/m);
  assert.ok(out.endsWith('\r\n'));
});

test('vp8Only refuses a description whose video offers no VP8 (H.264 only)', () => {
  const h264 = offer.replace('m=video 9 UDP/TLS/RTP/SAVPF 98 99 96 97 102 103', 'm=video 9 UDP/TLS/RTP/SAVPF 102 103')
    .replace(/^a=(rtpmap|fmtp|rtcp-fb):(96|97|98|99) .*\r\n/gm, '');
  assert.doesNotMatch(h264, /VP8/);
  assert.throws(() => vp8Only(h264), /no video codec/);
  assert.throws(() => remoteSDP(h264, true), /no video codec/);
  assert.doesNotThrow(() => remoteSDP(h264, false), 'other browsers pin VP8 with setCodecPreferences instead');
  // A rejected video section (port 0) stays as it is.
  const rejected = h264.replace('m=video 9 ', 'm=video 0 ');
  assert.equal(vp8Only(rejected), rejected);
});
