package signaling

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestJoinTokenRequired: whoever holds only the room id (the part of a
// link before "#") cannot join, learns no name, no peer id, no count and
// no candidate, and takes no seat, even when the call is full.
func TestJoinTokenRequired(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	room := createRoom(t, ts)
	alice := dial(t, ts)
	wa := alice.join(room, "Alice Secret-Name")

	for name, token := range map[string]string{
		"no token":        "",
		"wrong token":     newToken(),
		"malformed token": "not base64 !!",
		"short token":     "AAAA",
	} {
		t.Run(name, func(t *testing.T) {
			eve := dial(t, ts)
			eve.send(Message{Type: TypeJoin, Version: ProtocolVersion, Room: room, Name: "Eve", Token: token})
			var seen []string
			var code int
			for {
				eve.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, data, err := eve.ws.ReadMessage()
				if err != nil {
					ce, ok := err.(*websocket.CloseError)
					if !ok {
						t.Fatalf("ended without a close frame: %v", err)
					}
					code = ce.Code
					break
				}
				seen = append(seen, string(data))
			}
			if code != CloseJoinRefused {
				t.Fatalf("close code %d, want %d", code, CloseJoinRefused)
			}
			if len(seen) != 1 || !strings.Contains(seen[0], `"code":"bad-token"`) || !strings.Contains(seen[0], "whole link") {
				t.Fatalf("want one bad-token error in plain words, got %q", seen)
			}
			all := strings.Join(seen, "")
			for _, leak := range []string{"Alice", wa.ID, "participants", "candidate", "iceServers", "peers"} {
				if strings.Contains(all, leak) {
					t.Fatalf("refused joiner learnt %q: %s", leak, all)
				}
			}
		})
	}
	// Alice heard of nobody.
	if m, err := alice.tryRead(300 * time.Millisecond); err == nil {
		t.Fatalf("Alice was told of a refused joiner: %+v", m)
	}

	// A full call: an outsider still gets bad-token, not room-full.
	for i := 0; i < MaxPeers-1; i++ {
		dial(t, ts).join(room, "Member")
	}
	eve := dial(t, ts)
	eve.send(Message{Type: TypeJoin, Version: ProtocolVersion, Room: room, Name: "Eve"})
	eve.expectError(CodeBadToken)
	if code := eve.expectClose(); code != CloseJoinRefused {
		t.Fatalf("close %d", code)
	}
}

// TestRoomNeedsVerifier: a room is made only with a join verifier; there
// is no "first joiner sets the token" fallback, which would hand a room to
// whoever learns its id first (docs/security.md §2.5).
func TestRoomNeedsVerifier(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	for _, body := range []string{"", `{}`, `{"joinVerifier":""}`, `{"joinVerifier":"short"}`, `{"joinVerifier":1}`,
		`{"other":"x"}`, `[`, `{"joinVerifier":"` + verifierOf(newToken()) + `"} {}`, strings.Repeat(" ", 5000)} {
		res, err := post(ts, "/api/rooms", body)
		if err != nil {
			t.Fatal(err)
		}
		var e map[string]string
		readJSON(t, res, &e)
		if res.StatusCode != http.StatusBadRequest || e["error"] != CodeBadMessage || e["message"] == "" {
			t.Fatalf("body %.20q: %d %v", body, res.StatusCode, e)
		}
	}
}

// TestUnusedRoomsExpire: a room nobody joined is forgotten after
// RoomUnusedTTL, so one address cannot keep the room cap full with rooms
// it never uses; a room that was used lives for RoomTTL.
func TestUnusedRoomsExpire(t *testing.T) {
	g := newRegistry(3, 100, 7*24*time.Hour, time.Hour)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g.now = func() time.Time { return now }
	used, _ := g.create("192.0.2.1", nil)
	used.joined = true
	unused, _ := g.create("192.0.2.1", nil)
	if _, err := g.create("192.0.2.1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := g.create("192.0.2.1", nil); err == nil {
		t.Fatal("the cap of 3 rooms did not hold")
	}
	now = now.Add(59 * time.Minute)
	if _, err := g.get(context.Background(), unused.id); err != nil {
		t.Fatal("an unused room expired before its hour")
	}
	now = now.Add(2 * time.Minute)
	if _, err := g.get(context.Background(), unused.id); err == nil {
		t.Fatal("an unused room outlived RoomUnusedTTL")
	}
	if _, err := g.get(context.Background(), used.id); err != nil {
		t.Fatal("a used room expired with the unused ones")
	}
	if _, err := g.create("192.0.2.1", nil); err != nil {
		t.Fatalf("the cap is still full after the unused rooms expired: %v", err)
	}
	now = now.Add(7 * 24 * time.Hour)
	if _, err := g.get(context.Background(), used.id); err == nil {
		t.Fatal("a used room outlived RoomTTL")
	}
}

// TestIPv6CountsPer64: every address of one /64 shares one budget.
func TestIPv6CountsPer64(t *testing.T) {
	g := newRegistry(100, 2, 7*24*time.Hour, time.Hour)
	for _, ip := range []string{"2001:db8::1", "2001:db8::2:3:4"} {
		if _, err := g.create(ip, nil); err != nil {
			t.Fatalf("%s: %v", ip, err)
		}
	}
	if _, err := g.create("2001:db8::ffff:ffff:ffff:ffff", nil); err == nil {
		t.Fatal("a third address of the same /64 got its own budget")
	}
	if _, err := g.create("2001:db8:0:1::1", nil); err != nil {
		t.Fatalf("another /64 was refused: %v", err)
	}
	if _, err := g.create("::ffff:192.0.2.7", nil); err != nil {
		t.Fatal(err)
	}
	if limitKey("::ffff:192.0.2.7") != "192.0.2.7" || limitKey("2001:db8::1") != "2001:db8::/64" {
		t.Fatalf("limit keys %q %q", limitKey("::ffff:192.0.2.7"), limitKey("2001:db8::1"))
	}
}

// TestOriginSchemeAndMissing: the origin must match scheme and host; a
// request without Origin is refused unless allowed for non-browser clients.
func TestOriginSchemeAndMissing(t *testing.T) {
	check := func(s *Server, origin, xfp, remote string) bool {
		r := httptest.NewRequest("GET", "http://call.example/ws", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if xfp != "" {
			r.Header.Set("X-Forwarded-Proto", xfp)
		}
		if remote != "" {
			r.RemoteAddr = remote
		}
		return s.checkOrigin(r)
	}
	quiet := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	plain := New(Config{}, quiet)
	for origin, want := range map[string]bool{
		"http://call.example":  true,
		"https://call.example": false, // wrong scheme: the request came over plain HTTP
		"ws://call.example":    false,
		"http://evil.example":  false,
		"call.example":         false,
		"":                     false, // missing
	} {
		if got := check(plain, origin, "", ""); got != want {
			t.Errorf("origin %q: %v, want %v", origin, got, want)
		}
	}
	if !check(New(Config{AllowMissingOrigin: true}, quiet), "", "", "") {
		t.Error("AllowMissingOrigin did not admit a request without Origin")
	}
	pub := New(Config{PublicURL: "https://call.example"}, quiet)
	if !check(pub, "https://call.example", "", "") || check(pub, "http://evil.example", "", "") {
		t.Error("public URL origin")
	}
	// X-Forwarded-Proto is believed from a trusted proxy only.
	proxied := New(Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, quiet)
	if !check(proxied, "https://call.example", "https", "10.1.2.3:5555") {
		t.Error("https origin through a trusted TLS proxy refused")
	}
	if check(proxied, "https://call.example", "https", "203.0.113.9:5555") {
		t.Error("X-Forwarded-Proto believed from an untrusted peer")
	}
	if check(proxied, "http://call.example", "https", "10.1.2.3:5555") {
		t.Error("http origin accepted for a request the proxy got over TLS")
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestForwardedForWarning: X-Forwarded-For without -trusted-proxy is
// ignored, and said once in the log.
func TestForwardedForWarning(t *testing.T) {
	var logs syncBuf
	s := New(Config{}, slog.New(slog.NewTextHandler(&logs, nil)))
	ts := httptest.NewServer(s)
	defer ts.Close()
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest("POST", ts.URL+"/api/rooms", strings.NewReader(`{"joinVerifier":"`+verifierOf(newToken())+`"}`))
		req.Header.Set("Origin", ts.URL)
		req.Header.Set("X-Forwarded-For", "203.0.113.5")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	if n := strings.Count(logs.String(), "no -trusted-proxy is set"); n != 1 {
		t.Fatalf("warning logged %d times:\n%s", n, logs.String())
	}
}
