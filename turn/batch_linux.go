//go:build linux

package turn

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Batched I/O on Linux: recvmmsg and sendmmsg, called directly.
//
// golang.org/x/net/ipv4's ReadBatch does the same system calls but
// allocates a net.IP and a *net.UDPAddr for every datagram it returns;
// the fast path must not allocate per packet, so it keeps its own message
// headers, I/O vectors and socket addresses, allocated once.
//
// The listening sockets stay in Go's network poller (their reads and
// writes go through syscall.RawConn, which waits for readiness there).
// Relay sockets are opened here as raw non-blocking sockets that Go's
// poller never sees, registered in an epoll instance of our own, whose
// descriptor is itself in Go's poller: one goroutine, the relay poller,
// wakes when any relay socket has data, drains every ready one with
// recvmmsg, frames the datagrams for their clients and sends them all
// with sendmmsg on the listening socket. Per packet there is then no
// goroutine wakeup and no hand-off, and system calls are shared by a
// batch in three of the four legs of a round trip (the fourth, a client's
// datagram out of its relay socket, is one sendto: sendmmsg cannot mix
// sockets).
const batchSupported = true

// batchSize is how many datagrams one recvmmsg or sendmmsg moves at most.
const batchSize = 64

const sockaddrLen = unix.SizeofSockaddrInet6

// mmsg is the scratch of one batch: message headers with one I/O vector
// and one socket address each. It is not safe for concurrent use.
type mmsg struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names [][sockaddrLen]byte
}

func newMmsg(n int) *mmsg {
	m := &mmsg{hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n), names: make([][sockaddrLen]byte, n)}
	for i := range m.hdrs {
		m.hdrs[i].Hdr.Name = &m.names[i][0]
		m.hdrs[i].Hdr.Iov = &m.iovs[i]
		m.hdrs[i].Hdr.SetIovlen(1)
	}
	return m
}

// recv runs one non-blocking recvmmsg on fd into bufs[i][off:off+size].
func (m *mmsg) recv(fd int, bufs [][]byte, off, size int) (int, syscall.Errno) {
	n := min(len(bufs), len(m.hdrs))
	for i := range n {
		m.iovs[i].Base = &bufs[i][off]
		m.iovs[i].SetLen(size)
		m.hdrs[i].Hdr.Namelen = sockaddrLen
		m.hdrs[i].Hdr.Flags = 0
		m.hdrs[i].Len = 0
	}
	for {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.hdrs[0])),
			uintptr(n), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}

// datagram returns the length and source of the i-th datagram received;
// ok is false when it was truncated or its source is not an IP address.
func (m *mmsg) datagram(i int) (n int, from netip.AddrPort, ok bool) {
	h := &m.hdrs[i]
	if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
		return 0, netip.AddrPort{}, false
	}
	from, ok = parseSockaddr(&m.names[i])
	return int(h.Len), from, ok
}

// send runs non-blocking sendmmsg on fd for messages off..n-1, which the
// caller has filled in with setMsg.
func (m *mmsg) send(fd, off, n int) (int, syscall.Errno) {
	for {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.hdrs[off])),
			uintptr(n-off), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}

// setMsg makes the i-th message b to to, for a socket of family.
func (m *mmsg) setMsg(i int, b []byte, to netip.AddrPort, family int) bool {
	salen := putSockaddr(&m.names[i], to, family)
	if salen == 0 {
		return false
	}
	m.hdrs[i].Hdr.Namelen = uint32(salen)
	m.hdrs[i].Hdr.Flags = 0
	if len(b) > 0 {
		m.iovs[i].Base = &b[0]
	} else {
		m.iovs[i].Base = nil
	}
	m.iovs[i].SetLen(len(b))
	return true
}

func parseSockaddr(b *[sockaddrLen]byte) (netip.AddrPort, bool) {
	port := binary.BigEndian.Uint16(b[2:4])
	switch binary.NativeEndian.Uint16(b[:2]) {
	case unix.AF_INET:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), true
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])), port), true
	}
	return netip.AddrPort{}, false
}

