package turn

import (
	"net"
	"net/netip"
	"sync"
)

// reason says why a peer or a packet was refused. Its String is the label
// in logs and in Stats.PermissionRefusalsByReason.
type reason uint8

// Refusal reasons. reasonNone means not refused.
const (
	reasonNone        reason = iota
	reasonUnspecified        // 0.0.0.0/8, ::
	reasonLoopback           // 127/8, ::1
	reasonPrivate            // RFC 1918, ULA
	reasonCGNAT              // 100.64/10
	reasonLinkLocal          // 169.254/16, fe80::/10
	reasonMetadata           // cloud instance metadata: 169.254.169.254, fd00:ec2::254
	reasonMulticast          // 224/4, ff00::/8
	reasonBroadcast          // 255.255.255.255
	reasonReserved           // 240/4, ::/96
	reasonOwnAddress         // an address of this server that is not a live relay
	reasonDenied             // Config.DenyPeers
	reasonBandwidth          // over Config.BandwidthPerAllocation
	reasonInvalid            // a peer that is not an IP address
	numReasons
)

var reasonNames = [numReasons]string{
	reasonNone:        "",
	reasonUnspecified: "unspecified",
	reasonLoopback:    "loopback",
	reasonPrivate:     "private",
	reasonCGNAT:       "cgnat",
	reasonLinkLocal:   "link-local",
	reasonMetadata:    "metadata",
	reasonMulticast:   "multicast",
	reasonBroadcast:   "broadcast",
	reasonReserved:    "reserved",
	reasonOwnAddress:  "own-address",
	reasonDenied:      "denied",
	reasonBandwidth:   "bandwidth",
	reasonInvalid:     "invalid",
}

func (r reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

type denied struct {
	prefix netip.Prefix
	reason reason
}

// denyList is checked in order; the first match gives the reason.
// IPv4-mapped IPv6 addresses are unmapped before the check.
var denyList = []denied{
	{netip.MustParsePrefix("0.0.0.0/8"), reasonUnspecified}, // "this network"; Linux delivers 0.0.0.0 locally
	{netip.MustParsePrefix("127.0.0.0/8"), reasonLoopback},
	{netip.MustParsePrefix("10.0.0.0/8"), reasonPrivate},
	{netip.MustParsePrefix("172.16.0.0/12"), reasonPrivate},
	{netip.MustParsePrefix("192.168.0.0/16"), reasonPrivate},
	{netip.MustParsePrefix("100.64.0.0/10"), reasonCGNAT},
	// The instance metadata service of AWS, GCP, Azure, OpenStack... holds
	// the machine's cloud credentials: the classic SSRF target. It is
	// link-local too, but gets its own reason so that the logs and the
	// metrics show who tried.
	{netip.MustParsePrefix("169.254.169.254/32"), reasonMetadata},
	{netip.MustParsePrefix("169.254.0.0/16"), reasonLinkLocal},
	{netip.MustParsePrefix("224.0.0.0/4"), reasonMulticast},
	{netip.MustParsePrefix("255.255.255.255/32"), reasonBroadcast},
	{netip.MustParsePrefix("240.0.0.0/4"), reasonReserved},
	{netip.MustParsePrefix("::/128"), reasonUnspecified},
	{netip.MustParsePrefix("::1/128"), reasonLoopback},
	{netip.MustParsePrefix("::/96"), reasonReserved},             // deprecated IPv4-compatible addresses
	{netip.MustParsePrefix("fd00:ec2::254/128"), reasonMetadata}, // AWS IMDS over IPv6
	{netip.MustParsePrefix("fc00::/7"), reasonPrivate},
	{netip.MustParsePrefix("fe80::/10"), reasonLinkLocal},
	{netip.MustParsePrefix("ff00::/8"), reasonMulticast},
}

// denyReason returns why ip is on the default deny list, or reasonNone.
func denyReason(ip netip.Addr) reason {
	ip = ip.Unmap().WithZone("")
	for _, d := range denyList {
		if d.prefix.Contains(ip) {
			return d.reason
		}
	}
	return reasonNone
}

// policy decides which peers a relay may talk to. It is immutable after New
// except for the set of live relay ports.
type policy struct {
	deny     []netip.Prefix // Config.DenyPeers: beats everything else
	allow    []netip.Prefix
	relayIPs map[netip.Addr]struct{} // PublicIP, and RelayBindIP when specific
	ownIPs   map[netip.Addr]struct{} // relayIPs plus every address we listen on

	// relayLocal is where packets for one of our own relay ports are sent
	// instead of PublicIP: RelayBindIP, or loopback when relays bind the
	// unspecified address. This avoids depending on hairpin NAT when
	// PublicIP is a 1:1 NAT address that is not configured locally.
	relayLocal netip.Addr
	publicIP   netip.Addr

	mu   sync.RWMutex
	live map[uint16]struct{} // ports of open relay sockets
}

func newPolicy(cfg *Config, listenIPs []netip.Addr) *policy {
	p := &policy{
		deny:     cfg.DenyPeers,
		allow:    cfg.AllowPeers,
		relayIPs: map[netip.Addr]struct{}{cfg.PublicIP: {}},
		ownIPs:   map[netip.Addr]struct{}{cfg.PublicIP: {}},
		publicIP: cfg.PublicIP,
		live:     make(map[uint16]struct{}),
	}
	bind := cfg.bindAddr()
	switch {
	case !bind.IsUnspecified():
		p.relayIPs[bind] = struct{}{}
		p.relayLocal = bind
	case bind.Is4():
		p.relayLocal = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	default:
		p.relayLocal = netip.IPv6Loopback()
	}
	for ip := range p.relayIPs {
		p.ownIPs[ip] = struct{}{}
	}
	unspecified := bind.IsUnspecified()
	for _, ip := range listenIPs {
		ip = ip.Unmap().WithZone("")
		if ip.IsUnspecified() {
			unspecified = true
			continue
		}
		p.ownIPs[ip] = struct{}{}
	}
	if unspecified {
		// A socket bound to the unspecified address answers on every
		// local address.
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if pfx, err := netip.ParsePrefix(a.String()); err == nil {
					p.ownIPs[pfx.Addr().Unmap().WithZone("")] = struct{}{}
				}
			}
		}
	}
	return p
}

