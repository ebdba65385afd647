package e2ee

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
)

// resetWindows forgets every KID's replay window (fuzzing and benchmarks
// reopen the same frames).
func (r *Receiver) resetWindows() {
	for _, k := range *r.keys.Load() {
		k.win = replayWindow{}
	}
}

var (
	testBaseKey  = []byte("0123456789abcdef0123456789abcdef") // 32 bytes
	testKID      = MakeKID(0x0102, 3, 0)
	testMetadata = []byte("parley/1 media\x01\x00")
)

func newPair(t testing.TB, s Suite) (*Sender, *Receiver) {
	t.Helper()
	snd, err := NewSender(s, testKID, testBaseKey)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := NewReceiver(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := rcv.AddKey(testKID, testBaseKey); err != nil {
		t.Fatal(err)
	}
	return snd, rcv
}

func mustSeal(t testing.TB, s *Sender, md, pt []byte) []byte {
	t.Helper()
	f, err := s.Seal(nil, md, pt)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestRoundTripAllSuites(t *testing.T) {
	for _, s := range []Suite{1, 2, 3, 4, 5} {
		t.Run(s.String(), func(t *testing.T) {
			snd, rcv := newPair(t, s)
			for i, pt := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("frame"), 300)} {
				f := mustSeal(t, snd, testMetadata, pt)
				if want := len(pt) + s.Overhead(testKID, uint64(i)); len(f) != want {
					t.Errorf("frame %d is %d bytes, want %d", i, len(f), want)
				}
				got, err := rcv.Open(nil, testMetadata, f)
				if err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("frame %d: Open = %q, %v", i, got, err)
				}
			}
			if st := rcv.Stats(); st.Dropped.Total() != 0 {
				t.Errorf("stats = %+v", st)
			}
		})
	}
}

