package e2ee

import "errors"

// Errors returned by this package. They are sentinels: compare with
// errors.Is, since callers may receive them wrapped with %w.
var (
	// ErrShortFrame: the frame is empty or too short to hold a header and an
	// authentication tag.
	ErrShortFrame = errors.New("sframe: frame too short")

	// ErrBadHeader: the SFrame header is malformed: a KID or CTR length
	// field points past the end of the frame, or a value is not encoded in
	// its minimal form (RFC 9605 §4.3).
	ErrBadHeader = errors.New("sframe: malformed header")

	// ErrUnknownKID: no key is installed for the frame's KID. RFC 9605
	// §4.4.4 allows a receiver to buffer such a frame and retry once the
	// key arrives.
	ErrUnknownKID = errors.New("sframe: unknown key id")

	// ErrAuth: the authentication tag did not verify (wrong key, or the
	// header, metadata, ciphertext or tag was altered).
	ErrAuth = errors.New("sframe: authentication failed")

	// ErrReplay: the counter was already accepted for this KID, or is older
	// than the replay window.
	ErrReplay = errors.New("sframe: replayed or too old counter")

	// ErrCounterExhausted: the sender has used every counter up to its cap;
	// a new key (a new KID) is needed. Counters never wrap.
	ErrCounterExhausted = errors.New("sframe: counter exhausted")

	// ErrUnknownSuite: the cipher suite is not one of RFC 9605's.
	ErrUnknownSuite = errors.New("sframe: unknown cipher suite")

	// ErrBadKey: the base key is shorter than MinBaseKeyLen.
	ErrBadKey = errors.New("sframe: bad base key")
)
