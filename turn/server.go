package turn

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
	pionturn "github.com/pion/turn/v5"
)

const (
	// refusalLogBurst and refusalLogWindow cap refusal log lines
	// (authentication and permission) to this many per window.
	refusalLogBurst  = 20
	refusalLogWindow = 10 * time.Second

	// pionLogBurst caps pion's own lines at Info and above per window.
	pionLogBurst = 100

	// closeWait bounds how long Close waits for relay sockets to be closed
	// by pion's allocation managers, which happens asynchronously.
	closeWait = 2 * time.Second
)

// Server is a running TURN relay. Create it with New, stop it with Close.
type Server struct {
	cfg    Config
	log    *slog.Logger
	pion   *pionturn.Server
	policy *policy
	now    func() time.Time // clock for credential expiry

	allocations        atomic.Int64
	allocationsTotal   atomic.Uint64
	authFailures       atomic.Uint64
	permissionRefusals atomic.Uint64
	packetsRelayed     atomic.Uint64
	bytesRelayed       atomic.Uint64

	refusals logLimiter
	bufOnce  sync.Once

	tcpMu    sync.Mutex
	tcpConns map[*trackedConn]struct{}
	closed   bool

	closeOnce sync.Once
	closeErr  error
}

// Stats is a snapshot of the server's counters.
type Stats struct {
	Allocations        int64  // allocations currently open
	AllocationsTotal   uint64 // allocations created since New
	AuthFailures       uint64 // requests refused for bad, malformed or expired credentials
	PermissionRefusals uint64 // CreatePermission/ChannelBind refusals plus packets dropped by the relay policy
	PacketsRelayed     uint64 // packets through relay sockets, both directions
	BytesRelayed       uint64 // payload bytes through relay sockets, both directions
}

// New starts a TURN server on the given sockets: TURN over UDP on each
// packet conn, TURN over TCP on each listener. The server owns the sockets
// from then on and closes them in Close; if New fails they are left open.
// A nil logger discards logs. The only sockets the server opens itself are
// relay sockets, one per allocation.
func New(cfg Config, logger *slog.Logger, packetConns []net.PacketConn, listeners []net.Listener) (*Server, error) {
	return newServer(cfg, logger, packetConns, listeners, time.Now)
}

// newServer is New with a clock for credential expiry, for tests.
func newServer(cfg Config, logger *slog.Logger, packetConns []net.PacketConn, listeners []net.Listener,
	now func() time.Time,
) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(packetConns) == 0 && len(listeners) == 0 {
		return nil, ErrNoSockets
	}
	if slices.Contains(packetConns, nil) || slices.Contains(listeners, nil) {
		return nil, ErrNilSocket
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.Secret = slices.Clone(cfg.Secret)
	cfg.AllowPeers = slices.Clone(cfg.AllowPeers)

	var listenIPs []netip.Addr
	for _, pc := range packetConns {
		listenIPs = append(listenIPs, addrIP(pc.LocalAddr()))
	}
	for _, l := range listeners {
		listenIPs = append(listenIPs, addrIP(l.Addr()))
	}

	s := &Server{
		cfg:      cfg,
		log:      logger,
		policy:   newPolicy(&cfg, listenIPs),
		refusals: logLimiter{perWindow: refusalLogBurst, window: refusalLogWindow},
		now:      now,
		tcpConns: make(map[*trackedConn]struct{}),
	}

	gen := &relayGenerator{s: s}
	pc := pionturn.ServerConfig{
		LoggerFactory: slogFactory{l: logger, lim: &logLimiter{perWindow: pionLogBurst, window: refusalLogWindow}},
		Realm:         cfg.Realm,
		// Relays exist only in PublicIP's family. With an IPv4 PublicIP,
		// strict mode makes an Allocate without REQUESTED-ADDRESS-FAMILY
		// from an IPv6 client (browsers omit it) get an IPv4 relay, as
		// RFC 6156 says, instead of failing on an IPv6 one.
		StrictAddressFamily: cfg.PublicIP.Is4(),
		AuthHandler:         s.authenticate,
		EventHandler: pionturn.EventHandler{
			OnAuth:              s.onAuth,
			OnAllocationCreated: s.onAllocationCreated,
			OnAllocationDeleted: s.onAllocationDeleted,
		},
	}
	for _, c := range packetConns {
		pc.PacketConnConfigs = append(pc.PacketConnConfigs, pionturn.PacketConnConfig{
			PacketConn:            c,
			RelayAddressGenerator: gen,
			PermissionHandler:     s.permit,
		})
	}
	for _, l := range listeners {
		pc.ListenerConfigs = append(pc.ListenerConfigs, pionturn.ListenerConfig{
			Listener:              &trackedListener{Listener: l, s: s},
			RelayAddressGenerator: gen,
			PermissionHandler:     s.permit,
		})
	}
	p, err := pionturn.NewServer(pc)
	if err != nil {
		return nil, fmt.Errorf("turn: starting pion server: %w", err)
	}
	s.pion = p
	logger.Info("turn: relay started", "realm", cfg.Realm, "public_ip", cfg.PublicIP,
		"relay_bind_ip", cfg.bindAddr(), "relay_ports", portRange(&cfg),
		"udp", len(packetConns), "tcp", len(listeners))
	return s, nil
}

