// Package tlsmux shares one TLS port between the web server and the TURN
// relay, so that a firewall that lets only TCP 443 out still reaches the
// page, the signaling WebSocket and the relay.
//
// After the TLS handshake, the connection goes to TURN when the client
// negotiated the ALPN protocol "stun.turn" (RFC 7443), or when its first
// byte has the two top bits clear, as every STUN message has (RFC 8489
// §6: the message type starts with 0b00) — an HTTP request starts with an
// ASCII letter. Everything else goes to the web side. Handshakes run in
// their own goroutines with a deadline, so a slow client never holds up
// the others.
package tlsmux

import (
	"bufio"
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"time"
)

// ALPN protocol ids.
const (
	ProtoTURN  = "stun.turn" // RFC 7443
	ProtoHTTP1 = "http/1.1"
	// ProtoACME is the TLS-ALPN-01 challenge protocol (RFC 8737); its
	// connections end with the handshake.
	ProtoACME = "acme-tls/1"
)

// HandshakeTimeout bounds the TLS handshake and the first byte.
const HandshakeTimeout = 10 * time.Second

// Mux splits one TLS listener into a web listener and a TURN listener.
type Mux struct {
	ln     net.Listener
	cfg    *tls.Config
	log    *slog.Logger
	web    *chanListener
	turn   *chanListener
	once   sync.Once
	closed chan struct{}
}

// New wraps l (a plain TCP listener) with TLS config cfg. cfg's NextProtos
// are replaced by stun.turn and http/1.1 (plus acme-tls/1 when already
// present). Call Serve to start accepting.
func New(l net.Listener, cfg *tls.Config, logger *slog.Logger) *Mux {
	c := cfg.Clone()
	protos := []string{ProtoHTTP1, ProtoTURN}
	for _, p := range cfg.NextProtos {
		if p == ProtoACME {
			protos = append(protos, ProtoACME)
		}
	}
	c.NextProtos = protos
	m := &Mux{ln: l, cfg: c, log: logger, closed: make(chan struct{})}
	m.web = newChanListener(l.Addr(), m.closed)
	m.turn = newChanListener(l.Addr(), m.closed)
	return m
}

// Web is the listener for the HTTPS server: connections are TLS, already
// handshaken.
func (m *Mux) Web() net.Listener { return m.web }

// TURN is the listener for the TURN relay (TURN over TLS).
func (m *Mux) TURN() net.Listener { return m.turn }

// Serve accepts connections until the listener is closed.
func (m *Mux) Serve() error {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.closed:
				return ErrClosed
			default:
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			m.Close()
			return err
		}
		go m.route(c)
	}
}

func (m *Mux) route(raw net.Conn) {
	tc := tls.Server(raw, m.cfg)
	tc.SetDeadline(time.Now().Add(HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		m.log.Debug("TLS handshake failed", "remote", raw.RemoteAddr().String(), "err", err)
		raw.Close()
		return
	}
	proto := tc.ConnectionState().NegotiatedProtocol
	if proto == ProtoACME {
		tc.Close()
		return
	}
	br := bufio.NewReaderSize(tc, 4096)
	toTURN := proto == ProtoTURN
	if proto != ProtoHTTP1 && !toTURN {
		first, err := br.Peek(1)
		if err != nil {
			tc.Close()
			return
		}
		toTURN = first[0]&0xC0 == 0
	}
	tc.SetDeadline(time.Time{})
	conn := &peekedConn{Conn: tc, r: br}
	target := m.web
	if toTURN {
		target = m.turn
	}
	if !target.deliver(conn) {
		tc.Close()
	}
}

// Close stops accepting and closes both listeners.
func (m *Mux) Close() error {
	var err error
	m.once.Do(func() {
		close(m.closed)
		err = m.ln.Close()
	})
	return err
}

// peekedConn is a TLS connection whose first bytes were read ahead.
type peekedConn struct {
	*tls.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// ConnectionState lets HTTP handlers see the TLS state (r.TLS).
func (c *peekedConn) ConnectionState() tls.ConnectionState { return c.Conn.ConnectionState() }

// chanListener is a net.Listener fed by the mux.
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
	done   chan struct{}
}

func newChanListener(addr net.Addr, muxClosed chan struct{}) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), closed: muxClosed, done: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	case <-l.closed:
		return false
	case <-time.After(HandshakeTimeout):
		return false // nobody accepting
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, ErrClosed
	case <-l.closed:
		return nil, ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
