package signaling

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// newSmallBufferServer is newTestServer whose sockets have a small send
// buffer (no autotuning), so that a client that stops reading fills it
// after a few messages.
func newSmallBufferServer(t *testing.T, cfg Config) *httptest.Server {
	t.Helper()
	s, _ := newTestServer(t, cfg)
	ts := httptest.NewUnstartedServer(s)
	ts.Listener = smallBuffers{ts.Listener}
	ts.Start()
	t.Cleanup(ts.Close)
	return ts
}

type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		c.(*net.TCPConn).SetWriteBuffer(8 << 10)
	}
	return c, err
}

// alicebob joins Alice and then Bob to a new room on ts.
func alicebob(t *testing.T, ts *httptest.Server) (a *wsClient, wa Message, b *wsClient, wb Message) {
	t.Helper()
	room := createRoom(t, ts)
	a = dial(t, ts)
	wa = a.join(room, "Alice")
	b = dial(t, ts)
	wb = b.join(room, "Bob")
	a.expect(TypePeerJoined)
	return a, wa, b, wb
}

// seqMessage is an e2ee message to peer whose payload carries n and size
// bytes of padding that depend on n.
func seqMessage(to string, n, size int) string {
	pad := strings.Repeat(string(rune('a'+n%26)), size)
	return fmt.Sprintf(`{"type":"e2ee","to":%q,"payload":{"n":%d,"pad":%q}}`, to, n, pad)
}

type seqPayload struct {
	N   int    `json:"n"`
	Pad string `json:"pad"`
}

// readSeq reads relayed sequence messages from c and checks each is whole
// and the next in order. It returns how many arrived before the connection
// ended (with the close code) or want arrived.
func readSeq(t *testing.T, c *wsClient, from string, want, size int) (int, int) {
	t.Helper()
	n := 0
	for n < want {
		c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return n, ce.Code
			}
			t.Fatalf("after %d messages: %v", n, err)
		}
		var m Message
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("message %d is not JSON (%d bytes): %v", n, len(data), err)
		}
		if m.Type != TypeE2EE {
			continue
		}
		var p seqPayload
		if err := json.Unmarshal(m.Payload, &p); err != nil {
			t.Fatalf("message %d: payload %v", n, err)
		}
		if m.From != from || p.N != n || p.Pad != strings.Repeat(string(rune('a'+n%26)), size) {
			t.Fatalf("message %d: from %q, n %d, %d bytes of padding: out of order or damaged", n, m.From, p.N, len(p.Pad))
		}
		n++
	}
	return n, 0
}

