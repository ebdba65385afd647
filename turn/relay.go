package turn

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
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
	lc        *listenConn // the UDP socket whose allocations these are; nil for TCP and TLS
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
	// Allocations of clients on a fast UDP socket get a raw socket that
	// the relay poller reads in batches (Linux); the others a plain one
	// that pion's per-allocation goroutine reads through relayConn.ReadFrom.
	batch := g.lc != nil && g.lc.batched() && g.s.poller != nil
	bind := cfg.bindAddr()
	listen := func(port uint16) (*relayConn, error) {
		if batch {
			return g.s.poller.open(bind, port)
		}
		conn, err := net.ListenUDP(conf.Network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(bind, port)))
		if err != nil {
			return nil, err
		}
		return &relayConn{udp: conn}, nil
	}
	ranged := cfg.RelayPortMin != 0

	var rc *relayConn
	switch {
	case conf.RequestedPort != 0:
		if conf.RequestedPort > 0xffff || (ranged &&
			(conf.RequestedPort < int(cfg.RelayPortMin) || conf.RequestedPort > int(cfg.RelayPortMax))) {
			return nil, nil, fmt.Errorf("%w: %d", ErrPortOutOfRange, conf.RequestedPort)
		}
		rc, err = listen(uint16(conf.RequestedPort))
	case ranged:
		span := uint32(cfg.RelayPortMax-cfg.RelayPortMin) + 1
		for range portTries {
			port := cfg.RelayPortMin + uint16(rand.Uint32N(span))
			if rc, err = listen(port); err == nil {
				break
			}
		}
		if err != nil {
			err = fmt.Errorf("%w %d-%d: %w", ErrPortInUse, cfg.RelayPortMin, cfg.RelayPortMax, err)
		}
	default:
		rc, err = listen(0)
	}
	if err != nil {
		return nil, nil, err
	}

	g.setBuffers(rc)

	port, err := rc.localPort()
	if err != nil {
		_ = rc.closeSocket()
		return nil, nil, err
	}
	rc.s = g.s
	rc.home = g.lc
	rc.port = port
	rc.user = conf.UserID
	rc.up = newBandwidthLimiter(cfg.BandwidthPerAllocation)
	rc.down = newBandwidthLimiter(cfg.BandwidthPerAllocation)
	rc.done = make(chan struct{})
	rc.state.Store(&peerState{})
	rc.tr.Store(&g.s.counters.transports[g.transport])
	g.s.addRelay(rc)
	if rc.raw != nil {
		if err := g.s.poller.add(rc); err != nil {
			_ = rc.Close()
			return nil, nil, err
		}
	}
	return rc, &net.UDPAddr{IP: cfg.PublicIP.AsSlice(), Port: int(rc.port)}, nil
}

