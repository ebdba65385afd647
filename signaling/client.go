package signaling

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"
)

// sendQueue is how many messages may wait for one slow client before it is
// disconnected (close 4000) rather than stall the room.
const sendQueue = 256

// A connection that keeps sending over its rate limit is closed with 1008:
// dropped messages fill a bucket of floodBurst that drains at floodRate per
// second. Dropped messages are answered with rate-limited, at most four a second.
const (
	floodBurst = 50
	floodRate  = 5
)

// client is one WebSocket connection. Only run's goroutine reads; the send
// side (writer.go) writes, one writer at a time (apart from gorilla's own
// close 1002 on a frame it refuses, after which nothing more is written).
type client struct {
	srv  *Server
	ws   *websocket.Conn
	req  *http.Request
	log  *slog.Logger
	wake chan struct{} // (capacity 1) tells the writer that out has messages
	done chan struct{} // closed when the writer stops

	closeOnce sync.Once
	stop      chan struct{} // closed to make the writer send a close and quit
	closeSent atomic.Bool   // gorilla wrote a close frame itself: the writer writes nothing more
	closeCode int
	closeText string

	// Set once joined; read by other goroutines under room.mu.
	id   string
	name string
	room *room
	role string // in a consultation: RoleHost or RoleGuest

	// In a consultation's waiting room; both guarded by room.mu (the host's
	// goroutine admits).
	waiting bool
	knock   json.RawMessage // the guest's hello, for the host

	// Resume (persist.go). resumeHash, joinedAt and detachedAt are guarded
	// by room.mu; detached, pending and overflow by pmu (enqueue runs under
	// other locks too).
	resumeHash []byte
	joinedAt   time.Time
	detachedAt time.Time
	pmu        sync.Mutex
	detached   bool
	pending    [][]byte
	overflow   bool

	// The send side (writer.go), guarded by pmu: out[head:] wait for the
	// writer, at most sendQueue of them (a slice rather than a channel of
	// sendQueue messages, which would take 6 KiB on every connection, idle
	// or not); busy while somebody writes to the socket; rest is the tail
	// of a frame a direct write could not finish, which goes out first;
	// pingDue and pongDue are control frames to send.
	out     [][]byte
	head    int
	busy    bool
	rest    []byte
	pingDue bool
	pongDue bool
	pong    []byte
	conn    net.Conn      // ws's connection, which only the send side writes to
	direct  *directWriter // nil if conn has no descriptor of its own (TLS)

	limiter  *rate.Limiter
	flood    *rate.Limiter
	lastWarn time.Time
	left     bool // sent leave (only run's goroutine)
}

func newClient(s *Server, ws *websocket.Conn, r *http.Request) *client {
	c := &client{
		srv:     s,
		ws:      ws,
		req:     r,
		log:     s.log.With("conn", newID(6)),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		stop:    make(chan struct{}),
		limiter: rate.NewLimiter(rate.Limit(s.cfg.MessagesPerSecond), s.cfg.MessageBurst),
		flood:   rate.NewLimiter(floodRate, floodBurst),
	}
	c.conn = ws.NetConn()
	c.direct = newDirectWriter(c.conn)
	// gorilla would answer pings and close frames by writing to the
	// connection itself; only the send side writes (writer.go).
	ws.SetPingHandler(func(data string) error {
		c.control(func() { c.pongDue, c.pong = true, []byte(data) })
		return nil
	})
	ws.SetCloseHandler(func(code int, text string) error {
		// Echo the client's code, as RFC 6455 §5.5.1 suggests.
		c.closeWith(code, "")
		return nil
	})
	return c
}