func (p *policy) allowed(ip netip.Addr) bool { return containsAddr(p.allow, ip) }
func (p *policy) denied(ip netip.Addr) bool  { return containsAddr(p.deny, ip) }

func containsAddr(prefixes []netip.Prefix, ip netip.Addr) bool {
	for _, pfx := range prefixes {
		if pfx.Contains(ip) {
			return true
		}
	}
	return false
}

func (p *policy) isRelayIP(ip netip.Addr) bool { _, ok := p.relayIPs[ip]; return ok }
func (p *policy) isOwnIP(ip netip.Addr) bool   { _, ok := p.ownIPs[ip]; return ok }

// permit decides a CreatePermission or ChannelBind for peer ip. DenyPeers
// comes first: an explicit deny beats AllowPeers and the relay-to-relay
// exception. Our relay IPs are permitted (so that two clients of this
// server can reach each other's relay addresses); the relay socket wrapper
// then only lets packets to those IPs through when the port is a live
// relay allocation.
func (p *policy) permit(ip netip.Addr) (ok bool, why reason) {
	ip = ip.Unmap().WithZone("")
	switch {
	case p.denied(ip):
		return false, reasonDenied
	case p.allowed(ip):
		return true, reasonNone
	case p.isRelayIP(ip):
		return true, reasonNone
	case p.isOwnIP(ip):
		return false, reasonOwnAddress
	}
	if r := denyReason(ip); r != reasonNone {
		return false, r
	}
	return true, reasonNone
}

// route decides a packet leaving a relay socket towards dst. It returns
// the address to actually send to (dst, or our relay's local address for
// relay-to-relay traffic), or a refusal reason.
func (p *policy) route(dst netip.AddrPort) (to netip.AddrPort, why reason) {
	ip := dst.Addr().Unmap().WithZone("")
	dst = netip.AddrPortFrom(ip, dst.Port())
	if p.denied(ip) {
		return dst, reasonDenied
	}
	if p.allowed(ip) {
		return dst, reasonNone
	}
	if p.isRelayIP(ip) && p.isLive(dst.Port()) {
		return netip.AddrPortFrom(p.relayLocal, dst.Port()), reasonNone
	}
	if p.isOwnIP(ip) {
		return dst, reasonOwnAddress
	}
	return dst, denyReason(ip)
}

// fromRelay rewrites the source of a packet that one of our relays sent to
// another (via relayLocal) to the address its client knows: PublicIP.
func (p *policy) fromRelay(src netip.AddrPort) (netip.AddrPort, bool) {
	if src.Addr().Unmap() != p.relayLocal || p.relayLocal == p.publicIP || !p.isLive(src.Port()) {
		return src, false
	}
	return netip.AddrPortFrom(p.publicIP, src.Port()), true
}

func (p *policy) isLive(port uint16) bool {
	p.mu.RLock()
	_, ok := p.live[port]
	p.mu.RUnlock()
	return ok
}

func (p *policy) addLive(port uint16) {
	p.mu.Lock()
	p.live[port] = struct{}{}
	p.mu.Unlock()
}

func (p *policy) removeLive(port uint16) {
	p.mu.Lock()
	delete(p.live, port)
	p.mu.Unlock()
}

func (p *policy) liveCount() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.live)
}
