// Package signaling is Parley's call broker: it creates rooms, admits up to
// MaxPeers participants to each over a WebSocket, and relays their offers,
// answers, ICE candidates and opaque end-to-end key messages. It never sees
// media or media keys. The wire protocol is in protocol.go and
// docs/protocol.md.
package signaling

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Config configures a Server. Zero fields take the defaults noted.
type Config struct {
	// PublicURL is the base URL users open (e.g. https://call.example.com);
	// empty means the page's own origin, from each request.
	PublicURL string
	// AllowedOrigins are extra origins (scheme://host[:port]) that may open
	// the WebSocket besides the page's own.
	AllowedOrigins []string
	// ICEServers returns the ICE servers (with fresh TURN credentials) for a
	// participant joining through request r. Nil means none.
	ICEServers func(r *http.Request, peerID string) []ICEServer
	// MaxRooms bounds the rooms held at once (default 10000).
	MaxRooms int
	// RoomsPerIP bounds rooms created per IP per hour (default 60).
	RoomsPerIP int
	// RoomTTL forgets a room nobody has been in for this long (default 7 days).
	RoomTTL time.Duration
	// RoomUnusedTTL forgets a room nobody has ever joined after this long
	// (default 1 hour), so abandoned rooms cannot keep the server full.
	RoomUnusedTTL time.Duration
	// AllowMissingOrigin admits WebSockets and room creations without an
	// Origin header (non-browser clients). Browsers always send one; off by
	// default.
	AllowMissingOrigin bool
	// CanCreateRooms reports whether request r may create a room
	// (POST /api/rooms): with -open-rooms anyone, else a signed-in host.
	// Nil: anyone. SignInRequired answers a refused one (401).
	CanCreateRooms func(r *http.Request) bool
	SignInRequired func(w http.ResponseWriter, r *http.Request)
	// Consultations, when set, makes the rooms of consultations (host
	// accounts, waiting rooms) joinable.
	Consultations Consultations
	// MaxFileBytes is told to pages in welcome: the largest file they let
	// people send each other (default 100 MiB).
	MaxFileBytes int64
	// Persister keeps rooms and members so calls survive a restart (nil:
	// memory only). Restore takes back what it kept.
	Persister Persister
	// ResumeGrace is how long a member whose connection dropped keeps its
	// place (default 60 s; persist.go).
	ResumeGrace time.Duration
	// MessagesPerSecond and MessageBurst bound each connection's message
	// rate (defaults 20 and 100: a join sends a burst of candidates).
	MessagesPerSecond float64
	MessageBurst      int
	// PingInterval is the keepalive interval (default 20 s); a connection
	// with no pong for 2.5 intervals is closed.
	PingInterval time.Duration
	// WriteTimeout bounds each write that has to wait for the socket
	// (default 10 s); writer.go.
	WriteTimeout time.Duration
	// TrustedProxies are the reverse proxies whose X-Forwarded-For is
	// believed: for a request from one of them, the client is the
	// rightmost address in that header that is not itself a trusted proxy.
	// Empty: X-Forwarded-For is ignored.
	TrustedProxies []netip.Prefix
}

// writeBuffers is gorilla's write buffer pool. Parley writes its frames
// itself (writer.go) and never asks gorilla for a writer, so the pool stays
// empty; without it gorilla would give every connection a 4 KiB buffer.
var writeBuffers = &sync.Pool{}

// Server is the signaling service. Create it with New; it is an
// http.Handler for /ws and /api/rooms.
type Server struct {
	cfg      Config
	log      *slog.Logger
	rooms    *registry
	up       websocket.Upgrader
	mux      *http.ServeMux
	consults Consultations
	persist  Persister
	mu       sync.Mutex
	conns    map[*client]struct{}
	closed   bool
	wg       sync.WaitGroup

	xffWarn sync.Once // X-Forwarded-For seen without -trusted-proxy
}

