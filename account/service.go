// Package account is Parley's host side: host accounts with argon2id
// passwords, sign-in sessions in cookies, CSRF protection, login rate
// limits, and the consultations a signed-in host creates and hands out as
// guest links. Guests never need an account.
//
// The Service serves the JSON API under /api (login, logout, me,
// consultations; see docs/accounts.md) and gives the rest of the server
// what it needs to decide who may do what: SessionUser for the WebSocket
// handshake, CanCreateRooms for POST /api/rooms, RequireHost for host
// pages, and Consultation for the state of a guest link. The command line
// (`parley user ...`) is in cli.go.
//
// Everything durable is in the store; the login rate limits live in memory.
// The package never logs a password, token, session id, title or display
// name, and logs emails and IP addresses only at debug level.
package account

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/parleyhq/parley/store"
)

// CookieName is the session cookie. Its value is 32 random bytes as
// unpadded base64url; the store keeps only their SHA-256.
const CookieName = "parley_session"

// MaxBodyBytes bounds every request body of the account API.
const MaxBodyBytes = 16 << 10

// touchEvery is how stale a session's last_seen may get before a request
// writes it again (and slides the expiry).
const touchEvery = time.Minute

// Config configures a Service. Zero fields take the defaults noted.
type Config struct {
	// PublicURL is the base URL users open (e.g. https://call.example.com):
	// requests whose Origin is it are same-origin, and an https URL makes
	// the cookie Secure even when TLS ends at a reverse proxy. Empty: the
	// request's own Host is the origin, and the cookie is Secure only on
	// requests that arrived over TLS.
	PublicURL string
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names
	// the client for the per-IP login limit (as for signaling).
	TrustedProxies []netip.Prefix
	// OpenRooms lets anyone create plain rooms without signing in
	// (CanCreateRooms is then always true).
	OpenRooms bool
	// SessionTTL is how long a session lasts without use (sliding; default
	// 12 h); SessionMaxAge caps it from sign-in however busy (default 7 days).
	SessionTTL    time.Duration
	SessionMaxAge time.Duration
	// InviteTTL is how long a guest link works after the scheduled time,
	// or after creation when unscheduled (default 24 h).
	InviteTTL time.Duration
	// KeepPast is how long a consultation is kept after its link stopped
	// working (expired, revoked or ended) before it is deleted (default 30 days).
	KeepPast time.Duration
	// MaxActive bounds a host's consultations whose links still work (default 1000).
	MaxActive int
	// PastLimit bounds the past consultations GET /api/consultations lists (default 100).
	PastLimit int
	// Password is the argon2id cost for new hashes (default DefaultParams).
	Password Params
	// AccountFailures failed sign-ins per account and IPFailures per IP
	// address (IPv6: per /64) within FailureWindow block further attempts
	// until the window has passed (defaults 5, 20 and 15 minutes).
	AccountFailures int
	IPFailures      int
	FailureWindow   time.Duration
	// SweepInterval is how often expired sessions, old consultations and
	// stale rate-limit entries are removed (default 10 minutes; negative:
	// never in the background, call Sweep).
	SweepInterval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.SessionTTL, 12*time.Hour)
	def(&c.SessionMaxAge, 7*24*time.Hour)
	def(&c.InviteTTL, 24*time.Hour)
	def(&c.KeepPast, 30*24*time.Hour)
	def(&c.FailureWindow, 15*time.Minute)
	def(&c.SweepInterval, 10*time.Minute)
	if c.SessionTTL > c.SessionMaxAge {
		c.SessionTTL = c.SessionMaxAge
	}
	if c.MaxActive <= 0 {
		c.MaxActive = 1000
	}
	if c.PastLimit <= 0 {
		c.PastLimit = 100
	}
	if c.Password == (Params{}) {
		c.Password = DefaultParams
	}
	if c.AccountFailures <= 0 {
		c.AccountFailures = 5
	}
	if c.IPFailures <= 0 {
		c.IPFailures = 20
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.PublicURL = strings.TrimSuffix(c.PublicURL, "/")
}

// User is the signed-in host, as the rest of the server sees it.
type User struct {
	ID    int64
	Email string
}