// TestMalformed checks that each kind of bad frame gives its sentinel and
// increments exactly its own counter.
func TestMalformed(t *testing.T) {
	snd, rcv := newPair(t, AES_128_GCM_SHA256_128)
	other, err := NewSender(AES_128_GCM_SHA256_128, MakeKID(9, 9, 9), testBaseKey)
	if err != nil {
		t.Fatal(err)
	}
	// Counters 0..9 are used; frame 9 has a CTR byte after the KID.
	var frames [][]byte
	for i := range 10 {
		frames = append(frames, mustSeal(t, snd, testMetadata, []byte(fmt.Sprintf("frame %d", i))))
	}
	good := frames[9]
	_, _, hn, err := ParseHeader(good)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, i int) []byte { b = slices.Clone(b); b[i] ^= 0x01; return b }

	short := func(d DropStats) uint64 { return d.Short }
	badHdr := func(d DropStats) uint64 { return d.BadHeader }
	unknown := func(d DropStats) uint64 { return d.UnknownKID }
	auth := func(d DropStats) uint64 { return d.Auth }

	cases := []struct {
		name    string
		frame   []byte
		md      []byte
		want    error
		counter func(DropStats) uint64
	}{
		{"empty", []byte{}, testMetadata, ErrShortFrame, short},
		{"nil", nil, testMetadata, ErrShortFrame, short},
		{"one byte, complete header", []byte{0x00}, testMetadata, ErrShortFrame, short},
		{"one byte, truncated header", []byte{0x99}, testMetadata, ErrBadHeader, badHdr},
		{"header only", good[:hn], testMetadata, ErrShortFrame, short},
		{"header and tag-1 bytes", good[:hn+15], testMetadata, ErrShortFrame, short},
		{"KID length past end", []byte{0xf0, 1, 2, 3}, testMetadata, ErrBadHeader, badHdr},
		{"CTR length past end", []byte{0x0f, 1, 2, 3}, testMetadata, ErrBadHeader, badHdr},
		{"non-minimal KID", append([]byte{0x80, 0x05}, good[hn:]...), testMetadata, ErrBadHeader, badHdr},
		{"non-minimal CTR", append([]byte{0x09, 0x00, 0x09}, good[hn:]...), testMetadata, ErrBadHeader, badHdr},
		{"unknown KID", mustSeal(t, other, testMetadata, []byte("hi")), testMetadata, ErrUnknownKID, unknown},
		{"flipped ciphertext bit", flip(good, hn), testMetadata, ErrAuth, auth},
		{"flipped tag bit", flip(good, len(good)-1), testMetadata, ErrAuth, auth},
		{"flipped header CTR bit", flip(good, hn-1), testMetadata, ErrAuth, auth},
		{"flipped metadata bit", good, flip(testMetadata, 3), ErrAuth, auth},
		{"missing metadata", good, nil, ErrAuth, auth},
		{"wrong key", mustSeal(t, mustSender(t, AES_128_GCM_SHA256_128, testKID, bytes.Repeat([]byte{7}, 32)), testMetadata, []byte("x")), testMetadata, ErrAuth, auth},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := rcv.Stats()
			pt, err := rcv.Open(nil, c.md, c.frame)
			if !errors.Is(err, c.want) || pt != nil {
				t.Fatalf("Open = %q, %v; want nil, %v", pt, err, c.want)
			}
			after := rcv.Stats()
			if got := c.counter(after.Dropped) - c.counter(before.Dropped); got != 1 {
				t.Errorf("own counter moved by %d, want 1", got)
			}
			if d := after.Dropped.Total() - before.Dropped.Total(); d != 1 {
				t.Errorf("stats %+v -> %+v: want exactly one drop", before, after)
			}
		})
	}

	// The tampered frames must not have touched the window: the genuine
	// frame still opens, then its replay is refused.
	t.Run("genuine after forgeries", func(t *testing.T) {
		if _, err := rcv.Open(nil, testMetadata, good); err != nil {
			t.Fatal(err)
		}
		before := rcv.Stats()
		if _, err := rcv.Open(nil, testMetadata, good); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay: %v", err)
		}
		if after := rcv.Stats(); after.Dropped.Replay != before.Dropped.Replay+1 {
			t.Errorf("replay not counted: %+v", after)
		}
	})

	t.Run("below window", func(t *testing.T) {
		snd.SetMaxCounter(MaxCounter)
		var far []byte
		for snd.Counter() <= ReplayWindow+20 {
			far = mustSeal(t, snd, testMetadata, []byte("far"))
		}
		if _, err := rcv.Open(nil, testMetadata, far); err != nil {
			t.Fatal(err)
		}
		before := rcv.Stats()
		// frames[0] (CTR 0) was never opened, but is now below the window.
		if _, err := rcv.Open(nil, testMetadata, frames[0]); !errors.Is(err, ErrReplay) {
			t.Fatalf("old counter: %v", err)
		}
		if after := rcv.Stats(); after.Dropped.Replay != before.Dropped.Replay+1 {
			t.Errorf("not counted: %+v", after)
		}
	})
}

func mustSender(t testing.TB, s Suite, kid uint64, key []byte) *Sender {
	t.Helper()
	snd, err := NewSender(s, kid, key)
	if err != nil {
		t.Fatal(err)
	}
	return snd
}

func TestReorderWithinWindow(t *testing.T) {
	snd, rcv := newPair(t, AES_128_GCM_SHA256_128)
	var f [][]byte
	for range 6 {
		f = append(f, mustSeal(t, snd, nil, []byte("x")))
	}
	for _, c := range []struct {
		i  int
		ok bool
	}{{5, true}, {3, true}, {4, true}, {3, false}, {0, true}, {0, false}, {5, false}} {
		_, err := rcv.Open(nil, nil, f[c.i])
		if (err == nil) != c.ok {
			t.Errorf("frame %d: err = %v, want ok=%v", c.i, err, c.ok)
		}
	}
}

func TestReplayWindowEdges(t *testing.T) {
	var w replayWindow
	must := func(ctr uint64, want bool) {
		t.Helper()
		if got := w.commit(ctr); got != want {
			t.Fatalf("commit(%d) = %v, want %v", ctr, got, want)
		}
	}
	must(2000, true)
	must(2000-ReplayWindow, false)  // just outside
	must(2000-ReplayWindow+1, true) // oldest inside
	must(2000-ReplayWindow+1, false)
	must(2001, true) // slides past 977, which now is outside
	must(2000-ReplayWindow+2, true)
	must(2000+ReplayWindow+5, true) // jump clears everything
	must(2001, false)
	must(2000+6, true)
	must(^uint64(0), true) // the highest counter, no overflow
	must(^uint64(0), false)
	must(^uint64(0)-ReplayWindow+1, true)
	must(^uint64(0)-ReplayWindow, false)
	// Bits of counters the window slid past must not linger.
	var v replayWindow
	for c := uint64(0); c < 3*ReplayWindow; c += 3 {
		if !v.commit(c) {
			t.Fatalf("fresh %d refused", c)
		}
	}
	for c := uint64(2 * ReplayWindow); c < 3*ReplayWindow; c++ {
		if want := c%3 != 0; v.check(c) != want {
			t.Fatalf("check(%d) = %v, want %v", c, !want, want)
		}
	}
}

