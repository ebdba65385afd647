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
	minSecretLen         = 16
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
	// exposes every UDP port of the server on those addresses.
	AllowPeers []netip.Prefix

	// SocketBuffer is the SO_RCVBUF/SO_SNDBUF size requested for each relay
	// socket (see SetSocketBuffers). Default 2 MiB; negative leaves the
	// kernel default, which is only useful to measure its effect.
	SocketBuffer int
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

	c.AllowPeers = slices.Clone(c.AllowPeers) // normalized below; the caller's slice stays as is
	for i, p := range c.AllowPeers {
		if !p.IsValid() {
			return &configError{"AllowPeers", "invalid prefix at index " + strconv.Itoa(i)}
		}
		// Peers are compared unmapped: write ::ffff:10.0.0.0/104 as 10.0.0.0/8.
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		c.AllowPeers[i] = p.Masked()
	}

	return nil
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
