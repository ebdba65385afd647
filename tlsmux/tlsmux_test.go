package tlsmux

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/testcert"
)

func testConfig(t *testing.T) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{testcert.New(t, []string{"localhost"}, nil).TLS}}
}

// TestRouting sends a STUN-looking first byte, an HTTP request, and ALPN
// stun.turn through one port, with a stalled client holding a connection
// open, and checks each lands on the right side.
func TestRouting(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := New(l, testConfig(t), slog.New(slog.NewTextHandler(io.Discard, nil)))
	go m.Serve()
	defer m.Close()

	// A client that connects and never sends a handshake must not block others.
	stalled, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()

	type result struct {
		side  string
		first byte
	}
	got := make(chan result, 4)
	accept := func(side string, ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b := make([]byte, 1)
			io.ReadFull(c, b)
			got <- result{side, b[0]}
			c.Close()
		}
	}
	go accept("web", m.Web())
	go accept("turn", m.TURN())

	cases := []struct {
		alpn  []string
		first byte
		want  string
	}{
		{nil, 0x00, "turn"},                   // STUN Allocate request: top bits 00
		{nil, 'G', "web"},                     // GET ...
		{[]string{"stun.turn"}, 0x40, "turn"}, // ALPN decides, even for ChannelData
		{[]string{"h2", "http/1.1"}, 'P', "web"},
	}
	for _, tc := range cases {
		c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: tc.alpn})
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{tc.first})
		select {
		case r := <-got:
			if r.side != tc.want || r.first != tc.first {
				t.Errorf("alpn %v first %#x: went to %s (read %#x), want %s", tc.alpn, tc.first, r.side, r.first, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("alpn %v first %#x: not routed", tc.alpn, tc.first)
		}
		c.Close()
	}
}
