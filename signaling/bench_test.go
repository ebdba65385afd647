package signaling

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// The relay and join paths, in-process on loopback, for profiles:
//
//	go test -run '^$' -bench . -benchmem -cpuprofile cpu.out ./signaling/
//
// bench/signaling measures the same paths against the real binary.

func benchServer(b *testing.B) (*httptest.Server, string, string) {
	b.Helper()
	s := New(Config{MessagesPerSecond: 1e9, MessageBurst: 1 << 30}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ts := httptest.NewServer(s)
	b.Cleanup(ts.Close)
	token := newToken()
	req, _ := http.NewRequest("POST", ts.URL+"/api/rooms", strings.NewReader(`{"joinVerifier":"`+verifierOf(token)+`"}`))
	req.Header.Set("Origin", ts.URL)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	var rr RoomResponse
	if err := json.NewDecoder(res.Body).Decode(&rr); err != nil || res.StatusCode != http.StatusCreated {
		b.Fatalf("create room: %s %v", res.Status, err)
	}
	return ts, rr.ID, token
}

func benchJoin(b *testing.B, ts *httptest.Server, room, token string) (*websocket.Conn, string) {
	b.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+"/ws", http.Header{"Origin": {ts.URL}})
	if err != nil {
		b.Fatal(err)
	}
	join, _ := json.Marshal(Message{Type: TypeJoin, Version: ProtocolVersion, Room: room, Name: "Bench", Token: token})
	if err := ws.WriteMessage(websocket.TextMessage, join); err != nil {
		b.Fatal(err)
	}
	for {
		var m Message
		if err := ws.ReadJSON(&m); err != nil {
			b.Fatal(err)
		}
		if m.Type == TypeWelcome {
			return ws, m.ID
		}
	}
}

// BenchmarkRelay sends an e2ee message from A to B and waits for it.
func BenchmarkRelay(b *testing.B) {
	ts, room, token := benchServer(b)
	a, _ := benchJoin(b, ts, room, token)
	defer a.Close()
	bob, bobID := benchJoin(b, ts, room, token)
	defer bob.Close()
	if _, _, err := a.ReadMessage(); err != nil { // peer-joined
		b.Fatal(err)
	}
	msg := []byte(`{"type":"e2ee","to":"` + bobID + `","payload":{"t":"bench","ts":1234567890123}}`)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := a.WriteMessage(websocket.TextMessage, msg); err != nil {
			b.Fatal(err)
		}
		if _, _, err := bob.ReadMessage(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJoin dials, joins, waits for the welcome and leaves.
func BenchmarkJoin(b *testing.B) {
	ts, room, token := benchServer(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		ws, _ := benchJoin(b, ts, room, token)
		ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"leave"}`))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				break
			}
		}
		ws.Close()
	}
}
