package turn

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
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

// tlsHandshakeTimeout bounds the TLS handshake of a TURN-over-TLS
// connection, as pion would (see trackedConn.Read).
const tlsHandshakeTimeout = 10 * time.Second

// Server is a running TURN relay. Create it with New, stop it with Close.
type Server struct {
	cfg    Config
	log    *slog.Logger
	pion   *pionturn.Server
	policy *policy
	now    func() time.Time // clock for credential expiry and the auth limiter

	counters counters
	quotas   *quotas
	poller   *relayPoller // batched relay sockets (Linux); nil: plain ones
	authLim  *authLimiter // nil: no limit

	refusals logLimiter
	bufOnce  sync.Once

	relayMu sync.RWMutex
	relays  map[uint16]*relayConn // open relay sockets by port

	clientsMu sync.Mutex
	clients   map[string]int // client addresses of live allocations, exempt from the auth limit

	tcpMu    sync.Mutex
	tcpConns map[string]*trackedConn // by connKey
	closed   bool

	closeOnce sync.Once
	closeErr  error
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
		quotas:   newQuotas(cfg.MaxAllocationsPerUser, cfg.MaxAllocations),
		refusals: logLimiter{perWindow: refusalLogBurst, window: refusalLogWindow},
		now:      now,
		relays:   make(map[uint16]*relayConn),
		clients:  make(map[string]int),
		tcpConns: make(map[string]*trackedConn),
	}
	if cfg.AuthFailureLimit > 0 {
		s.authLim = newAuthLimiter(cfg.AuthFailureLimit, cfg.AuthFailureWindow, authLimiterMaxSources)
	}
	batching := batchSupported && !cfg.noBatching && len(packetConns) > 0
	if batching {
		p, err := newPoller(s)
		if err != nil {
			logger.Warn("turn: batched I/O unavailable, using plain reads and writes", "err", err)
			batching = false
		} else {
			s.poller = p
		}
	}

	pc := pionturn.ServerConfig{
		LoggerFactory: slogFactory{l: logger, lim: &logLimiter{perWindow: pionLogBurst, window: refusalLogWindow}},
		Realm:         cfg.Realm,
		// Relays exist only in PublicIP's family. With an IPv4 PublicIP,
		// strict mode makes an Allocate without REQUESTED-ADDRESS-FAMILY
		// from an IPv6 client (browsers omit it) get an IPv4 relay, as
		// RFC 6156 says, instead of failing on an IPv6 one.
		StrictAddressFamily: cfg.PublicIP.Is4(),
		AuthHandler:         s.authenticate,
		QuotaHandler:        s.checkQuota,
		// Pion grants this when an Allocate or Refresh has no LIFETIME, or
		// asks for MaxAllocationLifetime or more (see the package doc).
		AllocationLifetime: cfg.AllocationLifetime,
		PermissionTimeout:  cmp.Or(cfg.permissionLifetime, 300*time.Second), // RFC 8656 §9: exactly 300 s
		ChannelBindTimeout: cmp.Or(cfg.channelLifetime, 10*time.Minute),     // RFC 8656 §12
		EventHandler: pionturn.EventHandler{
			OnAuth:              s.onAuth,
			OnAllocationCreated: s.onAllocationCreated,
			OnAllocationDeleted: s.onAllocationDeleted,
			OnPermissionCreated: s.onPermissionCreated,
			OnPermissionDeleted: s.onPermissionDeleted,
			OnChannelCreated:    s.onChannelCreated,
			OnChannelDeleted:    s.onChannelDeleted,
		},
	}
	for _, c := range packetConns {
		lc := newListenConn(s, c, batching)
		pc.PacketConnConfigs = append(pc.PacketConnConfigs, pionturn.PacketConnConfig{
			PacketConn:            lc,
			RelayAddressGenerator: &relayGenerator{s: s, transport: transportUDP, lc: lc},
			PermissionHandler:     s.permit,
		})
	}
	for _, l := range listeners {
		pc.ListenerConfigs = append(pc.ListenerConfigs, pionturn.ListenerConfig{
			Listener:              &trackedListener{Listener: l, s: s},
			RelayAddressGenerator: &relayGenerator{s: s, transport: transportTCP},
			PermissionHandler:     s.permit,
		})
	}
	p, err := pionturn.NewServer(pc)
	if err != nil {
		if s.poller != nil {
			s.poller.close()
		}
		return nil, fmt.Errorf("turn: starting pion server: %w", err)
	}
	s.pion = p
	if s.poller != nil {
		s.poller.start()
	}
	logger.Info("turn: relay started", "realm", cfg.Realm, "public_ip", cfg.PublicIP,
		"relay_bind_ip", cfg.bindAddr(), "relay_ports", portRange(&cfg),
		"udp", len(packetConns), "tcp", len(listeners), "batched", s.poller != nil,
		"max_allocations", cfg.MaxAllocations, "max_allocations_per_user", cfg.MaxAllocationsPerUser,
		"bandwidth_per_allocation", cfg.BandwidthPerAllocation, "allocation_lifetime", cfg.AllocationLifetime,
		"deny_peers", len(cfg.DenyPeers), "allow_peers", len(cfg.AllowPeers))
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
		for _, c := range s.tcpConns {
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
		if s.poller != nil {
			s.poller.close()
		}
		s.log.Info("turn: relay stopped")
	})
	return s.closeErr
}