// New returns a Server.
func New(cfg Config, logger *slog.Logger) *Server {
	if cfg.MaxRooms <= 0 {
		cfg.MaxRooms = 10000
	}
	if cfg.RoomsPerIP <= 0 {
		cfg.RoomsPerIP = 60
	}
	if cfg.RoomTTL <= 0 {
		cfg.RoomTTL = 7 * 24 * time.Hour
	}
	if cfg.RoomUnusedTTL <= 0 {
		cfg.RoomUnusedTTL = time.Hour
	}
	if cfg.MessagesPerSecond <= 0 {
		cfg.MessagesPerSecond = 20
	}
	if cfg.MessageBurst <= 0 {
		cfg.MessageBurst = 100
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 20 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.ICEServers == nil {
		cfg.ICEServers = func(*http.Request, string) []ICEServer { return nil }
	}
	if cfg.ResumeGrace <= 0 {
		cfg.ResumeGrace = DefaultResumeGrace
	}
	if cfg.MaxFileBytes <= 0 {
		cfg.MaxFileBytes = 100 << 20
	}
	if cfg.CanCreateRooms == nil {
		cfg.CanCreateRooms = func(*http.Request) bool { return true }
	}
	if cfg.SignInRequired == nil {
		cfg.SignInRequired = func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "sign-in-required", "message": "Please sign in to do this.", "signIn": "/signin"})
		}
	}
	origins := make([]string, len(cfg.AllowedOrigins))
	for i, o := range cfg.AllowedOrigins {
		origins[i] = strings.ToLower(strings.TrimSuffix(o, "/"))
	}
	cfg.AllowedOrigins = origins
	s := &Server{
		cfg:      cfg,
		log:      logger,
		rooms:    newRegistry(cfg.MaxRooms, cfg.RoomsPerIP, cfg.RoomTTL, cfg.RoomUnusedTTL),
		conns:    map[*client]struct{}{},
		consults: cfg.Consultations,
		persist:  cfg.Persister,
	}
	if s.persist == nil {
		s.persist = noPersist{}
	}
	s.rooms.consults = cfg.Consultations
	s.rooms.persist = s.persist
	s.up = websocket.Upgrader{
		// Memory per idle connection (bench/signaling.md): a read buffer
		// size of 0 makes gorilla keep net/http's 4 KiB reader of the
		// handshake instead of allocating another, and no write buffer is
		// allocated (writeBuffers).
		ReadBufferSize:  0,
		WriteBufferPool: writeBuffers,
		CheckOrigin:     s.checkOrigin,
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			code, msg := CodeBadMessage, "This address is for Parley's call page only."
			if status == http.StatusForbidden {
				code, msg = CodeOriginForbidden, "Calls on this server can only be joined from its own page."
			}
			writeJSON(w, status, map[string]string{"error": code, "message": msg})
		},
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /ws", s.serveWS)
	s.mux.HandleFunc("POST /api/rooms", s.createRoom)
	s.mux.HandleFunc("GET /api/rooms/{id}", s.roomInfo)
	return s
}

// ServeHTTP serves GET /ws, POST /api/rooms and GET /api/rooms/{id}.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Rooms returns how many rooms the server holds.
func (s *Server) Rooms() int { return s.rooms.count() }

// Connections returns how many WebSockets are open.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Restore takes back rooms a Persister kept before a restart: their
// members are detached, with ResumeGrace to come back (persist.go). Call
// it before serving.
func (s *Server) Restore(rooms []RestoredRoom) { s.restore(rooms) }

// Shutdown stops taking new connections, tells every page the server is
// restarting (close 1012: the pages reconnect and resume, and their places
// are kept) and waits for the connections to end, or for ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.closeWith(CloseRestart, "The server is restarting. Reconnecting in a moment.")
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RoomRequest is the body of POST /api/rooms.
type RoomRequest struct {
	// JoinVerifier is b64url(V), V = SHA-256("parley/1 join-verifier" ||
	// T_join) (docs/security.md §2.5). Required: whoever joins must bring
	// T_join.
	JoinVerifier string `json:"joinVerifier"`
}

// decodeBody reads a JSON request body of at most limit bytes into v,
// refusing unknown fields and trailing data.
func decodeBody(r *http.Request, v any, limit int64) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil || int64(len(body)) > limit {
		return protoErr(CodeBadMessage, "The request is too large.", ErrBadMessage)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil || dec.More() {
		return protoErr(CodeBadMessage, "The request body is not the JSON object this API expects (docs/protocol.md).", ErrBadMessage)
	}
	return nil
}

// RoomResponse is the answer to POST /api/rooms.
type RoomResponse struct {
	ID  string `json:"id"`
	URL string `json:"url"`
}

func (s *Server) createRoom(w http.ResponseWriter, r *http.Request) {
	if !s.sameOrigin(r) {
		httpError(w, protoErr(CodeOriginForbidden, "Rooms can only be created from this site's own page.", nil))
		return
	}
	if !s.cfg.CanCreateRooms(r) {
		s.cfg.SignInRequired(w, r)
		return
	}
	var req RoomRequest
	if err := decodeBody(r, &req, 4096); err != nil {
		httpError(w, err)
		return
	}
	verifier, ok := decode32(req.JoinVerifier)
	if !ok {
		httpError(w, protoErr(CodeBadMessage, "A room needs a joinVerifier: 32 bytes in unpadded base64url (docs/protocol.md). The call page makes it from the link's secret.", ErrBadMessage))
		return
	}
	ip := s.clientIP(r)
	rm, err := s.rooms.create(ip, verifier)
	if err != nil {
		// IP addresses only at debug level (docs/security.md §9.7).
		s.log.Info("room creation refused", "err", err)
		s.log.Debug("room creation refused", "ip", ip)
		httpError(w, err)
		return
	}
	s.log.Debug("room created")
	writeJSON(w, http.StatusCreated, RoomResponse{ID: rm.id, URL: "/c/" + rm.id})
}