func portRange(cfg *Config) string {
	if cfg.RelayPortMin == 0 {
		return "any"
	}
	return fmt.Sprintf("%d-%d", cfg.RelayPortMin, cfg.RelayPortMax)
}

// addrIP extracts the IP of a socket address; the zero Addr if it has none.
func addrIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr()
	case *net.TCPAddr:
		return a.AddrPort().Addr()
	case nil:
		return netip.Addr{}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr()
	}
	return netip.Addr{}
}

// Close stops the server: it closes the sockets given to New, the TCP
// connections accepted on them and, within a short wait, every relay
// socket. It is safe to call more than once; later calls return the first
// call's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.pion.Close()

		s.tcpMu.Lock()
		s.closed = true
		conns := make([]*trackedConn, 0, len(s.tcpConns))
		for c := range s.tcpConns {
			conns = append(conns, c)
		}
		s.tcpMu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}

		// Pion closes allocations from its read loops once they see the
		// closed sockets; wait for that so that relay ports are free when
		// Close returns.
		deadline := time.Now().Add(closeWait)
		for s.policy.liveCount() > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if n := s.policy.liveCount(); n > 0 {
			s.log.Warn("turn: relay sockets still open after close", "count", n)
		}
		s.log.Info("turn: relay stopped")
	})
	return s.closeErr
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Allocations:        s.allocations.Load(),
		AllocationsTotal:   s.allocationsTotal.Load(),
		AuthFailures:       s.authFailures.Load(),
		PermissionRefusals: s.permissionRefusals.Load(),
		PacketsRelayed:     s.packetsRelayed.Load(),
		BytesRelayed:       s.bytesRelayed.Load(),
	}
}

// authenticate is pion's AuthHandler. Pion calls it for every
// authenticated request (Allocate, Refresh, CreatePermission, ChannelBind),
// so successes are logged at Debug in onAuth only.
//
// The expiry is enforced on Allocate only, as coturn does (it checks
// credentials when a session is created, coturn/coturn#774): the other
// requests act on an allocation of the same 5-tuple and user made while the
// credential was valid, and refusing them would cut every relayed call
// longer than the credential lifetime when its allocation, permissions or
// channels are next refreshed. The password is still checked on each
// request.
func (s *Server) authenticate(ra *pionturn.RequestAttributes) (userID string, key []byte, ok bool) {
	expiry, id, err := parseUsername(ra.Username)
	if err != nil {
		s.refuseAuth(ra, "malformed", err)
		return "", nil, false
	}
	if ra.Method == stun.MethodAllocate && expiry < s.now().Unix() {
		s.refuseAuth(ra, "expired", nil)
		return "", nil, false
	}
	userID = id
	if userID == "" {
		userID = ra.Username
	}
	// Pion checks MESSAGE-INTEGRITY against this key; a wrong password is
	// reported to onAuth with verdict false.
	return userID, pionturn.GenerateAuthKey(ra.Username, s.cfg.Realm, restPassword(s.cfg.Secret, ra.Username)), true
}

