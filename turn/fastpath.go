package turn

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// listenConn wraps each UDP socket given to New, and is what pion reads
// and writes as its PacketConn. It is the media fast path from clients to
// peers: it reads the socket itself (in batches with recvmmsg on Linux,
// one datagram per read elsewhere), relays ChannelData and Send
// indications of known allocations straight to their relay sockets, and
// hands pion only the rest - the control plane (Allocate, Refresh,
// CreatePermission, ChannelBind, Binding), which pion answers through
// WriteTo, and whatever the fast path does not fully understand, which
// pion answers or drops as before. There is no goroutine of its own:
// pion's read loop calls ReadFrom, which relays media until it meets a
// datagram for pion.
//
// The allocations are the ones pion reports on this socket
// (onAllocationCreated), by client address; the relay socket holds their
// permissions and channels (see relayConn).
//
// The other direction, peers to clients, is in relayConn.ReadFrom and,
// batched, in the relay poller, both writing here.
type listenConn struct {
	net.PacketConn // the socket given to New
	s              *Server
	udp            *net.UDPConn // nil when the socket is not a *net.UDPConn: no fast path
	bio            *batchIO     // batched I/O on udp (Linux), or nil

	mu     sync.RWMutex
	allocs map[netip.AddrPort]*relayConn // by client address (unmapped)

	// The read loop's state: pion's read goroutine only.
	rbufs [][]byte
	rlen  []int
	raddr []netip.AddrPort
	rn    int // datagrams read into rbufs
	rnext int // next one to look at
	now   time.Time
	tally tally
}

// newListenConn wraps pc. batching asks for batched I/O, where the
// platform has it.
func newListenConn(s *Server, pc net.PacketConn, batching bool) *listenConn {
	c := &listenConn{PacketConn: pc, s: s, allocs: make(map[netip.AddrPort]*relayConn)}
	udp, ok := pc.(*net.UDPConn)
	if !ok {
		return c
	}
	c.udp = udp
	n := 1
	if batching {
		if bio, err := newBatchIO(udp, s.cfg.BatchDelay); err == nil {
			c.bio = bio
			n = batchSize
		} else {
			s.log.Warn("turn: batched I/O unavailable, using plain reads and writes", "err", err)
		}
	}
	c.rbufs = make([][]byte, n)
	for i := range c.rbufs {
		c.rbufs[i] = make([]byte, maxDatagram)
	}
	c.rlen = make([]int, n)
	c.raddr = make([]netip.AddrPort, n)
	return c
}

// batched reports whether the socket is read and written in batches, and
// so its allocations' relay sockets too.
func (c *listenConn) batched() bool { return c.bio != nil }

// ReadFrom returns the next datagram for pion, relaying media on the way.
func (c *listenConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if c.udp == nil {
		return c.PacketConn.ReadFrom(b)
	}
	for {
		for c.rnext < c.rn {
			i := c.rnext
			c.rnext++
			d := c.rbufs[i][:c.rlen[i]]
			if c.relay(d, c.raddr[i]) {
				continue
			}
			return copy(b, d), net.UDPAddrFromAddrPort(c.raddr[i]), nil
		}
		c.tally.flush(&c.s.counters.transports[transportUDP])
		n, err := c.read()
		if err != nil {
			return 0, nil, err
		}
		c.rn, c.rnext = n, 0
		c.now = time.Now()
	}
}

// read reads one batch (or one datagram) into rbufs.
func (c *listenConn) read() (int, error) {
	if c.bio != nil {
		return c.bio.read(c.rbufs, c.rlen, c.raddr)
	}
	n, from, err := c.udp.ReadFromUDPAddrPort(c.rbufs[0])
	if err != nil {
		return 0, err
	}
	c.rlen[0], c.raddr[0] = n, from
	return 1, nil
}

// relay relays d, a datagram from the client at from, if it is media of a
// known allocation, and reports whether it took it (relayed or dropped).
// Anything else is left to pion.
func (c *listenConn) relay(d []byte, from netip.AddrPort) bool {
	if len(d) >= maxDatagram {
		return false // possibly truncated: pion drops it
	}
	kind, ch, peer, data := parseClientPacket(d)
	if kind == packetOther {
		return false
	}
	rc := c.lookup(from)
	if rc == nil {
		return false
	}
	st := rc.state.Load()
	switch kind {
	case packetChannelData:
		var ok bool
		if peer, ok = st.channelPeer(ch); !ok {
			return false // no such channel: pion drops it
		}
	case packetSend:
		if peer.Addr().Unmap().Is4() != c.s.cfg.PublicIP.Is4() {
			return false // the wrong family: pion drops it
		}
	}
	to, ok := rc.admitOut(st, peer, len(data), c.now)
	if ok && c.writeToPeer(rc, data, to) == nil {
		c.tally.add(len(data))
	}
	return true
}

// writeToPeer sends b on rc's socket. A batched socket uses this read
// loop's scratch, so that the send does not allocate.
func (c *listenConn) writeToPeer(rc *relayConn, b []byte, to netip.AddrPort) error {
	if rc.raw != nil {
		return rc.raw.sendto(b, to, c.bio)
	}
	_, err := rc.udp.WriteToUDPAddrPort(b, to)
	return err
}

// writeTo sends a frame to a client, one datagram.
func (c *listenConn) writeTo(b []byte, to netip.AddrPort) error {
	_, err := c.udp.WriteToUDPAddrPort(b, to)
	return err
}

func (c *listenConn) lookup(client netip.AddrPort) *relayConn {
	client = unmap(client)
	c.mu.RLock()
	rc := c.allocs[client]
	c.mu.RUnlock()
	return rc
}

// remember registers rc as the allocation of client.
func (c *listenConn) remember(client netip.AddrPort, rc *relayConn) {
	c.mu.Lock()
	c.allocs[unmap(client)] = rc
	c.mu.Unlock()
}

// forget unregisters rc, unless a newer allocation of the same client
// replaced it.
func (c *listenConn) forget(client netip.AddrPort, rc *relayConn) {
	client = unmap(client)
	c.mu.Lock()
	if c.allocs[client] == rc {
		delete(c.allocs, client)
	}
	c.mu.Unlock()
}

// tally counts relayed packets in a goroutine, to be added to the shared
// counters once per batch rather than once per packet.
type tally struct{ packets, bytes uint64 }

func (t *tally) add(n int) {
	t.packets++
	t.bytes += uint64(n)
}

func (t *tally) flush(tc *transportCounters) {
	if t.packets == 0 {
		return
	}
	tc.packets.Add(t.packets)
	tc.bytes.Add(t.bytes)
	*t = tally{}
}
