package turn

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	pionturn "github.com/pion/turn/v5"
)

var testSecret = []byte("test-secret-0123456789abcdef")

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger logs to the test output (shown on failure or with -v).
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// baseConfig is a valid config advertising 127.0.0.1 and binding relays on
// loopback only, so that nothing can leave the machine.
func baseConfig() Config {
	return Config{
		PublicIP:    netip.MustParseAddr("127.0.0.1"),
		RelayBindIP: netip.MustParseAddr("127.0.0.1"),
		Secret:      testSecret,
	}
}

type testServer struct {
	*Server
	udp     *net.UDPConn // the TURN/UDP socket given to New
	udpAddr *net.UDPAddr
	tcpAddr *net.TCPAddr
}

// startServer runs a server with one UDP socket and one TCP listener on
// 127.0.0.1, closed at the end of the test.
func startServer(t testing.TB, cfg Config, logger *slog.Logger) *testServer {
	t.Helper()
	return startServerClock(t, cfg, logger, time.Now)
}

// startServerClock is startServer with a clock for credential expiry.
func startServerClock(t testing.TB, cfg Config, logger *slog.Logger, now func() time.Time) *testServer {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if logger == nil {
		logger = testLogger(t)
	}
	s, err := newServer(cfg, logger, []net.PacketConn{pc}, []net.Listener{ln}, now)
	if err != nil {
		_ = pc.Close()
		_ = ln.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &testServer{Server: s, udp: pc, udpAddr: pc.LocalAddr().(*net.UDPAddr), tcpAddr: ln.Addr().(*net.TCPAddr)}
}

// newClient makes a pion TURN client over UDP from 127.0.0.1.
func newClient(t testing.TB, server *net.UDPAddr, username, password string) *pionturn.Client {
	t.Helper()
	c, _ := newClientConn(t, server, username, password)
	return c
}

// newClientConn is newClient that also returns the client's UDP socket.
func newClientConn(t testing.TB, server *net.UDPAddr, username, password string) (*pionturn.Client, *net.UDPConn) {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := pionturn.NewClient(&pionturn.ClientConfig{
		STUNServerAddr: server.String(),
		TURNServerAddr: server.String(),
		Conn:           conn,
		Username:       username,
		Password:       password,
		LoggerFactory:  slogFactory{l: slog.New(slog.DiscardHandler)},
		RTO:            200 * time.Millisecond,
	})
	if err != nil {
		_ = conn.Close()
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		_ = conn.Close()
	})
	return c, conn
}

// allocate makes valid credentials and an allocation for id.
func allocate(t testing.TB, s *testServer, id string) net.PacketConn {
	t.Helper()
	user, pass := Credentials(testSecret, id, time.Hour, time.Now())
	c := newClient(t, s.udpAddr, user, pass)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate %s: %v", id, err)
	}
	t.Cleanup(func() { _ = relay.Close() })
	return relay
}

// sink is a plain UDP socket on 127.0.0.1 standing in for a peer or for
// another service of the server host.
func sink(t testing.TB, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// readWithin reads one packet or returns ok=false after d.
func readWithin(c net.PacketConn, d time.Duration) (data string, from net.Addr, ok bool) {
	buf := make([]byte, 1600)
	_ = c.SetReadDeadline(time.Now().Add(d))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		return "", nil, false
	}
	return string(buf[:n]), from, true
}

// sendUntilReceived writes msg from src to dst every 100ms until dstConn
// reads msg, or fails the test after 3s. It returns the sender address dstConn saw.
func sendUntilReceived(t testing.TB, src net.PacketConn, dst net.Addr, dstConn net.PacketConn, msg string) net.Addr {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := src.WriteTo([]byte(msg), dst); err != nil {
			t.Fatalf("write %q to %s: %v", msg, dst, err)
		}
		if got, from, ok := readWithin(dstConn, 100*time.Millisecond); ok && got == msg {
			return from
		}
	}
	t.Fatalf("%q never arrived at %s", msg, dst)
	return nil
}