func (s *Server) refuseAuth(ra *pionturn.RequestAttributes, reason string, err error) {
	s.authFailures.Add(1)
	attrs := []any{slog.String("reason", reason), slog.String("id", safeID(ra.Username)),
		slog.String("method", ra.Method.String()), slog.Any("client", ra.SrcAddr)}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	s.logRefusal("turn: credentials refused", attrs...)
}

// onAuth is called by pion after the AuthHandler accepted a username and
// the message integrity was checked with its key.
func (s *Server) onAuth(src, _ net.Addr, _, username, _, method string, verdict bool) {
	if !verdict {
		s.authFailures.Add(1)
		s.logRefusal("turn: credentials refused", slog.String("reason", "bad-password"),
			slog.String("id", safeID(username)), slog.String("method", method), slog.Any("client", src))
		return
	}
	s.log.Debug("turn: authenticated", "id", safeID(username), "method", method, "client", src)
}

// permit is pion's PermissionHandler for CreatePermission and ChannelBind.
func (s *Server) permit(client net.Addr, peer net.IP) bool {
	ip, ok := netip.AddrFromSlice(peer)
	reason := "invalid"
	if ok {
		ok, reason = s.policy.permit(ip)
	}
	if !ok {
		s.permissionRefusals.Add(1)
		s.logRefusal("turn: peer permission refused", slog.String("reason", reason),
			slog.String("peer", ip.Unmap().String()), slog.Any("client", client))
	}
	return ok
}

// logRefusal logs at Info, at most refusalLogBurst lines per window.
func (s *Server) logRefusal(msg string, attrs ...any) {
	ok, suppressed := s.refusals.allow(time.Now())
	if suppressed > 0 {
		s.log.Info("turn: refusal log lines suppressed", "count", suppressed)
	}
	if ok {
		s.log.Info(msg, attrs...)
	}
}

func (s *Server) onAllocationCreated(src, _ net.Addr, protocol, userID, _ string, relay net.Addr, _ int) {
	s.allocations.Add(1)
	s.allocationsTotal.Add(1)
	s.log.Debug("turn: allocation created", "id", userID, "client", src, "transport", protocol, "relay", relay)
}

func (s *Server) onAllocationDeleted(src, _ net.Addr, _, userID, _ string) {
	s.allocations.Add(-1)
	s.log.Debug("turn: allocation deleted", "id", userID, "client", src)
}

// trackedListener remembers accepted TCP connections so that Close can
// close them: pion closes only the listener, and a connection's read loop
// would otherwise live until the client hangs up.
type trackedListener struct {
	net.Listener
	s *Server
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if _, isTLS := c.(*tls.Conn); isTLS {
		// Pion looks for *tls.Conn to run the handshake with a timeout
		// and hand the TLS state to the AuthHandler: do not hide it.
		return c, nil
	}
	tc := &trackedConn{Conn: c, s: l.s}
	l.s.tcpMu.Lock()
	if l.s.closed {
		l.s.tcpMu.Unlock()
		_ = c.Close()
		return nil, net.ErrClosed
	}
	l.s.tcpConns[tc] = struct{}{}
	l.s.tcpMu.Unlock()
	return tc, nil
}

type trackedConn struct {
	net.Conn
	s    *Server
	once sync.Once
	err  error
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.tcpMu.Lock()
		delete(c.s.tcpConns, c)
		c.s.tcpMu.Unlock()
		c.err = c.Conn.Close()
	})
	return c.err
}
