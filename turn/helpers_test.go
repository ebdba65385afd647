package turn

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	pionturn "github.com/pion/turn/v5"

	"github.com/parleyhq/parley/internal/testcert"
)

var testSecret = []byte("test-secret-0123456789abcdef")

// testLogger logs to the test output (shown on failure or with -v).
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testOutput(t), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// testOutput is t.Output() until the test's cleanups have run. Pion's read
// loops may still log after Server.Close returns, and writing to
// t.Output() once a test has ended is a data race in package testing.
// Call it before starting the server, so that its cleanup runs after the
// server's Close.
func testOutput(t testing.TB) io.Writer {
	w := &cutoffWriter{w: t.Output()}
	t.Cleanup(func() {
		w.mu.Lock()
		w.w = nil
		w.mu.Unlock()
	})
	return w
}

type cutoffWriter struct {
	mu sync.Mutex
	w  io.Writer // nil once cut off
}

func (c *cutoffWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.w == nil {
		return len(p), nil
	}
	return c.w.Write(p)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// baseConfig is a valid config advertising 127.0.0.1 and binding relays on
// loopback only, so that nothing can leave the machine.
func baseConfig() Config {
	return Config{
		PublicIP:    netip.MustParseAddr("127.0.0.1"),
		RelayBindIP: netip.MustParseAddr("127.0.0.1"),
		Secret:      testSecret,
		noBatching:  testNoBatching,
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

// testTLSConfigs makes a self-signed certificate for 127.0.0.1 and the
// server and client TLS configs that use and trust it.
func testTLSConfigs(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	c := testcert.New(t, nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	server = &tls.Config{Certificates: []tls.Certificate{c.TLS}, MinVersion: tls.VersionTLS13}
	client = &tls.Config{RootCAs: c.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	return server, client
}

// tlsListener serves TLS on l, as tls.NewListener: the handshake is left
// to the first read.
func tlsListener(l net.Listener, cfg *tls.Config) net.Listener { return tls.NewListener(l, cfg) }

// tlsDial connects and completes the handshake.
func tlsDial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 3 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp4", addr, cfg)
	if err != nil {
		return nil, err
	}
	return c, nil
}
