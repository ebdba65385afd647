package turn

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	pionturn "github.com/pion/turn/v5"

	"github.com/parleyhq/parley/internal/logbuf"
)

// TestAuth covers the TURN REST credential check end to end with pion's
// client: what allocates, what is refused with 401, and the AuthFailures
// counter. It also checks that no password or the secret reaches the log.
func TestAuth(t *testing.T) {
	logs := &logbuf.Buffer{}
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(logs, testOutput(t)), &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := startServer(t, baseConfig(), logger)
	now := time.Now()
	var passwords []string

	t.Run("valid", func(t *testing.T) {
		user, pass := Credentials(testSecret, "alice", time.Hour, now)
		passwords = append(passwords, pass)
		before := s.Stats()
		c := newClient(t, s.udpAddr, user, pass)
		relay, err := c.Allocate()
		if err != nil {
			t.Fatalf("Allocate with valid credentials: %v", err)
		}
		if got := relay.LocalAddr().(*net.UDPAddr); !got.IP.Equal(net.IPv4(127, 0, 0, 1)) || got.Port == 0 {
			t.Errorf("relay address %v, want 127.0.0.1:<port>", got)
		}
		st := s.Stats()
		if st.Allocations != before.Allocations+1 || st.AllocationsTotal != before.AllocationsTotal+1 {
			t.Errorf("after Allocate: %+v, before %+v", st, before)
		}
		if st.AuthFailures != before.AuthFailures {
			t.Errorf("AuthFailures went from %d to %d on a valid allocation", before.AuthFailures, st.AuthFailures)
		}
		if err := relay.Close(); err != nil { // sends Refresh(lifetime 0)
			t.Fatal(err)
		}
		waitFor(t, "allocation deleted", func() bool { return s.Stats().Allocations == before.Allocations })
	})

	t.Run("valid bare expiry", func(t *testing.T) {
		user, pass := Credentials(testSecret, "", time.Hour, now)
		passwords = append(passwords, pass)
		if strings.Contains(user, ":") {
			t.Fatalf("username %q for an empty id has a colon", user)
		}
		relay, err := newClient(t, s.udpAddr, user, pass).Allocate()
		if err != nil {
			t.Fatalf("Allocate with bare-expiry username: %v", err)
		}
		_ = relay.Close()
	})

	refused := []struct {
		name, user, pass string
	}{
		{"wrong password", mustUser(now.Add(time.Hour), "bob"), "d3JvbmcgcGFzc3dvcmQ="},
		{"other secret", mustUser(now.Add(time.Hour), "bob"), restPassword([]byte("another-secret-of-16+bytes"), mustUser(now.Add(time.Hour), "bob"))},
		{"expired", mustUser(now.Add(-time.Minute), "carol"), ""},
		{"empty", "", ""},
		{"no expiry", "abc", ""},
		{"bad digits", "12x:id", ""},
		{"empty expiry", ":id", ""},
		{"empty id", "123:", ""},
		{"unprintable id", mustUser(now.Add(time.Hour), "a\x01b"), ""},
		{"long id", mustUser(now.Add(time.Hour), strings.Repeat("x", 129)), ""},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			pass := tc.pass
			if pass == "" {
				// The right HMAC: only the username's form or expiry may refuse it.
				pass = restPassword(testSecret, tc.user)
			}
			passwords = append(passwords, pass)
			before := s.Stats().AuthFailures
			_, err := newClient(t, s.udpAddr, tc.user, pass).Allocate()
			if err == nil {
				t.Fatalf("Allocate(%q) succeeded, want 401", tc.user)
			}
			var te *stun.TurnError
			if !errors.As(err, &te) || te.ErrorCodeAttr.Code != stun.CodeUnauthorized {
				t.Errorf("Allocate(%q) error = %v, want 401 Unauthorized", tc.user, err)
			}
			if after := s.Stats().AuthFailures; after != before+1 {
				t.Errorf("AuthFailures %d -> %d, want +1", before, after)
			}
		})
	}

	t.Run("no secrets in log", func(t *testing.T) {
		out := logs.String()
		if !strings.Contains(out, "credentials refused") {
			t.Fatalf("no refusal logged; log:\n%s", out)
		}
		for _, reason := range []string{"reason=malformed", "reason=expired", "reason=bad-password", "id=carol"} {
			if !strings.Contains(out, reason) {
				t.Errorf("log lacks %q", reason)
			}
		}
		if strings.Contains(out, string(testSecret)) {
			t.Error("log contains the secret")
		}
		for _, p := range passwords {
			if strings.Contains(out, p) {
				t.Errorf("log contains password %q", p)
			}
		}
	})
}

