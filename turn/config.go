package turn

import (
	"net/netip"
	"slices"
	"strconv"
	"time"
)

// Defaults applied by Config.Validate.
const (
	DefaultRealm         = "parley"
	DefaultCredentialTTL = time.Hour
	DefaultSocketBuffer  = 2 << 20 // 2 MiB; see the package doc for why

	DefaultMaxAllocationsPerUser = 10
	DefaultMaxAllocations        = 10000

	// DefaultBandwidthPerAllocation is 5 MB/s (40 Mbit/s) each way: a
	// 1080p video stream takes 2-6 Mbit/s and a screen share bursts
	// higher, so calls never meet it, while one allocation cannot fill a
	// server's uplink.
	DefaultBandwidthPerAllocation = 5_000_000

	// DefaultAllocationLifetime is RFC 8656's default allocation lifetime
	// (§7.2, 10 minutes), granted when the client asks for none.
	DefaultAllocationLifetime = 10 * time.Minute

	// MaxAllocationLifetime is the longest lifetime a client may obtain in
	// one Allocate or Refresh (RFC 8656 §7.2 recommends 3600 s). Pion
	// enforces it and it cannot be changed.
	MaxAllocationLifetime = time.Hour

	DefaultAuthFailureLimit  = 10
	DefaultAuthFailureWindow = time.Minute

	minSecretLen          = 16
	minAllocationLifetime = time.Minute
)

// Config is what the caller fills in to run a relay. The zero value is not
// usable: PublicIP and Secret are required. Call Validate (New does) to fill
// in the defaults.
type Config struct {
	// Realm is the STUN realm sent to clients. Default "parley".
	Realm string

	// PublicIP is the address advertised in XOR-RELAYED-ADDRESS. Behind a
	// 1:1 NAT it is the public address, not the one bound locally. It also
	// decides the address family of relay allocations. Required.
	PublicIP netip.Addr

	// RelayBindIP is the address relay sockets bind to. The zero value means
	// the unspecified address (0.0.0.0 or ::, by PublicIP's family).
	RelayBindIP netip.Addr

	// RelayPortMin and RelayPortMax bound the relay ports (inclusive). Both
	// 0 means any free port; otherwise 0 < RelayPortMin <= RelayPortMax.
	RelayPortMin uint16
	RelayPortMax uint16

	// Secret is the shared secret of the TURN REST API credential scheme
	// (coturn's use-auth-secret / static-auth-secret). Required, at least 16 bytes.
	Secret []byte

	// CredentialTTL is the lifetime of credentials the caller makes with
	// Credentials. The server itself only checks the expiry written in the
	// username. Default 1h.
	CredentialTTL time.Duration

	// AllowPeers lists peer prefixes the relay may reach although the
	// default deny list (loopback, private, link-local, own addresses...)
	// refuses them. Allowing a prefix that holds the server's own addresses
	// exposes every UDP port of the server on those addresses; allowing
	// 169.254.0.0/16 exposes the cloud metadata service unless DenyPeers
	// lists 169.254.169.254/32.
	AllowPeers []netip.Prefix

	// DenyPeers lists peer prefixes the relay must never reach, on top of
	// the default deny list. An explicit deny beats everything: a peer in
	// both DenyPeers and AllowPeers is refused, and so is a relay address
	// of this server (the relay-to-relay exception) if DenyPeers holds it.
	// Refusals count under the reason "denied".
	DenyPeers []netip.Prefix

	// MaxAllocationsPerUser bounds the allocations open at once per user;
	// the next Allocate is refused with 486 (Allocation Quota Reached).
	// The user is the id part of the REST username ("<expiry>:<id>"), so
	// it holds across credentials; a bare "<expiry>" username is its own
	// user. A browser in a call needs one or two allocations (one per
	// transport it tries). Default 10; negative means no limit.
	MaxAllocationsPerUser int

	// MaxAllocations bounds the allocations open at once on the server,
	// each being a UDP socket and a few goroutines. Default 10000;
	// negative means no limit (the file descriptor limit then applies).
	MaxAllocations int

	// BandwidthPerAllocation caps each allocation's relayed traffic, in
	// bytes per second of UDP payload, separately in each direction (client
	// to peer, peer to client), with bursts of up to a tenth of a second's
	// worth (at least 64 KiB) for video key frames. Packets over the cap
	// are dropped and counted under the reason "bandwidth". Default
	// DefaultBandwidthPerAllocation (5 MB/s); negative means no cap.
	BandwidthPerAllocation int

	// AllocationLifetime is the lifetime granted to an allocation whose
	// Allocate or Refresh carries no LIFETIME attribute. Between 1 minute
	// and MaxAllocationLifetime; default 10 minutes (RFC 8656 §7.2). See
	// the package doc for how requested lifetimes are treated.
	AllocationLifetime time.Duration

	// AuthFailureLimit and AuthFailureWindow rate-limit failed
	// authentications per source address (IPv4 address or IPv6 /64): a
	// token bucket of AuthFailureLimit failures, refilled at
	// AuthFailureLimit per AuthFailureWindow. While it is empty, every
	// authenticated request from that source is refused with 401 without
	// looking at the credentials (counted in Stats.AuthRateLimited), except
	// requests from the client address of a live allocation, so that a
	// misbehaving client behind the same NAT cannot cut running calls.
	// Defaults 10 and 1 minute (one more attempt every 6 s once spent);
	// a negative AuthFailureLimit turns the limit off.
	AuthFailureLimit  int
	AuthFailureWindow time.Duration

	// SocketBuffer is the SO_RCVBUF/SO_SNDBUF size requested for each relay
	// socket (see SetSocketBuffers). Default 2 MiB; negative leaves the
	// kernel default, which is only useful to measure its effect.
	SocketBuffer int

	// BatchDelay is how long, at most, the batched fast path lets
	// datagrams gather before it reads them, after a read that did not
	// fill a batch: it trades that much latency per relay leg for fewer
	// system calls and wakeups per packet. 0 reads as soon as anything
	// arrives. Only used where batched I/O exists (Linux).
	BatchDelay time.Duration

	// noBatching makes tests use the portable fast path (one datagram per
	// read and write) where batched I/O is available.
	noBatching bool

	// permissionLifetime and channelLifetime shorten RFC 8656's 300 s and
	// 10 minutes, for tests of expiry; zero means the RFC's.
	permissionLifetime time.Duration
	channelLifetime    time.Duration
}

