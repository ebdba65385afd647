package turn

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"
)

func TestParseClientPacket(t *testing.T) {
	v4 := netip.MustParseAddrPort("198.51.100.7:5004")
	v6 := netip.MustParseAddrPort("[2001:db8::7]:5004")
	padded := append(channelData(0x4001, "abc"), 0) // padded to 8 bytes over UDP
	allocate := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest)).Raw
	withExtra := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		peerAttr(v4), rawAttr{stun.AttrData, []byte("x")}, rawAttr{stun.AttrDontFragment, nil}).Raw
	noData := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication), peerAttr(v4)).Raw
	send := sendIndication(v4, "hello")
	for _, tc := range []struct {
		name    string
		b       []byte
		kind    clientPacket
		channel uint16
		peer    netip.AddrPort
		data    string
	}{
		{"channel data", channelData(0x4001, "media"), packetChannelData, 0x4001, netip.AddrPort{}, "media"},
		{"channel data, padded", padded, packetChannelData, 0x4001, netip.AddrPort{}, "abc"},
		{"channel data, empty", channelData(0x7fff, ""), packetChannelData, 0x7fff, netip.AddrPort{}, ""},
		{"channel data, length past the datagram", channelData(0x4001, "media")[:7], packetOther, 0, netip.AddrPort{}, ""},
		{"channel 0x8000 is not a channel", channelData(0x8000, "x"), packetOther, 0, netip.AddrPort{}, ""},
		{"short", []byte{0x40, 0x01, 0}, packetOther, 0, netip.AddrPort{}, ""},
		{"send indication", send, packetSend, 0, v4, "hello"},
		{"send indication, IPv6 peer", sendIndication(v6, "six"), packetSend, 0, v6, "six"},
		{"send indication with DONT-FRAGMENT: pion's", withExtra, packetOther, 0, netip.AddrPort{}, ""},
		{"send indication without DATA", noData, packetOther, 0, netip.AddrPort{}, ""},
		{"send indication with trailing bytes", append(bytes.Clone(send), 0, 0, 0, 0), packetOther, 0, netip.AddrPort{}, ""},
		{"send indication, truncated", send[:len(send)-4], packetOther, 0, netip.AddrPort{}, ""},
		{"allocate request", allocate, packetOther, 0, netip.AddrPort{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kind, ch, peer, data := parseClientPacket(tc.b)
			if kind != tc.kind || ch != tc.channel || peer != tc.peer || string(data) != tc.data {
				t.Errorf("got %d %#x %v %q, want %d %#x %v %q", kind, ch, peer, data, tc.kind, tc.channel, tc.peer, tc.data)
			}
		})
	}
}

// TestFrames decodes what the relay sends clients with pion/stun, for
// both address families and payload lengths around the padding.
func TestFrames(t *testing.T) {
	for _, peer := range []netip.AddrPort{
		netip.MustParseAddrPort("198.51.100.7:5004"),
		netip.MustParseAddrPort("[2001:db8::7]:65535"),
	} {
		for n := range 6 {
			payload := bytes.Repeat([]byte{0xa5}, n)
			buf := make([]byte, dataIndicationHeadroom+n+3)
			for i := range buf {
				buf[i] = 0xff // garbage where the header and padding go
			}
			copy(buf[dataIndicationHeadroom:], payload)
			tx := [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
			f := frameDataIndication(buf, dataIndicationHeadroom, n, peer, tx)
			m := &stun.Message{Raw: bytes.Clone(f)}
			if err := m.Decode(); err != nil {
				t.Fatalf("%v, %d bytes: %v", peer, n, err)
			}
			if m.Type != stun.NewType(stun.MethodData, stun.ClassIndication) || m.TransactionID != tx {
				t.Fatalf("%v, %d bytes: type %v id %x", peer, n, m.Type, m.TransactionID)
			}
			var xa stun.XORMappedAddress
			if err := xa.GetFromAs(m, stun.AttrXORPeerAddress); err != nil {
				t.Fatal(err)
			}
			if got, _ := netip.AddrFromSlice(xa.IP); netip.AddrPortFrom(got.Unmap(), uint16(xa.Port)) != peer {
				t.Errorf("XOR-PEER-ADDRESS %v, want %v", xa, peer)
			}
			if d, err := m.Get(stun.AttrData); err != nil || !bytes.Equal(d, payload) {
				t.Errorf("DATA %x (%v), want %x", d, err, payload)
			}
			if len(f)%4 != 0 || !bytes.Equal(f[len(f)-(padLen(n)-n):], make([]byte, padLen(n)-n)) {
				t.Errorf("%d bytes: frame of %d bytes not zero-padded to 4", n, len(f))
			}

			buf = bytes.Repeat([]byte{0xff}, dataIndicationHeadroom+n+3)
			copy(buf[dataIndicationHeadroom:], payload)
			f = frameChannelData(buf, dataIndicationHeadroom, n, 0x4abc)
			kind, ch, _, d := parseClientPacket(f)
			if kind != packetChannelData || ch != 0x4abc || !bytes.Equal(d, payload) || len(f) != 4+padLen(n) {
				t.Errorf("ChannelData of %d bytes: %x", n, f)
			}
		}
	}
}

// FuzzParseClientPacket checks the fast path's parser against pion/stun:
// whatever it takes as a Send indication, pion/stun decodes to the same
// peer and data; what it takes as ChannelData has a valid channel and lies
// within the datagram. It must never panic. The corpus is in
// testdata/fuzz/FuzzParseClientPacket.
//
//	go test -run '^$' -fuzz FuzzParseClientPacket ./turn/
func FuzzParseClientPacket(f *testing.F) {
	f.Add(channelData(0x4001, "media"))
	f.Add(sendIndication(netip.MustParseAddrPort("198.51.100.7:5004"), "hello"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kind, ch, peer, data := parseClientPacket(b)
		switch kind {
		case packetChannelData:
			l := int(binary.BigEndian.Uint16(b[2:]))
			if ch < minChannel || ch > maxChannel || len(data) != l || 4+l > len(b) || !bytes.Equal(data, b[4:4+l]) {
				t.Fatalf("ChannelData %#x %x from %x", ch, data, b)
			}
		case packetSend:
			m := &stun.Message{Raw: bytes.Clone(b)}
			if err := m.Decode(); err != nil {
				t.Fatalf("taken as a Send indication, but pion/stun says %v: %x", err, b)
			}
			if m.Type != stun.NewType(stun.MethodSend, stun.ClassIndication) {
				t.Fatalf("taken as a Send indication, pion/stun says %v", m.Type)
			}
			var xa stun.XORMappedAddress
			if err := xa.GetFromAs(m, stun.AttrXORPeerAddress); err != nil {
				t.Fatalf("pion/stun finds no XOR-PEER-ADDRESS: %v", err)
			}
			ip, _ := netip.AddrFromSlice(xa.IP)
			if got := netip.AddrPortFrom(ip, uint16(xa.Port)); unmap(got) != unmap(peer) {
				t.Fatalf("peer %v, pion/stun says %v", peer, got)
			}
			if v, err := m.Get(stun.AttrData); err != nil || !bytes.Equal(v, data) {
				t.Fatalf("data %x, pion/stun says %x (%v)", data, v, err)
			}
		case packetOther:
			if ch != 0 || peer.IsValid() || data != nil {
				t.Fatalf("other, with %#x %v %x", ch, peer, data)
			}
		}
	})
}