func (g *relayGenerator) setBuffers(rc *relayConn) {
	size := g.s.cfg.SocketBuffer
	if size < 0 {
		return
	}
	rcv, snd, err := rc.setBuffers(size)
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

// maxDatagram is the largest datagram the relay reads, as pion's
// inboundMTU: a larger one from a client is left to pion, which drops it,
// and a larger one from a peer is dropped.
const maxDatagram = 1600

// relayConn is one allocation's relay socket, as pion's net.PacketConn.
//
// Its socket is either a plain *net.UDPConn (udp), read by pion's
// per-allocation goroutine through ReadFrom, or on Linux a raw
// non-blocking socket (raw) that the relay poller reads in batches; pion's
// goroutine then only waits in ReadFrom for the socket to close. Clients
// of a fast UDP socket (a listenConn) get their media relayed without
// pion either way: ReadFrom or the poller frames ChannelData and Data
// indications themselves and send them on the listenConn. Only TCP and
// TLS clients' media goes through pion in this direction.
//
// Either way every packet passes the same checks: towards a peer, the
// peer must have a permission (RFC 8656 §9), the relay policy must allow
// the destination (the deny list, and our own IPs only at live relay
// ports), and the bandwidth cap must have room; from a peer, the peer must
// have a permission and the cap room. Permission refusals are silent, as
// in pion (the client's permissions are its own business); policy and
// bandwidth refusals are counted and logged once.
//
// The permissions and channels are mirrored from pion's events into
// state, an immutable value replaced whole on every change, so that the
// per-packet lookups take no lock. Pion's timers expire permissions and
// channels and report it through the same events, so the mirror expires
// with them.
type relayConn struct {
	udp *net.UDPConn // plain socket, or nil
	raw *rawSocket   // batched socket (Linux), or nil

	s    *Server
	home *listenConn // the UDP socket whose client allocated this; nil for TCP and TLS
	port uint16
	user string // counted in Server.quotas; "" for none

	tr atomic.Pointer[transportCounters]

	up   *rate.Limiter // client to peer; nil: no cap
	down *rate.Limiter // peer to client; nil: no cap

	stateMu sync.Mutex                // serializes changes of state
	state   atomic.Pointer[peerState] // never nil once allocated

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	closeErr  error

	inBuf []byte // ReadFrom's buffer, with headroom for a frame (plain socket, fast client)

	logMu         sync.Mutex
	logged        map[netip.AddrPort]struct{}
	loggedBWDrops bool
}

var _ net.PacketConn = (*relayConn)(nil)

// peerState is what the relay knows of its allocation's client, peers and
// channels. It is never modified once published.
type peerState struct {
	fiveTuple string             // the allocation's 5-tuple, to match pion's events
	lc        *listenConn        // the client's fast UDP socket; nil for TCP and TLS clients
	client    netip.AddrPort     // the client's address on lc
	perms     map[netip.Addr]int // permitted peer IPs; a count, as create/delete events may cross
	chans     []channelBinding
}

// channelBinding is a channel bound to a peer transport address.
type channelBinding struct {
	number uint16
	peer   netip.AddrPort
}

func (st *peerState) permitted(peer netip.Addr) bool { return st.perms[peer.Unmap()] > 0 }

// channelPeer returns the peer bound to channel number.
func (st *peerState) channelPeer(number uint16) (netip.AddrPort, bool) {
	for _, c := range st.chans {
		if c.number == number {
			return c.peer, true
		}
	}
	return netip.AddrPort{}, false
}

// channelTo returns the channel bound to peer.
func (st *peerState) channelTo(peer netip.AddrPort) (uint16, bool) {
	for _, c := range st.chans {
		if c.peer == peer {
			return c.number, true
		}
	}
	return 0, false
}

// update replaces the state with a modified copy. f gets a copy whose
// maps and slices it may change.
func (c *relayConn) update(f func(st *peerState)) {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	old := c.state.Load()
	st := &peerState{fiveTuple: old.fiveTuple, lc: old.lc, client: old.client,
		perms: maps.Clone(old.perms), chans: slices.Clone(old.chans)}
	if st.perms == nil {
		st.perms = make(map[netip.Addr]int)
	}
	f(st)
	c.state.Store(st)
}

// setClient records the allocation's client, from onAllocationCreated:
// its 5-tuple, to match later events, its transport and, for a client of a
// fast UDP socket, that socket and the client's address on it.
func (c *relayConn) setClient(fiveTuple string, tr *transportCounters, lc *listenConn, client netip.AddrPort) {
	c.tr.Store(tr)
	c.update(func(st *peerState) {
		st.fiveTuple, st.lc, st.client = fiveTuple, lc, unmap(client)
	})
}

// permissionEvent applies pion's OnPermissionCreated (delta 1) or
// OnPermissionDeleted (delta -1) for this allocation's client.
func (c *relayConn) permissionEvent(fiveTuple string, peer netip.Addr, delta int) {
	peer = peer.Unmap().WithZone("")
	c.update(func(st *peerState) {
		if fiveTuple != st.fiveTuple {
			return // an event of an earlier allocation on the same port
		}
		if n := st.perms[peer] + delta; n <= 0 {
			delete(st.perms, peer)
		} else {
			st.perms[peer] = n
		}
	})
}

// channelEvent applies pion's OnChannelCreated (add) or OnChannelDeleted.
func (c *relayConn) channelEvent(fiveTuple string, number uint16, peer netip.AddrPort, add bool) {
	peer = unmap(peer)
	c.update(func(st *peerState) {
		if fiveTuple != st.fiveTuple {
			return
		}
		st.chans = slices.DeleteFunc(st.chans, func(b channelBinding) bool { return b.number == number })
		if add {
			st.chans = append(st.chans, channelBinding{number: number, peer: peer})
		}
	})
}

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap().WithZone(""), a.Port())
}

// admitOut decides a packet of n bytes from the client to dst: it returns
// where to send it, or false when it is dropped (counted, unless for lack
// of a permission).
func (c *relayConn) admitOut(st *peerState, dst netip.AddrPort, n int, now time.Time) (netip.AddrPort, bool) {
	if !st.permitted(dst.Addr()) {
		return dst, false
	}
	to, why := c.s.policy.route(dst)
	if why != reasonNone {
		c.s.counters.refuse(why)
		c.logDrop(to, why)
		return to, false
	}
	if c.up != nil && !c.up.AllowN(now, n) {
		c.dropBandwidth()
		return to, false
	}
	return to, true
}

// admitIn decides a packet of n bytes from src at the relay socket: it
// returns the peer address the client knows (see policy.fromRelay), or
// false when it is dropped.
func (c *relayConn) admitIn(st *peerState, src netip.AddrPort, n int, now time.Time) (netip.AddrPort, bool) {
	if translated, ok := c.s.policy.fromRelay(src); ok {
		src = translated
	}
	src = unmap(src)
	if !st.permitted(src.Addr()) {
		return src, false
	}
	if c.down != nil && !c.down.AllowN(now, n) {
		c.dropBandwidth()
		return src, false
	}
	return src, true
}

