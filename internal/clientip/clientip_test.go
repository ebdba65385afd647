package clientip

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestFromRequest(t *testing.T) {
	proxy := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	cases := []struct {
		remote, xff string
		trusted     []netip.Prefix
		want        string
	}{
		{"203.0.113.5:4000", "", nil, "203.0.113.5"},
		{"203.0.113.5:4000", "198.51.100.1", nil, "203.0.113.5"},                    // no trusted proxies: header ignored
		{"203.0.113.5:4000", "198.51.100.1", proxy, "203.0.113.5"},                  // peer is not a proxy
		{"10.0.0.2:4000", "198.51.100.1", proxy, "198.51.100.1"},                    // behind the proxy
		{"10.0.0.2:4000", "6.6.6.6, 198.51.100.1, 10.0.0.9", proxy, "198.51.100.1"}, // rightmost untrusted
		{"10.0.0.2:4000", "garbage", proxy, "10.0.0.2"},
		{"[::1]:80", "", nil, "::1"},
		{"10.0.0.2:4000", "::ffff:198.51.100.7", proxy, "198.51.100.7"},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.remote
		if c.xff != "" {
			r.Header.Set("X-Forwarded-For", c.xff)
		}
		if got := FromRequest(r, c.trusted); got != c.want {
			t.Errorf("%s XFF %q: %s, want %s", c.remote, c.xff, got, c.want)
		}
	}
}

func TestLimitKey(t *testing.T) {
	for in, want := range map[string]string{
		"198.51.100.7":         "198.51.100.7",
		"::ffff:198.51.100.7":  "198.51.100.7",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1": "2001:db8:1:2::/64",
		"fe80::1%eth0":         "fe80::/64",
		"not-an-ip":            "not-an-ip",
	} {
		if got := LimitKey(in); got != want {
			t.Errorf("LimitKey(%q) = %q, want %q", in, got, want)
		}
	}
}
