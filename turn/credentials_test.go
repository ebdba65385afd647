package turn

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// TestCredentials checks Credentials against the TURN REST API / coturn
// use-auth-secret scheme. The expected passwords were computed by hand with
//
//	echo -n "1700003600:alice" | openssl dgst -sha1 -hmac "north-of-the-wall-secret" -binary | base64
//
// and are also recomputed here with crypto/hmac, independently of the package.
func TestCredentials(t *testing.T) {
	secret := []byte("north-of-the-wall-secret")
	now := time.Unix(1700000000, 0)
	for _, tc := range []struct {
		name, id, wantUser, wantPass string
	}{
		{"with id", "alice", "1700003600:alice", "+pbdeVZeLq6V0tu55lmZt5wmwyc="},
		{"bare expiry", "", "1700003600", "yonXt3btbrner7wt3p+Gq7O4Nww="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user, pass := Credentials(secret, tc.id, time.Hour, now)
			if user != tc.wantUser || pass != tc.wantPass {
				t.Errorf("Credentials = %q %q, want %q %q", user, pass, tc.wantUser, tc.wantPass)
			}
			mac := hmac.New(sha1.New, secret)
			mac.Write([]byte(tc.wantUser))
			if indep := base64.StdEncoding.EncodeToString(mac.Sum(nil)); pass != indep {
				t.Errorf("password %q, independent HMAC-SHA1 gives %q", pass, indep)
			}
		})
	}
}

func TestParseUsername(t *testing.T) {
	for _, tc := range []struct {
		in     string
		expiry int64
		id     string
		ok     bool
	}{
		{"1700003600:alice", 1700003600, "alice", true},
		{"1700003600", 1700003600, "", true},
		{"1700003600:a:b", 1700003600, "a:b", true},
		{"0042:x", 42, "x", true},
		{"1:" + strings.Repeat("é", 64), 1, strings.Repeat("é", 64), true}, // 128 bytes
		{"1:" + strings.Repeat("x", 129), 0, "", false},
		{"", 0, "", false},
		{"abc", 0, "", false},
		{"12x:id", 0, "", false},
		{":id", 0, "", false},
		{"123:", 0, "", false},
		{"-5:id", 0, "", false},
		{"+5:id", 0, "", false},
		{" 5:id", 0, "", false},
		{"99999999999999999999:id", 0, "", false},
		{"5:a\nb", 0, "", false},
		{"5:\xff", 0, "", false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			expiry, id, err := parseUsername(tc.in)
			if (err == nil) != tc.ok || expiry != tc.expiry || id != tc.id {
				t.Errorf("parseUsername(%q) = %d %q %v, want %d %q ok=%v", tc.in, expiry, id, err, tc.expiry, tc.id, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrMalformedUsername) {
				t.Errorf("error %v does not wrap ErrMalformedUsername", err)
			}
		})
	}
}

// FuzzParseUsername checks the parser's invariants on arbitrary input; the
// seed corpus is in testdata/fuzz/FuzzParseUsername.
func FuzzParseUsername(f *testing.F) {
	f.Add("1700003600:alice")
	f.Fuzz(func(t *testing.T, s string) {
		expiry, id, err := parseUsername(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedUsername) {
				t.Fatalf("error %v does not wrap ErrMalformedUsername", err)
			}
			if expiry != 0 || id != "" {
				t.Fatalf("error with results %d %q", expiry, id)
			}
			_ = safeID(s) // must not panic
			return
		}
		if expiry < 0 {
			t.Fatalf("negative expiry %d from %q", expiry, s)
		}
		if len(id) > maxIDLen || !utf8.ValidString(id) {
			t.Fatalf("bad id %q from %q", id, s)
		}
		for _, r := range id {
			if !unicode.IsPrint(r) {
				t.Fatalf("unprintable id %q from %q", id, s)
			}
		}
		if id == "" {
			if strings.Contains(s, ":") {
				t.Fatalf("%q with a colon parsed without id", s)
			}
		} else {
			if !strings.HasSuffix(s, ":"+id) {
				t.Fatalf("id %q is not the tail of %q", id, s)
			}
			// What Credentials makes from this id parses back to it.
			user, _ := Credentials(testSecret, id, time.Hour, time.Unix(expiry, 0))
			if _, id2, err := parseUsername(user); err != nil || id2 != id {
				t.Fatalf("Credentials(%q) = %q parses to %q %v", id, user, id2, err)
			}
		}
		if safeID(s) != id {
			t.Fatalf("safeID(%q) = %q, want %q", s, safeID(s), id)
		}
	})
}

