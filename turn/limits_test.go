package turn

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	pionturn "github.com/pion/turn/v5"

	"github.com/parleyhq/parley/internal/logbuf"
)

// wantTurnError fails unless err is a TURN error response with code.
func wantTurnError(t testing.TB, err error, code stun.ErrorCode) {
	t.Helper()
	var te *stun.TurnError
	if !errors.As(err, &te) || te.ErrorCodeAttr.Code != code {
		t.Fatalf("error = %v, want %d", err, code)
	}
}

// TestQuotas checks MaxAllocationsPerUser (by the id of the REST username,
// across credentials) and MaxAllocations, answered with 486.
func TestQuotas(t *testing.T) {
	t.Run("per user", func(t *testing.T) {
		cfg := baseConfig()
		cfg.MaxAllocationsPerUser = 2
		s := startServer(t, cfg, nil)
		first := allocate(t, s, "alice")
		allocate(t, s, "alice")

		// A third, with fresh credentials of the same id, is refused.
		user, pass := Credentials(testSecret, "alice", 2*time.Hour, time.Now())
		_, err := newClient(t, s.udpAddr, user, pass).Allocate()
		wantTurnError(t, err, stun.CodeAllocQuotaReached)
		if st := s.Stats(); st.QuotaRefusals != 1 || st.Allocations != 2 {
			t.Errorf("QuotaRefusals %d Allocations %d, want 1 and 2", st.QuotaRefusals, st.Allocations)
		}

		allocate(t, s, "bob") // another user is not affected

		// Closing one of alice's allocations gives her quota back.
		if err := first.Close(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "alice's allocation closed", func() bool { return s.Stats().Allocations == 2 })
		allocate(t, s, "alice")
	})

	t.Run("total", func(t *testing.T) {
		cfg := baseConfig()
		cfg.MaxAllocations = 2
		s := startServer(t, cfg, nil)
		allocate(t, s, "a")
		allocate(t, s, "b")
		user, pass := Credentials(testSecret, "c", time.Hour, time.Now())
		_, err := newClient(t, s.udpAddr, user, pass).Allocate()
		wantTurnError(t, err, stun.CodeAllocQuotaReached)
		if got := s.Stats().QuotaRefusals; got != 1 {
			t.Errorf("QuotaRefusals = %d, want 1", got)
		}
	})
}

// TestQuotaAccounting checks the counts behind the quotas directly,
// including the race path (acquire refusing after check passed).
func TestQuotaAccounting(t *testing.T) {
	q := newQuotas(2, 3)
	for _, step := range []struct {
		user, want string
	}{
		{"a", ""}, {"a", ""}, {"a", reasonUserQuota}, {"b", ""}, {"c", reasonTotalQuota},
	} {
		if got := q.acquire(step.user); got != step.want {
			t.Fatalf("acquire(%s) = %q, want %q", step.user, got, step.want)
		}
	}
	q.release("a")
	if got := q.check("c"); got != "" {
		t.Errorf("check(c) after a release = %q", got)
	}
	q.release("a")
	q.release("b")
	if q.n != 0 || len(q.users) != 0 {
		t.Errorf("after releasing everything: n=%d users=%v", q.n, q.users)
	}
}

