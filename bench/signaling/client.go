package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/signaling"
)

var b64 = base64.RawURLEncoding

func newToken() string {
	b := make([]byte, signaling.JoinTokenBytes)
	rand.Read(b)
	return b64.EncodeToString(b)
}

// base is the origin of the timestamps in relayed payloads: sender and
// receiver are goroutines of this process, so the monotonic clock is shared.
var base = time.Now()

// Client connections come from 127.0.0.2 … 127.0.0.33 in turn, so that
// 20,000 connections and the churn's TIME_WAIT sockets never run out of
// ephemeral ports (28,000 per source address here).
var nextLocal atomic.Uint32

func localAddr() *net.TCPAddr {
	n := nextLocal.Add(1)
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+n%32))}
}

var dialer = &websocket.Dialer{
	NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: localAddr()}
		return d.DialContext(ctx, network, addr)
	},
	HandshakeTimeout: 10 * time.Second,
	// Small buffers: the load generator holds as many sockets as the server.
	ReadBufferSize:  1024,
	WriteBufferSize: 1024,
	WriteBufferPool: &sync.Pool{},
}

// counters of what the clients saw, for the report.
var (
	serverErrors sync.Map // code → *atomic.Int64
	relayed      atomic.Int64
	rawErrors    atomic.Int64 // raw senders: bad frames from the server, epoll failures
)

func countError(data []byte) {
	code := "?"
	if i := bytes.Index(data, []byte(`"code":"`)); i >= 0 {
		rest := data[i+8:]
		if j := bytes.IndexByte(rest, '"'); j >= 0 {
			code = string(rest[:j])
		}
	}
	v, _ := serverErrors.LoadOrStore(code, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// conn is one client WebSocket, joined to a room.
type conn struct {
	ws     *websocket.Conn
	id     string // peer id
	resume string // resume token from the welcome
	room   *benchRoom
	peers  []string // ids of the others at welcome

	// Relay latency samples (ns), taken by the reader while recording.
	mu      sync.Mutex
	samples []int64
	at      []int32       // when each sample arrived, in seconds since base
	closed  chan struct{} // closed when the reader stops
}

// recording makes readers keep latency samples of relayed bench messages.
var recording atomic.Bool

// dialJoin opens a WebSocket as the call page does (with its Origin) and
// joins room. It returns the time from the start of the dial to the
// welcome, and from sending join to the welcome.
func dialJoin(ctx context.Context, s *server, rm *benchRoom, name, resume string) (*conn, time.Duration, time.Duration, error) {
	t0 := time.Now()
	ws, _, err := dialer.DialContext(ctx, "ws://"+s.addr+"/ws", http.Header{"Origin": {s.origin}})
	if err != nil {
		return nil, 0, 0, err
	}
	join, _ := json.Marshal(signaling.Message{Type: signaling.TypeJoin, Version: signaling.ProtocolVersion,
		Room: rm.id, Name: name, Token: rm.token, Resume: resume})
	t1 := time.Now()
	if err := ws.WriteMessage(websocket.TextMessage, join); err != nil {
		ws.Close()
		return nil, 0, 0, err
	}
	ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			ws.Close()
			return nil, 0, 0, err
		}
		var m signaling.Message
		if err := json.Unmarshal(data, &m); err != nil {
			ws.Close()
			return nil, 0, 0, err
		}
		switch m.Type {
		case signaling.TypeWelcome:
			t2 := time.Now()
			ws.SetReadDeadline(time.Time{})
			c := &conn{ws: ws, id: m.ID, resume: m.Resume, room: rm, closed: make(chan struct{})}
			for _, p := range m.Peers {
				c.peers = append(c.peers, p.ID)
			}
			return c, t2.Sub(t0), t2.Sub(t1), nil
		case signaling.TypeError:
			countError(data)
			ws.Close()
			return nil, 0, 0, fmt.Errorf("join refused: %s: %s", m.Code, m.Message)
		}
	}
}

// read is the connection's reader: it answers pings (gorilla does, while
// reading), counts errors and takes latency samples of relayed bench
// messages. It returns when the connection ends.
func (c *conn) read() {
	defer close(c.closed)
	buf := make([]byte, 0, 512)
	for {
		_, r, err := c.ws.NextReader()
		if err != nil {
			return
		}
		// Into a buffer of its own, not a new one per message: the load
		// generator shares the CPUs with the server it measures.
		data := buf[:0]
		for {
			if len(data) == cap(data) {
				data = append(data, 0)[:len(data)]
			}
			n, err := r.Read(data[len(data):cap(data)])
			data = data[:len(data)+n]
			if err != nil {
				break
			}
		}
		buf = data[:0]
		takeSample(c, data)
	}
}

// takeSample counts a message the server sent c and, for a relayed bench
// message while recording, keeps its one-way latency.
func takeSample(c *conn, data []byte) {
	if !bytes.HasPrefix(data, []byte(`{"type":"e2ee"`)) {
		if bytes.HasPrefix(data, []byte(`{"type":"error"`)) {
			countError(data)
		}
		return
	}
	i := bytes.Index(data, []byte(`"ts":`))
	if i < 0 {
		return
	}
	j := i + 5
	k := j
	for k < len(data) && data[k] >= '0' && data[k] <= '9' {
		k++
	}
	ts, err := strconv.ParseInt(string(data[j:k]), 10, 64)
	if err != nil {
		return
	}
	now := int64(time.Since(base))
	lat := now - ts
	relayed.Add(1)
	if recording.Load() {
		c.mu.Lock()
		c.samples = append(c.samples, lat)
		c.at = append(c.at, int32(now/int64(time.Second)))
		c.mu.Unlock()
	}
}

// sendBench sends an e2ee message to peer (or to everyone, with to == "")
// whose payload carries the send time.
func (c *conn) sendBench(buf []byte, to string) ([]byte, error) {
	buf = append(buf[:0], `{"type":"e2ee",`...)
	if to != "" {
		buf = append(buf, `"to":"`...)
		buf = append(buf, to...)
		buf = append(buf, `",`...)
	}
	buf = append(buf, `"payload":{"t":"bench","ts":`...)
	buf = strconv.AppendInt(buf, int64(time.Since(base)), 10)
	buf = append(buf, `}}`...)
	c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return buf, c.ws.WriteMessage(websocket.TextMessage, buf)
}

// leave hangs up as the page does: leave, then wait for the server's close.
func (c *conn) leave() error {
	c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	err := c.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"leave"}`))
	if err == nil {
		select {
		case <-c.closed:
		case <-time.After(10 * time.Second):
			err = fmt.Errorf("no close after leave")
		}
	}
	c.ws.Close()
	return err
}

// drop ends the connection without a close frame, as a closed laptop or
// a lost network does (the server keeps the place for a resume): with a
// TCP reset when reset, else with a plain FIN.
func (c *conn) drop(reset bool) {
	if tc, ok := c.ws.UnderlyingConn().(*net.TCPConn); ok && reset {
		tc.SetLinger(0)
	}
	c.ws.Close()
}

// takeSamples returns and clears the latency samples and their arrival
// seconds.
func (c *conn) takeSamples() ([]int64, []int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, at := c.samples, c.at
	c.samples, c.at = nil, nil
	return s, at
}