// Stats returns a snapshot of the counters. It only loads atomics and
// fills two small maps, so it is cheap enough for every metrics scrape.
func (s *Server) Stats() Stats { return s.counters.snapshot() }

// authenticate is pion's AuthHandler. Pion calls it for every
// authenticated request (Allocate, Refresh, CreatePermission, ChannelBind),
// so successes are logged at Debug in onAuth only.
//
// A source that failed too often is refused first, without parsing
// anything (see Config.AuthFailureLimit).
//
// The expiry is enforced on Allocate only, as coturn does (it checks
// credentials when a session is created, coturn/coturn#774): the other
// requests act on an allocation of the same 5-tuple and user made while the
// credential was valid, and refusing them would cut every relayed call
// longer than the credential lifetime when its allocation, permissions or
// channels are next refreshed. The password is still checked on each
// request.
func (s *Server) authenticate(ra *pionturn.RequestAttributes) (userID string, key []byte, ok bool) {
	if s.rateLimited(ra) {
		return "", nil, false
	}
	expiry, id, err := parseUsername(ra.Username)
	if err != nil {
		s.refuseAuth(ra.SrcAddr, ra.Username, ra.Method.String(), "malformed", err)
		return "", nil, false
	}
	if ra.Method == stun.MethodAllocate && expiry < s.now().Unix() {
		s.refuseAuth(ra.SrcAddr, ra.Username, ra.Method.String(), "expired", nil)
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

// rateLimited reports, and counts, a request refused because its source
// has no authentication failures left. Clients of live allocations are
// exempt.
func (s *Server) rateLimited(ra *pionturn.RequestAttributes) bool {
	if s.authLim == nil {
		return false
	}
	src, ok := sourceKey(ra.SrcAddr)
	if !ok || !s.authLim.blocked(src, s.now()) || s.isClient(ra.SrcAddr) {
		return false
	}
	s.counters.authRateLimited.Add(1)
	// The block was logged once when it began (refuseAuth); each refused
	// request is only a Debug line.
	s.log.Debug("turn: credentials refused", "reason", "rate-limited", "id", safeID(ra.Username),
		"method", ra.Method.String(), "client", ra.SrcAddr)
	return true
}

// refuseAuth counts and logs an authentication failure, and charges it to
// the source's failure bucket.
func (s *Server) refuseAuth(src net.Addr, username, method, why string, err error) {
	s.counters.authFailures.Add(1)
	attrs := []any{slog.String("reason", why), slog.String("id", safeID(username)),
		slog.String("method", method), slog.Any("client", src)}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	s.logRefusal("turn: credentials refused", attrs...)

	if s.authLim == nil {
		return
	}
	if key, ok := sourceKey(src); ok && s.authLim.fail(key, s.now()) {
		s.logRefusal("turn: credentials refused", slog.String("reason", "rate-limited"),
			slog.String("source", key.String()), slog.Int("failures", s.cfg.AuthFailureLimit),
			slog.Duration("window", s.cfg.AuthFailureWindow))
	}
}

// onAuth is called by pion after the AuthHandler accepted a username and
// the message integrity was checked with its key.
func (s *Server) onAuth(src, _ net.Addr, _, username, _, method string, verdict bool) {
	if !verdict {
		s.refuseAuth(src, username, method, "bad-password", nil)
		return
	}
	s.log.Debug("turn: authenticated", "id", safeID(username), "method", method, "client", src)
}

// checkQuota is pion's QuotaHandler, called on Allocate after
// authentication; a refusal is answered with 486 (Allocation Quota
// Reached). relayGenerator enforces the same quotas atomically.
func (s *Server) checkQuota(userID, _ string, src net.Addr) bool {
	if why := s.quotas.check(userID); why != "" {
		s.refuseQuota(why, userID, src)
		return false
	}
	return true
}

func (s *Server) refuseQuota(why, userID string, src net.Addr) {
	s.counters.quotaRefusals.Add(1)
	attrs := []any{slog.String("reason", why), slog.String("id", userID)}
	if src != nil {
		attrs = append(attrs, slog.Any("client", src))
	}
	s.logRefusal("turn: allocation refused", attrs...)
}

// permit is pion's PermissionHandler for CreatePermission and ChannelBind.
func (s *Server) permit(client net.Addr, peer net.IP) bool {
	ip, ok := netip.AddrFromSlice(peer)
	why := reasonInvalid
	if ok {
		ok, why = s.policy.permit(ip)
	}
	if !ok {
		s.counters.refuse(why)
		s.logRefusal("turn: peer permission refused", slog.String("reason", why.String()),
			slog.String("peer", ip.Unmap().String()), slog.Any("client", client))
	}
	return ok
}

// logRefusal logs at Info, at most refusalLogBurst lines per window.
//
// IP addresses (the client's, the peer's, a rate-limited source) go only to
// a debug line: at info the line says what was refused and why, not from
// where (docs/security.md §9.7).
func (s *Server) logRefusal(msg string, attrs ...any) {
	ok, suppressed := s.refusals.allow(time.Now())
	if suppressed > 0 {
		s.log.Info("turn: refusal log lines suppressed", "count", suppressed)
	}
	if !ok {
		return
	}
	var plain, addrs []any
	for _, a := range attrs {
		if at, isAttr := a.(slog.Attr); isAttr && addressKeys[at.Key] {
			addrs = append(addrs, a)
			continue
		}
		plain = append(plain, a)
	}
	s.log.Info(msg, plain...)
	if len(addrs) > 0 {
		s.log.Debug(msg+" (addresses)", append(plain, addrs...)...)
	}
}

// addressKeys are the log attributes that carry IP addresses.
var addressKeys = map[string]bool{"client": true, "peer": true, "source": true}

// fiveTuple identifies an allocation by its client and server addresses.
func fiveTuple(src, dst net.Addr) string { return addrString(src) + " " + addrString(dst) }

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

func (s *Server) onAllocationCreated(src, dst net.Addr, protocol, userID, _ string, relay net.Addr, _ int) {
	s.counters.allocations.Add(1)
	s.counters.allocationsTotal.Add(1)

	s.clientsMu.Lock()
	s.clients[addrString(src)]++
	s.clientsMu.Unlock()

	tr := "?"
	if rc := s.relayAt(relay); rc != nil {
		t := transportUDP
		var lc *listenConn
		var client netip.AddrPort
		if ua, udp := src.(*net.UDPAddr); udp {
			// A client of a UDP socket: relayGenerator knows which.
			if rc.home != nil && rc.home.udp != nil {
				lc, client = rc.home, ua.AddrPort()
			}
		} else {
			t = s.connTransport(src, dst)
		}
		rc.setClient(fiveTuple(src, dst), &s.counters.transports[t], lc, client)
		if lc != nil {
			lc.remember(client, rc)
		}
		tr = transportNames[t]
	}
	s.log.Debug("turn: allocation created", "id", userID, "client", src, "transport", tr,
		"protocol", protocol, "relay", relay)
}

func (s *Server) onAllocationDeleted(src, _ net.Addr, _, userID, _ string) {
	s.counters.allocations.Add(-1)
	s.clientsMu.Lock()
	if k := addrString(src); s.clients[k] <= 1 {
		delete(s.clients, k)
	} else {
		s.clients[k]--
	}
	s.clientsMu.Unlock()
	s.log.Debug("turn: allocation deleted", "id", userID, "client", src)
}

// isClient reports whether src is the client address of a live allocation.
func (s *Server) isClient(src net.Addr) bool {
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	return s.clients[addrString(src)] > 0
}

func (s *Server) onPermissionCreated(src, dst net.Addr, _, _, _ string, relay net.Addr, peer net.IP) {
	s.permissionEvent(src, dst, relay, peer, 1)
}

func (s *Server) onPermissionDeleted(src, dst net.Addr, _, _, _ string, relay net.Addr, peer net.IP) {
	s.permissionEvent(src, dst, relay, peer, -1)
}

func (s *Server) permissionEvent(src, dst, relay net.Addr, peer net.IP, delta int) {
	ip, ok := netip.AddrFromSlice(peer)
	if !ok {
		return
	}
	if rc := s.relayAt(relay); rc != nil {
		rc.permissionEvent(fiveTuple(src, dst), ip, delta)
	}
}

func (s *Server) onChannelCreated(src, dst net.Addr, _, _, _ string, relay, peer net.Addr, number uint16) {
	s.channelEvent(src, dst, relay, peer, number, true)
}

func (s *Server) onChannelDeleted(src, dst net.Addr, _, _, _ string, relay, peer net.Addr, number uint16) {
	s.channelEvent(src, dst, relay, peer, number, false)
}

func (s *Server) channelEvent(src, dst, relay, peer net.Addr, number uint16, add bool) {
	ua, ok := peer.(*net.UDPAddr)
	if !ok {
		return
	}
	if rc := s.relayAt(relay); rc != nil {
		rc.channelEvent(fiveTuple(src, dst), number, ua.AddrPort(), add)
	}
}

// addRelay registers an open relay socket.
func (s *Server) addRelay(rc *relayConn) {
	s.relayMu.Lock()
	s.relays[rc.port] = rc
	s.relayMu.Unlock()
	s.policy.addLive(rc.port)
}

// removeRelay forgets a relay socket that is closing.
func (s *Server) removeRelay(rc *relayConn) {
	s.policy.removeLive(rc.port)
	s.relayMu.Lock()
	if s.relays[rc.port] == rc {
		delete(s.relays, rc.port)
	}
	s.relayMu.Unlock()
}

// relayAt returns the open relay socket advertised as relay, or nil.
func (s *Server) relayAt(relay net.Addr) *relayConn {
	ua, ok := relay.(*net.UDPAddr)
	if !ok {
		return nil
	}
	s.relayMu.RLock()
	defer s.relayMu.RUnlock()
	return s.relays[uint16(ua.Port)]
}
