package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// The latency phase's senders are driven without gorilla once joined: each
// message is one write(2) of a masked frame, and a few epoll loops read
// every sender's socket (one read(2) per message, no goroutine per
// connection to wake). The load generator shares the server's two CPUs,
// and gorilla's reader, one goroutine per connection parking on Go's
// poller after every message (a second read(2) that finds nothing), cost
// as much CPU as the server itself. What goes over the wire is the same:
// RFC 6455 frames, masked with a random key (the server unmasks every
// frame whatever the key), answered pings.

// rawConn is a joined connection taken over from gorilla.
type rawConn struct {
	c   *conn
	fd  int
	wmu sync.Mutex // one write at a time (a sender's message, a pong)
	in  []byte     // bytes read, not yet a whole frame
	eof bool
}

// takeOver stops gorilla's reader on c (a read deadline in the past) and
// returns c's socket for raw use. Its reader must be running. Idle
// connections carry nothing but pings, whole frames of two bytes, so no
// partial frame is left in gorilla's buffer.
func takeOver(c *conn) (*rawConn, error) {
	c.ws.SetReadDeadline(time.Unix(1, 0))
	<-c.closed
	tc, ok := c.ws.UnderlyingConn().(*net.TCPConn)
	if !ok {
		return nil, errors.New("not a TCP connection")
	}
	sc, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &rawConn{c: c, in: make([]byte, 0, 2048)}
	if err := sc.Control(func(fd uintptr) { r.fd = int(fd) }); err != nil {
		return nil, err
	}
	return r, nil
}

// writeFrame writes one masked client frame (FIN set) with a single write.
func (r *rawConn) writeFrame(buf []byte, op byte, payload []byte) ([]byte, error) {
	b := append(buf[:0], 0x80|op)
	switch n := len(payload); {
	case n <= 125:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		return buf, errors.New("frame too long")
	}
	key := rand.Uint32()
	b = binary.BigEndian.AppendUint32(b, key)
	start := len(b)
	b = append(b, payload...)
	var k [4]byte
	binary.BigEndian.PutUint32(k[:], key)
	for i := range b[start:] {
		b[start+i] ^= k[i&3]
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	for off := 0; off < len(b); {
		n, err := syscall.Write(r.fd, b[off:])
		switch {
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			time.Sleep(100 * time.Microsecond) // the server reads fast; not seen at 20,000/s
		case err != nil:
			return b, err
		default:
			off += n
		}
	}
	return b, nil
}

// sendBench is conn.sendBench over the raw socket.
func (r *rawConn) sendBench(buf, frame []byte, to string) ([]byte, []byte, error) {
	buf = append(buf[:0], `{"type":"e2ee","to":"`...)
	buf = append(buf, to...)
	buf = append(buf, `","payload":{"t":"bench","ts":`...)
	buf = strconv.AppendInt(buf, int64(time.Since(base)), 10)
	buf = append(buf, `}}`...)
	frame, err := r.writeFrame(frame, 0x1, buf)
	return buf, frame, err
}

// readable reads what the socket holds and acts on every whole frame.
func (r *rawConn) readable() {
	if len(r.in) == cap(r.in) {
		r.in = append(r.in, 0)[:len(r.in)]
	}
	n, err := syscall.Read(r.fd, r.in[len(r.in):cap(r.in)])
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return
	case err != nil || n == 0:
		r.eof = true
		return
	}
	r.in = r.in[:len(r.in)+n]
	b := r.in
	for len(b) >= 2 {
		op, size, h := b[0]&0x0f, int(b[1]&0x7f), 2
		switch size {
		case 126:
			if len(b) < 4 {
				break
			}
			size, h = int(binary.BigEndian.Uint16(b[2:])), 4
		case 127:
			if len(b) < 10 {
				break
			}
			size, h = int(binary.BigEndian.Uint64(b[2:])), 10
		}
		if size > 1<<20 || b[1]&0x80 != 0 {
			rawErrors.Add(1) // a server frame is never masked, nor this long
			r.eof = true
			return
		}
		if (size >= 126 && h == 2) || len(b) < h+size {
			break
		}
		r.frame(op, b[h:h+size])
		b = b[h+size:]
	}
	r.in = append(r.in[:0], b...)
}

func (r *rawConn) frame(op byte, payload []byte) {
	switch op {
	case 0x1:
		takeSample(r.c, payload)
	case 0x9:
		r.writeFrame(nil, 0xA, payload)
	case 0x8:
		r.eof = true
	}
}

// epollReaders reads conns with loops epoll loops until stop is closed.
func epollReaders(conns []*rawConn, loops int, stop <-chan struct{}) (*sync.WaitGroup, error) {
	var wg sync.WaitGroup
	for l := range loops {
		ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return nil, err
		}
		byFD := map[int32]*rawConn{}
		for i := l; i < len(conns); i += loops {
			r := conns[i]
			ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(r.fd)}
			if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, r.fd, &ev); err != nil {
				syscall.Close(ep)
				return nil, fmt.Errorf("epoll: %w", err)
			}
			byFD[int32(r.fd)] = r
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer syscall.Close(ep)
			events := make([]syscall.EpollEvent, 256)
			for {
				select {
				case <-stop:
					return
				default:
				}
				n, err := syscall.EpollWait(ep, events, 100)
				if err != nil && err != syscall.EINTR {
					rawErrors.Add(1)
					return
				}
				for _, ev := range events[:max(n, 0)] {
					r := byFD[ev.Fd]
					r.readable()
					if r.eof {
						syscall.EpollCtl(ep, syscall.EPOLL_CTL_DEL, r.fd, nil)
					}
				}
			}
		}()
	}
	return &wg, nil
}
