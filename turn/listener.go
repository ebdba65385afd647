package turn

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
)

// trackedListener wraps each listener given to New. It remembers the
// accepted connections so that Close can close them (pion closes only the
// listener, and a connection's read loop would otherwise live until the
// client hangs up), and so that an allocation can be labelled with its
// client's transport, TCP or TLS.
type trackedListener struct {
	net.Listener
	s *Server
}

// tlsConn is what makes a connection "tls": *tls.Conn, and wrappers such
// as tlsmux's that keep the TLS state reachable.
type tlsConn interface {
	ConnectionState() tls.ConnectionState
}

// handshaker is a TLS connection that may not have run its handshake yet
// (*tls.Conn from tls.NewListener).
type handshaker interface {
	HandshakeContext(ctx context.Context) error
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tr := transportTCP
	if _, ok := c.(tlsConn); ok {
		tr = transportTLS
	}
	tc := &trackedConn{Conn: c, s: l.s, transport: tr, key: fiveTuple(c.RemoteAddr(), c.LocalAddr())}
	l.s.tcpMu.Lock()
	if l.s.closed {
		l.s.tcpMu.Unlock()
		_ = c.Close()
		return nil, net.ErrClosed
	}
	l.s.tcpConns[tc.key] = tc
	l.s.tcpMu.Unlock()
	return tc, nil
}

// trackedConn is an accepted TURN-over-TCP or TURN-over-TLS connection.
//
// Pion runs the TLS handshake itself, with a 10 s timeout, only for a
// *tls.Conn it can see; wrapped, the connection would handshake lazily on
// the first read with no timeout at all, so Read does what pion would
// have. The cost of the wrapper is that pion's AuthHandler gets no TLS
// state (RequestAttributes.TLS is nil), which Parley does not use.
type trackedConn struct {
	net.Conn
	s          *Server
	transport  transport
	key        string // fiveTuple(remote, local), as pion reports the allocation
	handshaken bool   // only touched by Read, which pion calls from one goroutine
	once       sync.Once
	err        error
}

func (c *trackedConn) Read(b []byte) (int, error) {
	if !c.handshaken {
		c.handshaken = true
		if h, ok := c.Conn.(handshaker); ok {
			ctx, cancel := context.WithTimeout(context.Background(), tlsHandshakeTimeout)
			err := h.HandshakeContext(ctx)
			cancel()
			if err != nil {
				c.s.log.Debug("turn: TLS handshake failed", "client", c.RemoteAddr(), "err", err)
				return 0, err
			}
		}
	}
	return c.Conn.Read(b)
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.tcpMu.Lock()
		if c.s.tcpConns[c.key] == c {
			delete(c.s.tcpConns, c.key)
		}
		c.s.tcpMu.Unlock()
		c.err = c.Conn.Close()
	})
	return c.err
}

// connTransport returns the transport of the accepted connection whose
// remote and local addresses are src and dst; TCP when there is none.
func (s *Server) connTransport(src, dst net.Addr) transport {
	s.tcpMu.Lock()
	defer s.tcpMu.Unlock()
	if c, ok := s.tcpConns[fiveTuple(src, dst)]; ok {
		return c.transport
	}
	return transportTCP
}