func TestCounterCap(t *testing.T) {
	snd, rcv := newPair(t, AES_128_GCM_SHA256_128)
	snd.SetMaxCounter(3)
	for want := uint64(0); want <= 3; want++ {
		f := mustSeal(t, snd, nil, []byte("x"))
		if _, ctr, _, _ := ParseHeader(f); ctr != want {
			t.Fatalf("ctr = %d, want %d", ctr, want)
		}
		if _, err := rcv.Open(nil, nil, f); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if f, err := snd.Seal(nil, nil, []byte("x")); !errors.Is(err, ErrCounterExhausted) || f != nil {
			t.Fatalf("Seal past the cap = %x, %v", f, err)
		}
	}
	if c := snd.Counter(); c != 4 {
		t.Errorf("counter moved past the cap: %d", c)
	}
	snd.SetMaxCounter(^uint64(0))
	if snd.max.Load() != MaxCounter {
		t.Errorf("cap above MaxCounter accepted: %d", snd.max.Load())
	}
	// The default cap is MaxCounter and the last counter is usable.
	snd2 := mustSender(t, AES_128_GCM_SHA256_128, testKID, testBaseKey)
	snd2.next.Store(MaxCounter)
	f, err := snd2.Seal(nil, nil, nil)
	if _, ctr, _, _ := ParseHeader(f); err != nil || ctr != MaxCounter {
		t.Fatalf("last counter: ctr %d, %v", ctr, err)
	}
	if _, err := snd2.Seal(nil, nil, nil); !errors.Is(err, ErrCounterExhausted) {
		t.Fatalf("past MaxCounter: %v", err)
	}
}

// TestConcurrentSealUniqueCounters models two peer connections times two
// tracks sharing one Sender, as E2EE-DESIGN §3 requires. Half the workers
// give Seal room for its scratch (the fast path), half do not (the pool).
func TestConcurrentSealUniqueCounters(t *testing.T) {
	snd, rcv := newPair(t, AES_128_GCM_SHA256_128)
	const workers, each = 4, 2000
	ctrs := make([][]uint64, workers)
	frames := make([][][]byte, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			pt := []byte("track")
			room := len(pt) + MaxHeaderLen + snd.Suite().Nt()
			if w%2 == 0 {
				room += ScratchLen(len(testMetadata))
			}
			buf := make([]byte, 0, room)
			for range each {
				f, err := snd.Seal(buf[:0], testMetadata, pt)
				if err != nil {
					t.Error(err)
					return
				}
				_, ctr, _, _ := ParseHeader(f)
				ctrs[w] = append(ctrs[w], ctr)
				frames[w] = append(frames[w], slices.Clone(f))
			}
		})
	}
	wg.Wait()
	seen := make(map[uint64][]byte, workers*each)
	for w, cs := range ctrs {
		for i, c := range cs {
			if seen[c] != nil {
				t.Fatalf("counter %d used twice", c)
			}
			seen[c] = frames[w][i]
		}
	}
	for c := range uint64(workers * each) {
		if seen[c] == nil {
			t.Fatalf("counter %d skipped", c)
		}
	}

	// Open belongs to one goroutine; key management and Stats may run
	// beside it (go test -race checks that they share nothing unsafely).
	stop := make(chan struct{})
	wg.Go(func() {
		for i := uint64(1); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			other := MakeKID(0x0103, 1, 0)
			if err := rcv.AddKey(other, testBaseKey); err != nil {
				t.Error(err)
				return
			}
			_ = rcv.HasKey(testKID)
			_ = rcv.Stats()
			rcv.RemoveKey(other)
		}
	})
	out := make([]byte, 0, 64)
	for round := range 2 {
		for c := range uint64(workers * each) {
			pt, err := rcv.Open(out[:0], testMetadata, seen[c])
			switch {
			case round == 0 && (err != nil || string(pt) != "track"):
				t.Fatalf("counter %d: Open = %q, %v", c, pt, err)
			case round == 1 && !errors.Is(err, ErrReplay):
				t.Fatalf("counter %d opened twice: %v", c, err)
			}
		}
	}
	close(stop)
	wg.Wait()
	if st := rcv.Stats(); st.Dropped.Replay != workers*each || st.Dropped.Total() != workers*each {
		t.Errorf("stats %+v, want %d replays only", st, workers*each)
	}
}