// bindChannel writes to dst through relay until pion's client has a bound
// channel for it (ChannelData from then on), then drains dstConn.
func bindChannel(t testing.TB, relay net.PacketConn, dst net.Addr, dstConn net.PacketConn) {
	t.Helper()
	ch, ok := relay.(interface {
		FindChannelNumberByAddr(net.Addr) (uint16, bool)
		IsChannelActive(uint16) bool
	})
	if !ok {
		t.Fatalf("pion relay conn %T has no channel accessors", relay)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, err := relay.WriteTo([]byte("warm-up"), dst); err != nil {
			t.Fatal(err)
		}
		if num, ok := ch.FindChannelNumberByAddr(dst); ok && ch.IsChannelActive(num) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("channel never bound")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for {
		if _, _, ok := readWithin(dstConn, 50*time.Millisecond); !ok {
			return
		}
	}
}

// pace sends size-byte packets from src to dst at bytesPerSec for d, in
// 10 ms batches.
func pace(t testing.TB, src net.PacketConn, dst net.Addr, size, bytesPerSec int, d time.Duration) (sent int) {
	t.Helper()
	msg := make([]byte, size)
	start := time.Now()
	for time.Since(start) < d {
		due := int(time.Since(start).Seconds()*float64(bytesPerSec)) / size
		for ; sent < due; sent++ {
			if _, err := src.WriteTo(msg, dst); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return sent
}

// countBytes reads from c until it is idle for 200 ms and returns the bytes read.
func countBytes(c net.PacketConn, bytes *atomic.Int64) {
	buf := make([]byte, 2048)
	for {
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		bytes.Add(int64(n))
	}
}

// TestBandwidthCap sends at twice BandwidthPerAllocation through a bound
// channel, each way, and checks that about the cap arrives and the rest is
// dropped and counted.
func TestBandwidthCap(t *testing.T) {
	const (
		limit  = 400_000 // bytes/s; burst is then 64 KiB
		size   = 1000
		period = time.Second
	)
	cfg := baseConfig()
	cfg.AllowPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.BandwidthPerAllocation = limit
	s := startServer(t, cfg, nil)
	relay := allocate(t, s, "hd-video")
	peer := sink(t, "127.0.0.1")
	bindChannel(t, relay, peer.LocalAddr(), peer)

	check := func(t *testing.T, got int64, elapsed time.Duration, dropsBefore uint64) {
		rate := float64(got) / elapsed.Seconds()
		t.Logf("received %d bytes in %v: %.0f B/s (cap %d B/s)", got, elapsed, rate, limit)
		if rate < 0.7*limit || rate > 1.3*limit {
			t.Errorf("received %.0f B/s, want %d ±30%%", rate, limit)
		}
		if drops := s.Stats().PermissionRefusalsByReason["bandwidth"]; drops <= dropsBefore {
			t.Errorf("bandwidth drops %d -> %d: not counted", dropsBefore, drops)
		}
	}

	t.Run("client to peer", func(t *testing.T) {
		time.Sleep(200 * time.Millisecond) // let the bucket refill after the warm-up
		before := s.Stats().PermissionRefusalsByReason["bandwidth"]
		var got atomic.Int64
		done := make(chan struct{})
		go func() { countBytes(peer, &got); close(done) }()
		start := time.Now()
		pace(t, relay, peer.LocalAddr(), size, 2*limit, period)
		check(t, got.Load(), time.Since(start), before)
		<-done
	})

	t.Run("peer to client", func(t *testing.T) {
		time.Sleep(200 * time.Millisecond)
		before := s.Stats().PermissionRefusalsByReason["bandwidth"]
		var got atomic.Int64
		done := make(chan struct{})
		go func() { countBytes(relay, &got); close(done) }()
		start := time.Now()
		pace(t, peer, relay.LocalAddr(), size, 2*limit, period)
		check(t, got.Load(), time.Since(start), before)
		<-done
	})
}

// TestUnsolicitedInbound checks that packets from a peer the client did
// not permit are neither delivered nor counted, while permitted ones are.
func TestUnsolicitedInbound(t *testing.T) {
	cfg := baseConfig()
	cfg.AllowPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	s := startServer(t, cfg, nil)
	relay := allocate(t, s, "quiet")
	friend := sink(t, "127.0.0.1")
	stranger := sink(t, "127.0.0.5")
	sendUntilReceived(t, relay, friend.LocalAddr(), friend, "hello") // permits 127.0.0.1
	waitFor(t, "hello counted", func() bool { return s.Stats().PacketsRelayed >= 1 })
	time.Sleep(100 * time.Millisecond) // a resent hello, if any, is counted too

	before := s.Stats().PacketsRelayed
	for range 20 {
		if _, err := stranger.WriteTo([]byte("spam"), relay.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	if data, _, ok := readWithin(relay, 300*time.Millisecond); ok {
		t.Fatalf("client received %q from a peer it never permitted", data)
	}
	if after := s.Stats().PacketsRelayed; after != before {
		t.Errorf("PacketsRelayed %d -> %d for unsolicited packets", before, after)
	}
	sendUntilReceived(t, friend, relay.LocalAddr(), relay, "reply")
}

// TestAuthRateLimit checks the per-source limit on failed
// authentications: after the limit even a correct password from that
// address is refused, another address is not affected, a live allocation
// from the blocked address keeps working, and one attempt comes back per
// AuthFailureWindow/AuthFailureLimit.
func TestAuthRateLimit(t *testing.T) {
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	cfg := baseConfig()
	cfg.AuthFailureLimit = 3
	cfg.AuthFailureWindow = 30 * time.Second // one attempt back every 10 s
	logs := &logbuf.Buffer{}
	s := startServerClock(t, cfg, slog.New(slog.NewTextHandler(logs, nil)), clock)

	// A call that is up before the failures begin.
	liveUser, livePass := Credentials(testSecret, "in-a-call", time.Hour, time.Now())
	live := newClient(t, s.udpAddr, liveUser, livePass)
	if _, err := live.Allocate(); err != nil {
		t.Fatal(err)
	}

	user, pass := Credentials(testSecret, "mallory", time.Hour, time.Now())
	for i := range cfg.AuthFailureLimit {
		_, err := newClient(t, s.udpAddr, user, "d3JvbmcgcGFzc3dvcmQ=").Allocate()
		wantTurnError(t, err, stun.CodeUnauthorized)
		if got := s.Stats().AuthFailures; got != uint64(i+1) {
			t.Fatalf("AuthFailures = %d after %d failures", got, i+1)
		}
	}

	t.Run("correct password refused", func(t *testing.T) {
		_, err := newClient(t, s.udpAddr, user, pass).Allocate()
		wantTurnError(t, err, stun.CodeUnauthorized)
		st := s.Stats()
		if st.AuthRateLimited != 1 || st.AuthFailures != uint64(cfg.AuthFailureLimit) {
			t.Errorf("AuthRateLimited %d AuthFailures %d, want 1 and %d", st.AuthRateLimited, st.AuthFailures, cfg.AuthFailureLimit)
		}
	})

	t.Run("other address allowed", func(t *testing.T) {
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
		if err != nil {
			t.Fatal(err)
		}
		c, err := pionturn.NewClient(&pionturn.ClientConfig{
			STUNServerAddr: s.udpAddr.String(),
			TURNServerAddr: s.udpAddr.String(),
			Conn:           conn,
			Username:       user,
			Password:       pass,
			LoggerFactory:  slogFactory{l: discardLogger()},
			RTO:            200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		defer c.Close()
		if err := c.Listen(); err != nil {
			t.Fatal(err)
		}
		relay, err := c.Allocate()
		if err != nil {
			t.Fatalf("Allocate from 127.0.0.2: %v", err)
		}
		_ = relay.Close()
	})

	t.Run("live allocation unaffected", func(t *testing.T) {
		if err := live.CreatePermission(&net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 9}); err != nil {
			t.Fatalf("CreatePermission on a live allocation from the blocked address: %v", err)
		}
	})

	t.Run("refills", func(t *testing.T) {
		skew.Store(int64(10 * time.Second))
		relay, err := newClient(t, s.udpAddr, user, pass).Allocate()
		if err != nil {
			t.Fatalf("Allocate after one refill interval: %v", err)
		}
		_ = relay.Close()
	})

	t.Run("logged once, no secrets", func(t *testing.T) {
		out := logs.String()
		if n := countLines(out, "reason=rate-limited"); n != 1 {
			t.Errorf("%d rate-limited lines at Info, want 1:\n%s", n, out)
		}
		if strings.Contains(out, pass) || strings.Contains(out, string(testSecret)) {
			t.Error("log holds the password or the secret")
		}
	})
}

// TestAuthLimiter checks the token bucket and the memory bound without
// sockets.
func TestAuthLimiter(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	ip := netip.MustParseAddr("192.0.2.1")
	l := newAuthLimiter(3, 3*time.Second, 8) // one failure back per second

	for i, wantBlocked := range []bool{false, false, true} {
		if got := l.fail(ip, t0); got != wantBlocked {
			t.Fatalf("failure %d: nowBlocked = %v, want %v", i+1, got, wantBlocked)
		}
	}
	for _, tc := range []struct {
		after time.Duration
		want  bool
	}{{0, true}, {999 * time.Millisecond, true}, {time.Second, false}} {
		if got := l.blocked(ip, t0.Add(tc.after)); got != tc.want {
			t.Errorf("blocked after %v = %v, want %v", tc.after, got, tc.want)
		}
	}
	if !l.fail(ip, t0.Add(time.Second)) {
		t.Error("the failure after one refill did not block again")
	}
	if l.blocked(netip.MustParseAddr("192.0.2.2"), t0) {
		t.Error("an unknown source is blocked")
	}

	t.Run("IPv6 by /64", func(t *testing.T) {
		a, _ := sourceKey(&net.UDPAddr{IP: net.ParseIP("2001:db8:1:2::1")})
		b, _ := sourceKey(&net.UDPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::9")})
		c, _ := sourceKey(&net.UDPAddr{IP: net.ParseIP("2001:db8:1:3::1")})
		if a != b || a == c {
			t.Errorf("keys %v %v %v: want the first two equal, the third apart", a, b, c)
		}
		v4, _ := sourceKey(&net.UDPAddr{IP: net.ParseIP("::ffff:192.0.2.7")})
		if v4 != netip.MustParseAddr("192.0.2.7") {
			t.Errorf("IPv4-mapped key %v", v4)
		}
	})

	t.Run("bounded", func(t *testing.T) {
		l := newAuthLimiter(1, time.Minute, 64)
		for i := range 10_000 {
			l.fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), t0)
			if n := l.size(); n > 64 {
				t.Fatalf("%d sources remembered, bound 64", n)
			}
		}
		// Sources whose bucket refilled are dropped first, all at once.
		l.fail(netip.MustParseAddr("192.0.2.99"), t0.Add(time.Hour))
		if n := l.size(); n != 1 {
			t.Errorf("after every bucket refilled: %d sources, want 1", n)
		}
	})
}

// lifetimeAttr is a LIFETIME attribute (RFC 8656 §18.2), in seconds.
type lifetimeAttr uint32

func (l lifetimeAttr) AddTo(m *stun.Message) error {
	v := make([]byte, 4)
	binary.BigEndian.PutUint32(v, uint32(l))
	m.Add(stun.AttrLifetime, v)
	return nil
}

// rawTURN speaks raw STUN to the server over UDP with long-term credentials.
type rawTURN struct {
	t            testing.TB
	conn         *net.UDPConn
	server       *net.UDPAddr
	user, pass   string
	realm, nonce string
}

func (r *rawTURN) do(method stun.Method, attrs ...stun.Setter) *stun.Message {
	r.t.Helper()
	for try := 0; try < 2; try++ {
		setters := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
		setters = append(setters, attrs...)
		if r.nonce != "" {
			setters = append(setters, stun.NewUsername(r.user), stun.NewRealm(r.realm), stun.NewNonce(r.nonce),
				stun.NewLongTermIntegrity(r.user, r.realm, r.pass))
		}
		setters = append(setters, stun.Fingerprint)
		req := stun.MustBuild(setters...)
		if _, err := r.conn.WriteToUDP(req.Raw, r.server); err != nil {
			r.t.Fatal(err)
		}
		buf := make([]byte, 1500)
		_ = r.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := r.conn.Read(buf)
		if err != nil {
			r.t.Fatalf("%v: no response: %v", method, err)
		}
		res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if err := res.Decode(); err != nil {
			r.t.Fatal(err)
		}
		if res.TransactionID != req.TransactionID {
			r.t.Fatalf("%v: response to another transaction", method)
		}
		var code stun.ErrorCodeAttribute
		if res.Type.Class == stun.ClassErrorResponse && code.GetFrom(res) == nil &&
			(code.Code == stun.CodeUnauthorized || code.Code == stun.CodeStaleNonce) && try == 0 {
			var realm stun.Realm
			var nonce stun.Nonce
			if realm.GetFrom(res) != nil || nonce.GetFrom(res) != nil {
				r.t.Fatalf("%v: %d without realm and nonce", method, code.Code)
			}
			r.realm, r.nonce = realm.String(), nonce.String()
			continue
		}
		return res
	}
	r.t.Fatalf("%v: still unauthorized with credentials", method)
	return nil
}

// lifetime returns the LIFETIME of a success response.
func (r *rawTURN) lifetime(res *stun.Message) time.Duration {
	r.t.Helper()
	if res.Type.Class != stun.ClassSuccessResponse {
		var code stun.ErrorCodeAttribute
		_ = code.GetFrom(res)
		r.t.Fatalf("%v: error response %v", res.Type, code)
	}
	v, err := res.Get(stun.AttrLifetime)
	if err != nil || len(v) != 4 {
		r.t.Fatalf("%v: no LIFETIME: %v", res.Type, err)
	}
	return time.Duration(binary.BigEndian.Uint32(v)) * time.Second
}

// TestAllocationLifetime checks granted lifetimes with raw Allocate and
// Refresh requests: the default when none is asked, what is asked within
// the limits, never more than an hour, and deletion on 0.
func TestAllocationLifetime(t *testing.T) {
	s := startServer(t, baseConfig(), nil)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	user, pass := Credentials(testSecret, "raw", time.Hour, time.Now())
	r := &rawTURN{t: t, conn: conn, server: s.udpAddr, user: user, pass: pass}
	udp := stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}

	if got := r.lifetime(r.do(stun.MethodAllocate, udp, lifetimeAttr(7200))); got > MaxAllocationLifetime || got < DefaultAllocationLifetime {
		t.Errorf("Allocate asking 7200 s got %v, want between 10m and 1h", got)
	}
	for _, tc := range []struct {
		name  string
		attrs []stun.Setter
		check func(time.Duration) bool
		want  string
	}{
		{"none", nil, func(d time.Duration) bool { return d == DefaultAllocationLifetime }, "10m"},
		{"1800 s", []stun.Setter{lifetimeAttr(1800)}, func(d time.Duration) bool { return d == 30*time.Minute }, "30m"},
		{"7200 s", []stun.Setter{lifetimeAttr(7200)}, func(d time.Duration) bool {
			return d <= MaxAllocationLifetime && d >= DefaultAllocationLifetime
		}, "between 10m and 1h"},
		{"2^32-1 s", []stun.Setter{lifetimeAttr(1<<32 - 1)}, func(d time.Duration) bool {
			return d <= MaxAllocationLifetime && d >= DefaultAllocationLifetime
		}, "between 10m and 1h"},
	} {
		t.Run("Refresh "+tc.name, func(t *testing.T) {
			if got := r.lifetime(r.do(stun.MethodRefresh, tc.attrs...)); !tc.check(got) {
				t.Errorf("granted %v, want %s", got, tc.want)
			}
		})
	}
	t.Run("Refresh 0 deletes", func(t *testing.T) {
		if got := r.lifetime(r.do(stun.MethodRefresh, lifetimeAttr(0))); got != 0 {
			t.Errorf("granted %v, want 0", got)
		}
		waitFor(t, "allocation deleted", func() bool { return s.Stats().Allocations == 0 })
	})
}

// TestDenyPeers checks that DenyPeers beats AllowPeers for permissions and
// packets, counted under "denied".
func TestDenyPeers(t *testing.T) {
	cfg := baseConfig()
	cfg.AllowPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.DenyPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")}
	s := startServer(t, cfg, nil)
	relay := allocate(t, s, "deny")
	creator := relay.(interface{ CreatePermissions(...net.Addr) error })

	denied := sink(t, "127.0.0.3")
	if err := creator.CreatePermissions(denied.LocalAddr()); err == nil {
		t.Error("CreatePermission to 127.0.0.3 succeeded despite DenyPeers")
	}
	if got := s.Stats().PermissionRefusalsByReason["denied"]; got != 1 {
		t.Errorf("denied refusals = %d, want 1", got)
	}
	if data, _, ok := readWithin(denied, 200*time.Millisecond); ok {
		t.Errorf("denied peer received %q", data)
	}

	allowed := sink(t, "127.0.0.4")
	sendUntilReceived(t, relay, allowed.LocalAddr(), allowed, "allowed")
}

// TestTransportStats relays a packet each way for a UDP, a TCP and a TLS
// client and checks that only that transport's counters move, and that
// the totals are their sum.
func TestTransportStats(t *testing.T) {
	cfg := baseConfig()
	cfg.AllowPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tcpLn, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tlsRaw, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	serverTLS, clientTLS := testTLSConfigs(t)
	s, err := New(cfg, testLogger(t), []net.PacketConn{pc}, []net.Listener{tcpLn, tlsListener(tlsRaw, serverTLS)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	dial := map[string]func() net.PacketConn{
		TransportUDP: func() net.PacketConn {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
		TransportTCP: func() net.PacketConn {
			c, err := net.Dial("tcp4", tcpLn.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			return pionturn.NewSTUNConn(c)
		},
		TransportTLS: func() net.PacketConn {
			c, err := tlsDial(tlsRaw.Addr().String(), clientTLS)
			if err != nil {
				t.Fatal(err)
			}
			return pionturn.NewSTUNConn(c)
		},
	}
	servers := map[string]string{
		TransportUDP: pc.LocalAddr().String(),
		TransportTCP: tcpLn.Addr().String(),
		TransportTLS: tlsRaw.Addr().String(),
	}
	for _, tr := range []string{TransportUDP, TransportTCP, TransportTLS} {
		t.Run(tr, func(t *testing.T) {
			conn := dial[tr]()
			defer conn.Close()
			user, pass := Credentials(testSecret, "via-"+tr, time.Hour, time.Now())
			c, err := pionturn.NewClient(&pionturn.ClientConfig{
				STUNServerAddr: servers[tr],
				TURNServerAddr: servers[tr],
				Conn:           conn,
				Username:       user,
				Password:       pass,
				LoggerFactory:  slogFactory{l: discardLogger()},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Listen(); err != nil {
				t.Fatal(err)
			}
			relay, err := c.Allocate()
			if err != nil {
				t.Fatalf("Allocate over %s: %v", tr, err)
			}
			defer relay.Close()

			before := s.Stats()
			peer := sink(t, "127.0.0.1")
			from := sendUntilReceived(t, relay, peer.LocalAddr(), peer, "up-"+tr)
			if _, err := peer.WriteTo([]byte("down-"+tr), from); err != nil {
				t.Fatal(err)
			}
			if data, _, ok := readWithin(relay, 2*time.Second); !ok || data != "down-"+tr {
				t.Fatalf("reply over %s: %q %v", tr, data, ok)
			}
			// The relay counts a packet once sendto returns, which may be
			// after the peer has it.
			moved := func(st Stats, tr string) uint64 { return st.Transports[tr].Packets - before.Transports[tr].Packets }
			waitFor(t, tr+" counters", func() bool { return moved(s.Stats(), tr) >= 2 })
			after := s.Stats()
			for _, other := range []string{TransportUDP, TransportTCP, TransportTLS} {
				moved := moved(after, other)
				switch {
				case other == tr && moved < 2:
					t.Errorf("%s packets moved by %d, want >= 2", other, moved)
				case other != tr && moved != 0:
					t.Errorf("%s packets moved by %d during a %s call", other, moved, tr)
				}
			}
			var sumP, sumB uint64
			for _, ts := range after.Transports {
				sumP += ts.Packets
				sumB += ts.Bytes
			}
			if sumP != after.PacketsRelayed || sumB != after.BytesRelayed {
				t.Errorf("totals %d/%d are not the sum of the transports %d/%d",
					after.PacketsRelayed, after.BytesRelayed, sumP, sumB)
			}
		})
	}
	if st := s.Stats(); st.AllocationsTotal != 3 || len(st.PermissionRefusalsByReason) != int(numReasons)-1 {
		t.Errorf("stats after three calls: %+v", st)
	}
}

func countLines(s, sub string) int {
	n := 0
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			n++
		}
	}
	return n
}
