package turn

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	pionturn "github.com/pion/turn/v5"
	"golang.org/x/time/rate"
)

// portTries is how many random ports are tried in RelayPortMin..RelayPortMax
// before giving up, like pion's RelayAddressGeneratorPortRange.
const portTries = 32

// maxLoggedDrops bounds the destinations one relay socket logs drops for;
// each destination is logged once.
const maxLoggedDrops = 8

// relayGenerator is the pion RelayAddressGenerator: it binds one UDP socket
// per allocation on RelayBindIP, advertises PublicIP, sizes the socket
// buffers and wraps the socket in a relayConn. There is one per socket
// given to New; transport is that socket's client transport (a listener's
// TLS connections are told apart later, in onAllocationCreated).
type relayGenerator struct {
	s         *Server
	transport transport
}

var _ pionturn.RelayAddressGenerator = (*relayGenerator)(nil)

// Validate implements pionturn.RelayAddressGenerator; the Config was
// validated already.
func (g *relayGenerator) Validate() error { return nil }

// AllocatePacketConn implements pionturn.RelayAddressGenerator.
func (g *relayGenerator) AllocatePacketConn(conf pionturn.AllocateListenerConfig) (_ net.PacketConn, _ net.Addr, err error) {
	cfg := &g.s.cfg
	switch {
	case conf.Network == "udp4" && cfg.PublicIP.Is4():
	case conf.Network == "udp6" && cfg.PublicIP.Is6():
	default:
		return nil, nil, fmt.Errorf("%w: %s", ErrAddressFamily, conf.Network)
	}

	// Pion calls this without a user only to probe for an even port
	// (EVEN-PORT), closing the socket at once: such sockets count for
	// no quota.
	if conf.UserID != "" {
		if why := g.s.quotas.acquire(conf.UserID); why != "" {
			g.s.refuseQuota(why, conf.UserID, nil)
			return nil, nil, fmt.Errorf("%w: %s", ErrQuotaReached, why)
		}
		defer func() {
			if err != nil {
				g.s.quotas.release(conf.UserID)
			}
		}()
	}
	bind := cfg.bindAddr()
	listen := func(port uint16) (*net.UDPConn, error) {
		return net.ListenUDP(conf.Network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(bind, port)))
	}
	ranged := cfg.RelayPortMin != 0

	var conn *net.UDPConn
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
	rc := &relayConn{
		udp:   conn,
		s:     g.s,
		port:  uint16(local.Port),
		user:  conf.UserID,
		up:    newBandwidthLimiter(cfg.BandwidthPerAllocation),
		down:  newBandwidthLimiter(cfg.BandwidthPerAllocation),
		perms: make(map[netip.Addr]int),
	}
	rc.tr.Store(&g.s.counters.transports[g.transport])
	g.s.addRelay(rc)
	return rc, &net.UDPAddr{IP: cfg.PublicIP.AsSlice(), Port: int(rc.port)}, nil
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

// relayConn wraps one allocation's relay socket. It drops packets towards
// refused destinations (the permission check alone cannot tell our relay
// ports from our other ports on the same IP) and over the bandwidth cap,
// routes relay-to-relay traffic locally and counts traffic.
//
// It also mirrors the allocation's permissions (from pion's permission
// events) to drop, before they cost anything, packets from peers the
// client did not permit: pion would drop them anyway, but they would
// first be counted as relayed and, worse, spend the allocation's
// bandwidth, letting anyone who knows a relay address throttle the call
// by spraying it.
type relayConn struct {
	udp  *net.UDPConn
	s    *Server
	port uint16
	user string // counted in Server.quotas; "" for none

	tr atomic.Pointer[transportCounters]

	up   *rate.Limiter // client to peer; nil: no cap
	down *rate.Limiter // peer to client; nil: no cap

	permMu sync.RWMutex
	client string             // the allocation's 5-tuple, from onAllocationCreated
	perms  map[netip.Addr]int // permitted peer IPs; a count, as create/delete events may cross

	closeOnce sync.Once
	closeErr  error

	logMu         sync.Mutex
	logged        map[netip.AddrPort]struct{}
	loggedBWDrops bool
}