// TestExpiryDuringAllocation checks that a credential expiring during a
// call refuses new allocations but keeps the existing one working
// (Refresh, CreatePermission, ChannelBind), as coturn does.
func TestExpiryDuringAllocation(t *testing.T) {
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	s := startServerClock(t, baseConfig(), nil, clock)
	user, pass := Credentials(testSecret, "long-call", time.Hour, time.Now())
	c := newClient(t, s.udpAddr, user, pass)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	skew.Store(int64(2 * time.Hour)) // the credential is now an hour past its expiry

	t.Run("new allocation refused", func(t *testing.T) {
		if _, err := newClient(t, s.udpAddr, user, pass).Allocate(); err == nil {
			t.Fatal("Allocate with an expired credential succeeded")
		}
	})
	t.Run("existing allocation kept", func(t *testing.T) {
		before := s.Stats().AuthFailures
		// 192.0.2.1 (TEST-NET-1) is not on the deny list; nothing is sent to it.
		if err := c.CreatePermission(&net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 9}); err != nil {
			t.Fatalf("CreatePermission on the existing allocation: %v", err)
		}
		if after := s.Stats().AuthFailures; after != before {
			t.Errorf("AuthFailures %d -> %d", before, after)
		}
	})
	t.Run("wrong password still refused", func(t *testing.T) {
		other := newClient(t, s.udpAddr, user, "bm90IHRoZSBwYXNzd29yZA==")
		if _, err := other.Allocate(); err == nil {
			t.Fatal("Allocate with a wrong password succeeded")
		}
	})
}

func mustUser(expiry time.Time, id string) string {
	return strconv.FormatInt(expiry.Unix(), 10) + ":" + id
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPeerPermissions checks the default deny list through pion's client
// and real sockets, and that AllowPeers opens it.
func TestPeerPermissions(t *testing.T) {
	loop := netip.MustParseAddr("127.0.0.1")

	t.Run("loopback refused", func(t *testing.T) {
		// PublicIP is a TEST-NET address and relays bind the unspecified
		// address, so 127.0.0.1 is neither a relay IP nor allowed.
		cfg := baseConfig()
		cfg.PublicIP = netip.MustParseAddr("192.0.2.1")
		cfg.RelayBindIP = netip.Addr{}
		s := startServer(t, cfg, nil)
		relay := allocate(t, s, "dave")
		peer := sink(t, "127.0.0.1")
		err := relay.(interface{ CreatePermissions(...net.Addr) error }).CreatePermissions(peer.LocalAddr())
		if err == nil {
			t.Fatal("CreatePermission to 127.0.0.1 succeeded")
		}
		if _, err := relay.WriteTo([]byte("x"), peer.LocalAddr()); err == nil {
			t.Error("WriteTo 127.0.0.1 succeeded")
		}
		if data, _, ok := readWithin(peer, 300*time.Millisecond); ok {
			t.Errorf("127.0.0.1 peer received %q", data)
		}
		if s.Stats().PermissionRefusals == 0 {
			t.Error("PermissionRefusals not counted")
		}
	})

	t.Run("private refused", func(t *testing.T) {
		s := startServer(t, baseConfig(), nil)
		relay := allocate(t, s, "erin")
		before := s.Stats().PermissionRefusals
		err := relay.(interface{ CreatePermissions(...net.Addr) error }).CreatePermissions(
			&net.UDPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 9})
		if err == nil {
			t.Fatal("CreatePermission to 10.0.0.1 succeeded")
		}
		if after := s.Stats().PermissionRefusals; after != before+1 {
			t.Errorf("PermissionRefusals %d -> %d, want +1", before, after)
		}
	})

	t.Run("loopback allowed by AllowPeers", func(t *testing.T) {
		cfg := baseConfig()
		cfg.AllowPeers = []netip.Prefix{netip.PrefixFrom(loop, 8).Masked()}
		s := startServer(t, cfg, nil)
		relay := allocate(t, s, "frank")
		peer := sink(t, "127.0.0.1")
		from := sendUntilReceived(t, relay, peer.LocalAddr(), peer, "ping")
		if got := from.(*net.UDPAddr).Port; got != relay.LocalAddr().(*net.UDPAddr).Port {
			t.Errorf("peer saw the packet from port %d, want the relay port %d", got, relay.LocalAddr().(*net.UDPAddr).Port)
		}
		if _, err := peer.WriteTo([]byte("pong"), from); err != nil {
			t.Fatal(err)
		}
		data, src, ok := readWithin(relay, 2*time.Second)
		if !ok || data != "pong" {
			t.Fatalf("reply through the relay: got %q ok=%v", data, ok)
		}
		if src.String() != peer.LocalAddr().String() {
			t.Errorf("reply from %v, want %v", src, peer.LocalAddr())
		}
		// The relay counts a packet once sendto returns, which may be after
		// the peer has it.
		waitFor(t, "relay counters", func() bool { st := s.Stats(); return st.PacketsRelayed >= 2 && st.BytesRelayed >= 8 })
	})

	t.Run("private allowed by AllowPeers", func(t *testing.T) {
		cfg := baseConfig()
		cfg.AllowPeers = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		s := startServer(t, cfg, nil)
		relay := allocate(t, s, "grace")
		// Only the permission: nothing may be sent off this machine.
		if err := relay.(interface{ CreatePermissions(...net.Addr) error }).CreatePermissions(
			&net.UDPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 9}); err != nil {
			t.Fatalf("CreatePermission to 10.0.0.1 with AllowPeers 10/8: %v", err)
		}
	})
}

