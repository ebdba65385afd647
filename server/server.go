// Package server puts Parley together: the web app, the signaling service,
// the embedded TURN relay and the metrics endpoint, on sockets the caller
// opens. cmd/parley and the end-to-end tests both use it.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parleyhq/parley/account"
	"github.com/parleyhq/parley/config"
	"github.com/parleyhq/parley/e2ee"
	"github.com/parleyhq/parley/signaling"
	"github.com/parleyhq/parley/store"
	"github.com/parleyhq/parley/tlsmux"
	"github.com/parleyhq/parley/turn"
	"github.com/parleyhq/parley/web"
)

// Listeners are the sockets Parley serves on. HTTP is required; TURN ones
// are used when the relay is on; Metrics is optional.
type Listeners struct {
	HTTP    net.Listener   // plain HTTP: the app, /ws, /api
	TURNUDP net.PacketConn // TURN over UDP
	TURNTCP net.Listener   // TURN over TCP
	TLS     net.Listener   // TCP for HTTPS and TURN over TLS on one port (tls-listen)
	TURNTLS net.Listener   // TCP for TURN over TLS alone (turn-tls-listen)
	Metrics net.Listener   // Prometheus /metrics
}

// Server is a running Parley.
type Server struct {
	cfg       config.Config
	log       *slog.Logger
	ln        Listeners
	sig       *signaling.Server
	relay     *turn.Server
	http      *http.Server
	https     *http.Server
	shared    *tlsmux.Mux
	metrics   *http.Server
	errc      chan error
	relayOnly bool
	store     *store.Store     // opened by the caller; nil: no accounts
	accounts  *account.Service // nil without a store
	persist   *persister       // rooms and members to the store; nil without one
}

// Option adds an optional part to New.
type Option func(*Server)

// WithStore gives the server the data directory's store: host accounts,
// sessions and consultations (/api/login, /api/me, /api/consultations).
// The caller opens it and closes it after Shutdown.
func WithStore(st *store.Store) Option {
	return func(s *Server) { s.store = st }
}

// New builds Parley from cfg on the given sockets. It does not serve until
// Start.
func New(cfg config.Config, logger *slog.Logger, ln Listeners, opts ...Option) (*Server, error) {
	if ln.HTTP == nil {
		return nil, ErrNoListener
	}
	return build(cfg, logger, ln, false, opts...)
}

// NewRelay builds the standalone TURN relay (`parley turn`): the relay and
// the metrics listener only. cfg.TURNSecret must be set: it is shared with
// whatever hands out the credentials (Parley, or any TURN REST API user).
func NewRelay(cfg config.Config, logger *slog.Logger, ln Listeners) (*Server, error) {
	if cfg.TURNSecret == "" {
		return nil, ErrNoSecret
	}
	if ln.TURNUDP == nil && ln.TURNTCP == nil && ln.TURNTLS == nil {
		return nil, ErrNoListener
	}
	ln.HTTP, ln.TLS = nil, nil
	return build(cfg, logger, ln, true)
}