var _ net.PacketConn = (*relayConn)(nil)

// ReadFrom reads a packet from a peer. Packets from peers without a
// permission, or over the bandwidth cap, are dropped here.
func (c *relayConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, src, err := c.udp.ReadFromUDPAddrPort(b)
		if err != nil {
			return n, nil, err
		}
		if translated, ok := c.s.policy.fromRelay(src); ok {
			src = translated
		}
		if !c.permitted(src.Addr()) {
			continue
		}
		if c.down != nil && !c.down.AllowN(time.Now(), n) {
			c.dropBandwidth()
			continue
		}
		c.tr.Load().add(n)
		return n, net.UDPAddrFromAddrPort(src), nil
	}
}

// WriteTo sends a packet to a peer unless the policy refuses the
// destination or the bandwidth cap is reached, in which case the packet
// is dropped silently (reported as written, so that pion does not treat
// it as a socket failure).
func (c *relayConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("%w: %T", errNotUDPAddr, addr)
	}
	to, why := c.s.policy.route(ua.AddrPort())
	if why != reasonNone {
		c.s.counters.refuse(why)
		c.logDrop(to, why)
		return len(b), nil
	}
	if c.up != nil && !c.up.AllowN(time.Now(), len(b)) {
		c.dropBandwidth()
		return len(b), nil
	}
	n, err := c.udp.WriteToUDPAddrPort(b, to)
	if err == nil {
		c.tr.Load().add(n)
	}
	return n, err
}

// setClient records the allocation's client: its 5-tuple, to match
// permission events, and its transport.
func (c *relayConn) setClient(fiveTuple string, tr *transportCounters) {
	c.tr.Store(tr)
	c.permMu.Lock()
	c.client = fiveTuple
	c.permMu.Unlock()
}

// permissionEvent applies pion's OnPermissionCreated (delta 1) or
// OnPermissionDeleted (delta -1) for this allocation's client.
func (c *relayConn) permissionEvent(fiveTuple string, peer netip.Addr, delta int) {
	peer = peer.Unmap().WithZone("")
	c.permMu.Lock()
	defer c.permMu.Unlock()
	if fiveTuple != c.client {
		return // an event of an earlier allocation on the same port
	}
	if n := c.perms[peer] + delta; n == 0 {
		delete(c.perms, peer)
	} else {
		c.perms[peer] = n
	}
}

func (c *relayConn) permitted(peer netip.Addr) bool {
	peer = peer.Unmap()
	c.permMu.RLock()
	n := c.perms[peer]
	c.permMu.RUnlock()
	return n > 0
}

func (c *relayConn) dropBandwidth() {
	c.s.counters.refuse(reasonBandwidth)
	c.logMu.Lock()
	first := !c.loggedBWDrops
	c.loggedBWDrops = true
	c.logMu.Unlock()
	if first {
		c.s.logRefusal("turn: relay packets dropped", slog.String("reason", reasonBandwidth.String()),
			slog.String("id", c.user), slog.Int("relay_port", int(c.port)),
			slog.Int("bytes_per_second", c.s.cfg.BandwidthPerAllocation))
	}
}

// logDrop logs the first drop towards each destination, for a few
// destinations per relay socket.
func (c *relayConn) logDrop(dst netip.AddrPort, why reason) {
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
		c.s.logRefusal("turn: relay packet dropped", slog.String("reason", why.String()),
			slog.String("peer", dst.String()), slog.Int("relay_port", int(c.port)))
	}
}

// Close closes the relay socket, forgets its port and gives back its
// quota.
func (c *relayConn) Close() error {
	c.closeOnce.Do(func() {
		// Forget the port first: once closed it may be reused by another
		// allocation, which must not be forgotten by us.
		c.s.removeRelay(c)
		c.closeErr = c.udp.Close()
		if c.user != "" {
			c.s.quotas.release(c.user)
		}
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