// TestValidate checks defaults and that every error names its field.
func TestValidate(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		cfg := baseConfig()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		if cfg.Realm != "parley" || cfg.CredentialTTL != time.Hour || cfg.SocketBuffer != 2<<20 {
			t.Errorf("defaults not filled: %+v", cfg)
		}
		if cfg.MaxAllocationsPerUser != 10 || cfg.MaxAllocations != 10000 ||
			cfg.BandwidthPerAllocation != 5_000_000 || cfg.AllocationLifetime != 10*time.Minute ||
			cfg.AuthFailureLimit != 10 || cfg.AuthFailureWindow != time.Minute {
			t.Errorf("limit defaults not filled: %+v", cfg)
		}
	})
	t.Run("negative means unlimited", func(t *testing.T) {
		cfg := baseConfig()
		cfg.MaxAllocationsPerUser, cfg.MaxAllocations, cfg.BandwidthPerAllocation, cfg.AuthFailureLimit = -1, -1, -1, -1
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		if cfg.MaxAllocationsPerUser != -1 || cfg.MaxAllocations != -1 || cfg.BandwidthPerAllocation != -1 || cfg.AuthFailureLimit != -1 {
			t.Errorf("Validate replaced a negative limit: %+v", cfg)
		}
	})
	t.Run("AllowPeers normalized", func(t *testing.T) {
		cfg := baseConfig()
		given := []netip.Prefix{netip.MustParsePrefix("::ffff:10.1.2.3/104"), netip.MustParsePrefix("192.168.7.9/24")}
		cfg.AllowPeers = given
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		if got := cfg.AllowPeers; got[0].String() != "10.0.0.0/8" || got[1].String() != "192.168.7.0/24" {
			t.Errorf("AllowPeers = %v, want [10.0.0.0/8 192.168.7.0/24]", got)
		}
		if given[0].String() != "::ffff:10.1.2.3/104" {
			t.Errorf("Validate changed the caller's slice: %v", given)
		}
	})
	for _, tc := range []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"missing Secret", func(c *Config) { c.Secret = nil }, "turn: Secret: required"},
		{"short Secret", func(c *Config) { c.Secret = []byte("0123456789abcde") }, "turn: Secret: must be at least 16 bytes"},
		{"Min>Max", func(c *Config) { c.RelayPortMin, c.RelayPortMax = 50001, 50000 }, "turn: RelayPortMin: "},
		{"Min zero", func(c *Config) { c.RelayPortMin, c.RelayPortMax = 0, 50000 }, "turn: RelayPortMin: "},
		{"missing PublicIP", func(c *Config) { c.PublicIP = netip.Addr{} }, "turn: PublicIP: required"},
		{"unspecified PublicIP", func(c *Config) { c.PublicIP = netip.IPv4Unspecified() }, "turn: PublicIP: "},
		{"multicast PublicIP", func(c *Config) { c.PublicIP = netip.MustParseAddr("239.1.1.1") }, "turn: PublicIP: "},
		{"RelayBindIP family", func(c *Config) { c.RelayBindIP = netip.IPv6Loopback() }, "turn: RelayBindIP: "},
		{"negative CredentialTTL", func(c *Config) { c.CredentialTTL = -time.Second }, "turn: CredentialTTL: "},
		{"invalid AllowPeers", func(c *Config) { c.AllowPeers = []netip.Prefix{{}} }, "turn: AllowPeers: "},
		{"invalid DenyPeers", func(c *Config) { c.DenyPeers = []netip.Prefix{{}} }, "turn: DenyPeers: "},
		{"short AllocationLifetime", func(c *Config) { c.AllocationLifetime = 30 * time.Second }, "turn: AllocationLifetime: "},
		{"long AllocationLifetime", func(c *Config) { c.AllocationLifetime = 2 * time.Hour }, "turn: AllocationLifetime: "},
		{"negative AuthFailureWindow", func(c *Config) { c.AuthFailureWindow = -time.Second }, "turn: AuthFailureWindow: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			tc.modify(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want prefix %q", err, tc.want)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("%v does not wrap ErrInvalidConfig", err)
			}
		})
	}
}

func TestSetSocketBuffers(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Run("udp", func(t *testing.T) {
		const want = 256 << 10 // below the usual rmem_max: honoured without privileges
		rcv, snd, err := SetSocketBuffers(conn, want)
		if err != nil {
			t.Fatal(err)
		}
		if rcv < want || snd < want {
			t.Errorf("SetSocketBuffers(%d) = %d, %d", want, rcv, snd)
		}
		rcv2, snd2, err := SetSocketBuffers(conn, 0)
		if err != nil || rcv2 != rcv || snd2 != snd {
			t.Errorf("read back %d %d %v, want %d %d", rcv2, snd2, err, rcv, snd)
		}
	})
	t.Run("not a socket", func(t *testing.T) {
		if _, _, err := SetSocketBuffers(struct{}{}, 1024); !errors.Is(err, ErrUnsupportedConn) {
			t.Errorf("err = %v, want ErrUnsupportedConn", err)
		}
	})
}

// TestLogBridge checks the mapping of pion's levels onto slog.
func TestLogBridge(t *testing.T) {
	var buf bytes.Buffer
	l := slogFactory{l: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}.NewLogger("turn")
	l.Tracef("trace %d", 1)
	l.Trace("trace")
	l.Debugf("debug %d", 2)
	l.Infof("info %d", 3)
	l.Warnf("warn %d", 4)
	l.Errorf("error %d", 5)
	l.Warn("plain warn")
	out := buf.String()
	if strings.Contains(out, "trace") {
		t.Error("trace was logged")
	}
	for _, want := range []string{
		`level=WARN msg="plain warn" component=turn`,
		`level=DEBUG msg="debug 2" component=turn`,
		`level=INFO msg="info 3" component=turn`,
		`level=WARN msg="warn 4" component=turn`,
		`level=ERROR msg="error 5" component=turn`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}

	t.Run("limited", func(t *testing.T) {
		var buf bytes.Buffer
		f := slogFactory{
			l:   slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
			lim: &logLimiter{perWindow: 3, window: time.Hour},
		}
		l := f.NewLogger("turn")
		for i := range 10 {
			l.Infof("flood %d", i)
			l.Debugf("debug %d", i)
		}
		if n := strings.Count(buf.String(), "flood"); n != 3 {
			t.Errorf("%d Info lines logged, want 3 (the limit)", n)
		}
		if n := strings.Count(buf.String(), "debug"); n != 10 {
			t.Errorf("%d Debug lines logged, want all 10", n)
		}
	})
}
