package e2ee

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"testing"
)

// Benchmarks on Parley's suite 0x0004 with a Parley KID (5-byte KID, so
// 7-9 header bytes). BenchmarkSealOpen and BenchmarkRawGCM do the same
// AES-GCM work per frame (seal + open, same plaintext size, same AAD length:
// the header, plus metadata in the "+md16" cases); the difference is what
// SFrame adds: header, counter, nonce, key lookup, replay window. Seal and
// Open get the buffer room their docs advise (ScratchLen), so they run
// their fast path; BenchmarkSealOpenPooled shows the path without it.

var benchCases = []struct {
	name string
	size int
	md   []byte
}{
	{"100", 100, nil},
	{"1200", 1200, nil},
	{"100+md16", 100, testMetadata},
	{"1200+md16", 1200, testMetadata},
}

func BenchmarkSeal(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			snd, _ := newPair(b, AES_128_GCM_SHA256_128)
			pt := make([]byte, bc.size)
			dst := make([]byte, 0, bc.size+MaxHeaderLen+16+ScratchLen(len(bc.md)))
			b.SetBytes(int64(bc.size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := snd.Seal(dst[:0], bc.md, pt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			snd, rcv := newPair(b, AES_128_GCM_SHA256_128)
			// A ring of frames; the replay window is reset each time round.
			const ring = 4096
			frames := make([][]byte, ring)
			for i := range frames {
				frames[i] = mustSeal(b, snd, bc.md, make([]byte, bc.size))
			}
			dst := make([]byte, 0, bc.size+MaxHeaderLen+16+ScratchLen(len(bc.md)))
			b.SetBytes(int64(bc.size))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i == ring {
					i = 0
					rcv.resetWindows()
				}
				if _, err := rcv.Open(dst[:0], bc.md, frames[i]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkSealOpen gives Seal and Open room for the frame plus their
// scratch, as their docs advise.
func BenchmarkSealOpen(b *testing.B) {
	benchSealOpen(b, func(size, mdLen int) (frameCap, outCap int) {
		room := size + MaxHeaderLen + 16 + ScratchLen(mdLen)
		return room, room
	})
}

// BenchmarkSealOpenPooled is BenchmarkSealOpen with buffers of exactly
// the frame's and the plaintext's size: no scratch room, so Seal and Open
// take their nonce and AAD from the pool.
func BenchmarkSealOpenPooled(b *testing.B) {
	benchSealOpen(b, func(size, _ int) (frameCap, outCap int) {
		return size + MaxHeaderLen + 16, size
	})
}

func benchSealOpen(b *testing.B, caps func(size, mdLen int) (frameCap, outCap int)) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			snd, rcv := newPair(b, AES_128_GCM_SHA256_128)
			pt := make([]byte, bc.size)
			frameCap, outCap := caps(bc.size, len(bc.md))
			frame := make([]byte, 0, frameCap)
			out := make([]byte, 0, outCap)
			b.SetBytes(int64(bc.size))
			b.ReportAllocs()
			for b.Loop() {
				f, err := snd.Seal(frame[:0], bc.md, pt)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := rcv.Open(out[:0], bc.md, f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRawGCM is the baseline: crypto/cipher AES-128-GCM seal + open
// with a counter nonce and an AAD as long as SFrame's.
func BenchmarkRawGCM(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			block, err := aes.NewCipher(testBaseKey[:16])
			if err != nil {
				b.Fatal(err)
			}
			gcm, err := cipher.NewGCM(block)
			if err != nil {
				b.Fatal(err)
			}
			aad := append(AppendHeader(nil, testKID, 1<<16), bc.md...) // 9-byte header
			pt := make([]byte, bc.size)
			ct := make([]byte, 0, bc.size+16)
			out := make([]byte, 0, bc.size)
			var nonce [12]byte
			var ctr uint64
			b.SetBytes(int64(bc.size))
			b.ReportAllocs()
			for b.Loop() {
				ctr++
				binary.BigEndian.PutUint64(nonce[4:], ctr)
				c := gcm.Seal(ct[:0], nonce[:], pt, aad)
				if _, err := gcm.Open(out[:0], nonce[:], c, aad); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