// A receiver that stops reading fills its socket: direct writes leave the
// rest of a frame to the writer goroutine and later messages queue behind
// it. Once it reads again every message arrives whole and in order, and
// direct writes take over again.
func TestSlowReaderGetsEverythingInOrder(t *testing.T) {
	ts := newSmallBufferServer(t, Config{MessagesPerSecond: 10000, MessageBurst: 10000})
	a, wa, b, wb := alicebob(t, ts)

	const count, size = 200, 12 << 10 // 2.4 MB: more than the sockets hold, under sendQueue messages
	before := deferredWrites.Load()
	for i := range count {
		a.sendRaw(seqMessage(wb.ID, i, size))
	}
	deadline := time.Now().Add(10 * time.Second)
	for deferredWrites.Load() == before {
		if time.Now().After(deadline) {
			t.Fatal("no direct write was left unfinished: the test did not fill the socket")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n, code := readSeq(t, b, wa.ID, count, size); n != count {
		t.Fatalf("Bob got %d of %d messages, then close %d", n, count, code)
	}
	// And the other way, and small ones, as usual.
	b.sendRaw(`{"type":"e2ee","payload":{"k":"after"}}`)
	if e := a.expect(TypeE2EE); e.From != wb.ID || string(e.Payload) != `{"k":"after"}` {
		t.Fatalf("after the backlog: %+v", e)
	}
	a.sendRaw(`{"type":"e2ee","payload":{"k":"back"}}`)
	if e := b.expect(TypeE2EE); e.From != wa.ID || string(e.Payload) != `{"k":"back"}` {
		t.Fatalf("after the backlog: %+v", e)
	}
}

// A receiver that does not read at all is disconnected with 4000 once
// sendQueue messages wait for it; what it was sent before arrives whole
// and in order, and the sender stays connected.
func TestSlowReaderClosed(t *testing.T) {
	ts := newSmallBufferServer(t, Config{MessagesPerSecond: 10000, MessageBurst: 10000})
	a, wa, b, wb := alicebob(t, ts)

	const count, size = sendQueue + 200, 12 << 10
	for i := range count {
		a.sendRaw(seqMessage(wb.ID, i, size))
	}
	// Once this is answered the server has handled all of the above
	// (one reader per connection), all while Bob did not read.
	a.sendRaw(`{"type":"offer","to":"nobody","sdp":"v=0"}`)
	if e := a.expect(TypeError); e.Code != CodeUnknownPeer {
		t.Fatalf("want %s, got %+v", CodeUnknownPeer, e)
	}
	n, code := readSeq(t, b, wa.ID, count, size)
	if code != CloseSlowReader {
		t.Fatalf("Bob got %d of %d messages and close %d, want close %d", n, count, code, CloseSlowReader)
	}
	if n == 0 || n >= count {
		t.Fatalf("Bob got %d of %d messages before the close", n, count)
	}
	a.sendRaw(`{"type":"e2ee","payload":{"k":"still here"}}`)
	a.sendRaw(`{"type":"offer","to":"nobody","sdp":"v=0"}`)
	a.expectError(CodeUnknownPeer)
}

// Frame lengths at the edges of the 7-bit, 16-bit and 64-bit length forms
// reach a standard client whole.
func TestFrameLengths(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	a, wa, b, wb := alicebob(t, ts)
	for _, total := range []int{125, 126, 127, 65535, 65536, 65550} {
		// An offer's SDP may hold '<', which the relayed JSON escapes
		// as \u003c: six bytes for one, so relayed frames can pass 64 KiB.
		relayed := func(sdp string) []byte {
			b, _ := json.Marshal(Message{Type: TypeOffer, From: wa.ID, SDP: sdp})
			return b
		}
		empty := len(relayed("x"))
		k := (total - empty) / 6
		sdp := strings.Repeat("<", k) + strings.Repeat("x", total-empty-6*k+1)
		want := relayed(sdp)
		if len(want) != total {
			t.Fatalf("test: %d-byte frame wanted, made %d", total, len(want))
		}
		// Sent with '<' as it is: the message stays under MaxMessageSize.
		a.sendRaw(`{"type":"offer","to":"` + wb.ID + `","sdp":"` + sdp + `"}`)
		b.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, data, err := b.ws.ReadMessage()
		if err != nil {
			t.Fatalf("%d bytes: %v", total, err)
		}
		if string(data) != string(want) {
			t.Fatalf("sent a %d-byte message, got %d bytes", total, len(data))
		}
	}
}

// The server answers a client's ping with a pong carrying its data, echoes
// the code of a client's close, and pings an idle client.
func TestControlFrames(t *testing.T) {
	_, ts := newTestServer(t, Config{PingInterval: 100 * time.Millisecond})
	c := dial(t, ts)
	pongs := make(chan string, 4)
	c.ws.SetPongHandler(func(data string) error { pongs <- data; return nil })
	pings := make(chan struct{}, 16)
	c.ws.SetPingHandler(func(data string) error {
		pings <- struct{}{}
		return c.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	go func() {
		for {
			if _, _, err := c.ws.ReadMessage(); err != nil {
				close(pongs)
				return
			}
		}
	}()
	if err := c.ws.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case data := <-pongs:
		if data != "are you there" {
			t.Fatalf("pong %q", data)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
	select {
	case <-pings:
	case <-time.After(5 * time.Second):
		t.Fatal("no ping from the server")
	}

	d := dial(t, ts)
	d.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "bye"))
	if code := d.expectClose(); code != websocket.CloseGoingAway {
		t.Fatalf("close answered with %d, want %d", code, websocket.CloseGoingAway)
	}
}