// putSockaddr writes a as a socket address of family into b and returns
// its length, 0 if a cannot be reached from such a socket.
func putSockaddr(b *[sockaddrLen]byte, a netip.AddrPort, family int) int {
	ip := a.Addr()
	switch family {
	case unix.AF_INET:
		ip = ip.Unmap()
		if !ip.Is4() {
			return 0
		}
		*b = [sockaddrLen]byte{}
		binary.NativeEndian.PutUint16(b[:2], unix.AF_INET)
		binary.BigEndian.PutUint16(b[2:4], a.Port())
		a4 := ip.As4()
		copy(b[4:8], a4[:])
		return unix.SizeofSockaddrInet4
	case unix.AF_INET6:
		*b = [sockaddrLen]byte{}
		binary.NativeEndian.PutUint16(b[:2], unix.AF_INET6)
		binary.BigEndian.PutUint16(b[2:4], a.Port())
		a16 := ip.As16() // IPv4 as IPv4-mapped, for a dual-stack socket
		copy(b[8:24], a16[:])
		return unix.SizeofSockaddrInet6
	}
	return 0
}

// socketFamily returns the address family of a socket.
func socketFamily(raw syscall.RawConn) (int, error) {
	var family int
	var opErr error
	if err := raw.Control(func(fd uintptr) {
		family, opErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	}); err != nil {
		return 0, err
	}
	return family, opErr
}

// batchIO is batched I/O on a listening socket. Its read scratch belongs
// to the socket's read loop (pion's goroutine, in listenConn.ReadFrom),
// and so does sa, the scratch of that loop's sends to relay sockets.
type batchIO struct {
	raw    syscall.RawConn
	family int

	in     *mmsg
	bufs   [][]byte
	n      int
	errno  syscall.Errno
	readFn func(uintptr) bool
	delay  time.Duration // Config.BatchDelay
	pause  bool          // nap before the next recvmmsg

	sa [sockaddrLen]byte
}

func newBatchIO(udp *net.UDPConn, delay time.Duration) (*batchIO, error) {
	raw, err := udp.SyscallConn()
	if err != nil {
		return nil, err
	}
	family, err := socketFamily(raw)
	if err != nil {
		return nil, err
	}
	if family != unix.AF_INET && family != unix.AF_INET6 {
		return nil, fmt.Errorf("turn: socket family %d", family)
	}
	b := &batchIO{raw: raw, family: family, in: newMmsg(batchSize), delay: delay}
	b.readFn = b.recv
	return b, nil
}

func (b *batchIO) recv(fd uintptr) bool {
	if b.pause {
		b.pause = false
		nap(b.delay)
	}
	b.n, b.errno = b.in.recv(int(fd), b.bufs, 0, maxDatagram)
	if b.errno == unix.EAGAIN {
		b.pause = true // woken by the next datagram: let a batch gather first
		return false
	}
	// A full batch means more are waiting; otherwise let the next gather.
	b.pause = b.n < len(b.bufs)
	return true
}

// nap sleeps d in a system call, finer than time.Sleep, whose timers the
// runtime's poller wakes with millisecond precision.
func nap(d time.Duration) {
	if d <= 0 {
		return
	}
	ts := unix.NsecToTimespec(int64(d))
	for unix.Nanosleep(&ts, &ts) == unix.EINTR {
	}
}

// read reads a batch of datagrams into bufs, waiting for the first one.
// Truncated datagrams get the length of the buffer (pion drops those).
func (b *batchIO) read(bufs [][]byte, lens []int, from []netip.AddrPort) (int, error) {
	b.bufs = bufs
	for {
		if err := b.raw.Read(b.readFn); err != nil {
			return 0, err
		}
		if b.errno != 0 {
			return 0, os.NewSyscallError("recvmmsg", b.errno)
		}
		k := 0
		for i := range b.n {
			n, a, ok := b.in.datagram(i)
			if !ok {
				continue
			}
			if n > maxDatagram {
				n = maxDatagram
			}
			if k != i {
				bufs[k], bufs[i] = bufs[i], bufs[k]
			}
			lens[k], from[k] = n, a
			k++
		}
		if k > 0 {
			return k, nil
		}
	}
}

// batchWriter sends batches with sendmmsg on a listening socket, waiting
// in Go's poller when its buffer is full. Datagrams the kernel refuses
// (an unreachable destination...) are skipped.
type batchWriter struct {
	m      *mmsg
	n, off int
	fn     func(uintptr) bool
}

func newBatchWriter() *batchWriter {
	w := &batchWriter{m: newMmsg(batchSize)}
	w.fn = w.write
	return w
}

func (w *batchWriter) write(fd uintptr) bool {
	for w.off < w.n {
		sent, e := w.m.send(int(fd), w.off, w.n)
		switch {
		case e == unix.EAGAIN:
			return false
		case e != 0:
			w.off++ // the first datagram failed: skip it
		default:
			w.off += sent
		}
	}
	return true
}

