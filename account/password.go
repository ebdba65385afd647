package account

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Password rules for new passwords (CheckPassword). Sign-in compares
// whatever it gets.
const (
	MinPasswordLen = 10   // characters
	MaxPasswordLen = 1024 // bytes
)

// Params are argon2id's cost parameters (RFC 9106), recorded in every hash
// so old hashes keep verifying when the defaults change.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32 // passes
	Threads uint8  // lanes
	SaltLen uint32 // bytes
	KeyLen  uint32 // bytes
}

// DefaultParams: 64 MiB, 2 passes, 1 lane, 16-byte salt, 32-byte key. One
// hash takes about 85 ms on one core of the 2-core reference machine
// (Go 1.26, x86-64; 1 pass ≈ 49 ms, 3 passes ≈ 129 ms), inside the
// 50-100 ms target: slow for a guesser, unnoticeable at sign-in. One lane
// keeps a sign-in to one core, and the Service runs at most a few hashes at
// once (hashSlots), so a burst of sign-ins costs at most a few times 64 MiB.
// The memory is RFC 9106's second recommended option (64 MiB); OWASP's
// minimum for argon2id is 19 MiB with 2 passes.
var DefaultParams = Params{Memory: 64 * 1024, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}

// Bounds on the parameters a stored hash may ask for, so a corrupted or
// planted hash cannot make a sign-in take gigabytes or minutes.
const (
	maxMemory  = 1 << 20 // KiB: 1 GiB
	maxTime    = 32
	minSaltLen = 8
	maxSaltLen = 64
	minKeyLen  = 16
	maxKeyLen  = 64
)

// CheckPassword applies the rules for a new password: at least
// MinPasswordLen characters, at most MaxPasswordLen bytes, valid UTF-8
// without control characters.
func CheckPassword(pw string) error {
	switch {
	case len(pw) > MaxPasswordLen:
		return ErrPasswordTooLong
	case !utf8.ValidString(pw) || strings.IndexFunc(pw, unicode.IsControl) >= 0:
		return ErrPasswordInvalid
	case utf8.RuneCountInString(pw) < MinPasswordLen:
		return ErrPasswordTooShort
	}
	return nil
}

// b64 is the PHC string format's base64: standard alphabet, no padding.
var b64 = base64.RawStdEncoding.Strict()

// HashPassword hashes pw with argon2id and a fresh random salt, and returns
// the PHC string $argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>.
// It does not apply CheckPassword.
func HashPassword(pw string, p Params) string {
	salt := make([]byte, p.SaltLen)
	rand.Read(salt) // crypto/rand.Read never fails on supported platforms
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// VerifyPassword reports whether pw matches the PHC string, comparing in
// constant time. The error wraps ErrBadHash for a hash it cannot read;
// stale reports that the hash was made with other parameters than want, so
// the caller should rehash the password it now knows.
func VerifyPassword(pw, phc string, want Params) (ok, stale bool, err error) {
	p, salt, key, err := parsePHC(phc)
	if err != nil {
		return false, false, err
	}
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	ok = subtle.ConstantTimeCompare(got, key) == 1
	stale = p.Memory != want.Memory || p.Time != want.Time || p.Threads != want.Threads ||
		p.SaltLen != want.SaltLen || p.KeyLen != want.KeyLen
	return ok, stale, nil
}

// parsePHC reads $argon2id$v=19$m=..,t=..,p=..$salt$hash strictly: the
// fields in that order, decimal numbers without signs or leading zeros,
// canonical unpadded base64, and parameters within the bounds above.
func parsePHC(s string) (p Params, salt, key []byte, err error) {
	bad := func(what string) (Params, []byte, []byte, error) {
		return Params{}, nil, nil, fmt.Errorf("%w: %s", ErrBadHash, what)
	}
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" {
		return bad("want 5 fields")
	}
	if f[1] != "argon2id" {
		return bad("not argon2id")
	}
	if f[2] != "v="+strconv.Itoa(argon2.Version) {
		return bad("unknown version")
	}
	ps := strings.Split(f[3], ",")
	if len(ps) != 3 {
		return bad("want m, t and p")
	}
	var vals [3]uint64
	for i, name := range []string{"m=", "t=", "p="} {
		v, ok := strings.CutPrefix(ps[i], name)
		if !ok || v == "" || (len(v) > 1 && v[0] == '0') {
			return bad("parameter " + name)
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return bad("parameter " + name)
		}
		vals[i] = n
	}
	p.Memory, p.Time = uint32(vals[0]), uint32(vals[1])
	if vals[2] < 1 || vals[2] > 255 || p.Time < 1 || p.Time > maxTime || p.Memory > maxMemory || uint64(p.Memory) < 8*vals[2] {
		return bad("parameters out of range")
	}
	p.Threads = uint8(vals[2])
	if salt, err = b64.DecodeString(f[4]); err != nil || len(salt) < minSaltLen || len(salt) > maxSaltLen {
		return bad("salt")
	}
	if key, err = b64.DecodeString(f[5]); err != nil || len(key) < minKeyLen || len(key) > maxKeyLen {
		return bad("hash")
	}
	p.SaltLen, p.KeyLen = uint32(len(salt)), uint32(len(key))
	return p, salt, key, nil
}
