package turn

import (
	"encoding/binary"
	"net/netip"
)

// The media messages the fast path reads and writes itself (RFC 8656);
// everything else is left to pion.
//
// ChannelData (§12.4), client to server and back:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|         Channel Number        |            Length             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                       Application Data ...                    |
//
// The first two bits of a channel number are 01, which tells it from a
// STUN message (00). Length counts the data only; over UDP the message may
// be padded to a multiple of 4 bytes, and the relay pads what it sends, as
// pion does (over TCP the padding is required).
//
// Send indication (§11.1, client to server) and Data indication (§11.3,
// server to client): a STUN header (type 0x0016 Send / 0x0017 Data, the
// length of the attributes, the magic cookie 0x2112A442, a 96-bit
// transaction ID) with an XOR-PEER-ADDRESS attribute (0x0012: reserved
// byte, family 1 or 2, port and address XORed with the cookie, and for
// IPv6 with the transaction ID too) and a DATA attribute (0x0013), each
// padded to 4 bytes.
const (
	chanDataHeaderLen = 4
	minChannel        = 0x4000 // pion accepts RFC 5766's 0x4000-0x7FFF
	maxChannel        = 0x7FFF

	stunHeaderLen      = 20
	stunMagicCookie    = 0x2112A442
	typeSendIndication = 0x0016
	typeDataIndication = 0x0017

	attrXORPeerAddress = 0x0012
	attrData           = 0x0013
	attrFingerprint    = 0x8028

	// dataIndicationHeadroom is the most a frame adds in front of the
	// payload: a Data indication for an IPv6 peer (STUN header, a 20-byte
	// XOR-PEER-ADDRESS, the DATA attribute header).
	dataIndicationHeadroom = stunHeaderLen + 4 + 20 + 4
)

// clientPacket is what the fast path makes of a datagram from a client.
type clientPacket uint8

const (
	packetOther       clientPacket = iota // for pion: requests, responses, anything malformed
	packetChannelData                     // ChannelData: channel and data are set
	packetSend                            // Send indication: peer and data are set
)

// parseClientPacket classifies a datagram a client sent to the relay. It
// never fails: a datagram it does not fully understand is packetOther and
// goes to pion, which answers or drops it exactly as without the fast
// path. A Send indication is only taken when it holds nothing but
// XOR-PEER-ADDRESS, DATA and FINGERPRINT attributes (FINGERPRINT is not
// checked, as pion does not check it either), and only when the datagram
// is exactly the message.
func parseClientPacket(b []byte) (kind clientPacket, channel uint16, peer netip.AddrPort, data []byte) {
	if len(b) < chanDataHeaderLen {
		return packetOther, 0, netip.AddrPort{}, nil
	}
	if b[0]&0xC0 == 0x40 {
		ch := binary.BigEndian.Uint16(b)
		n := int(binary.BigEndian.Uint16(b[2:]))
		if ch < minChannel || ch > maxChannel || n > len(b)-chanDataHeaderLen {
			return packetOther, 0, netip.AddrPort{}, nil
		}
		return packetChannelData, ch, netip.AddrPort{}, b[chanDataHeaderLen : chanDataHeaderLen+n]
	}
	if len(b) < stunHeaderLen || binary.BigEndian.Uint16(b) != typeSendIndication ||
		binary.BigEndian.Uint32(b[4:]) != stunMagicCookie {
		return packetOther, 0, netip.AddrPort{}, nil
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	if n%4 != 0 || stunHeaderLen+n != len(b) {
		return packetOther, 0, netip.AddrPort{}, nil
	}
	var havePeer, haveData bool
	for a := b[stunHeaderLen:]; len(a) > 0; {
		if len(a) < 4 {
			return packetOther, 0, netip.AddrPort{}, nil
		}
		t, l := binary.BigEndian.Uint16(a), int(binary.BigEndian.Uint16(a[2:]))
		padded := (l + 3) &^ 3
		if padded > len(a)-4 {
			return packetOther, 0, netip.AddrPort{}, nil
		}
		v := a[4 : 4+l]
		switch t {
		case attrXORPeerAddress:
			if havePeer {
				break // the first one counts, as in pion
			}
			p, ok := decodeXORAddress(v, b[8:stunHeaderLen])
			if !ok {
				return packetOther, 0, netip.AddrPort{}, nil
			}
			peer, havePeer = p, true
		case attrData:
			if !haveData {
				data, haveData = v, true
			}
		case attrFingerprint:
		default:
			return packetOther, 0, netip.AddrPort{}, nil
		}
		a = a[4+padded:]
	}
	if !havePeer || !haveData {
		return packetOther, 0, netip.AddrPort{}, nil
	}
	return packetSend, 0, peer, data
}

// decodeXORAddress decodes the value of an XOR-PEER-ADDRESS attribute.
func decodeXORAddress(v, txID []byte) (netip.AddrPort, bool) {
	// The family is read as 16 bits, as pion/stun does: a non-zero
	// first byte is no family at all.
	if len(v) < 4 || v[0] != 0 {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(v[2:]) ^ (stunMagicCookie >> 16)
	switch {
	case v[1] == 1 && len(v) == 8:
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], binary.BigEndian.Uint32(v[4:])^stunMagicCookie)
		return netip.AddrPortFrom(netip.AddrFrom4(a), port), true
	case v[1] == 2 && len(v) == 20:
		var a [16]byte
		binary.BigEndian.PutUint32(a[:], binary.BigEndian.Uint32(v[4:])^stunMagicCookie)
		for i := 4; i < 16; i++ {
			a[i] = v[4+i] ^ txID[i-4]
		}
		return netip.AddrPortFrom(netip.AddrFrom16(a), port), true
	}
	return netip.AddrPort{}, false
}

