package e2ee

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// Seeds live in testdata/fuzz/<FuzzName>/ (taken from the RFC 9605
// vectors); the f.Add calls below add frames under a Parley KID.

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{0x00})
	f.Add(AppendHeader(nil, MakeKID(0xffff, 0xffff, 0xff), MaxCounter))
	f.Fuzz(func(t *testing.T, b []byte) {
		kid, ctr, n, err := ParseHeader(b)
		if err != nil {
			if !errors.Is(err, ErrShortFrame) && !errors.Is(err, ErrBadHeader) {
				t.Fatalf("unexpected error %v", err)
			}
			if len(b) == 0 != errors.Is(err, ErrShortFrame) {
				t.Fatalf("ErrShortFrame iff empty: len %d, %v", len(b), err)
			}
			return
		}
		if n < 1 || n > len(b) || n > MaxHeaderLen || n != HeaderLen(kid, ctr) {
			t.Fatalf("n = %d for %d bytes, HeaderLen %d", n, len(b), HeaderLen(kid, ctr))
		}
		// Minimal encodings only: parsing and encoding are inverses.
		if h := AppendHeader(nil, kid, ctr); !bytes.Equal(h, b[:n]) {
			t.Fatalf("ParseHeader(%x) = %#x, %#x but AppendHeader gives %x", b[:n], kid, ctr, h)
		}
	})
}

type fuzzPeer struct {
	r       *Receiver
	senders map[uint64]*Sender
}

// fuzzPeers returns, for every suite, a Receiver holding the RFC vectors'
// base key under KID 291 and testBaseKey under testKID, with matching
// Senders.
func fuzzPeers(t testing.TB) []fuzzPeer {
	rfcKey := seqBytes(0x00, 16)
	var peers []fuzzPeer
	for _, s := range []Suite{1, 2, 3, 4, 5} {
		r, err := NewReceiver(s)
		if err != nil {
			t.Fatal(err)
		}
		p := fuzzPeer{r: r, senders: map[uint64]*Sender{}}
		for kid, key := range map[uint64][]byte{291: rfcKey, testKID: testBaseKey} {
			if err := r.AddKey(kid, key); err != nil {
				t.Fatal(err)
			}
			p.senders[kid] = mustSender(t, s, kid, key)
		}
		peers = append(peers, p)
	}
	return peers
}

func FuzzOpen(f *testing.F) {
	peers := fuzzPeers(f)
	for _, p := range peers {
		f.Add(p.senders[testKID].sealAt(nil, 1000, testMetadata, []byte("parley seed")), testMetadata)
	}
	f.Fuzz(func(t *testing.T, frame, metadata []byte) {
		for _, p := range peers {
			p.r.resetWindows()
			before := p.r.Stats()
			pt, err := p.r.Open(nil, metadata, frame)
			after := p.r.Stats()
			if want := uint64(0); err != nil {
				want = 1
				if d := after.Dropped.Total() - before.Dropped.Total(); d != want {
					t.Fatalf("%s: %v: stats %+v -> %+v, want one drop", p.r.Suite(), err, before, after)
				}
			} else if after != before {
				t.Fatalf("%s: opened, but stats %+v -> %+v", p.r.Suite(), before, after)
			}
			if err != nil {
				if pt != nil {
					t.Fatalf("%s: plaintext with error %v", p.r.Suite(), err)
				}
				switch {
				case errors.Is(err, ErrShortFrame), errors.Is(err, ErrBadHeader),
					errors.Is(err, ErrUnknownKID), errors.Is(err, ErrAuth), errors.Is(err, ErrReplay):
				default:
					t.Fatalf("%s: unexpected error %v", p.r.Suite(), err)
				}
				continue
			}
			// It opened: sealing the plaintext again under the same KID and
			// CTR must give back the frame, and a replay must be refused.
			kid, ctr, _, err := ParseHeader(frame)
			if err != nil {
				t.Fatalf("%s: opened a frame whose header does not parse: %v", p.r.Suite(), err)
			}
			if again := p.senders[kid].sealAt(nil, ctr, metadata, pt); !bytes.Equal(again, frame) {
				t.Fatalf("%s: resealed %x, frame %x", p.r.Suite(), again, frame)
			}
			if _, err := p.r.Open(nil, metadata, frame); !errors.Is(err, ErrReplay) {
				t.Fatalf("%s: replay gave %v", p.r.Suite(), err)
			}
		}
	})
}

// TestParseHeaderFastPath compares ParseHeader's 8-byte-load path with the
// byte-by-byte parser on every config byte that takes it, with random and
// minimal value bytes.
func TestParseHeaderFastPath(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, MaxHeaderLen+3)
	for cfg := range 256 {
		if cfg&(hdrX|hdrY) != hdrX|hdrY {
			continue
		}
		for i := range 2000 {
			b[0] = byte(cfg)
			for j := 1; j < len(b); j++ {
				b[j] = byte(rnd.Uint32())
			}
			if i%2 == 0 { // make the values minimal, so some parse
				b[1] |= 0x80
				b[2+cfg>>4&7] |= 0x80
			}
			for _, l := range []int{MaxHeaderLen, len(b)} {
				k1, c1, n1, e1 := ParseHeader(b[:l])
				k2, c2, n2, e2 := parseHeaderBytewise(b[:l])
				if k1 != k2 || c1 != c2 || n1 != n2 || e1 != e2 {
					t.Fatalf("% x: fast (%d, %d, %d, %v), bytewise (%d, %d, %d, %v)", b[:l], k1, c1, n1, e1, k2, c2, n2, e2)
				}
			}
		}
	}
}