// flush sends the first n messages set up in w.m on b's socket.
func (w *batchWriter) flush(b *batchIO, n int) error {
	if n == 0 {
		return nil
	}
	w.n, w.off = n, 0
	return b.raw.Write(w.fn)
}

// rawSocket is a relay socket the relay poller reads.
type rawSocket struct {
	p      *relayPoller
	family int
	bind   netip.Addr

	mu sync.RWMutex // read-held around every use of fd; Close write-holds it
	fd int          // -1 once closed
}

// sendto sends b to a peer using the scratch of the listening socket's
// read loop.
func (r *rawSocket) sendto(b []byte, to netip.AddrPort, bio *batchIO) error {
	salen := putSockaddr(&bio.sa, to, r.family)
	if salen == 0 {
		return ErrAddressFamily
	}
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.fd < 0 {
		return net.ErrClosed
	}
	for {
		_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(r.fd), uintptr(p), uintptr(len(b)),
			unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&bio.sa[0])), uintptr(salen))
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return os.NewSyscallError("sendto", e)
	}
}

// writeTo sends b to a peer for pion (the slow path; it may allocate).
func (r *rawSocket) writeTo(b []byte, to netip.AddrPort) error {
	var sa [sockaddrLen]byte
	salen := putSockaddr(&sa, to, r.family)
	if salen == 0 {
		return ErrAddressFamily
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.fd < 0 {
		return net.ErrClosed
	}
	var err error
	if r.family == unix.AF_INET {
		err = unix.Sendto(r.fd, b, unix.MSG_DONTWAIT, &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().Unmap().As4()})
	} else {
		err = unix.Sendto(r.fd, b, unix.MSG_DONTWAIT, &unix.SockaddrInet6{Port: int(to.Port()), Addr: to.Addr().As16()})
	}
	return err
}

func (r *rawSocket) localPort() (uint16, error) {
	sa, err := unix.Getsockname(r.fd)
	if err != nil {
		return 0, fmt.Errorf("turn: relay socket: %w", err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return uint16(sa.Port), nil
	case *unix.SockaddrInet6:
		return uint16(sa.Port), nil
	}
	return 0, fmt.Errorf("turn: relay socket has address %T", sa)
}

func (r *rawSocket) setBuffers(size int) (rcv, snd int, err error) {
	if rcv, err = setBuffer(r.fd, syscall.SO_RCVBUF, soRcvBufForce, size); err != nil {
		return 0, 0, fmt.Errorf("turn: socket buffers: %w", err)
	}
	if snd, err = setBuffer(r.fd, syscall.SO_SNDBUF, soSndBufForce, size); err != nil {
		return rcv, 0, fmt.Errorf("turn: socket buffers: %w", err)
	}
	return rcv, snd, nil
}

// close unregisters and closes the socket; the poller and the fast path
// stop using it first (mu).
func (r *rawSocket) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fd < 0 {
		return nil
	}
	r.p.remove(r.fd)
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}

// relayPoller reads every batched relay socket: see the top of this file.
type relayPoller struct {
	s    *Server
	epfd *os.File // the epoll instance, in Go's poller
	fd   int      // its descriptor
	raw  syscall.RawConn

	mu     sync.RWMutex
	relays map[int32]*relayConn // by socket descriptor
	done   bool                 // epfd closed

	// The poller goroutine's state.
	events []unix.EpollEvent
	in     *mmsg
	bufs   [][]byte // batchSize buffers with room for a frame around a datagram
	used   int      // bufs holding frames not yet sent
	outs   []outFrame
	writer *batchWriter
	now    time.Time
	tally  tally
	pollFn func(uintptr) bool
	delay  time.Duration // Config.BatchDelay
	pause  bool          // nap before the next epoll_wait
	err    error
	exited chan struct{}
}

// outFrame is a frame the poller will send to a client.
type outFrame struct {
	lc    *listenConn
	frame []byte
	to    netip.AddrPort
}

func newPoller(s *Server) (*relayPoller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("turn: epoll: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("turn: epoll: %w", err)
	}
	f := os.NewFile(uintptr(fd), "turn-relay-epoll")
	raw, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("turn: epoll: %w", err)
	}
	p := &relayPoller{
		s: s, epfd: f, fd: fd, raw: raw,
		relays: make(map[int32]*relayConn),
		events: make([]unix.EpollEvent, batchSize),
		in:     newMmsg(batchSize),
		bufs:   make([][]byte, batchSize),
		writer: newBatchWriter(),
		exited: make(chan struct{}),
		delay:  s.cfg.BatchDelay,
	}
	for i := range p.bufs {
		p.bufs[i] = make([]byte, dataIndicationHeadroom+maxDatagram+3)
	}
	p.pollFn = p.poll
	return p, nil
}

