package signaling

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// newSmallBufferServer is newTestServer whose sockets have a small send
// buffer (no autotuning), so that a client that stops reading fills it
// after a few messages; over TLS if tls.
func newSmallBufferServer(t *testing.T, cfg Config, tls bool) *httptest.Server {
	t.Helper()
	s, _ := newTestServer(t, cfg)
	ts := httptest.NewUnstartedServer(s)
	ts.Listener = smallBuffers{ts.Listener}
	if tls {
		ts.StartTLS()
	} else {
		ts.Start()
	}
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
func alicebob(t *testing.T, ts *httptest.Server) (room string, a *wsClient, wa Message, b *wsClient, wb Message) {
	t.Helper()
	room = createRoom(t, ts)
	a = dial(t, ts)
	wa = a.join(room, "Alice")
	b = dial(t, ts)
	wb = b.join(room, "Bob")
	a.expect(TypePeerJoined)
	return room, a, wa, b, wb
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
// direct writes take over again. Over TLS (no direct writes) the writer
// goroutine does it all.
func TestSlowReaderGetsEverythingInOrder(t *testing.T) {
	for _, tls := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "TLS"}[tls], func(t *testing.T) {
			ts := newSmallBufferServer(t, Config{MessagesPerSecond: 10000, MessageBurst: 10000}, tls)
			_, a, wa, b, wb := alicebob(t, ts)

			const count, size = 200, 12 << 10 // 2.4 MB: more than the sockets hold, under sendQueue messages
			before := deferredWrites.Load()
			for i := range count {
				a.sendRaw(seqMessage(wb.ID, i, size))
			}
			a.sendRaw(`{"type":"offer","to":"nobody","sdp":"v=0"}`)
			if e := a.expect(TypeError); e.Code != CodeUnknownPeer {
				t.Fatalf("want %s, got %+v", CodeUnknownPeer, e)
			}
			if !tls && deferredWrites.Load() == before {
				t.Fatal("no direct write was left unfinished: the test did not fill the socket")
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
		})
	}
}

// Messages queued for a connection that drops are not lost: its resume
// gets them, after whatever was in flight when it dropped.
func TestDropKeepsQueuedMessages(t *testing.T) {
	ts := newSmallBufferServer(t, Config{MessagesPerSecond: 10000, MessageBurst: 10000, WriteTimeout: time.Minute}, false)
	room, a, wa, b, wb := alicebob(t, ts)
	const count, size = 200, 12 << 10
	for i := range count {
		a.sendRaw(seqMessage(wb.ID, i, size))
	}
	a.sendRaw(`{"type":"offer","to":"nobody","sdp":"v=0"}`)
	if e := a.expect(TypeError); e.Code != CodeUnknownPeer {
		t.Fatalf("want %s, got %+v", CodeUnknownPeer, e)
	}
	// Bob's connection ends with a reset, most messages still queued.
	b.ws.UnderlyingConn().(*net.TCPConn).SetLinger(0)
	b.ws.Close()
	b2 := dial(t, ts)
	if w := b2.joinWith(room, "Bob", wb.Resume); w.Type != TypeWelcome || !w.Resumed {
		t.Fatalf("resume: %+v", w)
	}
	last, got := -1, 0
	for last < count-1 {
		b2.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, data, err := b2.ws.ReadMessage()
		if err != nil {
			t.Fatalf("after the resume, %d messages, the last %d: %v", got, last, err)
		}
		var m Message
		var p seqPayload
		if json.Unmarshal(data, &m) != nil || m.Type != TypeE2EE {
			continue
		}
		if err := json.Unmarshal(m.Payload, &p); err != nil || m.From != wa.ID || p.N <= last || p.Pad != strings.Repeat(string(rune('a'+p.N%26)), size) {
			t.Fatalf("after the resume: message %d after %d, or damaged", p.N, last)
		}
		last, got = p.N, got+1
	}
	if got < count/2 {
		t.Fatalf("only %d of %d messages kept for the resume", got, count)
	}
}

