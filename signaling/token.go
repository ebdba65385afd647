package signaling

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
)

// Join tokens (docs/security.md §2.5). The page derives
//
//	T_join = HKDF-SHA256(S, salt = "", info = "parley/1 join-token", 32)
//
// from the link secret S and registers, when the room is made, only
//
//	V = SHA-256("parley/1 join-verifier" || T_join)
//
// Every join carries b64url(T_join); the server hashes it and compares with
// V in constant time. The server never sees S, and a copy of its store (V)
// lets nobody join.
const (
	// JoinTokenBytes is the length of T_join and of V.
	JoinTokenBytes = 32
	// joinVerifierLabel prefixes T_join in V's hash input.
	joinVerifierLabel = "parley/1 join-verifier"
	// HeaderJoinToken carries b64url(T_join) on GET /api/rooms/{id}.
	HeaderJoinToken = "Parley-Join-Token"
)

// JoinVerifier returns V for a join token.
func JoinVerifier(token []byte) []byte {
	h := sha256.New()
	h.Write([]byte(joinVerifierLabel))
	h.Write(token)
	return h.Sum(nil)
}

// decode32 decodes unpadded base64url of exactly 32 bytes.
func decode32(s string) ([]byte, bool) {
	if len(s) != base64.RawURLEncoding.EncodedLen(JoinTokenBytes) {
		return nil, false
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	return b, err == nil && len(b) == JoinTokenBytes
}

// tokenMatches reports whether the b64url token hashes to verifier.
func tokenMatches(token string, verifier []byte) bool {
	t, ok := decode32(token)
	if !ok || len(verifier) != JoinTokenBytes {
		return false
	}
	return subtle.ConstantTimeCompare(JoinVerifier(t), verifier) == 1
}
