//go:build unix

package signaling

import (
	"net"
	"syscall"
)

// directWriter writes to a connection's descriptor without waiting. One
// per connection, used by whoever holds busy, so that a write allocates
// nothing.
type directWriter struct {
	rc  syscall.RawConn
	b   []byte
	n   int
	err error
	fn  func(fd uintptr)
}

// newDirectWriter returns conn's direct writer, or nil if conn has no
// descriptor of its own (a TLS connection).
func newDirectWriter(conn net.Conn) *directWriter {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	d := &directWriter{rc: rc}
	d.fn = d.write
	return d
}

func (d *directWriter) write(fd uintptr) {
	for {
		d.n, d.err = syscall.Write(int(fd), d.b)
		if d.err != syscall.EINTR {
			return
		}
	}
}

// writeNow writes as much of b as the socket takes at once, without
// waiting (Go's sockets are non-blocking) and without the runtime's write
// lock or deadline: the caller is the only writer (busy). A full socket
// buffer is not an error: n is what it took.
func (d *directWriter) writeNow(b []byte) (int, error) {
	d.b, d.n, d.err = b, 0, nil
	cerr := d.rc.Control(d.fn)
	n, err := d.n, d.err
	d.b, d.err = nil, nil
	if cerr != nil {
		return 0, cerr
	}
	if n < 0 {
		n = 0
	}
	if err == syscall.EAGAIN || err == syscall.EWOULDBLOCK {
		err = nil
	}
	return n, err
}
