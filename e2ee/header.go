package e2ee

import (
	"encoding/binary"
	"math/bits"
	"slices"
)

// SFrame header, RFC 9605 §4.3.
//
//	 0 1 2 3 4 5 6 7
//	+-+-+-+-+-+-+-+-+---------------------------------+
//	|X|  K  |Y|  C  |   KID...  (0-8 bytes)  CTR... (0-8 bytes)
//	+-+-+-+-+-+-+-+-+---------------------------------+
//
// The config byte holds X (0x80), K (0x70), Y (0x08) and C (0x07). If X is
// 0, K is the KID itself (0-7) and no KID bytes follow; if X is 1, K is the
// length of the KID minus one and that many+1 big-endian bytes follow. Y and
// C do the same for the CTR, whose bytes follow the KID's.
const (
	hdrX = 0x80 // extended KID flag
	hdrY = 0x08 // extended CTR flag

	// MaxHeaderLen is the longest possible SFrame header: the config byte,
	// an 8-byte KID and an 8-byte CTR.
	MaxHeaderLen = 1 + 8 + 8
)

// minLen is the number of bytes of v in minimal big-endian form (v >= 8 here).
func minLen(v uint64) int { return (bits.Len64(v) + 7) / 8 }

// AppendHeader appends the SFrame header for kid and ctr to dst and returns
// the extended slice. Values 0-7 are carried in the config byte; larger
// values in the minimal number of big-endian bytes, as RFC 9605 §4.3
// requires.
func AppendHeader(dst []byte, kid, ctr uint64) []byte {
	n := len(dst)
	dst = slices.Grow(dst, MaxHeaderLen)
	putHeader(dst[n:n+MaxHeaderLen], kid, ctr)
	return dst[:n+HeaderLen(kid, ctr)]
}

// kidHeader is the KID's part of a header, worked out once per Sender.
type kidHeader struct {
	cfg  byte   // the X and K bits of the config byte
	kl   int    // KID bytes after the config byte (0 if the KID is in K)
	word uint64 // the KID bytes, big-endian from the top of the word
}

func makeKIDHeader(kid uint64) kidHeader {
	if kid < 8 {
		return kidHeader{cfg: byte(kid) << 4}
	}
	kl := minLen(kid)
	return kidHeader{cfg: hdrX | byte(kl-1)<<4, kl: kl, word: kid << (64 - 8*kl)}
}

// len is the header length for ctr.
func (h *kidHeader) len(ctr uint64) int {
	if ctr < 8 {
		return 1 + h.kl
	}
	return 1 + h.kl + minLen(ctr)
}

// put writes the header for ctr at the start of b, as putHeader describes
// (b needs MaxHeaderLen bytes; up to 8 bytes past the header are written).
// A shift by 64 gives 0 in Go, so a value carried in the config byte
// writes zeros.
func (h *kidHeader) put(b []byte, ctr uint64) {
	cfg, cl := h.cfg, 0
	if ctr < 8 {
		cfg |= byte(ctr)
	} else {
		cl = minLen(ctr)
		cfg |= hdrY | byte(cl-1)
	}
	_ = b[MaxHeaderLen-1]
	b[0] = cfg
	binary.BigEndian.PutUint64(b[1:], h.word)
	binary.BigEndian.PutUint64(b[1+h.kl:], ctr<<(64-8*cl))
}

// putHeader writes the header for kid and ctr at the start of b, which
// must have room for 1 + 8 + the KID's length bytes (MaxHeaderLen always
// suffices): each value is written as 8 bytes, shifted so its significant
// bytes come first, so up to 8 bytes past the header are overwritten.
func putHeader(b []byte, kid, ctr uint64) {
	h := makeKIDHeader(kid)
	h.put(b, ctr)
}

// HeaderLen returns the length of the header AppendHeader writes for kid
// and ctr.
func HeaderLen(kid, ctr uint64) int {
	h := makeKIDHeader(kid)
	return h.len(ctr)
}

// ParseHeader decodes the SFrame header at the start of b and returns the
// KID, the CTR and the header's length n; b[:n] is the header as received
// (it is part of the AAD) and b[n:] the ciphertext.
//
// An empty b gives ErrShortFrame. A length field pointing past the end of b
// gives ErrBadHeader, and so does a value that is not minimally encoded: a
// value below 8 in extended form, or a leading zero byte. RFC 9605 §4.3 says
// a value "MUST be encoded with the minimum number of bytes"; rejecting
// anything else makes the encoding canonical (one header per (KID, CTR)), so
// ParseHeader and AppendHeader are exact inverses, which FuzzParseHeader
// checks. Conforming senders never produce such headers, and the RFC's
// vectors are all minimal.
func ParseHeader(b []byte) (kid, ctr uint64, n int, err error) {
	if len(b) == 0 {
		return 0, 0, 0, ErrShortFrame
	}
	cfg := b[0]
	if cfg&(hdrX|hdrY) == hdrX|hdrY && len(b) >= MaxHeaderLen {
		// Both values extended (every Parley frame after its first 8):
		// read each as 8 bytes and shift off what follows it.
		kl, cl := int(cfg>>4&7)+1, int(cfg&7)+1
		kid = binary.BigEndian.Uint64(b[1:]) >> (64 - 8*kl)
		ctr = binary.BigEndian.Uint64(b[1+kl:]) >> (64 - 8*cl)
		if kid < 8 || ctr < 8 || minLen(kid) != kl || minLen(ctr) != cl {
			return 0, 0, 0, ErrBadHeader
		}
		return kid, ctr, 1 + kl + cl, nil
	}
	return parseHeaderBytewise(b)
}

// parseHeaderBytewise is ParseHeader for any header, byte by byte.
func parseHeaderBytewise(b []byte) (kid, ctr uint64, n int, err error) {
	cfg := b[0]
	n = 1
	if cfg&hdrX == 0 {
		kid = uint64(cfg>>4) & 7
	} else {
		kid, n, err = readVarint(b, n, int(cfg>>4&7)+1)
		if err != nil {
			return 0, 0, 0, err
		}
	}
	if cfg&hdrY == 0 {
		ctr = uint64(cfg & 7)
	} else {
		ctr, n, err = readVarint(b, n, int(cfg&7)+1)
		if err != nil {
			return 0, 0, 0, err
		}
	}
	return kid, ctr, n, nil
}

// readVarint reads an l-byte big-endian value at b[off:] and checks that it
// is minimally encoded.
func readVarint(b []byte, off, l int) (v uint64, next int, err error) {
	if len(b)-off < l {
		return 0, 0, ErrBadHeader
	}
	for _, c := range b[off : off+l] {
		v = v<<8 | uint64(c)
	}
	if v < 8 || minLen(v) != l {
		return 0, 0, ErrBadHeader
	}
	return v, off + l, nil
}