func build(cfg config.Config, logger *slog.Logger, ln Listeners, relayOnly bool, opts ...Option) (*Server, error) {
	if cfg.TURNSecret == "" {
		b := make([]byte, 32)
		rand.Read(b)
		cfg.TURNSecret = base64.RawURLEncoding.EncodeToString(b)
		cfg.SecretGenerated = true
	}
	s := &Server{cfg: cfg, log: logger, ln: ln, errc: make(chan error, 4), relayOnly: relayOnly}
	for _, o := range opts {
		o(s)
	}

	var turnTLS []net.Listener
	if ln.TLS != nil || ln.TURNTLS != nil {
		tc, err := tlsConfig(cfg, logger)
		if err != nil {
			return nil, err
		}
		if ln.TLS != nil {
			s.shared = tlsmux.New(ln.TLS, tc, logger.With("component", "tlsmux"))
			turnTLS = append(turnTLS, s.shared.TURN())
		}
		if ln.TURNTLS != nil {
			turnTLS = append(turnTLS, tls.NewListener(ln.TURNTLS, tc))
		}
	}

	if ln.TURNUDP != nil || ln.TURNTCP != nil || len(turnTLS) > 0 {
		publicIP := cfg.TURNPublicIP
		if !publicIP.IsValid() {
			publicIP = defaultRelayIP(ln)
		}
		var pcs []net.PacketConn
		var lns []net.Listener
		if ln.TURNUDP != nil {
			pcs = append(pcs, ln.TURNUDP)
		}
		if ln.TURNTCP != nil {
			lns = append(lns, ln.TURNTCP)
		}
		lns = append(lns, turnTLS...)
		// Relay sockets bind where the TURN socket does, when that is one
		// routable address (not all interfaces; not loopback, from which
		// the relay could reach no one else).
		var bindIP netip.Addr
		for _, a := range []net.Addr{addrOf(ln.TURNUDP), addrOfL(ln.TURNTCP)} {
			if ap, err := netip.ParseAddrPort(fmt.Sprint(a)); err == nil && !ap.Addr().IsUnspecified() && !ap.Addr().IsLoopback() {
				bindIP = ap.Addr().Unmap()
				break
			}
		}
		relay, err := turn.New(turn.Config{
			RelayBindIP:   bindIP,
			PublicIP:      publicIP,
			RelayPortMin:  cfg.TURNRelayMin,
			RelayPortMax:  cfg.TURNRelayMax,
			Secret:        []byte(cfg.TURNSecret),
			CredentialTTL: cfg.TURNCredTTL,
			AllowPeers:    cfg.TURNAllowPeers,
			DenyPeers:     cfg.TURNDenyPeers,
			// 0 is "no limit" in the flags, as in coturn; turn.Config
			// takes 0 for its default and a negative value for none.
			MaxAllocationsPerUser: quota(cfg.TURNUserQuota),
			MaxAllocations:        quota(cfg.TURNTotalQuota),
		}, logger, pcs, lns)
		if err != nil {
			return nil, fmt.Errorf("server: TURN relay: %w", err)
		}
		s.relay = relay
		s.cfg.TURNPublicIP = publicIP
	}

	if !relayOnly {
		// Closed by default: rooms are made by signed-in hosts, or by
		// anyone with -open-rooms (personal use). Without a store there is
		// nobody to sign in, so only -open-rooms opens them.
		canCreate := func(*http.Request) bool { return cfg.OpenRooms }
		var signIn func(http.ResponseWriter, *http.Request)
		var consults signaling.Consultations
		var persist signaling.Persister
		if s.store != nil {
			s.persist = newPersister(s.store, logger.With("component", "persist"))
			persist = s.persist
			s.accounts = account.New(account.Config{
				PublicURL:      cfg.PublicURL,
				TrustedProxies: cfg.TrustedProxies,
				OpenRooms:      cfg.OpenRooms,
				SessionTTL:     cfg.SessionTTL,
				InviteTTL:      cfg.InviteTTL,
			}, s.store, logger.With("component", "account"))
			canCreate, signIn = s.accounts.CanCreateRooms, s.accounts.SignInRequired
			consults = consultations{acc: s.accounts, st: s.store}
		}
		s.sig = signaling.New(signaling.Config{
			PublicURL:          cfg.PublicURL,
			AllowedOrigins:     cfg.AllowedOrigins,
			TrustedProxies:     cfg.TrustedProxies,
			ICEServers:         s.iceServers,
			MaxRooms:           cfg.MaxRooms,
			RoomsPerIP:         cfg.RoomsPerIP,
			RoomTTL:            cfg.RoomTTL,
			RoomUnusedTTL:      cfg.RoomUnusedTTL,
			AllowMissingOrigin: cfg.AllowNoOrigin,
			CanCreateRooms:     canCreate,
			SignInRequired:     signIn,
			Consultations:      consults,
			MaxFileBytes:       cfg.MaxFileBytes,
			Persister:          persist,
		}, logger.With("component", "signaling"))

		if s.store != nil {
			// Calls that were running when the server stopped: their pages
			// reconnect and resume (docs/protocol.md, Resume).
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			rooms, err := restoredRooms(ctx, s.store)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("server: reading back the calls of the last run: %w", err)
			}
			s.sig.Restore(rooms)
		}

		mux := http.NewServeMux()
		mux.Handle("/ws", s.sig)
		mux.Handle("/api/", s.sig)
		var requireHost func(http.Handler) http.Handler
		if s.accounts != nil {
			s.accounts.Register(mux)
			requireHost = s.accounts.RequireHost
		}
		mux.Handle("/", web.Handler(map[string]fs.FS{"e2ee": e2ee.Browser}, requireHost))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte("ok\n"))
		})
		newHTTP := func(h http.Handler) *http.Server {
			return &http.Server{
				Handler:           web.SecurityHeaders(h),
				ReadHeaderTimeout: 10 * time.Second,
				IdleTimeout:       120 * time.Second,
				MaxHeaderBytes:    16 << 10,
				ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
			}
		}
		s.http = newHTTP(mux)
		if s.shared != nil {
			// Browsers that have seen the HTTPS port keep to it.
			s.https = newHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Strict-Transport-Security", "max-age=31536000")
				mux.ServeHTTP(w, r)
			}))
		}
	}
	if ln.Metrics != nil {
		s.metrics = &http.Server{Handler: s.metricsHandler(), ReadHeaderTimeout: 10 * time.Second}
	}
	return s, nil
}

