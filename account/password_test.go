package account

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// fastParams keep the tests quick; DefaultParams is checked on its own.
var fastParams = Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

// TestReferenceVectors checks verification against PHC strings made by
// the reference implementation's command-line tool (file name: source and
// revision; the file says how each was made).
func TestReferenceVectors(t *testing.T) {
	data, err := os.ReadFile("testdata/argon2id_phc-winner-argon2_20171227.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Vectors []struct{ Password, Salt, Args, PHC string }
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range f.Vectors {
		t.Run(v.Args, func(t *testing.T) {
			p, salt, _, err := parsePHC(v.PHC)
			if err != nil {
				t.Fatal(err)
			}
			if string(salt) != v.Salt {
				t.Fatalf("salt %q, want %q", salt, v.Salt)
			}
			ok, stale, err := VerifyPassword(v.Password, v.PHC, p)
			if err != nil || !ok || stale {
				t.Fatalf("reference hash: ok=%v stale=%v err=%v", ok, stale, err)
			}
			if ok, _, _ := VerifyPassword(v.Password+"x", v.PHC, p); ok {
				t.Fatal("wrong password accepted")
			}
		})
	}
}

func TestHashRoundTrip(t *testing.T) {
	h := HashPassword("a long enough password", fastParams)
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("PHC string %q", h)
	}
	if h2 := HashPassword("a long enough password", fastParams); h2 == h {
		t.Fatal("two hashes share a salt")
	}
	ok, stale, err := VerifyPassword("a long enough password", h, fastParams)
	if !ok || stale || err != nil {
		t.Fatalf("verify: %v %v %v", ok, stale, err)
	}
	if ok, _, _ := VerifyPassword("a long enough passwore", h, fastParams); ok {
		t.Fatal("wrong password accepted")
	}
	if _, stale, _ := VerifyPassword("a long enough password", h, DefaultParams); !stale {
		t.Fatal("hash with other parameters not reported stale")
	}
}

// TestDefaultParamsCost keeps the documented cost honest: DefaultParams
// should take roughly 50-100 ms on the reference machine. The bounds are
// wide so a loaded or faster machine does not fail it.
func TestDefaultParamsCost(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	start := time.Now()
	h := HashPassword("cost check password", DefaultParams)
	d := time.Since(start)
	if ok, _, _ := VerifyPassword("cost check password", h, DefaultParams); !ok {
		t.Fatal("default params do not verify")
	}
	t.Logf("one argon2id hash with DefaultParams: %v", d)
	if d < 5*time.Millisecond || d > 2*time.Second {
		t.Errorf("DefaultParams took %v; re-measure and update the comment and docs/accounts.md", d)
	}
}

func TestParsePHCRejects(t *testing.T) {
	good := HashPassword("whatever password", fastParams)
	f := strings.Split(good, "$")
	for _, bad := range []string{
		"",
		"plain",
		strings.Replace(good, "argon2id", "argon2i", 1),
		strings.Replace(good, "v=19", "v=16", 1),
		strings.Replace(good, "m=64,", "m=064,", 1),
		strings.Replace(good, "m=64,", "m=-64,", 1),
		strings.Replace(good, "m=64,", "m=4294967296,", 1),
		strings.Replace(good, "m=64,", "m=2000000,", 1), // over 1 GiB
		strings.Replace(good, "t=1,", "t=0,", 1),
		strings.Replace(good, "t=1,", "t=100,", 1),
		strings.Replace(good, ",p=1", ",p=0", 1),
		strings.Replace(good, ",p=1", ",p=256", 1),
		strings.Replace(good, "m=64,t=1,p=1", "t=1,m=64,p=1", 1),
		strings.Replace(good, "m=64,t=1,p=1", "m=64,t=1", 1),
		strings.Join([]string{"", f[1], f[2], f[3], "c2FsdA", f[5]}, "$"), // 4-byte salt
		strings.Join([]string{"", f[1], f[2], f[3], f[4], "aGFzaA"}, "$"), // 4-byte hash
		strings.Join([]string{"", f[1], f[2], f[3], f[4] + "=", f[5]}, "$"),
		strings.Join([]string{"", f[1], f[2], f[3], f[4], f[5] + "!"}, "$"),
		good + "$extra",
		"x" + good,
	} {
		if _, _, _, err := parsePHC(bad); !errors.Is(err, ErrBadHash) {
			t.Errorf("parsePHC(%q): %v", bad, err)
		}
		if ok, _, err := VerifyPassword("whatever password", bad, fastParams); ok || err == nil {
			t.Errorf("VerifyPassword accepted %q", bad)
		}
	}
}

func TestCheckPassword(t *testing.T) {
	for pw, want := range map[string]error{
		"short":                         ErrPasswordTooShort,
		"123456789":                     ErrPasswordTooShort,
		"1234567890":                    nil,
		"ééééééééé":                     ErrPasswordTooShort, // 9 characters, 18 bytes
		"éééééééééé":                    nil,
		"with a space and more":         nil,
		"tab\tinside password":          ErrPasswordInvalid,
		"new\nline inside":              ErrPasswordInvalid,
		"bad utf8 \xff\xfe here":        ErrPasswordInvalid,
		strings.Repeat("x", 1024):       nil,
		strings.Repeat("x", 1025):       ErrPasswordTooLong,
		strings.Repeat("é", 513):        ErrPasswordTooLong, // 1026 bytes
		"":                              ErrPasswordTooShort,
		"correct horse battery staple!": nil,
	} {
		if err := CheckPassword(pw); !errors.Is(err, want) {
			t.Errorf("CheckPassword(%.20q): %v, want %v", pw, err, want)
		}
	}
}
