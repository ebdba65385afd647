// Package e2ee implements SFrame (RFC 9605, "Secure Frame"), the end-to-end
// encryption Parley applies to every audio and video frame before it leaves
// the browser, so that the server and TURN relays forward media they cannot
// read. The browser side is the JavaScript in this directory; this package is
// the Go implementation of the same format, checked against the same vector
// files in testdata/.
//
// # Frames
//
// A sender holds a base key, identified by a key id (KID). Each frame is
// encrypted with an AEAD under a key and salt derived from the base key and
// KID (RFC 9605 §4.4.2), with nonce = salt XOR counter, and goes on the wire
// as
//
//	SFrame header || ciphertext || tag
//
// with header || metadata as the AAD. Metadata is whatever the application
// authenticates but does not send (Parley: "parley/1 media", a kind byte
// (0 audio, 1 video) and the codec's clear prefix; see e2ee/worker.js and
// docs/security.md); both ends must pass the same bytes.
//
// # Header (RFC 9605 §4.3)
//
//	 0 1 2 3 4 5 6 7
//	+-+-+-+-+-+-+-+-+------------+------------+
//	|X|  K  |Y|  C  | KID (0-8)  | CTR (0-8)  |
//	+-+-+-+-+-+-+-+-+------------+------------+
//
// If X is 0, K is the KID itself (0-7); if X is 1, K+1 big-endian KID bytes
// follow. Y and C do the same for the counter, whose bytes come after the
// KID's. Values are always minimally encoded; ParseHeader rejects anything
// else with ErrBadHeader, so every (KID, CTR) has exactly one header. A
// header is 1 to 17 bytes (MaxHeaderLen).
//
// # Cipher suites (RFC 9605 §4.5)
//
//	0x0001 AES_128_CTR_HMAC_SHA256_80  tag 10 bytes
//	0x0002 AES_128_CTR_HMAC_SHA256_64  tag  8 bytes
//	0x0003 AES_128_CTR_HMAC_SHA256_32  tag  4 bytes
//	0x0004 AES_128_GCM_SHA256_128      tag 16 bytes  (Parley's suite)
//	0x0005 AES_256_GCM_SHA512_128      tag 16 bytes
//
// The CTR suites are the RFC's AES-CTR + HMAC construction (§4.5.1): the
// tag is a truncated HMAC over the lengths, nonce, AAD and ciphertext,
// checked in constant time before decrypting. A Receiver serves one suite.
//
// # Counters
//
// A Sender owns the counter of its KID: it starts at 0, goes up by one per
// frame, is shared by every stream sealed under the KID, and is safe for
// concurrent use. It never wraps: once the cap (MaxCounter = 2^48-1 unless
// lowered with SetMaxCounter) has been used, Seal returns
// ErrCounterExhausted and the application must move to a new key. Create
// exactly one Sender per (KID, base key): two Senders with the same key would
// reuse nonces, which breaks AES-GCM completely.
//
// # Replay window
//
// A Receiver keeps, per KID, a bitmap of the ReplayWindow (1024) counters
// ending at the highest one accepted. A counter already accepted, or
// ReplayWindow or more below the highest, gives ErrReplay. The window is
// updated only when a frame authenticates, so forgeries cannot move it, and
// frames may arrive out of order within it. Replacing a KID's key with a
// different key starts a fresh window; installing the same key again keeps
// it, so a replayed key delivery cannot reopen old frames. Every failed Open
// returns a sentinel error (errors.Is) and is counted by reason in Stats; no
// input makes Open panic.
//
// # Goroutines and buffers
//
// A Sender is safe for concurrent use: its counter is one atomic
// compare-and-swap per frame, so concurrent Seals can never share a nonce,
// whatever the caller does. A Receiver's Open is not: like a hash.Hash it
// belongs to one goroutine at a time (one Receiver per incoming stream, or a
// lock), because its replay windows are plain state. AddKey, RemoveKey,
// HasKey and Stats are safe from any goroutine at any time, also while Open
// runs. Misusing Open concurrently cannot weaken confidentiality or
// authenticity, which each frame's tag guards on its own; it can only make
// the replay check unreliable.
//
// Seal and Open keep the nonce (and, with metadata, the AAD) either in a
// sync.Pool or, when dst has ScratchLen(len(metadata)) bytes of spare
// capacity past what they write and that room overlaps no input, in that
// room, which belongs to the call alone. The second way shares nothing
// between calls and is what brings a 100-byte frame within 10 % of raw
// AES-GCM (bench/sframe.sh).
//
// # Parley KIDs and the ratchet
//
// Parley builds KIDs as
//
//	KID = index<<24 | generation<<8 | step     (MakeKID, SplitKID)
//
// index (16 bits) names the sender in the room, generation (16 bits) counts
// fresh random base keys the sender has handed out (a new one when someone leaves
// and when the ratchet step reaches 250), and step (8 bits) counts ratchet steps within a
// generation. A ratchet step replaces the base key by Ratchet(suite, key) =
// HKDF-Expand(HKDF-Extract("", key), "SFrame 1.0 Ratchet", Nh) (RFC 9605
// §5.1); senders ratchet when someone joins, so the newcomer cannot decrypt
// earlier media, and start a new generation before step would pass 255.
// Parley KIDs are at most 40 bits, 5 header bytes. Which KIDs a Receiver
// accepts from whom, and when it ratchets, is the key manager's job, not
// this package's.
package e2ee