// Service is the account layer. Create it with New and stop it with Close.
type Service struct {
	cfg       Config
	st        *store.Store
	log       *slog.Logger
	mux       *http.ServeMux
	publicURL *url.URL // nil when unset

	byAccount *limiter
	byIP      *limiter

	hashSlots chan struct{} // bounds concurrent argon2id runs (memory)
	dummyOnce sync.Once
	dummy     string // a hash of a random password, checked for unknown emails

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// New returns a Service on an open store. Unless cfg.SweepInterval is
// negative it starts a goroutine that sweeps expired state; Close stops it.
func New(cfg Config, st *store.Store, logger *slog.Logger) *Service {
	cfg.defaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	slots := min(max(runtime.GOMAXPROCS(0), 1), 4)
	s := &Service{
		cfg:       cfg,
		st:        st,
		log:       logger,
		byAccount: newLimiter(cfg.AccountFailures, cfg.FailureWindow, 100_000),
		byIP:      newLimiter(cfg.IPFailures, cfg.FailureWindow, 100_000),
		hashSlots: make(chan struct{}, slots),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	if cfg.PublicURL != "" {
		if u, err := url.Parse(strings.ToLower(cfg.PublicURL)); err == nil && u.Host != "" {
			s.publicURL = u
		}
	}
	s.routes()
	if cfg.SweepInterval > 0 {
		go s.sweepLoop()
	} else {
		close(s.done)
	}
	return s
}

// Close stops the background sweeper. It does not close the store.
func (s *Service) Close() {
	s.once.Do(func() { close(s.stop) })
	<-s.done
}

func (s *Service) sweepLoop() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := s.Sweep(ctx); err != nil {
				s.log.Warn("account sweep failed", "err", err)
			}
			cancel()
		}
	}
}

// Sweep deletes expired sessions and consultations whose link stopped
// working more than KeepPast ago, and forgets stale rate-limit entries.
func (s *Service) Sweep(ctx context.Context) error {
	now := s.cfg.Now()
	s.byAccount.sweep(now)
	s.byIP.sweep(now)
	sessions, err := s.st.DeleteExpiredSessions(ctx, now)
	if err != nil {
		return err
	}
	consultations, err := s.st.DeleteConsultationsInactiveSince(ctx, now.Add(-s.cfg.KeepPast))
	if err != nil {
		return err
	}
	if sessions > 0 || consultations > 0 {
		s.log.Debug("account sweep", "sessions", sessions, "consultations", consultations)
	}
	return nil
}

// Register mounts the account API on mux: /api/info, /api/login,
// /api/logout, /api/me and /api/consultations[/...]. Other /api paths stay with
// whatever mux routes them to.
func (s *Service) Register(mux *http.ServeMux) {
	for _, p := range []string{"/api/info", "/api/login", "/api/logout", "/api/me", "/api/consultations", "/api/consultations/"} {
		mux.Handle(p, s)
	}
}

// ServeHTTP serves the account API.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// ---- sessions ----

type ctxKey struct{}

type sessionInfo struct {
	user User
	sess store.Session
}

// newToken returns 32 random bytes as unpadded base64url.
func newToken() string {
	b := make([]byte, 32)
	rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b)
}

// sessionID is the store key of a cookie token: SHA-256 of its 32 bytes.
// ok is false for a value that is not a token's shape.
func sessionID(token string) (id []byte, ok bool) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(b) != 32 {
		return nil, false
	}
	h := sha256.Sum256(b)
	return h[:], true
}

// session finds the request's valid session: from the context when a
// middleware already looked, else from the cookie and the store. It
// slides the session's expiry at most once per touchEvery, and deletes
// an expired session it meets.
func (s *Service) session(r *http.Request) (sessionInfo, bool, error) {
	if si, ok := r.Context().Value(ctxKey{}).(sessionInfo); ok {
		return si, true, nil
	}
	c, err := r.Cookie(CookieName)
	if err != nil {
		return sessionInfo{}, false, nil
	}
	id, ok := sessionID(c.Value)
	if !ok {
		return sessionInfo{}, false, nil
	}
	ctx := r.Context()
	se, u, err := s.st.SessionUser(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return sessionInfo{}, false, nil
	}
	if err != nil {
		return sessionInfo{}, false, err
	}
	now := s.cfg.Now()
	if !now.Before(se.ExpiresAt) || u.Disabled {
		if err := s.st.DeleteSession(ctx, id); err != nil {
			s.log.Warn("cannot delete a dead session", "err", err)
		}
		return sessionInfo{}, false, nil
	}
	if now.Sub(se.LastSeen) >= touchEvery {
		exp := min64(now.Add(s.cfg.SessionTTL), se.CreatedAt.Add(s.cfg.SessionMaxAge))
		if err := s.st.TouchSession(ctx, id, now, exp); err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("cannot refresh a session", "err", err)
		} else {
			se.LastSeen, se.ExpiresAt = now, exp
		}
	}
	return sessionInfo{user: User{ID: u.ID, Email: u.Email}, sess: se}, true, nil
}

