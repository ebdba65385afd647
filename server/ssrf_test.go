package server

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	pionturn "github.com/pion/turn/v5"

	"github.com/parleyhq/parley/config"
	"github.com/parleyhq/parley/turn"
)

// relayClient allocates on the server over UDP or TCP and returns the
// relayed PacketConn.
func relayClient(t *testing.T, s *Server, ln Listeners, transport, id string) net.PacketConn {
	t.Helper()
	user, pass := turn.Credentials([]byte(s.cfg.TURNSecret), id, time.Hour, time.Now())
	cfg := &pionturn.ClientConfig{Username: user, Password: pass, Realm: "parley"}
	switch transport {
	case "udp":
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		cfg.Conn = conn
		cfg.STUNServerAddr = ln.TURNUDP.LocalAddr().String()
	case "tcp":
		c, err := net.Dial("tcp", ln.TURNTCP.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cfg.Conn = pionturn.NewSTUNConn(c)
		cfg.STUNServerAddr = ln.TURNTCP.Addr().String()
	}
	cfg.TURNServerAddr = cfg.STUNServerAddr
	client, err := pionturn.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := client.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	return relay
}

// received reports whether sink gets anything within d.
func received(sink net.PacketConn, d time.Duration) bool {
	sink.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 1500)
	_, _, err := sink.ReadFrom(buf)
	return err == nil
}

func startRelayServer(t *testing.T, allow []netip.Prefix) (*Server, Listeners) {
	t.Helper()
	cfg := config.Default()
	cfg.TURNSecret = "ssrf-test-secret-0123456789"
	cfg.TURNAllowPeers = allow
	return start(t, cfg)
}

// TestSSRF: with default settings, a client with valid credentials cannot
// get one packet relayed to loopback (a UDP socket on the HTTP server's own
// address and port number), to a private address, or to the cloud metadata
// address, over a UDP or a TCP TURN connection; with the allow-list it can;
// and two relayed clients still reach each other.
func TestSSRF(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport+" default denies", func(t *testing.T) {
			s, ln := startRelayServer(t, nil)
			// A UDP socket on the same port number as the HTTP server stands
			// in for an internal service on the server itself.
			httpPort := ln.HTTP.Addr().(*net.TCPAddr).Port
			sink, err := net.ListenPacket("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort)))
			if err != nil {
				sink, err = net.ListenPacket("udp4", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
			}
			defer sink.Close()
			relay := relayClient(t, s, ln, transport, "attacker")
			before := s.relay.Stats().PermissionRefusals
			for _, target := range []string{sink.LocalAddr().String(), "10.0.0.1:80", "192.168.1.1:53", "169.254.169.254:80", "[::1]:80"} {
				addr, err := net.ResolveUDPAddr("udp", target)
				if err != nil {
					t.Fatal(err)
				}
				relay.WriteTo([]byte("GET /latest/meta-data/ HTTP/1.0\r\n\r\n"), addr)
			}
			if received(sink, 500*time.Millisecond) {
				t.Fatal("a packet reached the server's own loopback port through the relay")
			}
			if s.relay.Stats().PermissionRefusals <= before {
				t.Fatal("refusals were not counted")
			}
		})
		t.Run(transport+" allow-list permits", func(t *testing.T) {
			s, ln := startRelayServer(t, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
			sink, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			relay := relayClient(t, s, ln, transport, "lan-user")
			deadline := time.Now().Add(3 * time.Second)
			ok := false
			for !ok && time.Now().Before(deadline) {
				relay.WriteTo([]byte("hello"), sink.LocalAddr())
				ok = received(sink, 200*time.Millisecond)
			}
			if !ok {
				t.Fatal("allow-listed peer got nothing")
			}
		})
		t.Run(transport+" relay to relay", func(t *testing.T) {
			s, ln := startRelayServer(t, nil)
			a := relayClient(t, s, ln, transport, "alice")
			b := relayClient(t, s, ln, "udp", "bob")
			// b must permit a's relay address before a's packets are let in.
			b.WriteTo([]byte("open"), a.LocalAddr())
			deadline := time.Now().Add(3 * time.Second)
			ok := false
			for !ok && time.Now().Before(deadline) {
				a.WriteTo([]byte("hi bob"), b.LocalAddr())
				ok = received(b, 200*time.Millisecond)
			}
			if !ok {
				t.Fatal("two relayed clients of one server cannot reach each other")
			}
		})
	}
}
