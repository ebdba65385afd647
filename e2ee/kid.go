package e2ee

// Parley KID layout (docs: E2EE-DESIGN §3), an instance of RFC 9605 §5.1's
// "key generation | ratchet step" KID with R = 8:
//
//	bits 63..40  39........24  23...........8  7....0
//	+----------+-------------+---------------+------+
//	|    0     |  index (16) | generation(16)| step |
//	+----------+-------------+---------------+------+
//
// index is the sender's index in the room (16 random bits the sender picks
// for its session), generation counts fresh base keys the sender has
// distributed, and step counts ratchet steps (Ratchet) within a generation;
// a sender starts a new generation before step would pass 255. Such a KID is
// at most 40 bits, so it takes at most 5 bytes in the header.
const (
	kidStepBits = 8
	kidGenBits  = 16
)

// MakeKID returns index<<24 | generation<<8 | step.
func MakeKID(index, generation uint16, step uint8) uint64 {
	return uint64(index)<<(kidGenBits+kidStepBits) | uint64(generation)<<kidStepBits | uint64(step)
}

// SplitKID is the inverse of MakeKID. Bits above bit 39 are ignored;
// ParleyKID reports whether there are any.
func SplitKID(kid uint64) (index, generation uint16, step uint8) {
	return uint16(kid >> (kidGenBits + kidStepBits)), uint16(kid >> kidStepBits), uint8(kid)
}

// ParleyKID reports whether kid fits the Parley layout (no bits above 39).
func ParleyKID(kid uint64) bool { return kid>>(16+kidGenBits+kidStepBits) == 0 }