// iceServers hands a joining participant the relay's address with fresh,
// time-limited credentials: UDP first, then TCP.
func (s *Server) iceServers(r *http.Request, peerID string) []signaling.ICEServer {
	var out []signaling.ICEServer
	if s.relay != nil {
		out = s.embeddedICEServers(r, peerID)
	}
	if len(s.cfg.TURNURLs) > 0 {
		// An external relay (coturn with use-auth-secret, or another
		// `parley turn`) checks the same REST credentials.
		user, pass := turn.Credentials([]byte(s.cfg.TURNSecret), peerID, s.cfg.TURNCredTTL, time.Now())
		out = append(out, signaling.ICEServer{URLs: s.cfg.TURNURLs, Username: user, Credential: pass})
	}
	return out
}

func (s *Server) embeddedICEServers(r *http.Request, peerID string) []signaling.ICEServer {
	// UDP first, then TCP, then TLS (port 443 when shared with HTTPS): a
	// client behind a firewall falls back on its own. Each URL carries its
	// own socket's port.
	var urls []string
	host := s.turnHost(r)
	if s.ln.TURNUDP != nil {
		urls = append(urls, "turn:"+net.JoinHostPort(host, portOf(s.ln.TURNUDP.LocalAddr()))+"?transport=udp")
	}
	if s.ln.TURNTCP != nil {
		urls = append(urls, "turn:"+net.JoinHostPort(host, portOf(s.ln.TURNTCP.Addr()))+"?transport=tcp")
	}
	tlsHost := s.tlsHost(r)
	for _, l := range []net.Listener{s.ln.TURNTLS, s.ln.TLS} {
		if l != nil {
			urls = append(urls, "turns:"+net.JoinHostPort(tlsHost, portOf(l.Addr()))+"?transport=tcp")
		}
	}
	user, pass := turn.Credentials([]byte(s.cfg.TURNSecret), peerID, s.cfg.TURNCredTTL, time.Now())
	return []signaling.ICEServer{{URLs: urls, Username: user, Credential: pass}}
}

// quota maps a quota setting (0: no limit) to turn.Config's (negative: no limit).
func quota(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// turnHost is the host name clients use for TURN: the advertised IP if set,
// else the public URL's host, else the host the page was loaded from.
func (s *Server) turnHost(r *http.Request) string {
	if s.cfg.TURNPublicIP.IsValid() && !s.cfg.TURNPublicIP.IsLoopback() {
		return s.cfg.TURNPublicIP.String()
	}
	if s.cfg.PublicURL != "" {
		if u, err := url.Parse(s.cfg.PublicURL); err == nil {
			return u.Hostname()
		}
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" {
		return s.cfg.TURNPublicIP.String()
	}
	return host
}

// tlsHost is the name TURN-over-TLS clients use: it must match the
// certificate, so the ACME name or the public URL's host come first.
func (s *Server) tlsHost(r *http.Request) string {
	if len(s.cfg.ACMEDomains) > 0 {
		return s.cfg.ACMEDomains[0]
	}
	if s.cfg.PublicURL != "" {
		if u, err := url.Parse(s.cfg.PublicURL); err == nil {
			return u.Hostname()
		}
	}
	return s.turnHost(r)
}

func addrOf(pc net.PacketConn) net.Addr {
	if pc == nil {
		return nil
	}
	return pc.LocalAddr()
}

func addrOfL(l net.Listener) net.Addr {
	if l == nil {
		return nil
	}
	return l.Addr()
}

func portOf(a net.Addr) string {
	_, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return "3478"
	}
	return p
}

