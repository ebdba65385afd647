package main

import (
	"net"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// udpSockets opens the TURN UDP port once per CPU with SO_REUSEPORT: the
// kernel spreads clients over the sockets by their address (one client
// always lands on the same socket), so several relay read loops work in
// parallel and one busy loop does not make the kernel drop everyone's
// packets at a single full socket.
func udpSockets(addr string) ([]net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	first, err := lc.ListenPacket(nil, "udp", addr)
	if err != nil {
		return nil, err
	}
	conns := []net.PacketConn{first}
	// The others bind the port the first one got (addr may say port 0).
	for i := 1; i < runtime.GOMAXPROCS(0); i++ {
		c, err := lc.ListenPacket(nil, "udp", first.LocalAddr().String())
		if err != nil {
			break // one socket still works
		}
		conns = append(conns, c)
	}
	return conns, nil
}
