package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	pionturn "github.com/pion/turn/v5"

	"github.com/parleyhq/parley/config"
	"github.com/parleyhq/parley/internal/testcert"
	"github.com/parleyhq/parley/signaling"
	"github.com/parleyhq/parley/turn"
)

// selfSigned writes a certificate for 127.0.0.1 and localhost to files.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	c := testcert.New(t, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	certFile, keyFile = c.WriteFiles(t, t.TempDir())
	return certFile, keyFile, c.Pool
}

// TestSharedTLSPort shows one TLS port serving the page, the signaling
// WebSocket and TURN over TLS, and the welcome listing UDP, TCP, then TLS.
func TestSharedTLSPort(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	cfg := config.Default()
	cfg.OpenRooms = true
	cfg.TLSCert, cfg.TLSKey = certFile, keyFile
	cfg.TURNSecret = "0123456789abcdef0123"
	cfg.TURNAllowPeers = nil
	var ln Listeners
	var err error
	must := func(l net.Listener, err error) net.Listener {
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	ln.HTTP = must(net.Listen("tcp", "127.0.0.1:0"))
	ln.TURNTCP = must(net.Listen("tcp", "127.0.0.1:0"))
	ln.TLS = must(net.Listen("tcp", "127.0.0.1:0"))
	ln.TURNTLS = must(net.Listen("tcp", "127.0.0.1:0"))
	if ln.TURNUDP, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ln)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Close()
	tlsAddr := ln.TLS.Addr().String()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	// The page over HTTPS.
	res, err := client.Get("https://" + tlsAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), "Start a consultation") {
		t.Fatalf("HTTPS page: %s", res.Status)
	}
	if res.Header.Get("Strict-Transport-Security") == "" || res.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("HTTPS headers: %v", res.Header)
	}
	room, token := newRoom(t, client, "https://"+tlsAddr)

	// Signaling over wss on the same port.
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	ws, _, err := d.Dial("wss://"+tlsAddr+"/ws", http.Header{"Origin": {"https://" + tlsAddr}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.WriteJSON(signaling.Message{Type: signaling.TypeJoin, Version: 1, Room: room.ID, Name: "TLS", Token: token})
	var welcome signaling.Message
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := ws.ReadJSON(&welcome); err != nil {
		t.Fatal(err)
	}
	urls := welcome.ICEServers[0].URLs
	want := []string{"turn:127.0.0.1:", "turn:127.0.0.1:", "turns:127.0.0.1:" + portOf(ln.TURNTLS.Addr()), "turns:127.0.0.1:" + portOf(ln.TLS.Addr())}
	if len(urls) != 4 || !strings.HasSuffix(urls[0], "?transport=udp") || !strings.HasSuffix(urls[1], "?transport=tcp") {
		t.Fatalf("ICE URLs %v", urls)
	}
	for i, w := range want {
		if !strings.HasPrefix(urls[i], w) {
			t.Errorf("ICE URL %d = %s, want prefix %s", i, urls[i], w)
		}
	}

	// TURN over TLS on the shared port and on the TURN-only port.
	for _, addr := range []string{tlsAddr, ln.TURNTLS.Addr().String()} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
		if err != nil {
			t.Fatal(err)
		}
		user, pass := turn.Credentials([]byte(cfg.TURNSecret), "tls-test", time.Hour, time.Now())
		c, err := pionturn.NewClient(&pionturn.ClientConfig{
			STUNServerAddr: addr, TURNServerAddr: addr, Conn: pionturn.NewSTUNConn(conn),
			Username: user, Password: pass, Realm: "parley",
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Listen(); err != nil {
			t.Fatal(err)
		}
		relay, err := c.Allocate()
		if err != nil {
			t.Fatalf("TURN/TLS allocation on %s: %v", addr, err)
		}
		if !strings.HasPrefix(relay.LocalAddr().String(), "127.0.0.1:") {
			t.Errorf("relay address %s", relay.LocalAddr())
		}
		relay.Close()
		c.Close()
		conn.Close()
	}
	if st := s.relay.Stats(); st.AllocationsTotal < 2 {
		t.Fatalf("allocations over TLS: %+v", st)
	}
}

func decodeJSON(t *testing.T, res *http.Response, v any) {
	t.Helper()
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func TestRelayOnly(t *testing.T) {
	cfg := config.Default()
	if _, err := NewRelay(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), Listeners{}); err != ErrNoSecret {
		t.Fatalf("relay without secret: %v", err)
	}
	cfg.TURNSecret = "0123456789abcdef0123"
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewRelay(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), Listeners{TURNUDP: pc})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Close()
	user, pass := turn.Credentials([]byte(cfg.TURNSecret), "other-app", time.Hour, time.Now())
	conn, _ := net.ListenPacket("udp", "127.0.0.1:0")
	c, err := pionturn.NewClient(&pionturn.ClientConfig{
		STUNServerAddr: pc.LocalAddr().String(), TURNServerAddr: pc.LocalAddr().String(), Conn: conn,
		Username: user, Password: pass, Realm: "parley",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Listen()
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("standalone relay allocation: %v", err)
	}
	relay.Close()
	if s.URL() != "" || s.sig != nil {
		t.Fatal("standalone relay serves the app")
	}
}