// defaultRelayIP picks the address to advertise when none is configured:
// the TURN socket's own address if it is bound to one, else this host's
// first global unicast IPv4 address, else loopback (a single-machine demo).
func defaultRelayIP(ln Listeners) netip.Addr {
	var bound net.Addr
	if ln.TURNUDP != nil {
		bound = ln.TURNUDP.LocalAddr()
	} else if ln.TURNTCP != nil {
		bound = ln.TURNTCP.Addr()
	}
	if bound != nil {
		if ap, err := netip.ParseAddrPort(bound.String()); err == nil && !ap.Addr().IsUnspecified() {
			return ap.Addr().Unmap()
		}
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			ip := p.Addr()
			if ip.Is4() && ip.IsGlobalUnicast() && !ip.IsLoopback() {
				return ip
			}
		}
	}
	return netip.MustParseAddr("127.0.0.1")
}

func (s *Server) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	if s.sig != nil {
		gauge("parley_rooms", "Rooms held by the signaling server.", func() float64 { return float64(s.sig.Rooms()) })
		gauge("parley_websockets", "Open signaling WebSockets.", func() float64 { return float64(s.sig.Connections()) })
	}
	if s.relay != nil {
		reg.MustRegister(relayCollector{s.relay})
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// URL is the address to open in a browser.
func (s *Server) URL() string {
	if s.ln.HTTP == nil {
		return ""
	}
	if s.cfg.PublicURL != "" {
		return s.cfg.PublicURL + "/"
	}
	ap, err := netip.ParseAddrPort(s.ln.HTTP.Addr().String())
	if err != nil {
		return "http://" + s.ln.HTTP.Addr().String() + "/"
	}
	host := "localhost"
	if a := ap.Addr(); !a.IsUnspecified() && !a.IsLoopback() {
		host = a.String()
		if a.Is6() {
			host = "[" + host + "]"
		}
	}
	return "http://" + host + ":" + strconv.Itoa(int(ap.Port())) + "/"
}

// Accounts is the account service (nil when New got no store).
func (s *Server) Accounts() *account.Service { return s.accounts }

// TURNSecretGenerated reports whether the TURN secret was made at start.
func (s *Server) TURNSecretGenerated() bool { return s.cfg.SecretGenerated }

// RelayAddress is the address the relay advertises (zero if off).
func (s *Server) RelayAddress() netip.Addr {
	if s.relay == nil {
		return netip.Addr{}
	}
	return s.cfg.TURNPublicIP
}

// Start serves in the background. Errors from the servers arrive on Err.
func (s *Server) Start() {
	serve := func(name string, srv *http.Server, l net.Listener) {
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.errc <- fmt.Errorf("server: %s: %w", name, err)
			}
		}()
	}
	if s.http != nil {
		serve("HTTP", s.http, s.ln.HTTP)
	}
	if s.shared != nil {
		go func() {
			if err := s.shared.Serve(); err != nil && !errors.Is(err, tlsmux.ErrClosed) {
				s.errc <- fmt.Errorf("server: TLS: %w", err)
			}
		}()
		if s.https != nil {
			serve("HTTPS", s.https, s.shared.Web())
		}
	}
	if s.metrics != nil {
		serve("metrics", s.metrics, s.ln.Metrics)
	}
}

// Err delivers a fatal serving error.
func (s *Server) Err() <-chan error { return s.errc }

// Shutdown stops accepting, tells participants the server is going away,
// waits for them (or ctx), and closes the relay.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	keep := func(e error) {
		if err == nil && e != nil {
			err = e
		}
	}
	if s.http != nil {
		keep(s.http.Shutdown(ctx))
	}
	if s.https != nil {
		keep(s.https.Shutdown(ctx))
	}
	if s.sig != nil {
		keep(s.sig.Shutdown(ctx))
	}
	if s.accounts != nil {
		s.accounts.Close()
	}
	if s.persist != nil {
		s.persist.Close()
	}
	if s.shared != nil {
		s.shared.Close()
	}
	if s.metrics != nil {
		s.metrics.Close()
	}
	if s.relay != nil {
		keep(s.relay.Close())
	}
	return err
}

// Close stops everything at once.
func (s *Server) Close() error {
	for _, h := range []*http.Server{s.http, s.https, s.metrics} {
		if h != nil {
			h.Close()
		}
	}
	if s.shared != nil {
		s.shared.Close()
	}
	if s.relay != nil {
		s.relay.Close()
	}
	if s.accounts != nil {
		s.accounts.Close()
	}
	return nil
}