func TestKeyReplacement(t *testing.T) {
	snd, rcv := newPair(t, AES_128_GCM_SHA256_128)
	f0 := mustSeal(t, snd, nil, []byte("zero"))
	if _, err := rcv.Open(nil, nil, f0); err != nil {
		t.Fatal(err)
	}
	// Re-delivering the same key keeps the window: no replay.
	if err := rcv.AddKey(testKID, testBaseKey); err != nil {
		t.Fatal(err)
	}
	if _, err := rcv.Open(nil, nil, f0); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay after re-adding the same key: %v", err)
	}
	// A different key under the same KID starts a fresh window.
	newKey := bytes.Repeat([]byte{0x42}, 32)
	snd2 := mustSender(t, AES_128_GCM_SHA256_128, testKID, newKey)
	if err := rcv.AddKey(testKID, newKey); err != nil {
		t.Fatal(err)
	}
	g0 := mustSeal(t, snd2, nil, []byte("new zero"))
	if got, err := rcv.Open(nil, nil, g0); err != nil || string(got) != "new zero" {
		t.Fatalf("CTR 0 under the new key: %q, %v", got, err)
	}
	f1 := mustSeal(t, snd, nil, []byte("old key"))
	if _, err := rcv.Open(nil, nil, f1); !errors.Is(err, ErrAuth) {
		t.Fatalf("old key's frame: %v", err)
	}
	rcv.RemoveKey(testKID)
	rcv.RemoveKey(testKID) // twice is fine
	if rcv.HasKey(testKID) {
		t.Error("HasKey after RemoveKey")
	}
	if _, err := rcv.Open(nil, nil, mustSeal(t, snd2, nil, nil)); !errors.Is(err, ErrUnknownKID) {
		t.Fatalf("after RemoveKey: %v", err)
	}
}

func TestInPlace(t *testing.T) {
	for _, s := range []Suite{AES_128_CTR_HMAC_SHA256_80, AES_128_GCM_SHA256_128} {
		t.Run(s.String(), func(t *testing.T) {
			snd, rcv := newPair(t, s)
			pt := []byte("in-place plaintext, long enough to span blocks.....")
			for _, off := range []int{0, 3, MaxHeaderLen, 40} {
				// Plaintext sitting inside dst's spare capacity.
				buf := make([]byte, 200)
				copy(buf[off:], pt)
				f, err := snd.Seal(buf[:0], testMetadata, buf[off:off+len(pt)])
				if err != nil {
					t.Fatal(err)
				}
				frame := slices.Clone(f)
				// Decrypt in place: dst = frame[:0].
				got, err := rcv.Open(frame[:0], testMetadata, frame)
				if err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("offset %d: in-place Open = %q, %v", off, got, err)
				}
			}
			// Metadata aliasing dst.
			buf := make([]byte, 0, 200)
			buf = append(buf, testMetadata...)
			f, err := snd.Seal(buf[:0], buf[:len(testMetadata)], pt)
			if err != nil {
				t.Fatal(err)
			}
			f = slices.Clone(f)
			if got, err := rcv.Open(nil, testMetadata, f); err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("metadata aliasing dst: %q, %v", got, err)
			}
		})
	}
}