// TestPolicy checks the deny list, its IPv4-mapped forms, own addresses
// and AllowPeers without sockets.
func TestPolicy(t *testing.T) {
	cfg := Config{
		PublicIP:    netip.MustParseAddr("203.0.113.7"),
		RelayBindIP: netip.MustParseAddr("198.51.100.7"),
		Secret:      testSecret,
		AllowPeers:  []netip.Prefix{netip.MustParsePrefix("192.168.7.0/24")},
		DenyPeers:   []netip.Prefix{netip.MustParsePrefix("192.168.7.64/26"), netip.MustParsePrefix("::ffff:9.9.9.0/120")},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p := newPolicy(&cfg, []netip.Addr{netip.MustParseAddr("198.51.100.8")})
	for _, tc := range []struct {
		ip     string
		ok     bool
		reason reason
	}{
		{"8.8.8.8", true, reasonNone},
		{"2001:4860:4860::8888", true, reasonNone},
		{"127.0.0.1", false, reasonLoopback},
		{"127.255.0.9", false, reasonLoopback},
		{"::1", false, reasonLoopback},
		{"::ffff:127.0.0.1", false, reasonLoopback},
		{"10.1.2.3", false, reasonPrivate},
		{"::ffff:10.1.2.3", false, reasonPrivate},
		{"172.16.0.1", false, reasonPrivate},
		{"172.31.255.255", false, reasonPrivate},
		{"172.32.0.1", true, reasonNone},
		{"192.168.1.1", false, reasonPrivate},
		{"192.168.7.9", true, reasonNone}, // AllowPeers
		{"::ffff:192.168.7.9", true, reasonNone},
		{"192.168.7.66", false, reasonDenied}, // DenyPeers beats AllowPeers
		{"100.64.0.1", false, reasonCGNAT},
		{"100.127.255.254", false, reasonCGNAT},
		{"fd00::1", false, reasonPrivate},
		{"169.254.169.254", false, reasonMetadata},
		{"::ffff:169.254.169.254", false, reasonMetadata},
		{"169.254.169.253", false, reasonLinkLocal},
		{"fd00:ec2::254", false, reasonMetadata},
		{"9.9.9.9", false, reasonDenied}, // DenyPeers on a public address
		{"fe80::1", false, reasonLinkLocal},
		{"224.0.0.1", false, reasonMulticast},
		{"ff02::1", false, reasonMulticast},
		{"0.0.0.0", false, reasonUnspecified},
		{"::", false, reasonUnspecified},
		{"255.255.255.255", false, reasonBroadcast},
		{"198.51.100.8", false, reasonOwnAddress}, // a listening socket
		{"203.0.113.7", true, reasonNone},         // PublicIP: relay-to-relay
		{"198.51.100.7", true, reasonNone},        // RelayBindIP: relay-to-relay
	} {
		t.Run(tc.ip, func(t *testing.T) {
			ok, reason := p.permit(netip.MustParseAddr(tc.ip))
			if ok != tc.ok || reason != tc.reason {
				t.Errorf("permit(%s) = %v %q, want %v %q", tc.ip, ok, reason, tc.ok, tc.reason)
			}
		})
	}

	t.Run("route", func(t *testing.T) {
		p.addLive(50000)
		defer p.removeLive(50000)
		for _, tc := range []struct {
			dst, to string
			reason  reason
		}{
			{"203.0.113.7:50000", "198.51.100.7:50000", reasonNone}, // live relay via PublicIP: sent locally
			{"198.51.100.7:50000", "198.51.100.7:50000", reasonNone},
			{"203.0.113.7:8080", "203.0.113.7:8080", reasonOwnAddress},
			{"198.51.100.7:22", "198.51.100.7:22", reasonOwnAddress},
			{"198.51.100.8:50000", "198.51.100.8:50000", reasonOwnAddress}, // not a relay IP
			{"127.0.0.1:50000", "127.0.0.1:50000", reasonLoopback},
			{"[::ffff:10.0.0.1]:53", "10.0.0.1:53", reasonPrivate},
			{"192.168.7.1:53", "192.168.7.1:53", reasonNone},
			{"192.168.7.65:53", "192.168.7.65:53", reasonDenied},
			{"8.8.8.8:53", "8.8.8.8:53", reasonNone},
			{"9.9.9.9:53", "9.9.9.9:53", reasonDenied},
		} {
			to, reason := p.route(netip.MustParseAddrPort(tc.dst))
			if to.String() != tc.to || reason != tc.reason {
				t.Errorf("route(%s) = %s %q, want %s %q", tc.dst, to, reason, tc.to, tc.reason)
			}
		}
		if src, ok := p.fromRelay(netip.MustParseAddrPort("198.51.100.7:50000")); !ok || src.String() != "203.0.113.7:50000" {
			t.Errorf("fromRelay(live relay) = %s %v, want 203.0.113.7:50000", src, ok)
		}
		if _, ok := p.fromRelay(netip.MustParseAddrPort("198.51.100.7:50001")); ok {
			t.Error("fromRelay rewrote a port that is not a live relay")
		}
	})
}

// TestRelayToRelay checks the exception to the deny list: two clients of
// one server reach each other's relay addresses, while the other ports of
// the relay IP stay closed.
func TestRelayToRelay(t *testing.T) {
	for _, tc := range []struct {
		name, publicIP, bindIP string
	}{
		// PublicIP configured locally: packets go straight to it.
		{"public ip local", "127.0.0.1", ""},
		// 1:1 NAT: the advertised address (here 127.0.0.2, on lo but bound
		// by nothing) is not where relays listen; relay-to-relay traffic
		// must be routed to RelayBindIP and shown as coming from PublicIP.
		{"behind 1:1 NAT", "127.0.0.2", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.PublicIP = netip.MustParseAddr(tc.publicIP)
			cfg.RelayBindIP = netip.Addr{}
			if tc.bindIP != "" {
				cfg.RelayBindIP = netip.MustParseAddr(tc.bindIP)
			}
			s := startServer(t, cfg, nil)
			a := allocate(t, s, "anna")
			b := allocate(t, s, "ben")
			for _, r := range []net.PacketConn{a, b} {
				if ip := r.LocalAddr().(*net.UDPAddr).IP.String(); ip != tc.publicIP {
					t.Fatalf("relay address %v does not advertise PublicIP %s", r.LocalAddr(), tc.publicIP)
				}
			}

			// b must permit a's relay IP before a's packets are let in.
			if err := b.(interface{ CreatePermissions(...net.Addr) error }).CreatePermissions(a.LocalAddr()); err != nil {
				t.Fatalf("b: CreatePermission for a's relay: %v", err)
			}
			from := sendUntilReceived(t, a, b.LocalAddr(), b, "a->b")
			if from.String() != a.LocalAddr().String() {
				t.Errorf("b received from %v, want a's relay address %v", from, a.LocalAddr())
			}
			from = sendUntilReceived(t, b, a.LocalAddr(), a, "b->a")
			if from.String() != b.LocalAddr().String() {
				t.Errorf("a received from %v, want b's relay address %v", from, b.LocalAddr())
			}

			// A service on the relay IP that is not a relay allocation
			// (say the HTTP port) must not be reachable.
			other := sink(t, tc.publicIP)
			before := s.Stats().PermissionRefusals
			otherAddr := other.LocalAddr()
			for range 5 {
				if _, err := a.WriteTo([]byte("to-http"), otherAddr); err != nil {
					t.Fatalf("WriteTo: %v", err)
				}
			}
			if data, _, ok := readWithin(other, 500*time.Millisecond); ok {
				t.Fatalf("non-relay port %v received %q", otherAddr, data)
			}
			if after := s.Stats().PermissionRefusals; after <= before {
				t.Errorf("PermissionRefusals %d -> %d: dropped packets not counted", before, after)
			}

			// A closed allocation's port is no longer a relay: it closes too.
			bAddr := b.LocalAddr()
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "b's relay socket closed", func() bool {
				return !s.policy.isLive(uint16(bAddr.(*net.UDPAddr).Port))
			})
		})
	}
}

