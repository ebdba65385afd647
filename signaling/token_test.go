package signaling

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"testing"
)

// TestJoinTokenVector: the join token and verifier of a fixed link secret,
// the same vector as e2ee/keys.test.mjs, so Go and the page agree on
// docs/security.md §2.5.
func TestJoinTokenVector(t *testing.T) {
	secret := make([]byte, 16)
	for i := range secret {
		secret[i] = byte(i)
	}
	tok, err := hkdf.Key(sha256.New, secret, make([]byte, 32), "parley/1 join-token", 32)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	if got := b64(tok); got != "bK6gHxLUHo9_8-d_hmM5NKr3HNj0cJgoPsbEFWm34Jc" {
		t.Fatalf("T_join = %s", got)
	}
	v := JoinVerifier(tok)
	if got := b64(v); got != "PKKO9z3C2pE9TnoxGmXDVW6kUd5_HmqAUzu10y6oFNw" {
		t.Fatalf("V = %s", got)
	}
	if !tokenMatches(b64(tok), v) || tokenMatches(b64(tok[:31]), v) || tokenMatches(b64(v), v) {
		t.Fatal("tokenMatches")
	}
}