func TestConstructorErrors(t *testing.T) {
	if _, err := NewSender(0x0009, 1, testBaseKey); !errors.Is(err, ErrUnknownSuite) {
		t.Errorf("NewSender unknown suite: %v", err)
	}
	if _, err := NewSender(AES_128_GCM_SHA256_128, 1, testBaseKey[:15]); !errors.Is(err, ErrBadKey) {
		t.Errorf("NewSender short key: %v", err)
	}
	if _, err := NewReceiver(0); !errors.Is(err, ErrUnknownSuite) {
		t.Errorf("NewReceiver unknown suite: %v", err)
	}
	rcv, _ := NewReceiver(AES_128_GCM_SHA256_128)
	if err := rcv.AddKey(1, nil); !errors.Is(err, ErrBadKey) {
		t.Errorf("AddKey nil key: %v", err)
	}
	if _, err := Ratchet(0x0006, testBaseKey); !errors.Is(err, ErrUnknownSuite) {
		t.Errorf("Ratchet unknown suite: %v", err)
	}
	if _, err := Ratchet(AES_128_GCM_SHA256_128, []byte("short")); !errors.Is(err, ErrBadKey) {
		t.Errorf("Ratchet short key: %v", err)
	}
}

func TestSuiteConstants(t *testing.T) {
	// RFC 9605 Table 1.
	for _, c := range []struct {
		s                   Suite
		name                string
		nh, nka, nk, nn, nt int
	}{
		{0x0001, "AES_128_CTR_HMAC_SHA256_80", 32, 16, 48, 12, 10},
		{0x0002, "AES_128_CTR_HMAC_SHA256_64", 32, 16, 48, 12, 8},
		{0x0003, "AES_128_CTR_HMAC_SHA256_32", 32, 16, 48, 12, 4},
		{0x0004, "AES_128_GCM_SHA256_128", 32, 0, 16, 12, 16},
		{0x0005, "AES_256_GCM_SHA512_128", 64, 0, 32, 12, 16},
	} {
		if c.s.String() != c.name || c.s.Nh() != c.nh || c.s.Nka() != c.nka || c.s.Nk() != c.nk || c.s.Nn() != c.nn || c.s.Nt() != c.nt || !c.s.Supported() {
			t.Errorf("%#04x: got %s %d %d %d %d %d", uint16(c.s), c.s, c.s.Nh(), c.s.Nka(), c.s.Nk(), c.s.Nn(), c.s.Nt())
		}
	}
	if s := Suite(6); s.Supported() || s.Nt() != 0 || s.String() != "Suite(0x0006)" {
		t.Errorf("suite 6: %v %d %s", s.Supported(), s.Nt(), s)
	}
}

func TestKID(t *testing.T) {
	for _, c := range []struct {
		index, gen uint16
		step       uint8
		kid        uint64
	}{
		{0, 0, 0, 0},
		{0x0102, 0x0304, 0x05, 0x0102030405},
		{0xffff, 0xffff, 0xff, 0xffffffffff},
		{1, 0, 255, 1<<24 | 255},
	} {
		if got := MakeKID(c.index, c.gen, c.step); got != c.kid {
			t.Errorf("MakeKID(%#x, %#x, %#x) = %#x, want %#x", c.index, c.gen, c.step, got, c.kid)
		}
		i, g, s := SplitKID(c.kid)
		if i != c.index || g != c.gen || s != c.step || !ParleyKID(c.kid) {
			t.Errorf("SplitKID(%#x) = %#x, %#x, %#x", c.kid, i, g, s)
		}
		if HeaderLen(c.kid, 0) > 1+5 {
			t.Errorf("KID %#x takes %d header bytes", c.kid, HeaderLen(c.kid, 0)-1)
		}
	}
	if ParleyKID(1 << 40) {
		t.Error("ParleyKID(1<<40)")
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	vals := []uint64{0, 1, 7, 8, 255, 256, 1<<56 - 1, 1 << 56, ^uint64(0)}
	for b := range 64 {
		vals = append(vals, 1<<b, 1<<b-1)
	}
	for _, kid := range vals {
		for _, ctr := range vals {
			h := AppendHeader(nil, kid, ctr)
			k, c, n, err := ParseHeader(h)
			if err != nil || k != kid || c != ctr || n != len(h) || n != HeaderLen(kid, ctr) {
				t.Fatalf("(%#x, %#x): %x -> %#x, %#x, %d, %v", kid, ctr, h, k, c, n, err)
			}
		}
	}
}

// nonceAndAAD returns a scratch with the nonce and AAD Seal and Open use.
func nonceAndAAD(salt *[nonceLen]byte, ctr uint64, hdr, metadata []byte) *scratch {
	sc := getScratch(salt, ctr)
	sc.aad = append(append(sc.aad, hdr...), metadata...)
	return sc
}