// Validate fills in defaults and checks the configuration. The error wraps
// ErrInvalidConfig and names the field, e.g. "turn: Secret: must be at least 16 bytes".
func (c *Config) Validate() error {
	if c.Realm == "" {
		c.Realm = DefaultRealm
	}
	if c.CredentialTTL == 0 {
		c.CredentialTTL = DefaultCredentialTTL
	}
	if c.SocketBuffer == 0 {
		c.SocketBuffer = DefaultSocketBuffer
	}
	if c.MaxAllocationsPerUser == 0 {
		c.MaxAllocationsPerUser = DefaultMaxAllocationsPerUser
	}
	if c.MaxAllocations == 0 {
		c.MaxAllocations = DefaultMaxAllocations
	}
	if c.BandwidthPerAllocation == 0 {
		c.BandwidthPerAllocation = DefaultBandwidthPerAllocation
	}
	if c.AllocationLifetime == 0 {
		c.AllocationLifetime = DefaultAllocationLifetime
	}
	if c.AuthFailureLimit == 0 {
		c.AuthFailureLimit = DefaultAuthFailureLimit
	}
	if c.AuthFailureWindow == 0 {
		c.AuthFailureWindow = DefaultAuthFailureWindow
	}

	switch {
	case !c.PublicIP.IsValid():
		return &configError{"PublicIP", "required"}
	case c.PublicIP.Unmap().IsUnspecified():
		return &configError{"PublicIP", "must not be the unspecified address"}
	case c.PublicIP.Unmap().IsMulticast() || c.PublicIP.Unmap() == ipv4Broadcast:
		return &configError{"PublicIP", "must be a unicast address"}
	}
	c.PublicIP = c.PublicIP.Unmap().WithZone("")

	if c.RelayBindIP.IsValid() {
		c.RelayBindIP = c.RelayBindIP.Unmap()
		if c.RelayBindIP.Is4() != c.PublicIP.Is4() {
			return &configError{"RelayBindIP", "must be of the same address family as PublicIP"}
		}
		if c.RelayBindIP.IsMulticast() || c.RelayBindIP == ipv4Broadcast {
			return &configError{"RelayBindIP", "must be a unicast or the unspecified address"}
		}
	}

	if c.RelayPortMin != 0 || c.RelayPortMax != 0 {
		switch {
		case c.RelayPortMin == 0:
			return &configError{"RelayPortMin", "must be > 0 when RelayPortMax is set"}
		case c.RelayPortMin > c.RelayPortMax:
			return &configError{"RelayPortMin", "must not exceed RelayPortMax"}
		}
	}

	switch {
	case len(c.Secret) == 0:
		return &configError{"Secret", "required"}
	case len(c.Secret) < minSecretLen:
		return &configError{"Secret", "must be at least 16 bytes"}
	}

	if c.CredentialTTL < 0 {
		return &configError{"CredentialTTL", "must not be negative"}
	}

	if c.AllocationLifetime < minAllocationLifetime || c.AllocationLifetime > MaxAllocationLifetime {
		return &configError{"AllocationLifetime", "must be between 1m0s and 1h0m0s"}
	}
	if c.AuthFailureWindow < 0 {
		return &configError{"AuthFailureWindow", "must not be negative"}
	}

	var err error
	if c.AllowPeers, err = normalizePrefixes("AllowPeers", c.AllowPeers); err != nil {
		return err
	}
	if c.DenyPeers, err = normalizePrefixes("DenyPeers", c.DenyPeers); err != nil {
		return err
	}
	return nil
}

// normalizePrefixes returns a masked, unmapped copy of ps (the caller's
// slice stays as is), or an error naming field.
func normalizePrefixes(field string, ps []netip.Prefix) ([]netip.Prefix, error) {
	ps = slices.Clone(ps)
	for i, p := range ps {
		if !p.IsValid() {
			return nil, &configError{field, "invalid prefix at index " + strconv.Itoa(i)}
		}
		// Peers are compared unmapped: write ::ffff:10.0.0.0/104 as 10.0.0.0/8.
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		ps[i] = p.Masked()
	}
	return ps, nil
}

// bindAddr is the address relay sockets bind to.
func (c *Config) bindAddr() netip.Addr {
	if c.RelayBindIP.IsValid() {
		return c.RelayBindIP
	}
	if c.PublicIP.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

var ipv4Broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})
