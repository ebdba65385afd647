package turn

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// rawAttr is a STUN attribute given as bytes.
type rawAttr struct {
	t stun.AttrType
	v []byte
}

func (a rawAttr) AddTo(m *stun.Message) error {
	m.Add(a.t, a.v)
	return nil
}

// peerAttr is an XOR-PEER-ADDRESS.
func peerAttr(a netip.AddrPort) stun.Setter {
	return setterFunc(func(m *stun.Message) error {
		x := stun.XORMappedAddress{IP: a.Addr().AsSlice(), Port: int(a.Port())}
		return x.AddToAs(m, stun.AttrXORPeerAddress)
	})
}

type setterFunc func(m *stun.Message) error

func (f setterFunc) AddTo(m *stun.Message) error { return f(m) }

func channelAttr(n uint16) stun.Setter {
	return rawAttr{stun.AttrChannelNumber, []byte{byte(n >> 8), byte(n), 0, 0}}
}

// rawClient is a TURN client over UDP that speaks the wire format itself,
// so that a test knows exactly which datagrams reach the fast path.
type rawClient struct {
	*rawTURN
	relay netip.AddrPort
}

func newRawClient(t testing.TB, s *testServer, id string) *rawClient {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	user, pass := Credentials(testSecret, id, time.Hour, time.Now())
	c := &rawClient{rawTURN: &rawTURN{t: t, conn: conn, server: s.udpAddr, user: user, pass: pass}}
	res := c.do(stun.MethodAllocate, rawAttr{stun.AttrRequestedTransport, []byte{17, 0, 0, 0}})
	c.ok(res)
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil {
		t.Fatalf("Allocate: no XOR-RELAYED-ADDRESS: %v", err)
	}
	ip, _ := netip.AddrFromSlice(relayed.IP)
	c.relay = netip.AddrPortFrom(ip.Unmap(), uint16(relayed.Port))
	return c
}

func (c *rawClient) ok(res *stun.Message) {
	c.t.Helper()
	if res.Type.Class != stun.ClassSuccessResponse {
		var code stun.ErrorCodeAttribute
		_ = code.GetFrom(res)
		c.t.Fatalf("%v: %v", res.Type, code)
	}
}

func (c *rawClient) permit(peer netip.AddrPort) {
	c.t.Helper()
	c.ok(c.do(stun.MethodCreatePermission, peerAttr(peer)))
}

func (c *rawClient) bind(channel uint16, peer netip.AddrPort) {
	c.t.Helper()
	c.ok(c.do(stun.MethodChannelBind, channelAttr(channel), peerAttr(peer)))
}

func (c *rawClient) sendRaw(b []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDP(b, c.server); err != nil {
		c.t.Fatal(err)
	}
}

func channelData(channel uint16, data string) []byte {
	b := make([]byte, 4+len(data))
	binary.BigEndian.PutUint16(b, channel)
	binary.BigEndian.PutUint16(b[2:], uint16(len(data)))
	copy(b[4:], data)
	return b
}

func sendIndication(peer netip.AddrPort, data string) []byte {
	return stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		peerAttr(peer), rawAttr{stun.AttrData, []byte(data)}, stun.Fingerprint).Raw
}

// recv reads what the server sends the client within d: ChannelData
// (channel != 0) or a Data indication (peer set).
func (c *rawClient) recv(d time.Duration) (channel uint16, peer netip.AddrPort, data string, ok bool) {
	c.t.Helper()
	buf := make([]byte, 2048)
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	n, err := c.conn.Read(buf)
	if err != nil {
		return 0, netip.AddrPort{}, "", false
	}
	b := buf[:n]
	if b[0]&0xC0 == 0x40 {
		l := int(binary.BigEndian.Uint16(b[2:]))
		if l > n-4 || n%4 != 0 {
			c.t.Fatalf("ChannelData of %d bytes with length %d (padded to 4 over UDP, as pion does)", n, l)
		}
		return binary.BigEndian.Uint16(b), netip.AddrPort{}, string(b[4 : 4+l]), true
	}
	m := &stun.Message{Raw: b}
	if err := m.Decode(); err != nil {
		c.t.Fatalf("not ChannelData nor STUN: %v", err)
	}
	if m.Type != stun.NewType(stun.MethodData, stun.ClassIndication) {
		c.t.Fatalf("got %v, want a Data indication", m.Type)
	}
	var xa stun.XORMappedAddress
	if err := xa.GetFromAs(m, stun.AttrXORPeerAddress); err != nil {
		c.t.Fatalf("Data indication without XOR-PEER-ADDRESS: %v", err)
	}
	v, err := m.Get(stun.AttrData)
	if err != nil {
		c.t.Fatalf("Data indication without DATA: %v", err)
	}
	ip, _ := netip.AddrFromSlice(xa.IP)
	return 0, netip.AddrPortFrom(ip.Unmap(), uint16(xa.Port)), string(v), true
}