// padLen is n rounded up to a multiple of 4.
func padLen(n int) int { return (n + 3) &^ 3 }

// frameChannelData writes a ChannelData header for channel in front of
// the n payload bytes at buf[headroom:], and zero padding after them. It
// returns the whole frame, a slice of buf; buf must have room for the
// padding.
func frameChannelData(buf []byte, headroom, n int, channel uint16) []byte {
	start := headroom - chanDataHeaderLen
	binary.BigEndian.PutUint16(buf[start:], channel)
	binary.BigEndian.PutUint16(buf[start+2:], uint16(n))
	end := headroom + padLen(n)
	clear(buf[headroom+n : end])
	return buf[start:end]
}

// frameDataIndication writes a Data indication header (with
// XOR-PEER-ADDRESS for peer and the DATA attribute header) in front of the
// n payload bytes at buf[headroom:], and zero padding after them, with
// transaction ID txID. headroom must be at least dataIndicationHeadroom.
// It returns the whole frame, a slice of buf.
func frameDataIndication(buf []byte, headroom, n int, peer netip.AddrPort, txID [12]byte) []byte {
	addrLen := 8
	if peer.Addr().Is6() && !peer.Addr().Is4In6() {
		addrLen = 20
	}
	start := headroom - (stunHeaderLen + 4 + addrLen + 4)
	h := buf[start:headroom]
	binary.BigEndian.PutUint16(h, typeDataIndication)
	binary.BigEndian.PutUint16(h[2:], uint16(4+addrLen+4+padLen(n)))
	binary.BigEndian.PutUint32(h[4:], stunMagicCookie)
	copy(h[8:stunHeaderLen], txID[:])
	a := h[stunHeaderLen:]
	binary.BigEndian.PutUint16(a, attrXORPeerAddress)
	binary.BigEndian.PutUint16(a[2:], uint16(addrLen))
	a[4] = 0
	binary.BigEndian.PutUint16(a[6:], peer.Port()^(stunMagicCookie>>16))
	if addrLen == 8 {
		a[5] = 1
		ip := peer.Addr().Unmap().As4()
		binary.BigEndian.PutUint32(a[8:], binary.BigEndian.Uint32(ip[:])^stunMagicCookie)
	} else {
		a[5] = 2
		ip := peer.Addr().As16()
		binary.BigEndian.PutUint32(a[8:], binary.BigEndian.Uint32(ip[:])^stunMagicCookie)
		for i := 4; i < 16; i++ {
			a[8+i] = ip[i] ^ txID[i-4]
		}
	}
	d := a[4+addrLen:]
	binary.BigEndian.PutUint16(d, attrData)
	binary.BigEndian.PutUint16(d[2:], uint16(n))
	end := headroom + padLen(n)
	clear(buf[headroom+n : end])
	return buf[start:end]
}
