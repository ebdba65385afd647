package e2ee

import (
	"bytes"
	"fmt"
	"testing"
)

// Seal and Open have a fast path that keeps the nonce and the AAD in
// dst's spare capacity, and a pooled path for every other buffer layout.
// TestBufferLayouts checks, for every suite, plaintext and metadata size
// and header size, that every layout gives the same frame and plaintext,
// that the fast path really ran (its nonce is in the scratch room), and
// that nothing past the documented room is written.

const guard = 0xEE

// guarded returns a slice of length n whose capacity is n+room, followed
// by 16 bytes of guard that must survive.
func guarded(n, room int) (s, whole []byte) {
	whole = bytes.Repeat([]byte{guard}, n+room+16)
	return whole[: n : n+room], whole
}

func checkGuard(t *testing.T, whole []byte, from int) {
	t.Helper()
	for i := from; i < len(whole); i++ {
		if whole[i] != guard {
			t.Fatalf("byte %d past the room was written", i-from)
		}
	}
}

func TestBufferLayouts(t *testing.T) {
	ctrs := []uint64{0, 7, 8, 255, 1 << 16, MaxCounter}
	for _, s := range []Suite{1, 2, 3, 4, 5} {
		for _, kid := range []uint64{3, testKID} {
			snd := mustSender(t, s, kid, testBaseKey)
			rcv, err := NewReceiver(s)
			if err != nil {
				t.Fatal(err)
			}
			if err := rcv.AddKey(kid, testBaseKey); err != nil {
				t.Fatal(err)
			}
			for _, ptLen := range []int{0, 1, 3, 5, 16, 17, 100} {
				for _, mdLen := range []int{0, 1, 16, 40} {
					for _, ctr := range ctrs {
						name := fmt.Sprintf("%v/kid%d/pt%d/md%d/ctr%d", s, kid, ptLen, mdLen, ctr)
						pt := bytes.Repeat([]byte{'p'}, ptLen)
						md := bytes.Repeat([]byte{'m'}, mdLen)
						checkLayouts(t, name, snd, rcv, ctr, md, pt)
					}
				}
			}
		}
	}
}

func checkLayouts(t *testing.T, name string, snd *Sender, rcv *Receiver, ctr uint64, md, pt []byte) {
	t.Helper()
	want := snd.sealAt(nil, ctr, md, pt)
	flen := len(want)
	scr := ScratchLen(len(md))
	var nonce [nonceLen]byte
	makeNonce(nonce[:], &snd.salt, ctr)

	// Seal, fast path: a 3-byte prefix, room for the frame and the scratch.
	dst, whole := guarded(3, flen+scr)
	copy(dst, "abc")
	f := snd.sealAt(dst, ctr, md, pt)
	if !bytes.Equal(f[:3], []byte("abc")) || !bytes.Equal(f[3:], want) {
		t.Fatalf("%s: fast Seal differs from the pooled one", name)
	}
	if !bytes.Equal(whole[3+flen:3+flen+nonceLen], nonce[:]) {
		t.Fatalf("%s: Seal did not take the fast path", name)
	}
	checkGuard(t, whole, 3+flen+scr)

	// Seal, pooled: exact room; plaintext in dst's spare capacity (in
	// place, where the ciphertext goes); metadata in it.
	dst, whole = guarded(0, flen)
	if f := snd.sealAt(dst, ctr, md, pt); !bytes.Equal(f, want) {
		t.Fatalf("%s: Seal with exact room differs", name)
	}
	checkGuard(t, whole, flen)
	hlen := flen - len(pt) - snd.nt
	buf := make([]byte, flen+scr)
	copy(buf[hlen:], pt)
	if f := snd.sealAt(buf[:0], ctr, md, buf[hlen:hlen+len(pt)]); !bytes.Equal(f, want) {
		t.Fatalf("%s: in-place Seal differs", name)
	}
	buf = make([]byte, flen+scr+len(md))
	inMD := buf[flen+scr-len(md)/2:][:len(md):len(md)] // straddles the scratch room's end
	copy(inMD, md)
	if f := snd.sealAt(buf[:0], ctr, inMD, pt); !bytes.Equal(f, want) {
		t.Fatalf("%s: Seal with metadata in dst's spare capacity differs", name)
	}

	// Open in every layout, each with a fresh window.
	open := func(layout string, dst, md, frame []byte) []byte {
		t.Helper()
		rcv.resetWindows()
		got, err := rcv.Open(dst, md, frame)
		if err != nil || !bytes.Equal(got[len(dst):], pt) {
			t.Fatalf("%s: Open (%s) = %q, %v", name, layout, got, err)
		}
		return got
	}
	open("nil dst", nil, md, want)
	dst, whole = guarded(2, len(pt)+scr)
	open("fast", dst, md, want)
	if !bytes.Equal(whole[2+len(pt):2+len(pt)+nonceLen], nonce[:]) {
		t.Fatalf("%s: Open did not take the fast path", name)
	}
	checkGuard(t, whole, 2+len(pt)+scr)
	dst, whole = guarded(0, len(pt))
	open("exact room", dst, md, want)
	checkGuard(t, whole, len(pt))
	frame := bytes.Clone(want)
	open("in place", frame[:0], md, frame)
	buf = make([]byte, len(pt)+scr+len(md))
	inMD = buf[len(pt)+scr-len(md)/2:][:len(md):len(md)]
	copy(inMD, md)
	open("metadata in dst's spare capacity", buf[:0], inMD, want)
	buf = make([]byte, len(pt)+scr+flen)
	inFrame := buf[len(pt)+1:][:flen:flen] // the frame inside the scratch room
	copy(inFrame, want)
	open("frame in dst's spare capacity", buf[:0], md, inFrame)
}