func (c *client) run() {
	go c.writer()
	readFailed := false
	defer func() {
		// Without a leave, keep the place for a resume (a network change,
		// a server restart); with one, or when refused, the member is gone.
		if !c.left && !c.detach() {
			c.leaveRoom("disconnected")
		}
		c.closeWith(websocket.CloseNormalClosure, "")
		<-c.done
		if !readFailed {
			// We ended the connection: read (and drop) until the client
			// answers our close frame, so that closing the socket with
			// unread data does not reset the connection and lose the
			// close frame and the error before it.
			c.ws.SetReadDeadline(time.Now().Add(2 * time.Second))
			for {
				if _, _, err := c.ws.NextReader(); err != nil {
					break
				}
			}
		}
		c.ws.Close()
	}()

	// No read limit in gorilla, which would write its own close frame
	// past it: readMessage counts, and the send side closes with 1009.
	c.ws.SetReadLimit(0)
	timeout := c.srv.cfg.PingInterval * 5 / 2
	c.ws.SetReadDeadline(time.Now().Add(timeout))
	c.ws.SetPongHandler(func(string) error {
		c.ws.SetReadDeadline(time.Now().Add(timeout))
		return nil
	})

	for {
		kind, buf, err := readMessage(c.ws)
		if err != nil {
			readFailed = true
			var ce *websocket.CloseError
			switch {
			case errors.Is(err, errTooBig):
				c.log.Info("message over size limit; closing", "limit", MaxMessageSize)
				c.closeWith(websocket.CloseMessageTooBig, "")
			case errors.As(err, &ce):
				c.log.Debug("client closed", "code", ce.Code)
			case isTimeout(err):
				c.log.Info("no keepalive answer; closing")
				c.closeWith(CloseIdleTimeout, "No answer to keepalive.")
			default:
				// A broken connection, or a frame gorilla refused, in which
				// case gorilla has written close 1002 itself: nothing more
				// may follow it (RFC 6455 §5.5.1).
				c.log.Debug("read ended", "err", err)
				c.closeSent.Store(true)
			}
			return
		}
		c.ws.SetReadDeadline(time.Now().Add(timeout))
		data := *buf
		if !c.limiter.Allow() {
			putReadBuffer(buf)
			if !c.flood.Allow() {
				c.log.Info("message flood; closing")
				c.closeWith(websocket.ClosePolicyViolation, "Too many messages.")
				return
			}
			if time.Since(c.lastWarn) > time.Second/4 {
				c.lastWarn = time.Now()
				c.sendError(protoErr(CodeRateLimited, "Too many messages at once: some were dropped. Slow down.", nil))
			}
			continue
		}
		if kind != websocket.TextMessage {
			putReadBuffer(buf)
			c.sendError(protoErr(CodeBadMessage, "Messages must be JSON text.", ErrBadMessage))
			continue
		}
		m := messages.Get().(*Message)
		err = decodeInto(m, data)
		// The decoded message holds copies: the buffer may go back.
		putReadBuffer(buf)
		if err != nil {
			putMessage(m)
			var pe *ProtocolError
			if errors.As(err, &pe) {
				c.sendError(pe)
			}
			continue
		}
		stop := c.handle(m)
		putMessage(m)
		if stop {
			return
		}
	}
}

// messages holds the Message each read is decoded into (about 500 bytes,
// which would otherwise be allocated for every message). handle keeps
// fields (a knock's payload, a roster), which are allocations of their
// own, but never the Message.
var messages = sync.Pool{New: func() any { return new(Message) }}

func putMessage(m *Message) {
	*m = Message{}
	messages.Put(m)
}

// readBuffers lends the reader a buffer for one message at a time, as
// frameBuffers does the send side: an idle connection holds none, and a
// busy one does not allocate a new buffer for every message.
var readBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// readMessage is gorilla's ReadMessage into a buffer from readBuffers;
// give it back with putReadBuffer once the message is decoded. A message
// over MaxMessageSize is errTooBig, found once that much of it is read;
// every other error is gorilla's, as with ReadMessage.
func readMessage(ws *websocket.Conn) (int, *[]byte, error) {
	kind, r, err := ws.NextReader()
	if err != nil {
		return kind, nil, err
	}
	bp := readBuffers.Get().(*[]byte)
	b := (*bp)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if len(b) > MaxMessageSize {
			*bp = b
			putReadBuffer(bp)
			return kind, nil, errTooBig
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			*bp = b
			putReadBuffer(bp)
			return kind, nil, err
		}
	}
	*bp = b
	return kind, bp, nil
}

// putReadBuffer returns a buffer to readBuffers, unless a large message
// (an SDP offer) grew it: those are rare and not worth keeping.
func putReadBuffer(bp *[]byte) {
	if cap(*bp) <= 16<<10 {
		readBuffers.Put(bp)
	}
}

// handle acts on one decoded message; it reports whether to end the connection.
func (c *client) handle(m *Message) bool {
	if c.room == nil && m.Type != TypeJoin {
		c.sendError(protoErr(CodeNotJoined, "Join a room first.", nil))
		return false
	}
	if c.room != nil && m.Type != TypeJoin && m.Type != TypeLeave && c.isWaiting() {
		c.fromWaiting(m)
		return false
	}
	switch m.Type {
	case TypeJoin:
		if c.room != nil {
			c.sendError(protoErr(CodeAlreadyJoined, "You are already in this call.", nil))
			return false
		}
		if err := c.join(m); err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				pe = protoErr(CodeInternal, "Something went wrong on the server.", err)
			}
			// A failed join ends the connection: the client must fix its
			// request and connect again.
			c.refuse(pe)
			return true
		}
	case TypeOffer, TypeAnswer, TypeCandidate, TypeE2EE, TypeRestartICE:
		c.forward(m)
	case TypeICERefresh:
		// TURN credentials expire (turn-credential-ttl); a long call asks
		// for new ones before an ICE restart would need them.
		c.queue(Message{Type: TypeICEServers, ICEServers: c.srv.cfg.ICEServers(c.req, c.id)})
	case TypeAdmit, TypeDeny, TypeRemove, TypeRoster, TypeEnd:
		return c.hostMessage(m)
	case TypeLeave:
		c.left = true
		c.leaveRoom("left")
		c.closeWith(websocket.CloseNormalClosure, "bye")
		return true
	}
	return false
}

