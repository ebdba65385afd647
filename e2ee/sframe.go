package e2ee

import (
	"crypto/cipher"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// MaxCounter is the default and highest counter cap of a Sender: the last
// counter it will use is 2^48-1, after which Seal returns
// ErrCounterExhausted. The cap matches the browser side (E2EE-DESIGN §3),
// where counters are BigInts capped the same way; at 1000 frames a second
// it lasts about 8900 years, so it only ever trips on a bug.
const MaxCounter uint64 = 1<<48 - 1

// ReplayWindow is the number of counters, ending at the highest one
// accepted, that a Receiver remembers per KID. A counter at or below
// highest-ReplayWindow, or one already accepted, gives ErrReplay.
const ReplayWindow = 1024

// ScratchLen is the spare capacity, beyond the frame (Seal) or the
// plaintext (Open), that Seal and Open use in dst as scratch for the nonce
// and the AAD, for metadata of length metadataLen. With that much room
// (and no overlap between dst's spare capacity and the inputs), a call
// uses no state shared with other calls: no pool, no lock. Without it they
// fall back to a sync.Pool and still do not allocate.
func ScratchLen(metadataLen int) int { return nonceLen + MaxHeaderLen + metadataLen }

// scratch holds the nonce and the AAD of one operation on the slow path.
// They are passed to cipher.AEAD through an interface, so stack buffers
// would escape; a pool keeps Seal and Open free of allocations.
type scratch struct {
	nonce [nonceLen]byte
	aad   []byte
}

var scratchPool = sync.Pool{New: func() any { return &scratch{aad: make([]byte, 0, 256)} }}

// getScratch returns a scratch holding the nonce for ctr and an empty AAD.
func getScratch(salt *[nonceLen]byte, ctr uint64) *scratch {
	sc := scratchPool.Get().(*scratch)
	makeNonce(sc.nonce[:], salt, ctr)
	sc.aad = sc.aad[:0]
	return sc
}

func putScratch(sc *scratch) {
	if cap(sc.aad) > 64<<10 {
		sc.aad = make([]byte, 0, 256) // do not pin a huge buffer
	}
	scratchPool.Put(sc)
}

// makeNonce writes sframe_salt XOR CTR to b[:nonceLen], the CTR as an
// Nn-byte big-endian integer (RFC 9605 §4.4.3); a 64-bit CTR only touches
// the last 8 bytes.
func makeNonce(b []byte, salt *[nonceLen]byte, ctr uint64) {
	_ = b[nonceLen-1]
	copy(b[:nonceLen-8], salt[:nonceLen-8])
	binary.BigEndian.PutUint64(b[nonceLen-8:], binary.BigEndian.Uint64(salt[nonceLen-8:])^ctr)
}

// Sender encrypts frames under one KID and base key. It owns the only
// counter for that KID: RFC 9605 §4.4.1 forbids two senders sharing a base
// key, and AES-GCM fails completely if a (key, nonce) pair repeats, so make
// exactly one Sender per (KID, base key) and share it among all the streams
// that use the key. A Sender is safe for concurrent use; concurrent Seals
// always get distinct counters.
type Sender struct {
	suite Suite
	kid   uint64
	hdr   kidHeader // the KID's part of every header
	nt    int
	aead  cipher.AEAD
	salt  [nonceLen]byte
	next  atomic.Uint64 // next counter to use
	max   atomic.Uint64 // last counter that may be used
}

// NewSender derives the SFrame key and salt for kid from baseKey (RFC 9605
// §4.4.2) and returns a Sender whose counter starts at 0. baseKey is not
// retained.
func NewSender(suite Suite, kid uint64, baseKey []byte) (*Sender, error) {
	km, err := suite.deriveKeySalt(kid, baseKey)
	if err != nil {
		return nil, err
	}
	aead, err := suite.newAEAD(km.key)
	if err != nil {
		return nil, err
	}
	s := &Sender{suite: suite, kid: kid, hdr: makeKIDHeader(kid), nt: suite.Nt(), aead: aead}
	copy(s.salt[:], km.salt)
	s.max.Store(MaxCounter)
	clear(km.secret)
	clear(km.key)
	return s, nil
}

// KID returns the sender's key id.
func (s *Sender) KID() uint64 { return s.kid }

// Suite returns the sender's cipher suite.
func (s *Sender) Suite() Suite { return s.suite }

// Counter returns the counter the next Seal will use.
func (s *Sender) Counter() uint64 { return s.next.Load() }

// SetMaxCounter sets the last counter the sender may use; Seal returns
// ErrCounterExhausted once it is used. Values above MaxCounter mean
// MaxCounter. Lowering the cap is meant for tests and for forcing an early
// rekey; it never lets a counter be reused.
func (s *Sender) SetMaxCounter(max uint64) { s.max.Store(min(max, MaxCounter)) }

// reserve takes the next counter, or fails once the cap is passed. The
// counter never moves past max+1, so it cannot wrap.
func (s *Sender) reserve() (uint64, error) {
	for {
		c := s.next.Load()
		if c > s.max.Load() {
			return 0, s.exhausted(c)
		}
		if s.next.CompareAndSwap(c, c+1) {
			return c, nil
		}
	}
}

func (s *Sender) exhausted(next uint64) error {
	return fmt.Errorf("%w: kid %#x used counters up to %d", ErrCounterExhausted, s.kid, next-1)
}

// Seal encrypts plaintext under the next counter and appends the SFrame
// ciphertext, header || ciphertext || tag, to dst. metadata is
// authenticated, not encrypted and not sent: the AAD is header || metadata
// (RFC 9605 §4.4.3), and the receiver must pass the same metadata to Open.
// dst may alias plaintext. To avoid allocating, give dst a spare capacity
// of len(plaintext)+Overhead; to avoid the scratch pool as well, add
// ScratchLen(len(metadata)) and keep plaintext and metadata out of dst's
// spare capacity. Seal may write into that scratch room past the returned
// frame (the nonce and the AAD, nothing secret: GCM's security does not
// rest on the nonce being hidden).
func (s *Sender) Seal(dst, metadata, plaintext []byte) ([]byte, error) {
	ctr := s.next.Load()
	if ctr > s.max.Load() || !s.next.CompareAndSwap(ctr, ctr+1) {
		var err error
		if ctr, err = s.reserve(); err != nil {
			return nil, err
		}
	}
	return s.sealAt(dst, ctr, metadata, plaintext), nil
}

// sealAt seals under a given counter. Only Seal (and tests that rebuild
// known frames) may call it: the counter must never have been used.
func (s *Sender) sealAt(dst []byte, ctr uint64, metadata, plaintext []byte) []byte {
	start := len(dst)
	hlen := s.hdr.len(ctr)
	flen := hlen + len(plaintext) + s.nt
	scr := nonceLen
	if len(metadata) > 0 {
		scr += hlen + len(metadata)
	}
	// The scratch room is dst[start+flen : start+flen+scr].
	if end := start + flen + scr; end <= cap(dst) && !anyOverlap(dst[start:end], plaintext) && !anyOverlap(dst[start:end], metadata) {
		tail := dst[start+flen : end]
		// Fast path: the nonce, and with metadata the AAD, live in this
		// call's own scratch room. Without metadata the AAD is the header
		// itself (it does not overlap the output, which follows it). The
		// header goes first: hdr.put may write up to 8 bytes past it,
		// into room the ciphertext and the scratch take over afterwards.
		dst = dst[:start+hlen]
		s.hdr.put(dst[start:cap(dst)], ctr)
		nonce := tail[:nonceLen]
		makeNonce(nonce, &s.salt, ctr)
		aad := dst[start:]
		if len(metadata) > 0 {
			aad = append(append(tail[nonceLen:nonceLen], aad...), metadata...)
		}
		return s.aead.Seal(dst, nonce, plaintext, aad)
	}
	return s.sealSlow(dst, ctr, metadata, plaintext, hlen, flen)
}

// sealSlow is sealAt with the nonce and AAD in a pooled scratch, for a dst
// without room for them or one that overlaps an input.
func (s *Sender) sealSlow(dst []byte, ctr uint64, metadata, plaintext []byte, hlen, flen int) []byte {
	start := len(dst)
	// AAD = header || metadata (RFC 9605 §4.4.3). Build it first: metadata
	// may alias dst.
	sc := getScratch(&s.salt, ctr)
	sc.aad = AppendHeader(sc.aad, s.kid, ctr)
	if len(metadata) > 0 {
		sc.aad = append(sc.aad, metadata...)
	}
	dst = slices.Grow(dst, flen)
	if anyOverlap(dst[start:start+flen], plaintext) {
		// Move the plaintext to where its ciphertext goes, so the AEAD
		// works exactly in place (copy handles the overlap).
		body := dst[start+hlen : start+hlen+len(plaintext)]
		copy(body, plaintext)
		plaintext = body
	}
	dst = append(dst, sc.aad[:hlen]...)
	dst = s.aead.Seal(dst, sc.nonce[:], plaintext, sc.aad)
	putScratch(sc)
	return dst
}

// replayWindow is a sliding bitmap of the last ReplayWindow counters: bit
// ctr%ReplayWindow records whether ctr was accepted, for ctr in
// (top-ReplayWindow, top].
type replayWindow struct {
	seen bool
	top  uint64
	bits [ReplayWindow / 64]uint64
}

func (w *replayWindow) check(ctr uint64) bool {
	if !w.seen || ctr > w.top {
		return true
	}
	if w.top-ctr >= ReplayWindow {
		return false
	}
	i := ctr % ReplayWindow
	return w.bits[i/64]&(1<<(i%64)) == 0
}

// commit records ctr; it reports false (and changes nothing) if check fails.
func (w *replayWindow) commit(ctr uint64) bool {
	if w.seen && ctr == w.top+1 {
		// The next counter in order, the common case: the window slides
		// by one, and the bit the new counter takes is the one of the
		// counter it forgets.
		w.top = ctr
		i := ctr % ReplayWindow
		w.bits[i/64] |= 1 << (i % 64)
		return true
	}
	return w.commitSlow(ctr)
}

func (w *replayWindow) commitSlow(ctr uint64) bool {
	if !w.check(ctr) {
		return false
	}
	switch {
	case !w.seen:
		w.seen, w.top = true, ctr
	case ctr > w.top:
		if d := ctr - w.top; d >= ReplayWindow {
			clear(w.bits[:])
		} else {
			// Forget the counters the window slides past.
			for c := w.top + 1; d > 0; c, d = c+1, d-1 {
				i := c % ReplayWindow
				w.bits[i/64] &^= 1 << (i % 64)
			}
		}
		w.top = ctr
	}
	i := ctr % ReplayWindow
	w.bits[i/64] |= 1 << (i % 64)
	return true
}

// recvKey is one installed decryption key. Everything but win is fixed
// once the key is installed; win belongs to Open.
type recvKey struct {
	aead cipher.AEAD
	salt [nonceLen]byte
	fp   [sha256.Size]byte // SHA-256(sframe_key || sframe_salt), to spot re-delivery
	win  replayWindow
}

// Receiver decrypts frames of one cipher suite under any of its installed
// KIDs, with a replay window per KID. Every failed Open is counted by
// reason in Stats.
//
// Open is not safe for concurrent use: like a hash.Hash, a Receiver's Open
// belongs to one goroutine at a time (one Receiver per incoming stream, or
// a lock around Open), because the replay windows are plain state with no
// lock on the media path. AddKey, RemoveKey, HasKey and Stats are safe to
// call from any goroutine at any time, also while Open runs: keys arrive
// over signaling while media flows. (Concurrent Opens could not weaken
// confidentiality or authenticity, which every frame's tag guards on its
// own, only the replay check; the race detector reports them.)
type Receiver struct {
	suite Suite
	nt    int

	mu   sync.Mutex                          // serialises AddKey and RemoveKey
	keys atomic.Pointer[map[uint64]*recvKey] // copy on write; Open reads without locking

	// The last key Open used, with the map it came from: a cache owned by
	// Open (frames come in runs under one KID).
	lastMap *map[uint64]*recvKey
	lastKID uint64
	lastKey *recvKey

	// Failure counts (the failure paths only: success costs no atomic).
	short, badHeader, unknownKID, auth, replay atomic.Uint64
}

// NewReceiver returns a Receiver for suite with no keys.
func NewReceiver(suite Suite) (*Receiver, error) {
	if _, err := suite.params(); err != nil {
		return nil, err
	}
	r := &Receiver{suite: suite, nt: suite.Nt()}
	r.keys.Store(&map[uint64]*recvKey{})
	return r, nil
}

// Suite returns the receiver's cipher suite.
func (r *Receiver) Suite() Suite { return r.suite }

// AddKey installs baseKey for kid. Replacing a KID's key with a different
// one starts a fresh replay window for it. Installing the key a KID already
// has (a re-delivered key message, say) keeps its window, so the repeat
// cannot be used to replay frames. baseKey is not retained.
func (r *Receiver) AddKey(kid uint64, baseKey []byte) error {
	km, err := r.suite.deriveKeySalt(kid, baseKey)
	if err != nil {
		return err
	}
	defer clear(km.secret)
	defer clear(km.key)
	aead, err := r.suite.newAEAD(km.key)
	if err != nil {
		return err
	}
	k := &recvKey{aead: aead}
	copy(k.salt[:], km.salt)
	h := sha256.New()
	h.Write(km.key)
	h.Write(km.salt)
	h.Sum(k.fp[:0])

	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.keys.Load()
	if cur, ok := old[kid]; ok && subtle.ConstantTimeCompare(cur.fp[:], k.fp[:]) == 1 {
		return nil
	}
	m := make(map[uint64]*recvKey, len(old)+1)
	for id, v := range old {
		m[id] = v
	}
	m[kid] = k
	r.keys.Store(&m)
	return nil
}

// RemoveKey forgets the key for kid, if any. Frames for kid then give
// ErrUnknownKID. (The AES key schedule inside crypto/cipher cannot be
// zeroed; it is left to the garbage collector.)
func (r *Receiver) RemoveKey(kid uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.keys.Load()
	if _, ok := old[kid]; !ok {
		return
	}
	m := make(map[uint64]*recvKey, len(old))
	for id, v := range old {
		if id != kid {
			m[id] = v
		}
	}
	r.keys.Store(&m)
	// The salt is not cleared: an Open that loaded the old map may still be
	// reading it, and the AEAD's expanded key cannot be erased anyway.
}

// HasKey reports whether a key is installed for kid.
func (r *Receiver) HasKey(kid uint64) bool {
	_, ok := (*r.keys.Load())[kid]
	return ok
}

// Open authenticates and decrypts an SFrame ciphertext (header ||
// ciphertext || tag) and appends the plaintext to dst. metadata must be
// what the sender passed to Seal. The counter is checked against the KID's
// replay window and recorded there once the frame authenticates, so a
// forged frame never moves the window and a replayed one gives ErrReplay
// (a replayed counter with a bad tag gives ErrAuth). Errors:
// ErrShortFrame, ErrBadHeader, ErrUnknownKID, ErrAuth, ErrReplay; each
// failure is counted in Stats. Open never panics on any input.
//
// dst may alias frame (dst = frame[:0] decrypts in place); the contents of
// frame are then overwritten. To avoid the scratch pool, give dst a spare
// capacity of len(frame)+ScratchLen(len(metadata)) that overlaps neither
// frame nor metadata; Open may write into that room past the plaintext.
// Open must not run concurrently with another Open on the same Receiver.
func (r *Receiver) Open(dst, metadata, frame []byte) ([]byte, error) {
	kid, ctr, n, err := ParseHeader(frame)
	if err != nil {
		if errors.Is(err, ErrShortFrame) {
			r.short.Add(1)
		} else {
			r.badHeader.Add(1)
		}
		return nil, err
	}
	ct := frame[n:]
	if len(ct) < r.nt {
		r.short.Add(1)
		return nil, ErrShortFrame
	}
	k := r.lastKey
	if m := r.keys.Load(); m != r.lastMap || kid != r.lastKID || k == nil {
		var ok bool
		if k, ok = (*m)[kid]; !ok {
			r.unknownKID.Add(1)
			return nil, ErrUnknownKID
		}
		r.lastMap, r.lastKID, r.lastKey = m, kid, k
	}

	start := len(dst)
	plen := len(ct) - r.nt
	scr := nonceLen
	if len(metadata) > 0 {
		scr += n + len(metadata)
	}
	var out []byte
	// The scratch room is dst[start+plen : start+plen+scr].
	if end := start + plen + scr; end <= cap(dst) && !anyOverlap(dst[start:end], frame) && !anyOverlap(dst[start:end], metadata) {
		tail := dst[start+plen : end]
		// Fast path, as in Seal. Without metadata the AAD is the header
		// as received, which the output does not overlap.
		nonce := tail[:nonceLen]
		makeNonce(nonce, &k.salt, ctr)
		aad := frame[:n]
		if len(metadata) > 0 {
			aad = append(append(tail[nonceLen:nonceLen], aad...), metadata...)
		}
		out, err = k.aead.Open(dst, nonce, ct, aad)
	} else {
		out, err = openSlow(k, dst, metadata, frame, n, ctr)
	}
	if err != nil {
		r.auth.Add(1)
		return nil, ErrAuth
	}
	// Record the counter only now that the frame has authenticated, so a
	// forgery cannot move the window.
	if !k.win.commit(ctr) {
		clear(out[start:])
		r.replay.Add(1)
		return nil, ErrReplay
	}
	return out, nil
}

// openSlow decrypts with the nonce and AAD in a pooled scratch, for a dst
// without room for them or one that overlaps the frame.
func openSlow(k *recvKey, dst, metadata, frame []byte, n int, ctr uint64) ([]byte, error) {
	ct := frame[n:]
	// AAD = header as received || metadata.
	sc := getScratch(&k.salt, ctr)
	sc.aad = append(sc.aad, frame[:n]...)
	if len(metadata) > 0 {
		sc.aad = append(sc.aad, metadata...)
	}
	start := len(dst)
	if anyOverlap(dst[start:cap(dst)], ct) {
		// Move the ciphertext to where its plaintext goes, so the AEAD
		// works exactly in place. The AAD was already copied.
		dst = slices.Grow(dst, len(ct))
		if body := dst[start : start+len(ct)]; anyOverlap(body, ct) {
			copy(body, ct)
			ct = body
		}
	}
	out, err := k.aead.Open(dst, sc.nonce[:], ct, sc.aad)
	putScratch(sc)
	return out, err
}

// DropStats counts failed Opens by reason.
type DropStats struct {
	Short      uint64 // ErrShortFrame
	BadHeader  uint64 // ErrBadHeader
	UnknownKID uint64 // ErrUnknownKID
	Auth       uint64 // ErrAuth
	Replay     uint64 // ErrReplay
}

// Total is the number of failed Opens.
func (d DropStats) Total() uint64 {
	return d.Short + d.BadHeader + d.UnknownKID + d.Auth + d.Replay
}

// ReceiverStats is a snapshot of a Receiver's counters. Frames that open
// are not counted here: Open returns them without an error, and counting
// them would put an atomic add on every frame (a tenth of the cost of
// opening a 100-byte frame); callers that want the figure count nil
// errors.
type ReceiverStats struct {
	Dropped DropStats
}

// Stats returns the receiver's counters. They are read one by one, so a
// snapshot taken while Open runs may be slightly inconsistent.
func (r *Receiver) Stats() ReceiverStats {
	return ReceiverStats{
		Dropped: DropStats{
			Short:      r.short.Load(),
			BadHeader:  r.badHeader.Load(),
			UnknownKID: r.unknownKID.Load(),
			Auth:       r.auth.Load(),
			Replay:     r.replay.Load(),
		},
	}
}