func addrPort(a net.Addr) netip.AddrPort { return unmap(a.(*net.UDPAddr).AddrPort()) }

// TestFastPath drives both media directions with ChannelData and
// Send/Data indications, and checks the framing, the source addresses and
// the counters.
func TestFastPath(t *testing.T) {
	cfg := baseConfig()
	cfg.AllowPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	s := startServer(t, cfg, nil)
	c := newRawClient(t, s, "fast")
	peer := sink(t, "127.0.0.1")
	other := sink(t, "127.0.0.1") // same IP: covered by the same permission
	p := addrPort(peer.LocalAddr())

	c.bind(0x4001, p)
	c.sendRaw(channelData(0x4001, "via channel"))
	data, from, ok := readWithin(peer, 2*time.Second)
	if !ok || data != "via channel" || addrPort(from) != c.relay {
		t.Fatalf("peer got %q from %v (ok %v), want %q from the relay %v", data, from, ok, "via channel", c.relay)
	}
	c.sendRaw(sendIndication(addrPort(other.LocalAddr()), "via send"))
	data, from, ok = readWithin(other, 2*time.Second)
	if !ok || data != "via send" || addrPort(from) != c.relay {
		t.Fatalf("other peer got %q from %v (ok %v), want %q from the relay", data, from, ok, "via send")
	}

	// Replies: ChannelData from the bound peer, a Data indication from the
	// other one; odd lengths, to check the padding.
	if _, err := peer.WriteToUDPAddrPort([]byte("reply1"), c.relay); err != nil {
		t.Fatal(err)
	}
	if ch, _, d, ok := c.recv(2 * time.Second); !ok || ch != 0x4001 || d != "reply1" {
		t.Fatalf("client got channel %#x %q (ok %v), want ChannelData 0x4001 %q", ch, d, ok, "reply1")
	}
	if _, err := other.WriteToUDPAddrPort([]byte("reply-2"), c.relay); err != nil {
		t.Fatal(err)
	}
	if ch, from, d, ok := c.recv(2 * time.Second); !ok || ch != 0 || from != addrPort(other.LocalAddr()) || d != "reply-2" {
		t.Fatalf("client got channel %#x from %v %q (ok %v), want a Data indication from %v", ch, from, d, ok, other.LocalAddr())
	}
	waitFor(t, "the counters", func() bool {
		st := s.Stats()
		return st.Transports[TransportUDP].Packets == 4 && st.BytesRelayed == uint64(len("via channel")+len("via send")+len("reply1")+len("reply-2"))
	})

	// A channel the client never bound, and a Send indication to a peer
	// it never permitted, go nowhere.
	c.sendRaw(channelData(0x4002, "unbound"))
	c.sendRaw(sendIndication(netip.MustParseAddrPort("127.0.0.2:9"), "unpermitted"))
	stranger := sink(t, "127.0.0.3")
	if _, err := stranger.WriteToUDPAddrPort([]byte("stranger"), c.relay); err != nil {
		t.Fatal(err)
	}
	if _, _, d, ok := c.recv(300 * time.Millisecond); ok {
		t.Errorf("client got %q from a peer it never permitted", d)
	}
	if st := s.Stats(); st.PacketsRelayed != 4 {
		t.Errorf("PacketsRelayed = %d after unrelayed packets, want 4", st.PacketsRelayed)
	}
}

// TestFastPathDenied: the fast path applies the relay policy to every
// packet, not only when the permission was granted. A channel to our own
// relay IP is allowed while that port is a relay; once the allocation
// there is gone, a service that takes the port must not get the packets.
// They are dropped and counted (own-address).
func TestFastPathDenied(t *testing.T) {
	s := startServer(t, baseConfig(), nil) // 127.0.0.1 is the relay IP, and loopback is denied
	a := newRawClient(t, s, "a")
	b := newRawClient(t, s, "b")
	a.bind(0x4000, b.relay)
	b.permit(a.relay)
	a.sendRaw(channelData(0x4000, "hello b"))
	if _, from, d, ok := b.recv(2 * time.Second); !ok || d != "hello b" || from != a.relay {
		t.Fatalf("b got %q from %v (ok %v), want %q from a's relay %v", d, from, ok, "hello b", a.relay)
	}

	b.ok(b.do(stun.MethodRefresh, lifetimeAttr(0))) // b's allocation ends, its port is free
	waitFor(t, "b's relay socket closed", func() bool { return !s.policy.isLive(b.relay.Port()) })
	squatter, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(b.relay))
	if err != nil {
		t.Skipf("cannot bind the freed relay port: %v", err)
	}
	defer squatter.Close()
	before := s.Stats().PermissionRefusalsByReason["own-address"]
	for range 5 {
		a.sendRaw(channelData(0x4000, "to the squatter"))
	}
	if d, _, ok := readWithin(squatter, 300*time.Millisecond); ok {
		t.Fatalf("a non-relay port on the relay IP received %q", d)
	}
	waitFor(t, "own-address refusals counted", func() bool {
		return s.Stats().PermissionRefusalsByReason["own-address"] == before+5
	})
}