// relayCollector exports the relay's counters, read once per scrape.
type relayCollector struct{ relay *turn.Server }

var (
	descAllocations      = prometheus.NewDesc("parley_turn_allocations", "Current TURN allocations.", nil, nil)
	descAllocationsTotal = prometheus.NewDesc("parley_turn_allocations_total", "TURN allocations made since start.", nil, nil)
	descAuthFailures     = prometheus.NewDesc("parley_turn_auth_failures_total", "Refused TURN authentications (bad, malformed or expired credentials).", nil, nil)
	descAuthRateLimited  = prometheus.NewDesc("parley_turn_auth_rate_limited_total", "TURN requests refused unchecked because their address failed authentication too often.", nil, nil)
	descQuotaRefusals    = prometheus.NewDesc("parley_turn_quota_refusals_total", "TURN allocations refused by the per-user or total quota.", nil, nil)
	descRefusals         = prometheus.NewDesc("parley_turn_permission_refusals_total", "Refused TURN permissions and dropped relay packets, by reason.", []string{"reason"}, nil)
	descPackets          = prometheus.NewDesc("parley_turn_relayed_packets_total", "Packets relayed, both directions, by client transport.", []string{"transport"}, nil)
	descBytes            = prometheus.NewDesc("parley_turn_relayed_bytes_total", "Payload bytes relayed, both directions, by client transport.", []string{"transport"}, nil)
)

func (relayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAllocations, descAllocationsTotal, descAuthFailures, descAuthRateLimited, descQuotaRefusals, descRefusals, descPackets, descBytes} {
		ch <- d
	}
}

func (c relayCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.relay.Stats()
	ch <- prometheus.MustNewConstMetric(descAllocations, prometheus.GaugeValue, float64(st.Allocations))
	ch <- prometheus.MustNewConstMetric(descAllocationsTotal, prometheus.CounterValue, float64(st.AllocationsTotal))
	ch <- prometheus.MustNewConstMetric(descAuthFailures, prometheus.CounterValue, float64(st.AuthFailures))
	ch <- prometheus.MustNewConstMetric(descAuthRateLimited, prometheus.CounterValue, float64(st.AuthRateLimited))
	ch <- prometheus.MustNewConstMetric(descQuotaRefusals, prometheus.CounterValue, float64(st.QuotaRefusals))
	for reason, n := range st.PermissionRefusalsByReason {
		ch <- prometheus.MustNewConstMetric(descRefusals, prometheus.CounterValue, float64(n), reason)
	}
	for tr, ts := range st.Transports {
		ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(ts.Packets), tr)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(ts.Bytes), tr)
	}
}

// consultations gives signaling the consultations of the store, through
// the account service (which knows link states and sessions).
type consultations struct {
	acc *account.Service
	st  *store.Store
}

func (c consultations) Lookup(ctx context.Context, id string) (signaling.Consultation, error) {
	co, err := c.acc.Consultation(ctx, id)
	if ls, ok := account.LinkStateOf(err); ok {
		switch ls.Code {
		case account.CodeLinkNotFound, account.CodeLinkMalformed:
			return signaling.Consultation{}, signaling.ErrRoomNotFound
		}
		return signaling.Consultation{}, &signaling.ProtocolError{Code: ls.Code, Message: ls.Message, Err: err}
	}
	if err != nil {
		return signaling.Consultation{}, err
	}
	return signaling.Consultation{ID: co.ID, Verifier: co.JoinVerifier, Title: co.Title, HostName: co.HostName, ScheduledAt: co.ScheduledAt, Locked: co.Locked}, nil
}

func (c consultations) IsHost(r *http.Request, id string) bool {
	// r is the WebSocket upgrade, asked about when its join arrives: by then
	// the upgrade's HTTP handler has returned and r's context is cancelled,
	// which would fail every session lookup and put the host in its own
	// waiting room. Keep the request's values, not its end.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	r = r.WithContext(ctx)
	u, ok := c.acc.SessionUser(r)
	if !ok {
		return false
	}
	co, err := c.st.Consultation(ctx, id)
	return err == nil && co.OwnerID == u.ID
}

func (c consultations) SetLocked(ctx context.Context, id string, locked bool) error {
	return c.st.SetConsultationLocked(ctx, id, locked)
}

func (c consultations) End(ctx context.Context, id string) error {
	return c.st.EndConsultation(ctx, id, time.Now())
}