// A receiver that does not read at all is disconnected with 4000 once
// sendQueue messages wait for it; what it was sent before arrives whole
// and in order, and the sender stays connected.
func TestSlowReaderClosed(t *testing.T) {
	// Bob starts reading only after all of Alice's messages: the writer
	// must not give up on him before that.
	ts := newSmallBufferServer(t, Config{MessagesPerSecond: 10000, MessageBurst: 10000, WriteTimeout: time.Minute}, false)
	_, a, wa, b, wb := alicebob(t, ts)

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

// readFrame reads one server frame from the raw connection: its first
// header byte, the rest of the header and the payload.
func readFrame(conn net.Conn) (byte, []byte, []byte, error) {
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	h := make([]byte, 2)
	if _, err := io.ReadFull(conn, h); err != nil {
		return 0, nil, nil, err
	}
	var n uint64
	switch l := h[1] & 0x7f; l {
	case 126:
		h = append(h, 0, 0)
		if _, err := io.ReadFull(conn, h[2:]); err != nil {
			return 0, nil, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(h[2:]))
	case 127:
		h = append(h, make([]byte, 8)...)
		if _, err := io.ReadFull(conn, h[2:]); err != nil {
			return 0, nil, nil, err
		}
		n = binary.BigEndian.Uint64(h[2:])
	default:
		n = uint64(l)
	}
	if n > 1<<20 {
		return 0, nil, nil, fmt.Errorf("frame of %d bytes", n)
	}
	p := make([]byte, n)
	_, err := io.ReadFull(conn, p)
	return h[0], h[1:], p, err
}

// Frame lengths at the edges of the 7-bit, 16-bit and 64-bit length forms
// arrive whole, each in the shortest form (RFC 6455 §5.2: browsers refuse
// any other), unmasked, with FIN set.
func TestFrameLengths(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	_, a, wa, b, wb := alicebob(t, ts)
	raw := b.ws.UnderlyingConn() // nothing more comes to Bob until Alice sends
	for _, c := range []struct {
		total int
		head  []byte
	}{
		{125, []byte{125}},
		{126, []byte{126, 0, 126}},
		{127, []byte{126, 0, 127}},
		{65535, []byte{126, 0xff, 0xff}},
		{65536, []byte{127, 0, 0, 0, 0, 0, 1, 0, 0}},
		{65550, []byte{127, 0, 0, 0, 0, 0, 1, 0, 14}},
	} {
		// An offer's SDP may hold '<', which the relayed JSON escapes
		// as \u003c: six bytes for one, so relayed frames can pass 64 KiB.
		relayed := func(sdp string) []byte {
			b, _ := json.Marshal(Message{Type: TypeOffer, From: wa.ID, SDP: sdp})
			return b
		}
		empty := len(relayed("x"))
		k := (c.total - empty) / 6
		sdp := strings.Repeat("<", k) + strings.Repeat("x", c.total-empty-6*k+1)
		want := relayed(sdp)
		if len(want) != c.total {
			t.Fatalf("test: %d-byte frame wanted, made %d", c.total, len(want))
		}
		// Sent with '<' as it is: the message stays under MaxMessageSize.
		a.sendRaw(`{"type":"offer","to":"` + wb.ID + `","sdp":"` + sdp + `"}`)
		first, head, payload, err := readFrame(raw)
		if err != nil {
			t.Fatalf("%d bytes: %v", c.total, err)
		}
		if first != 0x81 || string(head) != string(c.head) || string(payload) != string(want) {
			t.Fatalf("%d bytes: frame %#x, length bytes %v, %d bytes of payload; want 0x81, %v", c.total, first, head, len(payload), c.head)
		}
	}
}

// A frame gorilla refuses (here unmasked) makes gorilla write close 1002;
// and a message over the size limit gets 1009 from the server. Either way
// the close is the last frame: nothing, not even a second close, follows.
func TestOneCloseFrame(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	for _, c := range []struct {
		name string
		send func(*wsClient)
		code int
	}{
		{"unmasked frame", func(c *wsClient) { c.ws.UnderlyingConn().Write([]byte{0x81, 2, 'h', 'i'}) }, websocket.CloseProtocolError},
		{"message over the limit", func(c *wsClient) {
			c.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"e2ee","payload":"`+strings.Repeat("x", MaxMessageSize)+`"}`))
		}, websocket.CloseMessageTooBig},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, a, _, _, _ := alicebob(t, ts)
			c.send(a)
			raw := a.ws.UnderlyingConn()
			var frames []string
			for {
				first, _, payload, err := readFrame(raw)
				if err != nil {
					break // the server dropped the connection
				}
				frames = append(frames, fmt.Sprintf("%#x %q", first, payload))
				if first == 0x88 {
					if len(payload) < 2 || int(binary.BigEndian.Uint16(payload)) != c.code {
						t.Fatalf("close %q, want code %d", payload, c.code)
					}
				}
			}
			if len(frames) != 1 || !strings.HasPrefix(frames[0], "0x88") {
				t.Fatalf("frames after the bad input: %v; want one close", frames)
			}
		})
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