// frameForClient frames the n bytes at buf[headroom:] from peer for the
// client: ChannelData when a channel is bound to the peer, a Data
// indication otherwise (RFC 8656 §11.3, §12.6). buf needs
// dataIndicationHeadroom in front and 3 bytes of padding room after.
func frameForClient(st *peerState, buf []byte, headroom, n int, peer netip.AddrPort) []byte {
	if ch, ok := st.channelTo(peer); ok {
		return frameChannelData(buf, headroom, n, ch)
	}
	var tx [12]byte
	binary.LittleEndian.PutUint64(tx[:], rand.Uint64())
	binary.LittleEndian.PutUint32(tx[8:], rand.Uint32())
	return frameDataIndication(buf, headroom, n, peer, tx)
}

// ReadFrom reads a packet from a peer for pion. With a batched socket
// there is none: the poller relays everything, and ReadFrom only returns
// once the socket is closed. With a plain socket, the media of a fast
// client is relayed here and only a TCP or TLS client's goes to pion.
func (c *relayConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if c.raw != nil {
		<-c.done
		return 0, nil, net.ErrClosed
	}
	const headroom = dataIndicationHeadroom
	if c.inBuf == nil {
		c.inBuf = make([]byte, headroom+maxDatagram+3)
	}
	for {
		n, src, err := c.udp.ReadFromUDPAddrPort(c.inBuf[headroom : headroom+maxDatagram])
		if err != nil {
			return 0, nil, err
		}
		st := c.state.Load()
		src, ok := c.admitIn(st, src, n, time.Now())
		if !ok {
			continue
		}
		c.tr.Load().add(n)
		if st.lc == nil {
			return copy(b, c.inBuf[headroom:headroom+n]), net.UDPAddrFromAddrPort(src), nil
		}
		_ = st.lc.writeTo(frameForClient(st, c.inBuf, headroom, n, src), st.client)
	}
}

// WriteTo sends a packet from pion to a peer, with the checks of admitOut;
// pion sends what the fast path left to it: TCP and TLS clients' media,
// and Send indications with attributes the fast path does not read. A
// dropped packet is reported as written, so that pion does not take it
// for a socket failure.
func (c *relayConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("%w: %T", errNotUDPAddr, addr)
	}
	to, ok := c.admitOut(c.state.Load(), ua.AddrPort(), len(b), time.Now())
	if !ok {
		return len(b), nil
	}
	if err := c.writeTo(b, to); err != nil {
		return 0, err
	}
	c.tr.Load().add(len(b))
	return len(b), nil
}

// writeTo sends b to a peer; to has passed admitOut.
func (c *relayConn) writeTo(b []byte, to netip.AddrPort) error {
	if c.raw != nil {
		return c.raw.writeTo(b, to)
	}
	_, err := c.udp.WriteToUDPAddrPort(b, to)
	return err
}

func (c *relayConn) localPort() (uint16, error) {
	if c.raw != nil {
		return c.raw.localPort()
	}
	if ua, ok := c.udp.LocalAddr().(*net.UDPAddr); ok {
		return uint16(ua.Port), nil
	}
	return 0, fmt.Errorf("turn: relay socket has address %T", c.udp.LocalAddr())
}

func (c *relayConn) setBuffers(size int) (rcv, snd int, err error) {
	if c.raw != nil {
		return c.raw.setBuffers(size)
	}
	return SetSocketBuffers(c.udp, size)
}

func (c *relayConn) closeSocket() error {
	if c.raw != nil {
		return c.raw.close()
	}
	return c.udp.Close()
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

// Close closes the relay socket, forgets its port and client and gives
// back its quota.
func (c *relayConn) Close() error {
	c.closeOnce.Do(func() {
		// Forget the port first: once closed it may be reused by another
		// allocation, which must not be forgotten by us.
		c.s.removeRelay(c)
		if st := c.state.Load(); st.lc != nil {
			st.lc.forget(st.client, c)
		}
		close(c.done)
		c.closeErr = c.closeSocket()
		if c.user != "" {
			c.s.quotas.release(c.user)
		}
	})
	return c.closeErr
}

// LocalAddr returns the address the relay socket is bound to.
func (c *relayConn) LocalAddr() net.Addr {
	if c.raw != nil {
		return &net.UDPAddr{IP: c.raw.bind.AsSlice(), Port: int(c.port)}
	}
	return c.udp.LocalAddr()
}

// SetDeadline implements net.PacketConn; a batched socket has none.
func (c *relayConn) SetDeadline(t time.Time) error {
	if c.raw != nil {
		return nil
	}
	return c.udp.SetDeadline(t)
}

// SetReadDeadline implements net.PacketConn; a batched socket has none.
func (c *relayConn) SetReadDeadline(t time.Time) error {
	if c.raw != nil {
		return nil
	}
	return c.udp.SetReadDeadline(t)
}

// SetWriteDeadline implements net.PacketConn; a batched socket has none.
func (c *relayConn) SetWriteDeadline(t time.Time) error {
	if c.raw != nil {
		return nil
	}
	return c.udp.SetWriteDeadline(t)
}