// open makes a relay socket bound to bind:port (port 0: any).
func (p *relayPoller) open(bind netip.Addr, port uint16) (*relayConn, error) {
	family := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(port), Addr: bind.Unmap().As4()}
	if bind.Is6() && !bind.Is4In6() {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(port), Addr: bind.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("turn: relay socket: %w", err)
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			_ = unix.Close(fd)
			return nil, fmt.Errorf("turn: relay socket: %w", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("turn: relay socket %s: %w", netip.AddrPortFrom(bind, port), err)
	}
	return &relayConn{raw: &rawSocket{p: p, family: family, bind: bind, fd: fd}}, nil
}

// add starts polling rc's socket.
func (p *relayPoller) add(rc *relayConn) error {
	r := rc.raw
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.fd < 0 {
		return net.ErrClosed
	}
	p.mu.Lock()
	p.relays[int32(r.fd)] = rc
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(r.fd)}
	if err := unix.EpollCtl(p.fd, unix.EPOLL_CTL_ADD, r.fd, &ev); err != nil {
		p.remove(r.fd)
		return fmt.Errorf("turn: epoll: %w", err)
	}
	return nil
}

// remove stops polling fd; the caller holds its rawSocket's mu.
func (p *relayPoller) remove(fd int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.relays, int32(fd))
	if !p.done {
		_ = unix.EpollCtl(p.fd, unix.EPOLL_CTL_DEL, fd, nil)
	}
}

// start runs the poller goroutine.
func (p *relayPoller) start() {
	go func() {
		defer close(p.exited)
		for {
			if err := p.raw.Read(p.pollFn); err != nil || p.err != nil {
				return
			}
		}
	}()
}

// close stops the poller once the relay sockets are closed.
func (p *relayPoller) close() {
	p.mu.Lock()
	p.done = true
	p.mu.Unlock()
	_ = p.epfd.Close()
	<-p.exited
}

// poll handles ready relay sockets until none is left, then returns false
// to wait in Go's poller.
func (p *relayPoller) poll(epfd uintptr) bool {
	for {
		if p.pause {
			p.pause = false
			nap(p.delay)
		}
		n, err := unix.EpollWait(int(epfd), p.events, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			p.err = err
			return true
		}
		if n == 0 {
			p.pause = true // woken by the next datagram: let a batch gather first
			return false
		}
		p.now = time.Now()
		got := 0
		for i := range n {
			got += p.drain(p.events[i].Fd)
		}
		p.flush()
		p.pause = got < batchSize
	}
}

// drain reads one batch from the relay socket fd and queues its frames;
// it returns how many datagrams it read.
func (p *relayPoller) drain(fd int32) int {
	p.mu.RLock()
	rc := p.relays[fd]
	p.mu.RUnlock()
	if rc == nil {
		return 0
	}
	r := rc.raw
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.fd != int(fd) {
		return 0 // closed meanwhile
	}
	if batchSize-p.used < batchSize/4 {
		p.flush()
	}
	const headroom = dataIndicationHeadroom
	n, e := p.in.recv(r.fd, p.bufs[p.used:], headroom, maxDatagram)
	if e != 0 {
		return 0 // EAGAIN: another reader was first; other errors: ICMP reports, nothing to do
	}
	st := rc.state.Load()
	for i := range n {
		size, src, ok := p.in.datagram(i)
		if !ok {
			continue
		}
		src, ok = rc.admitIn(st, src, size, p.now)
		if !ok || st.lc == nil {
			continue
		}
		p.tally.add(size)
		buf := p.bufs[p.used+i]
		p.outs = append(p.outs, outFrame{lc: st.lc, frame: frameForClient(st, buf, headroom, size, src), to: st.client})
	}
	p.used += n
	return n
}

// flush sends the queued frames, one sendmmsg per listening socket and
// batch.
func (p *relayPoller) flush() {
	for len(p.outs) > 0 {
		lc := p.outs[0].lc
		k := 0
		rest := p.outs[:0]
		for _, o := range p.outs {
			if o.lc != lc {
				rest = append(rest, o)
				continue
			}
			if p.writer.m.setMsg(k, o.frame, o.to, lc.bio.family) {
				k++
			}
			if k == batchSize {
				_ = p.writer.flush(lc.bio, k)
				k = 0
			}
		}
		_ = p.writer.flush(lc.bio, k)
		p.outs = rest
	}
	p.used = 0
	p.tally.flush(&p.s.counters.transports[transportUDP])
}
