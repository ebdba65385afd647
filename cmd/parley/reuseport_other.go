//go:build !linux

package main

import "net"

// udpSockets opens the TURN UDP port once (SO_REUSEPORT spreading is Linux-only).
func udpSockets(addr string) ([]net.PacketConn, error) {
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	return []net.PacketConn{c}, nil
}
