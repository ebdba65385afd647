package server

import (
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	pionturn "github.com/pion/turn/v5"

	"github.com/parleyhq/parley/config"
	"github.com/parleyhq/parley/turn"
)

// tryAllocate makes one allocation for id over UDP and returns its error.
func tryAllocate(t *testing.T, s *Server, ln Listeners, id string) error {
	t.Helper()
	user, pass := turn.Credentials([]byte(s.cfg.TURNSecret), id, time.Hour, time.Now())
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	addr := ln.TURNUDP.LocalAddr().String()
	client, err := pionturn.NewClient(&pionturn.ClientConfig{
		Username: user, Password: pass, Realm: "parley", Conn: conn,
		STUNServerAddr: addr, TURNServerAddr: addr, RTO: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := client.Allocate()
	if err == nil {
		t.Cleanup(func() { relay.Close() })
	}
	return err
}

// TestQuotaFlags: -turn-user-quota and -turn-total-quota, read by
// config.Load as main does, reach the relay: the allocation past either is
// refused with 486 (Allocation Quota Reached), and 0 lifts the limit.
func TestQuotaFlags(t *testing.T) {
	load := func(args ...string) config.Config {
		t.Helper()
		cfg, err := config.Load(append([]string{"-turn-secret", "quota-test-secret-0123456789"}, args...),
			func(string) (string, bool) { return "", false }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	want486 := func(t *testing.T, err error, what string) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: allocation succeeded, want 486", what)
		}
		if !strings.Contains(err.Error(), strconv.Itoa(int(stun.CodeAllocQuotaReached))) {
			t.Fatalf("%s: %v, want 486 Allocation Quota Reached", what, err)
		}
	}

	t.Run("user", func(t *testing.T) {
		s, ln := start(t, load("-turn-user-quota", "2"))
		for i := range 2 {
			if err := tryAllocate(t, s, ln, "alice"); err != nil {
				t.Fatalf("allocation %d of 2: %v", i+1, err)
			}
		}
		want486(t, tryAllocate(t, s, ln, "alice"), "third allocation of alice")
		if err := tryAllocate(t, s, ln, "bob"); err != nil {
			t.Fatalf("bob, another user: %v", err)
		}
	})
	t.Run("total", func(t *testing.T) {
		s, ln := start(t, load("-turn-total-quota", "3"))
		for i := range 3 {
			if err := tryAllocate(t, s, ln, "user"+strconv.Itoa(i)); err != nil {
				t.Fatalf("allocation %d of 3: %v", i+1, err)
			}
		}
		want486(t, tryAllocate(t, s, ln, "user3"), "fourth allocation")
		if st := s.relay.Stats(); st.QuotaRefusals != 1 {
			t.Errorf("QuotaRefusals = %d, want 1", st.QuotaRefusals)
		}
	})
	t.Run("zero is no limit", func(t *testing.T) {
		s, ln := start(t, load("-turn-user-quota", "0"))
		for i := range 12 { // past the default of 10
			if err := tryAllocate(t, s, ln, "carol"); err != nil {
				t.Fatalf("allocation %d with no user quota: %v", i+1, err)
			}
		}
	})
}