// TestFastPathDenyListPerPacket: should a permission and a channel to a
// denied peer ever exist (here they are planted in the relay's state, as a
// bug elsewhere could), the fast path still refuses the packets by the
// deny list, and counts them.
func TestFastPathDenyListPerPacket(t *testing.T) {
	s := startServer(t, baseConfig(), nil)
	c := newRawClient(t, s, "planted")
	rc := s.relayAt(net.UDPAddrFromAddrPort(c.relay))
	if rc == nil {
		t.Fatal("no relay socket for the allocation")
	}
	metadata := netip.MustParseAddrPort("169.254.169.254:80")
	rc.update(func(st *peerState) {
		st.perms[metadata.Addr()] = 1
		st.chans = append(st.chans, channelBinding{number: 0x4abc, peer: metadata})
	})
	for range 3 {
		c.sendRaw(channelData(0x4abc, "GET /latest/meta-data/"))
		c.sendRaw(sendIndication(metadata, "GET /latest/meta-data/"))
	}
	waitFor(t, "metadata refusals counted", func() bool {
		return s.Stats().PermissionRefusalsByReason["metadata"] == 6
	})
	if st := s.Stats(); st.PacketsRelayed != 0 {
		t.Errorf("PacketsRelayed = %d, want 0", st.PacketsRelayed)
	}
}

// TestFastPathExpiry: permissions and channels expire on the fast path
// when pion expires them (RFC 8656: 300 s and 10 minutes; here shortened).
// A channel whose permission expired relays nothing either way until the
// permission is refreshed; an expired channel's peer gets Data
// indications again, and its ChannelData is no longer relayed.
func TestFastPathExpiry(t *testing.T) {
	cfg := baseConfig()
	cfg.AllowPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.permissionLifetime = 400 * time.Millisecond
	cfg.channelLifetime = 1500 * time.Millisecond
	s := startServer(t, cfg, nil)
	c := newRawClient(t, s, "expiry")
	peer := sink(t, "127.0.0.1")
	p := addrPort(peer.LocalAddr())
	bound := time.Now()
	c.bind(0x4111, p)
	c.sendRaw(channelData(0x4111, "fresh"))
	if d, _, ok := readWithin(peer, time.Second); !ok || d != "fresh" {
		t.Fatalf("peer got %q (ok %v), want %q", d, ok, "fresh")
	}

	time.Sleep(time.Until(bound.Add(600 * time.Millisecond))) // the permission is gone, the channel not
	c.sendRaw(channelData(0x4111, "stale permission"))
	if d, _, ok := readWithin(peer, 300*time.Millisecond); ok {
		t.Fatalf("peer got %q over a channel whose permission expired", d)
	}
	if _, err := peer.WriteToUDPAddrPort([]byte("back"), c.relay); err != nil {
		t.Fatal(err)
	}
	if _, _, d, ok := c.recv(300 * time.Millisecond); ok {
		t.Fatalf("client got %q from a peer whose permission expired", d)
	}

	c.permit(p) // refreshing the permission revives the channel
	c.sendRaw(channelData(0x4111, "permitted again"))
	if d, _, ok := readWithin(peer, time.Second); !ok || d != "permitted again" {
		t.Fatalf("peer got %q (ok %v) after CreatePermission, want %q", d, ok, "permitted again")
	}

	time.Sleep(time.Until(bound.Add(1700 * time.Millisecond))) // the channel is gone
	c.permit(p)
	c.sendRaw(channelData(0x4111, "expired channel"))
	if d, _, ok := readWithin(peer, 300*time.Millisecond); ok {
		t.Fatalf("peer got %q over an expired channel", d)
	}
	if _, err := peer.WriteToUDPAddrPort([]byte("after"), c.relay); err != nil {
		t.Fatal(err)
	}
	if ch, from, d, ok := c.recv(time.Second); !ok || ch != 0 || from != p || d != "after" {
		t.Fatalf("client got channel %#x from %v %q (ok %v), want a Data indication from %v", ch, from, d, ok, p)
	}
}