// isWaiting reports whether the client is in a waiting room.
func (c *client) isWaiting() bool {
	rm := c.room
	rm.mu.Lock()
	defer rm.mu.Unlock()
	return c.waiting
}

func (c *client) join(m *Message) error {
	if m.Version != ProtocolVersion {
		return protoErr(CodeVersion, "This page is out of date. Please reload it.", nil)
	}
	name, err := CleanName(m.Name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	rm, err := c.srv.rooms.get(ctx, m.Room)
	cancel()
	if err != nil {
		var pe *ProtocolError
		if errors.As(err, &pe) {
			return pe
		}
		if errors.Is(err, ErrRoomNotFound) {
			return protoErr(CodeRoomNotFound, msgRoomNotFound, err)
		}
		c.log.Error("room lookup", "err", err)
		return protoErr(CodeInternal, "Something went wrong on the server.", err)
	}
	c.id, c.name = newID(9), name

	rm.mu.Lock()
	defer rm.mu.Unlock()
	// The join token comes first: whoever holds only the room id learns
	// nothing more (not even whether the call is full, or its title).
	if !tokenMatches(m.Token, rm.verifier) {
		c.log.Info("join refused: bad join token")
		return protoErr(CodeBadToken, msgBadToken, ErrBadToken)
	}
	if m.Resume != "" {
		return c.resume(rm, m.Resume)
	}
	c.joinedAt = time.Now()
	if rm.consult != nil {
		if !c.srv.consults.IsHost(c.req, rm.id) {
			return c.enterWaiting(rm)
		}
		c.role = RoleHost
	}
	if len(rm.peers) >= MaxPeers {
		return protoErr(CodeRoomFull, msgRoomFull, ErrRoomFull)
	}
	if c.role == RoleHost && rm.host != nil {
		// The host opened the consultation again (another window, a
		// reload whose old connection lingers): the newer one hosts.
		old := rm.host
		rm.removePeer(old, "disconnected")
		old.refuse(protoErr(CodeReplaced, msgReplaced, nil))
	}
	rm.admit(c, c.srv.cfg.ICEServers(c.req, c.id))
	c.log = c.log.With("peer", c.id)
	c.log.Info("joined", "peers", len(rm.peers), "role", c.role)
	return nil
}

// admit makes c a member of the room: the others get peer-joined, c gets
// its welcome (queued under the room lock, so that it precedes any message
// another member sends it). rm.mu is held.
func (rm *room) admit(c *client, ice []ICEServer) {
	joined, _ := json.Marshal(Message{Type: TypePeerJoined, Peer: &Peer{ID: c.id, Name: c.name}})
	for _, p := range rm.peers {
		p.enqueue(joined)
	}
	rm.peers[c.id] = c
	rm.order = append(rm.order, c.id)
	rm.lastUsed = time.Now()
	rm.joined = true
	c.room = rm
	if rm.consult != nil && c.role == RoleHost {
		rm.host = c
		present, _ := json.Marshal(Message{Type: TypeHost, HostPresent: boolp(true)})
		for _, g := range rm.waiting {
			g.enqueue(present)
		}
	}
	tok, hash := newResume()
	c.resumeHash = hash
	// Kept before the welcome goes out (the write may be immediate).
	c.srv.persist.SaveMember(rm.id, c.saved())
	if rm.consult == nil {
		c.srv.persist.SaveRoom(rm.saved())
	}
	c.queue(rm.welcomeFor(c, ice, tok, false))
}

// welcomeFor is c's welcome: its id, the others, ICE servers, the resume
// token and, in a consultation, its role, the title and the roster (and for
// the host the waiting guests and the lock). rm.mu is held.
func (rm *room) welcomeFor(c *client, ice []ICEServer, resume string, resumed bool) Message {
	peers := make([]Peer, 0, len(rm.order))
	for _, id := range rm.order {
		if id != c.id {
			peers = append(peers, Peer{ID: id, Name: rm.peers[id].name})
		}
	}
	w := Message{Type: TypeWelcome, Version: ProtocolVersion, ID: c.id, Peers: peers, ICEServers: ice, MaxPeers: MaxPeers,
		MaxFileBytes: c.srv.cfg.MaxFileBytes, Resume: resume, Resumed: resumed}
	if rm.consult != nil {
		w.Role, w.Title, w.Roster = c.role, rm.consult.Title, rm.roster
		if c.role == RoleHost {
			w.Waiting = rm.knocks()
			w.Locked = boolp(rm.locked)
		}
	}
	return w
}

// forward delivers an addressed message (or, for e2ee without "to", a
// broadcast) to the other participants with "from" set.
func (c *client) forward(in *Message) {
	// Only the fields of the message's own type go on: nothing else a
	// client sets reaches the others.
	out := Message{Type: in.Type, From: c.id}
	switch in.Type {
	case TypeOffer, TypeAnswer:
		out.SDP = in.SDP
	case TypeCandidate:
		out.Candidate = in.Candidate
	case TypeE2EE:
		out.Payload = in.Payload
	}
	to := in.To
	var data []byte
	if out.Type == TypeE2EE {
		data = relayedE2EE(c.id, out.Payload)
	} else {
		// Written over in, which is on the heap already: a new *Message
		// given to json.Marshal would be one more allocation.
		*in = out
		data, _ = json.Marshal(in)
	}
	rm := c.room
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if to == "" && out.Type == TypeE2EE {
		for id, p := range rm.peers {
			if id != c.id {
				p.enqueue(data)
			}
		}
		return
	}
	p := rm.peers[to]
	if p == nil || to == c.id {
		c.queue(Message{Type: TypeError, Code: CodeUnknownPeer, Message: "That participant is no longer in the call.", Reason: to})
		return
	}
	p.enqueue(data)
}

// relayedE2EE is json.Marshal(Message{Type: TypeE2EE, From: from, Payload:
// payload}) without encoding/json's reflection: the most frequent message
// the server relays. from is a peer id (newID: base64url, nothing to
// escape); payload is a JSON value that the decoder has checked. As with
// json.Marshal, white space outside strings is dropped from it
// (docs/protocol.md); unlike it, <, > and & in its strings are not
// escaped as \u003c and the like: the same value to any JSON parser.
func relayedE2EE(from string, payload json.RawMessage) []byte {
	const head, mid, tail = `{"type":"e2ee","from":"`, `","payload":`, `}`
	b := make([]byte, 0, len(head)+len(from)+len(mid)+len(payload)+len(tail))
	b = append(b, head...)
	b = append(b, from...)
	b = append(b, mid...)
	if bytes.ContainsAny(payload, " \t\r\n") {
		// Maybe white space outside strings (inside them only a space
		// may stand unescaped): compact.
		buf := bytes.NewBuffer(b)
		if json.Compact(buf, payload) == nil {
			b = buf.Bytes()
		} else {
			b = append(b, payload...) // cannot happen: the decoder checked it
		}
	} else {
		b = append(b, payload...)
	}
	return append(b, tail...)
}

func (c *client) leaveRoom(reason string) {
	rm := c.room
	if rm == nil {
		return
	}
	c.room = nil
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if c.waiting {
		rm.leaveWaiting(c)
		return
	}
	rm.removePeer(c, reason)
}

// removePeer takes c out of the room and tells the others. rm.mu is held.
// A no-op if c is not (any more) a member: the host may have removed it.
func (rm *room) removePeer(c *client, reason string) {
	if rm.peers[c.id] != c {
		return
	}
	delete(rm.peers, c.id)
	for i, id := range rm.order {
		if id == c.id {
			rm.order = append(rm.order[:i], rm.order[i+1:]...)
			break
		}
	}
	rm.lastUsed = time.Now()
	c.srv.persist.DeleteMember(rm.id, c.id)
	left, _ := json.Marshal(Message{Type: TypePeerLeft, ID: c.id, Reason: reason})
	for _, p := range rm.peers {
		p.enqueue(left)
	}
	if rm.host == c {
		rm.host = nil
		gone, _ := json.Marshal(Message{Type: TypeHost, HostPresent: boolp(false)})
		for _, g := range rm.waiting {
			g.enqueue(gone)
		}
	}
	c.log.Info("left", "reason", reason, "remaining", len(rm.peers))
}

func (c *client) sendError(e *ProtocolError) {
	c.log.Debug("protocol error", "code", e.Code, "msg", e.Message)
	c.queue(Message{Type: TypeError, Code: e.Code, Message: e.Message})
}

func (c *client) queue(m Message) {
	data, err := json.Marshal(m)
	if err != nil {
		c.log.Error("encode", "err", err)
		return
	}
	c.enqueue(data)
}

// closeWith makes the writer send a close frame and stop. Safe to call from
// any goroutine, any number of times.
func (c *client) closeWith(code int, text string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText = code, text
		close(c.stop)
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
