package server

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/config"
	"github.com/parleyhq/parley/signaling"
)

func start(t *testing.T, cfg config.Config) (*Server, Listeners) {
	t.Helper()
	var ln Listeners
	var err error
	if ln.HTTP, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if ln.TURNUDP, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if ln.TURNTCP, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if ln.Metrics, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ln)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s, ln
}

func TestServerEndToEnd(t *testing.T) {
	cfg := config.Default()
	cfg.OpenRooms = true
	s, ln := start(t, cfg)
	base := "http://" + ln.HTTP.Addr().String()
	if !s.TURNSecretGenerated() {
		t.Fatal("secret not generated")
	}
	if a := s.RelayAddress(); a != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("relay address %v, want the TURN socket's own 127.0.0.1", a)
	}

	room, token := newRoom(t, http.DefaultClient, base)

	ws, _, err := websocket.DefaultDialer.Dial("ws://"+ln.HTTP.Addr().String()+"/ws", http.Header{"Origin": {base}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.WriteJSON(signaling.Message{Type: signaling.TypeJoin, Version: signaling.ProtocolVersion, Room: room.ID, Name: "Test", Token: token})
	var welcome signaling.Message
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := ws.ReadJSON(&welcome); err != nil {
		t.Fatal(err)
	}
	if len(welcome.ICEServers) != 1 {
		t.Fatalf("welcome ICE servers: %+v", welcome.ICEServers)
	}
	ice := welcome.ICEServers[0]
	_, port, _ := net.SplitHostPort(ln.TURNUDP.LocalAddr().String())
	_, tcpPort, _ := net.SplitHostPort(ln.TURNTCP.Addr().String())
	if len(ice.URLs) != 2 || ice.URLs[0] != "turn:127.0.0.1:"+port+"?transport=udp" || ice.URLs[1] != "turn:127.0.0.1:"+tcpPort+"?transport=tcp" {
		t.Fatalf("TURN URLs %v, want UDP then TCP", ice.URLs)
	}
	exp, id, ok := strings.Cut(ice.Username, ":")
	if !ok || id != welcome.ID || exp == "" || ice.Credential == "" {
		t.Fatalf("TURN username %q for peer %s", ice.Username, welcome.ID)
	}

	for path, want := range map[string]string{"/healthz": "ok", "/": "Start a consultation", "/e2ee/sframe.js": "SFrame", "/e2ee/worker.js": "onrtctransform"} {
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("%s: %s", path, res.Status)
		}
	}
	res, err := http.Get("http://" + ln.Metrics.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, m := range []string{"parley_rooms 1", "parley_websockets 1", "parley_turn_allocations 0", `parley_turn_relayed_bytes_total{transport="udp"} 0`, `parley_turn_permission_refusals_total{reason="loopback"} 0`, "parley_turn_auth_failures_total 0"} {
		if !strings.Contains(string(b), m) {
			t.Errorf("metrics lack %q", m)
		}
	}
	if strings.Contains(string(b), s.cfg.TURNSecret) {
		t.Error("metrics leak the TURN secret")
	}
}

// TestExternalTURN: with the embedded relay off and -turn-url set, the
// welcome hands out the external server with coturn-style REST
// credentials made from the shared secret.
func TestExternalTURN(t *testing.T) {
	cfg := config.Default()
	cfg.TURNSecret = "shared-with-coturn-0123"
	cfg.TURNURLs = []string{"turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:443?transport=tcp"}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), Listeners{HTTP: httpLn})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Close()
	req, _ := http.NewRequest("GET", "http://x/", nil)
	ice := s.iceServers(req, "peer1")
	if len(ice) != 1 || len(ice[0].URLs) != 2 || ice[0].URLs[1] != cfg.TURNURLs[1] {
		t.Fatalf("ICE servers %+v", ice)
	}
	mac := hmac.New(sha1.New, []byte(cfg.TURNSecret))
	mac.Write([]byte(ice[0].Username))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); ice[0].Credential != want || !strings.HasSuffix(ice[0].Username, ":peer1") {
		t.Fatalf("credentials %q/%q are not coturn use-auth-secret ones", ice[0].Username, ice[0].Credential)
	}
}

// newRoom creates a room as the landing page does (same origin, with a join
// verifier) and returns it with its join token.
func newRoom(t *testing.T, client *http.Client, base string) (signaling.RoomResponse, string) {
	t.Helper()
	tok := make([]byte, signaling.JoinTokenBytes)
	rand.Read(tok)
	body := `{"joinVerifier":"` + base64.RawURLEncoding.EncodeToString(signaling.JoinVerifier(tok)) + `"}`
	req, _ := http.NewRequest("POST", base+"/api/rooms", strings.NewReader(body))
	req.Header.Set("Origin", base)
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var room signaling.RoomResponse
	json.NewDecoder(res.Body).Decode(&room)
	res.Body.Close()
	if res.StatusCode != 201 || res.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("room: %s, CSP %q", res.Status, res.Header.Get("Content-Security-Policy"))
	}
	return room, base64.RawURLEncoding.EncodeToString(tok)
}