// RoomInfo is the answer to GET /api/rooms/{id}. Without the room's join
// token (header Parley-Join-Token) it says only that the room exists;
// with it, also how many are in the call.
type RoomInfo struct {
	ID           string `json:"id"`
	Exists       bool   `json:"exists"`
	Participants *int   `json:"participants,omitempty"`
	MaxPeers     int    `json:"maxPeers,omitempty"`
	// A consultation, with the token: its title, time and whether the host is there.
	Consultation bool   `json:"consultation,omitempty"`
	Title        string `json:"title,omitempty"`
	HostName     string `json:"hostName,omitempty"`
	ScheduledAt  string `json:"scheduledAt,omitempty"`
	HostPresent  *bool  `json:"hostPresent,omitempty"`
}

func (s *Server) roomInfo(w http.ResponseWriter, r *http.Request) {
	rm, err := s.rooms.get(r.Context(), r.PathValue("id"))
	if err != nil {
		httpError(w, err)
		return
	}
	info := RoomInfo{ID: rm.id, Exists: true}
	rm.mu.Lock()
	if tok := r.Header.Get(HeaderJoinToken); tok != "" && tokenMatches(tok, rm.verifier) {
		n := len(rm.peers)
		info.Participants, info.MaxPeers = &n, MaxPeers
		if c := rm.consult; c != nil {
			info.Consultation, info.Title, info.HostName, info.HostPresent = true, c.Title, c.HostName, boolp(rm.host != nil)
			if !c.ScheduledAt.IsZero() {
				info.ScheduledAt = c.ScheduledAt.UTC().Format(time.RFC3339)
			}
		}
	}
	rm.mu.Unlock()
	writeJSON(w, http.StatusOK, info)
}

// checkOrigin admits a WebSocket whose Origin is the page's own (scheme and
// host of PublicURL, or of the request) or listed in AllowedOrigins. A
// request without Origin is refused unless AllowMissingOrigin: browsers
// always send one.
func (s *Server) checkOrigin(r *http.Request) bool {
	return s.sameOrigin(r)
}

func (s *Server) sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return s.cfg.AllowMissingOrigin
	}
	o := strings.ToLower(origin)
	for _, a := range s.cfg.AllowedOrigins {
		if o == a {
			return true
		}
	}
	u, err := url.Parse(o)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return false
	}
	if s.cfg.PublicURL != "" {
		if p, err := url.Parse(strings.ToLower(s.cfg.PublicURL)); err == nil && p.Scheme == u.Scheme && p.Host == u.Host {
			return true
		}
	}
	if !strings.EqualFold(u.Host, r.Host) {
		return false
	}
	if scheme := s.requestScheme(r); u.Scheme != scheme {
		if s.cfg.PublicURL == "" && r.Header.Get("X-Forwarded-Proto") != "" {
			s.log.Warn("WebSocket origin refused: its scheme differs from this request's; behind a TLS-terminating proxy set -public-url (or -trusted-proxy)", "origin-scheme", u.Scheme, "request-scheme", scheme)
		}
		return false
	}
	return true
}

// requestScheme is "https" for a request that came over TLS (to Parley, or
// to a trusted reverse proxy that says so in X-Forwarded-Proto), else "http".
func (s *Server) requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	if s.fromTrustedProxy(r) {
		switch p := strings.ToLower(strings.TrimSpace(strings.Split(r.Header.Get("X-Forwarded-Proto"), ",")[0])); p {
		case "http", "https":
			return p
		}
	}
	return "http"
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": CodeInternal, "message": "The server is restarting. Please try again in a moment."})
		return
	}
	ws, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		s.log.Info("websocket upgrade refused", "origin", r.Header.Get("Origin"), "err", err)
		return
	}
	c := newClient(s, ws, r)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ws.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		c.run()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// clientIP is the address per-IP limits apply to: the peer address, or,
// when the peer is a trusted reverse proxy, the rightmost address in
// X-Forwarded-For that is not a trusted proxy itself.
func (s *Server) clientIP(r *http.Request) string {
	peer := remoteHost(r)
	if len(s.cfg.TrustedProxies) == 0 {
		if r.Header.Get("X-Forwarded-For") != "" {
			s.xffWarn.Do(func() {
				s.log.Warn("requests carry X-Forwarded-For but no -trusted-proxy is set: per-IP limits count the proxy's address for everyone behind it; set -trusted-proxy to the proxy's address")
			})
		}
		return peer
	}
	trusted := s.trusted
	if !trusted(peer) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop := strings.TrimSpace(hops[i])
		if a, err := netip.ParseAddr(hop); err == nil && !trusted(hop) {
			return a.Unmap().String()
		}
	}
	return peer
}

func remoteHost(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// trusted reports whether ip is one of the trusted reverse proxies.
func (s *Server) trusted(ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

func (s *Server) fromTrustedProxy(r *http.Request) bool {
	return len(s.cfg.TrustedProxies) > 0 && s.trusted(remoteHost(r))
}
