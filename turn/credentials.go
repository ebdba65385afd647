package turn

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 is what the TURN REST API specifies.
	"encoding/base64"
	"fmt"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxIDLen bounds the id part of a username, in bytes.
const maxIDLen = 128

// Credentials makes a TURN username and password for the caller identified
// by id, valid until now+ttl. It is the TURN REST API scheme
// (draft-uberti-behave-turn-rest, coturn's use-auth-secret):
//
//	username = "<unix expiry>:<id>"   (just "<unix expiry>" when id is empty)
//	password = base64(HMAC-SHA1(secret, username))
//
// so any coturn configured with the same static-auth-secret accepts them
// too. id should be printable and at most 128 bytes, or the server refuses
// the username.
func Credentials(secret []byte, id string, ttl time.Duration, now time.Time) (username, password string) {
	username = strconv.FormatInt(now.Add(ttl).Unix(), 10)
	if id != "" {
		username += ":" + id
	}
	return username, restPassword(secret, username)
}

func restPassword(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username)) // hash.Hash.Write never fails
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// parseUsername splits a TURN REST username "<decimal unix expiry>:<id>" or
// a bare "<decimal unix expiry>". The expiry is ASCII digits only (no sign,
// no spaces) and fits an int64; the id, when the colon is present, is
// non-empty valid UTF-8 of printable characters, at most 128 bytes. The id
// may itself contain colons: only the first one separates.
func parseUsername(username string) (expiry int64, id string, err error) {
	digits := username
	colon := false
	for i := 0; i < len(username); i++ {
		if username[i] == ':' {
			digits, id, colon = username[:i], username[i+1:], true
			break
		}
	}
	if digits == "" {
		return 0, "", fmt.Errorf("%w: no expiry", ErrMalformedUsername)
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, "", fmt.Errorf("%w: expiry is not a decimal number", ErrMalformedUsername)
		}
	}
	expiry, err = strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("%w: expiry out of range", ErrMalformedUsername)
	}
	if !colon {
		return expiry, "", nil
	}
	switch {
	case id == "":
		return 0, "", fmt.Errorf("%w: empty id", ErrMalformedUsername)
	case len(id) > maxIDLen:
		return 0, "", fmt.Errorf("%w: id longer than %d bytes", ErrMalformedUsername, maxIDLen)
	case !utf8.ValidString(id):
		return 0, "", fmt.Errorf("%w: id is not UTF-8", ErrMalformedUsername)
	}
	for _, r := range id {
		if !unicode.IsPrint(r) {
			return 0, "", fmt.Errorf("%w: id has unprintable characters", ErrMalformedUsername)
		}
	}
	return expiry, id, nil
}

// safeID returns the id part of a username for logging: the parsed id when
// the username is well formed, otherwise a quoted, truncated prefix.
func safeID(username string) string {
	if _, id, err := parseUsername(username); err == nil {
		return id
	}
	const max = 32
	if len(username) > max {
		username = username[:max] + "..."
	}
	return strconv.QuoteToASCII(username)
}