func min64(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// SessionUser returns the host signed in on the request (its session
// cookie; WebSocket upgrades carry it too), if any.
func (s *Service) SessionUser(r *http.Request) (User, bool) {
	si, ok, err := s.session(r)
	if err != nil {
		s.log.Warn("session lookup failed", "err", err)
		return User{}, false
	}
	return si.user, ok
}

// UserFromContext returns the host RequireHost put in the request context.
func UserFromContext(ctx context.Context) (User, bool) {
	si, ok := ctx.Value(ctxKey{}).(sessionInfo)
	return si.user, ok
}

// CanCreateRooms reports whether the request may create a plain room:
// always with OpenRooms, otherwise only with a host session.
func (s *Service) CanCreateRooms(r *http.Request) bool {
	if s.cfg.OpenRooms {
		return true
	}
	_, ok := s.SessionUser(r)
	return ok
}

// OpenRooms reports whether the server runs with -open-rooms.
func (s *Service) OpenRooms() bool { return s.cfg.OpenRooms }

// RequireHost serves next only for a request with a host session (the
// user is then in the context: UserFromContext); others get
// SignInRequired's 401. It does not check CSRF: wrap pages and GETs with
// it, and send state changes through the API.
func (s *Service) RequireHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		si, ok, err := s.session(r)
		if err != nil {
			s.log.Warn("session lookup failed", "err", err)
			httpError(w, err)
			return
		}
		if !ok {
			s.SignInRequired(w, r)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, si)))
	})
}

// signInHTML is the 401 page for browsers: a link, no script or inline
// style (the CSP forbids both).
const signInHTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in required — Parley</title>
<link rel="stylesheet" href="/css/style.css">
</head>
<body>
<main class="landing">
<h1>Please sign in</h1>
<p>Please sign in to do this. This page is for hosts; guests need only the link they were sent.</p>
<p><a href="` + signInPath + `">Sign in</a></p>
</main>
</body>
</html>
`

// SignInRequired writes the 401 for a request without a host session: JSON
// {"error":"sign-in-required","message":...,"signIn":"/signin"} for /api/
// paths and clients that accept JSON but not HTML, else a small HTML page
// with a link to /signin.
func (s *Service) SignInRequired(w http.ResponseWriter, r *http.Request) {
	accept := r.Header.Get("Accept")
	if strings.HasPrefix(r.URL.Path, "/api/") || (strings.Contains(accept, "application/json") && !strings.Contains(accept, "text/html")) {
		httpError(w, apiErr(CodeSignInRequired, msgSignIn))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusUnauthorized)
	w.Write([]byte(signInHTML))
}

// secure reports whether the cookie should be Secure for this request.
func (s *Service) secure(r *http.Request) bool {
	return r.TLS != nil || (s.publicURL != nil && s.publicURL.Scheme == "https")
}

func (s *Service) setCookie(w http.ResponseWriter, r *http.Request, token string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{
		Name:     CookieName,
		Value:    token,
		Path:     "/",
		MaxAge:   int(maxAge / time.Second),
		HttpOnly: true,
		Secure:   s.secure(r),
		SameSite: http.SameSiteStrictMode,
	})
}

func (s *Service) clearCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: s.secure(r), SameSite: http.SameSiteStrictMode,
	})
}

// sameOrigin is the Origin check of every state-changing request: the
// Origin header must be this site (the public URL's scheme and host, or
// the request's own Host; https when the request came over TLS), or, when
// a browser sent no Origin, Sec-Fetch-Site must say same-origin. A request
// with neither header is refused: browsers send at least one on a POST.
func (s *Service) sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return r.Header.Get("Sec-Fetch-Site") == "same-origin"
	}
	u, err := url.Parse(strings.ToLower(origin))
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.Path != "" || u.User != nil {
		return false
	}
	if s.publicURL != nil && u.Scheme == s.publicURL.Scheme && u.Host == s.publicURL.Host {
		return true
	}
	if r.TLS != nil && u.Scheme != "https" {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// hash and verify run argon2id in one of the hashSlots, so a burst of
// sign-ins queues instead of taking 64 MiB each at once.
func (s *Service) acquire(ctx context.Context) error {
	select {
	case s.hashSlots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Service) release() { <-s.hashSlots }

func (s *Service) verify(ctx context.Context, pw, phc string) (ok, stale bool, err error) {
	if err := s.acquire(ctx); err != nil {
		return false, false, err
	}
	defer s.release()
	return VerifyPassword(pw, phc, s.cfg.Password)
}

func (s *Service) hash(ctx context.Context, pw string) (string, error) {
	if err := s.acquire(ctx); err != nil {
		return "", err
	}
	defer s.release()
	return HashPassword(pw, s.cfg.Password), nil
}

// dummyHash is checked for unknown emails so they take as long as known
// ones and the answer time does not tell which emails have accounts.
func (s *Service) dummyHash() string {
	s.dummyOnce.Do(func() { s.dummy = HashPassword(newToken(), s.cfg.Password) })
	return s.dummy
}
