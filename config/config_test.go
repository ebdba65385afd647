package config

import (
	"errors"
	"flag"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "parley.json")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	c, err := Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":8080" || c.TURNListen != ":3478" || c.TURNCredTTL != time.Hour || c.TURNSecret != "" {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, `{"listen": ":1111", "turn-listen": ":2222", "turn-relay-ports": "50000-50010", "turn-allow-peer": ["10.0.0.0/8"], "max-rooms": 5}`)
	c, err := Load([]string{"-config", file, "-turn-listen", ":4444", "-turn-allow-peer", "127.0.0.0/8", "-turn-allow-peer", "::1"},
		env(map[string]string{"PARLEY_LISTEN": ":3333", "PARLEY_TURN_LISTEN": ":9999", "PARLEY_TURN_PUBLIC_IP": "203.0.113.7"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":3333" {
		t.Errorf("env should beat file: listen=%s", c.Listen)
	}
	if c.TURNListen != ":4444" {
		t.Errorf("flag should beat env: turn-listen=%s", c.TURNListen)
	}
	if c.TURNRelayMin != 50000 || c.TURNRelayMax != 50010 || c.MaxRooms != 5 {
		t.Errorf("file values lost: %+v", c)
	}
	if c.TURNPublicIP != netip.MustParseAddr("203.0.113.7") {
		t.Errorf("env public ip: %v", c.TURNPublicIP)
	}
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	if len(c.TURNAllowPeers) != 2 || c.TURNAllowPeers[0] != want[0] || c.TURNAllowPeers[1] != want[1] {
		t.Errorf("flags replace the file's list: %v", c.TURNAllowPeers)
	}
	c, err = Load(nil, env(map[string]string{"PARLEY_CONFIG": file, "PARLEY_TURN_ALLOW_PEER": "192.168.0.0/16, 172.16.0.0/12"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":1111" || len(c.TURNAllowPeers) != 2 || c.TURNAllowPeers[1] != netip.MustParsePrefix("172.16.0.0/12") {
		t.Errorf("PARLEY_CONFIG and list env: %+v", c)
	}
}

func TestErrorsNameTheField(t *testing.T) {
	cases := []struct {
		args []string
		env  map[string]string
		file string
		want string
	}{
		{args: []string{"-listen", "nope"}, want: "-listen"},
		{args: []string{"-turn-relay-ports", "5000-4000"}, want: "-turn-relay-ports"},
		{args: []string{"-turn-allow-peer", "10.0.0.0/33"}, want: "-turn-allow-peer"},
		{args: []string{"-turn-secret", "short"}, want: "turn-secret"},
		{args: []string{"-turn-public-ip", "0.0.0.0"}, want: "turn-public-ip"},
		{args: []string{"-turn-credential-ttl", "100h"}, want: "turn-credential-ttl"},
		{args: []string{"-log-level", "loud"}, want: "-log-level"},
		{args: []string{"-public-url", "call.example.com"}, want: "-public-url"},
		{env: map[string]string{"PARLEY_MAX_ROOMS": "many"}, want: "PARLEY_MAX_ROOMS"},
		{file: `{"turn-listen": ":1", "colour": "blue"}`, want: `unknown key "colour"`},
		{file: `{"turn-allow-peer": "10.0.0.0/8"}`, want: "turn-allow-peer"},
		{file: `{"listen": `, want: "parley.json"},
		{args: []string{"stray"}, want: "unexpected argument"},
	}
	for _, tc := range cases {
		args := tc.args
		if tc.file != "" {
			args = append([]string{"-config", writeFile(t, tc.file)}, args...)
		}
		_, err := Load(args, env(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v %s: error %v, want it to name %q", tc.args, tc.env, tc.file, err, tc.want)
		}
	}
}

func TestHelp(t *testing.T) {
	var out strings.Builder
	_, err := Load([]string{"--help"}, env(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("help: %v", err)
	}
	for _, name := range []string{"-listen", "-public-url", "-turn-listen", "-turn-public-ip", "-turn-relay-ports", "-turn-secret", "-turn-allow-peer", "-log-level", "PARLEY_TURN_SECRET"} {
		if !strings.Contains(out.String(), name) {
			t.Errorf("help does not explain %s", name)
		}
	}
}

func TestExternalTURNNeedsSecret(t *testing.T) {
	if _, err := Load([]string{"-turn-url", "turn:turn.example.com:3478"}, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "turn-url") {
		t.Fatalf("turn-url without a secret: %v", err)
	}
	c, err := Load([]string{"-turn-url", "turn:a.example:3478?transport=udp", "-turn-secret", "0123456789abcdef", "-turn-deny-peer", "203.0.113.0/24"}, env(nil), io.Discard)
	if err != nil || len(c.TURNURLs) != 1 || len(c.TURNDenyPeers) != 1 {
		t.Fatalf("%+v %v", c, err)
	}
	if _, err := Load([]string{"-turn-url", "http://nope"}, env(nil), io.Discard); err == nil {
		t.Fatal("accepted an http URL as a TURN server")
	}
}

func TestAccountSettings(t *testing.T) {
	c, err := Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "parley-data" || c.OpenRooms || c.InviteTTL != 24*time.Hour || c.SessionTTL != 12*time.Hour {
		t.Fatalf("account defaults: %+v", c)
	}
	file := writeFile(t, `{"data-dir": "/var/lib/parley", "open-rooms": true, "invite-ttl": "48h", "session-ttl": "8h"}`)
	c, err = Load([]string{"-config", file}, env(nil), io.Discard)
	if err != nil || c.DataDir != "/var/lib/parley" || !c.OpenRooms || c.InviteTTL != 48*time.Hour || c.SessionTTL != 8*time.Hour {
		t.Fatalf("file: %+v %v", c, err)
	}
	c, err = Load([]string{"-config", file, "-open-rooms=false"}, env(map[string]string{"PARLEY_DATA_DIR": "/srv/p", "PARLEY_SESSION_TTL": "1h"}), io.Discard)
	if err != nil || c.DataDir != "/srv/p" || c.OpenRooms || c.SessionTTL != time.Hour {
		t.Fatalf("env and flag over file: %+v %v", c, err)
	}
	for _, v := range []string{"1", "true"} {
		if c, err := Load(nil, env(map[string]string{"PARLEY_OPEN_ROOMS": v}), io.Discard); err != nil || !c.OpenRooms {
			t.Fatalf("PARLEY_OPEN_ROOMS=%s: %+v %v", v, c, err)
		}
	}
	if c, err := Load([]string{"-open-rooms"}, env(nil), io.Discard); err != nil || !c.OpenRooms {
		t.Fatalf("bare -open-rooms: %v", err)
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"-data-dir", ""}, want: "data-dir"},
		{args: []string{"-invite-ttl", "10s"}, want: "invite-ttl"},
		{args: []string{"-session-ttl", "200h"}, want: "session-ttl"},
		{args: []string{"-session-ttl", "1m"}, want: "session-ttl"},
		{env: map[string]string{"PARLEY_OPEN_ROOMS": "sometimes"}, want: "PARLEY_OPEN_ROOMS"},
	} {
		if _, err := Load(tc.args, env(tc.env), io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v, want it to name %s", tc.args, tc.env, err, tc.want)
		}
	}
	var out strings.Builder
	Load([]string{"--help"}, env(nil), &out)
	for _, name := range []string{"-data-dir", "-open-rooms", "-invite-ttl", "-session-ttl", "PARLEY_OPEN_ROOMS", "parley user"} {
		if !strings.Contains(out.String(), name) {
			t.Errorf("help does not explain %s", name)
		}
	}
}

func TestLoadCommand(t *testing.T) {
	cases := []struct {
		args     []string
		wantArgs []string
		wantDir  string
	}{
		{[]string{"add", "a@example.com"}, []string{"add", "a@example.com"}, "parley-data"},
		{[]string{"-data-dir", "/d", "add", "a@example.com"}, []string{"add", "a@example.com"}, "/d"},
		{[]string{"add", "a@example.com", "-data-dir", "/d"}, []string{"add", "a@example.com"}, "/d"},
		{[]string{"add", "-data-dir=/d", "a@example.com"}, []string{"add", "a@example.com"}, "/d"},
		{[]string{"add", "--", "-data-dir"}, []string{"add", "-data-dir"}, "parley-data"},
		{[]string{"list"}, []string{"list"}, "parley-data"},
	}
	for _, tc := range cases {
		c, args, err := LoadCommand(tc.args, env(nil), io.Discard, "usage")
		if err != nil || strings.Join(args, " ") != strings.Join(tc.wantArgs, " ") || c.DataDir != tc.wantDir {
			t.Errorf("%v: %v %q %v", tc.args, args, c.DataDir, err)
		}
	}
	var out strings.Builder
	if _, _, err := LoadCommand([]string{"--help"}, env(nil), &out, "Usage: parley user ..."); !errors.Is(err, flag.ErrHelp) || !strings.HasPrefix(out.String(), "Usage: parley user") {
		t.Fatalf("command help: %v %q", err, out.String())
	}
}

// TestTURNQuotas: -turn-user-quota and -turn-total-quota in all three
// places, with coturn's meaning (0 = no limit) and their defaults.
func TestTURNQuotas(t *testing.T) {
	c, err := Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.TURNUserQuota != 10 || c.TURNTotalQuota != 10000 {
		t.Fatalf("defaults: user %d, total %d; want 10 and 10000", c.TURNUserQuota, c.TURNTotalQuota)
	}
	file := writeFile(t, `{"turn-user-quota": 3, "turn-total-quota": 7}`)
	c, err = Load([]string{"-config", file}, env(nil), io.Discard)
	if err != nil || c.TURNUserQuota != 3 || c.TURNTotalQuota != 7 {
		t.Fatalf("file: %v, user %d, total %d", err, c.TURNUserQuota, c.TURNTotalQuota)
	}
	c, err = Load([]string{"-config", file, "-turn-total-quota", "0"},
		env(map[string]string{"PARLEY_TURN_USER_QUOTA": "4", "PARLEY_TURN_TOTAL_QUOTA": "9"}), io.Discard)
	if err != nil || c.TURNUserQuota != 4 || c.TURNTotalQuota != 0 {
		t.Fatalf("env over file, flag over env: %v, user %d, total %d", err, c.TURNUserQuota, c.TURNTotalQuota)
	}
	for _, args := range [][]string{{"-turn-user-quota", "-1"}, {"-turn-total-quota", "-5"}, {"-turn-user-quota", "ten"}} {
		if _, err := Load(args, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), args[0][1:]) {
			t.Errorf("%v: error %v, want one naming %s", args, err, args[0][1:])
		}
	}
	var help strings.Builder
	_, _ = Load([]string{"-h"}, env(nil), &help)
	for _, want := range []string{"-turn-user-quota", "PARLEY_TURN_USER_QUOTA", "(default 10)", "-turn-total-quota", "(default 10000)", "no limit"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}
