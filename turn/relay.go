package turn

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	pionturn "github.com/pion/turn/v5"
)

// portTries is how many random ports are tried in RelayPortMin..RelayPortMax
// before giving up, like pion's RelayAddressGeneratorPortRange.
const portTries = 32

// maxLoggedDrops bounds the destinations one relay socket logs drops for;
// each destination is logged once.
const maxLoggedDrops = 8

// relayGenerator is the pion RelayAddressGenerator: it binds one UDP socket
// per allocation on RelayBindIP, advertises PublicIP, sizes the socket
// buffers and wraps the socket in a relayConn.
type relayGenerator struct{ s *Server }

var _ pionturn.RelayAddressGenerator = (*relayGenerator)(nil)

// Validate implements pionturn.RelayAddressGenerator; the Config was
// validated already.
func (g *relayGenerator) Validate() error { return nil }

// AllocatePacketConn implements pionturn.RelayAddressGenerator.
func (g *relayGenerator) AllocatePacketConn(conf pionturn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	cfg := &g.s.cfg
	switch {
	case conf.Network == "udp4" && cfg.PublicIP.Is4():
	case conf.Network == "udp6" && cfg.PublicIP.Is6():
	default:
		return nil, nil, fmt.Errorf("%w: %s", ErrAddressFamily, conf.Network)
	}
	bind := cfg.bindAddr()
	listen := func(port uint16) (*net.UDPConn, error) {
		return net.ListenUDP(conf.Network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(bind, port)))
	}
	ranged := cfg.RelayPortMin != 0

	var conn *net.UDPConn
	var err error
	switch {
	case conf.RequestedPort != 0:
		if conf.RequestedPort > 0xffff || (ranged &&
			(conf.RequestedPort < int(cfg.RelayPortMin) || conf.RequestedPort > int(cfg.RelayPortMax))) {
			return nil, nil, fmt.Errorf("%w: %d", ErrPortOutOfRange, conf.RequestedPort)
		}
		conn, err = listen(uint16(conf.RequestedPort))
	case ranged:
		span := uint32(cfg.RelayPortMax-cfg.RelayPortMin) + 1
		for range portTries {
			port := cfg.RelayPortMin + uint16(rand.Uint32N(span))
			if conn, err = listen(port); err == nil {
				break
			}
		}
		if err != nil {
			err = fmt.Errorf("%w %d-%d: %w", ErrPortInUse, cfg.RelayPortMin, cfg.RelayPortMax, err)
		}
	default:
		conn, err = listen(0)
	}
	if err != nil {
		return nil, nil, err
	}

	g.setBuffers(conn)

	local, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("turn: relay socket has address %T", conn.LocalAddr())
	}
	port := uint16(local.Port)
	g.s.policy.addLive(port)
	rc := &relayConn{udp: conn, s: g.s, port: port}
	return rc, &net.UDPAddr{IP: cfg.PublicIP.AsSlice(), Port: int(port)}, nil
}

func (g *relayGenerator) setBuffers(conn *net.UDPConn) {
	size := g.s.cfg.SocketBuffer
	if size < 0 {
		return
	}
	rcv, snd, err := SetSocketBuffers(conn, size)
	g.s.bufOnce.Do(func() {
		switch {
		case err != nil:
			g.s.log.Warn("turn: cannot size relay socket buffers", "err", err)
		case rcv < size || snd < size:
			g.s.log.Warn("turn: relay socket buffers are smaller than requested; raise net.core.rmem_max/wmem_max or run with CAP_NET_ADMIN",
				"requested", size, "rcvbuf", rcv, "sndbuf", snd)
		default:
			g.s.log.Debug("turn: relay socket buffers", "requested", size, "rcvbuf", rcv, "sndbuf", snd)
		}
	})
}

// AllocateListener implements pionturn.RelayAddressGenerator. RFC 6062 TCP
// relays are not offered.
func (g *relayGenerator) AllocateListener(pionturn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return nil, nil, ErrTCPRelayUnsupported
}

// AllocateConn implements pionturn.RelayAddressGenerator. RFC 6062 TCP
// relays are not offered.
func (g *relayGenerator) AllocateConn(pionturn.AllocateConnConfig) (net.Conn, error) {
	return nil, ErrTCPRelayUnsupported
}

// relayConn wraps one allocation's relay socket. It counts traffic, drops
// packets towards refused destinations (the permission check alone cannot
// tell our relay ports from our other ports on the same IP), and routes
// relay-to-relay traffic locally.
type relayConn struct {
	udp  *net.UDPConn
	s    *Server
	port uint16

	closeOnce sync.Once
	closeErr  error

	logMu  sync.Mutex
	logged map[netip.AddrPort]struct{}
}

var _ net.PacketConn = (*relayConn)(nil)

// ReadFrom reads a packet from a peer.
func (c *relayConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, src, err := c.udp.ReadFromUDPAddrPort(b)
	if err != nil {
		return n, nil, err
	}
	c.s.packetsRelayed.Add(1)
	c.s.bytesRelayed.Add(uint64(n))
	if translated, ok := c.s.policy.fromRelay(src); ok {
		src = translated
	}
	return n, net.UDPAddrFromAddrPort(src), nil
}

// WriteTo sends a packet to a peer unless the policy refuses the
// destination, in which case the packet is dropped silently (reported as
// written, so that pion does not treat it as a socket failure).
func (c *relayConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("%w: %T", errNotUDPAddr, addr)
	}
	to, reason := c.s.policy.route(ua.AddrPort())
	if reason != "" {
		c.s.permissionRefusals.Add(1)
		c.logDrop(to, reason)
		return len(b), nil
	}
	n, err := c.udp.WriteToUDPAddrPort(b, to)
	if err == nil {
		c.s.packetsRelayed.Add(1)
		c.s.bytesRelayed.Add(uint64(n))
	}
	return n, err
}

// logDrop logs the first drop towards each destination, for a few
// destinations per relay socket.
func (c *relayConn) logDrop(dst netip.AddrPort, reason string) {
	c.logMu.Lock()
	_, seen := c.logged[dst]
	first := !seen && len(c.logged) < maxLoggedDrops
	if first {
		if c.logged == nil {
			c.logged = make(map[netip.AddrPort]struct{})
		}
		c.logged[dst] = struct{}{}
	}
	c.logMu.Unlock()
	if first {
		c.s.logRefusal("turn: relay packet dropped", slog.String("reason", reason),
			slog.String("peer", dst.String()), slog.Int("relay_port", int(c.port)))
	}
}

// Close closes the relay socket and forgets its port.
func (c *relayConn) Close() error {
	c.closeOnce.Do(func() {
		// Forget the port first: once closed it may be reused by another
		// allocation, which must not be forgotten by us.
		c.s.policy.removeLive(c.port)
		c.closeErr = c.udp.Close()
	})
	return c.closeErr
}

// LocalAddr returns the address the relay socket is bound to.
func (c *relayConn) LocalAddr() net.Addr { return c.udp.LocalAddr() }

// SetDeadline implements net.PacketConn.
func (c *relayConn) SetDeadline(t time.Time) error { return c.udp.SetDeadline(t) }

// SetReadDeadline implements net.PacketConn.
func (c *relayConn) SetReadDeadline(t time.Time) error { return c.udp.SetReadDeadline(t) }

// SetWriteDeadline implements net.PacketConn.
func (c *relayConn) SetWriteDeadline(t time.Time) error { return c.udp.SetWriteDeadline(t) }
