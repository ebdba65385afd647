package account

import (
	"testing"
	"time"
)

// FuzzParsePHC: no stored hash, however mangled, panics the parser or
// asks for more than the bounds allow.
func FuzzParsePHC(f *testing.F) {
	f.Add(HashPassword("seed password", fastParams))
	f.Add("$argon2id$v=19$m=65536,t=2,p=1$cGFybGV5c2FsdHNhbHQxMg$3KlqphaQg3SvZwy6kE6xIKgmVwy4ZfflE7XcUPK2a8U")
	f.Add("$argon2id$v=19$m=4096,t=3,p=2$cGFybGV5c2FsdHNhbHQxMg$hFi9XtSbGr/nuxKQApEieA")
	f.Add("$argon2i$v=19$m=1,t=1,p=1$$")
	f.Add("$$$$$")
	f.Fuzz(func(t *testing.T, s string) {
		p, salt, key, err := parsePHC(s)
		if err != nil {
			return
		}
		if p.Memory > maxMemory || p.Time < 1 || p.Time > maxTime || p.Threads < 1 || uint64(p.Memory) < 8*uint64(p.Threads) ||
			len(salt) < minSaltLen || len(salt) > maxSaltLen || len(key) < minKeyLen || len(key) > maxKeyLen {
			t.Fatalf("out of bounds accepted: %q → %+v", s, p)
		}
	})
}

// FuzzCreateRequest: any body for POST /api/consultations is either
// refused with a code or yields a valid title, time and verifier.
func FuzzCreateRequest(f *testing.F) {
	f.Add([]byte(`{"title":"Check-up","scheduledAt":"2025-03-01T10:00:00Z","joinVerifier":"` + verifier("x") + `"}`))
	f.Add([]byte(`{"title":"a","scheduledAt":null,"joinVerifier":""}`))
	f.Add([]byte(`{"title":"\u202e","joinVerifier":5}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"title":"x"} trailing`))
	now := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		var req CreateRequest
		if err := decodeBody(body, &req); err != nil {
			if _, ok := err.(*apiError); !ok {
				t.Fatalf("non-API error %v", err)
			}
			return
		}
		title, sched, v, err := parseCreate(req, now, 24*time.Hour)
		if err != nil {
			if _, ok := err.(*apiError); !ok {
				t.Fatalf("non-API error %v", err)
			}
			return
		}
		if title == "" || len(v) != 32 || (!sched.IsZero() && sched.Add(24*time.Hour).Before(now)) {
			t.Fatalf("accepted %q → %q %v %x", body, title, sched, v)
		}
	})
}