// TestTCP runs an allocation over a TURN/TCP connection and checks that
// Close also closes accepted TCP connections.
func TestTCP(t *testing.T) {
	cfg := baseConfig()
	cfg.AllowPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	s := startServer(t, cfg, nil)

	conn, err := net.Dial("tcp", s.tcpAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	user, pass := Credentials(testSecret, "tcp-user", time.Hour, time.Now())
	c, err := pionturn.NewClient(&pionturn.ClientConfig{
		STUNServerAddr: s.tcpAddr.String(),
		TURNServerAddr: s.tcpAddr.String(),
		Conn:           pionturn.NewSTUNConn(conn),
		Username:       user,
		Password:       pass,
		LoggerFactory:  slogFactory{l: slog.New(slog.DiscardHandler)},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}

	t.Run("allocate", func(t *testing.T) {
		relay, err := c.Allocate()
		if err != nil {
			t.Fatalf("Allocate over TCP: %v", err)
		}
		if s.Stats().Allocations != 1 {
			t.Errorf("Allocations = %d, want 1", s.Stats().Allocations)
		}
		peer := sink(t, "127.0.0.1")
		sendUntilReceived(t, relay, peer.LocalAddr(), peer, "over tcp")
	})

	t.Run("close drops connection", func(t *testing.T) {
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.Copy(io.Discard, conn); err != nil {
			t.Errorf("TCP connection not closed by the server: %v", err)
		}
		if n := s.policy.liveCount(); n != 0 {
			t.Errorf("%d relay sockets open after Close", n)
		}
		waitFor(t, "Allocations back to 0", func() bool { return s.Stats().Allocations == 0 })
	})
}

func TestNewErrors(t *testing.T) {
	t.Run("no sockets", func(t *testing.T) {
		if _, err := New(baseConfig(), nil, nil, nil); !errors.Is(err, ErrNoSockets) {
			t.Errorf("New without sockets: %v, want ErrNoSockets", err)
		}
	})
	t.Run("nil socket", func(t *testing.T) {
		if _, err := New(baseConfig(), nil, []net.PacketConn{nil}, nil); !errors.Is(err, ErrNilSocket) {
			t.Errorf("New with a nil packet conn: %v, want ErrNilSocket", err)
		}
	})
	t.Run("invalid config", func(t *testing.T) {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		cfg := baseConfig()
		cfg.Secret = nil
		if _, err := New(cfg, nil, []net.PacketConn{pc}, nil); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New with no secret: %v, want ErrInvalidConfig", err)
		}
	})
}

// TestRelayPortRange checks that relay ports come from the configured
// range and that an exhausted range refuses the allocation.
func TestRelayPortRange(t *testing.T) {
	// A one-port range on a port just seen free.
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(probe.LocalAddr().(*net.UDPAddr).Port)
	_ = probe.Close()

	cfg := baseConfig()
	cfg.RelayPortMin, cfg.RelayPortMax = port, port
	s := startServer(t, cfg, nil)
	relay := allocate(t, s, "ranged") // held until the end of the test
	t.Run("in range", func(t *testing.T) {
		if got := relay.LocalAddr().(*net.UDPAddr).Port; got != int(port) {
			t.Errorf("relay port %d, want %d", got, port)
		}
	})
	t.Run("range exhausted", func(t *testing.T) {
		user, pass := Credentials(testSecret, "second", time.Hour, time.Now())
		if _, err := newClient(t, s.udpAddr, user, pass).Allocate(); err == nil {
			t.Fatal("second allocation in a one-port range succeeded")
		}
	})
}
