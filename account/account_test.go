package account

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/store"
)

var bg = context.Background()

// clock is the injectable clock of the tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logSink collects log output so tests can check what is never logged.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}
func (l *logSink) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.buf.String() }

type testEnv struct {
	t     *testing.T
	dir   string
	st    *store.Store
	svc   *Service
	srv   *httptest.Server
	clock *clock
	logs  *logSink
	cfg   Config
}

const (
	alice   = "alice@example.com"
	alicePW = "alice's long password"
	bob     = "bob@example.com"
	bobPW   = "bob's long password!"
)

// newEnv starts the account API on a real loopback server with a temp
// data directory, fast argon2 parameters and a fake clock. Two hosts exist.
func newEnv(t *testing.T, mods ...func(*Config)) *testEnv {
	t.Helper()
	e := &testEnv{t: t, dir: t.TempDir(), clock: &clock{t: time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)}, logs: &logSink{}}
	var err error
	if e.st, err = store.Open(e.dir, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.st.Close() })
	e.cfg = Config{Password: fastParams, Now: e.clock.Now, SweepInterval: -1}
	for _, m := range mods {
		m(&e.cfg)
	}
	e.start(false)
	for _, u := range [][2]string{{alice, alicePW}, {bob, bobPW}} {
		if _, err := e.st.AddUser(bg, u[0], HashPassword(u[1], fastParams), e.clock.Now()); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *testEnv) start(tls bool) {
	e.svc = New(e.cfg, e.st, slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	mux := http.NewServeMux()
	e.svc.Register(mux)
	mux.Handle("GET /host", e.svc.RequireHost(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, _ := UserFromContext(r.Context())
		fmt.Fprintf(w, "host page for %s", u.Email)
	})))
	mux.HandleFunc("POST /api/rooms", func(w http.ResponseWriter, r *http.Request) {
		if !e.svc.CanCreateRooms(r) {
			e.svc.SignInRequired(w, r)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	if tls {
		e.srv = httptest.NewTLSServer(mux)
	} else {
		e.srv = httptest.NewServer(mux)
	}
	svc, srv := e.svc, e.srv
	e.t.Cleanup(func() { srv.Close(); svc.Close() })
}

// response is a decoded answer.
type response struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

func (r response) str(k string) string { s, _ := r.json[k].(string); return s }

// req describes one request; the zero value is a same-origin request with
// no session.
type req struct {
	method, path string
	body         any // string: sent as is; otherwise JSON-encoded
	cookie       string
	csrf         string
	origin       string // "" = the server's own; "-" = none
	header       map[string]string
	contentType  string // "" = application/json when there is a body
	remote       string // X-Forwarded-For (needs TrustedProxies)
}

func (e *testEnv) do(q req) response {
	e.t.Helper()
	var body io.Reader
	if q.body != nil {
		if s, ok := q.body.(string); ok {
			body = strings.NewReader(s)
		} else {
			b, _ := json.Marshal(q.body)
			body = bytes.NewReader(b)
		}
	}
	r, err := http.NewRequest(q.method, e.srv.URL+q.path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	switch q.origin {
	case "":
		r.Header.Set("Origin", e.srv.URL)
	case "-":
	default:
		r.Header.Set("Origin", q.origin)
	}
	if q.body != nil {
		ct := q.contentType
		if ct == "" {
			ct = "application/json"
		}
		r.Header.Set("Content-Type", ct)
	}
	if q.cookie != "" {
		r.AddCookie(&http.Cookie{Name: CookieName, Value: q.cookie})
	}
	if q.csrf != "" {
		r.Header.Set(CSRFHeader, q.csrf)
	}
	if q.remote != "" {
		r.Header.Set("X-Forwarded-For", q.remote)
	}
	for k, v := range q.header {
		r.Header.Set(k, v)
	}
	res, err := e.srv.Client().Do(r)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	out := response{status: res.StatusCode, header: res.Header}
	out.body, _ = io.ReadAll(res.Body)
	if strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(out.body, &out.json); err != nil {
			e.t.Fatalf("%s %s: JSON body %q: %v", q.method, q.path, out.body, err)
		}
	}
	return out
}

// login signs in and returns the session cookie and the CSRF token.
func (e *testEnv) login(email, pw string) (cookie, csrf string) {
	e.t.Helper()
	res := e.do(req{method: "POST", path: "/api/login", body: map[string]string{"email": email, "password": pw}})
	if res.status != http.StatusNoContent {
		e.t.Fatalf("login %s: %d %s", email, res.status, res.body)
	}
	c := sessionCookie(e.t, res)
	me := e.do(req{method: "GET", path: "/api/me", cookie: c.Value})
	if me.status != 200 || me.str("csrf") == "" {
		e.t.Fatalf("me: %d %s", me.status, me.body)
	}
	return c.Value, me.str("csrf")
}

func sessionCookie(t *testing.T, res response) *http.Cookie {
	t.Helper()
	for _, c := range (&http.Response{Header: res.header}).Cookies() {
		if c.Name == CookieName {
			return c
		}
	}
	t.Fatalf("no %s cookie in %v", CookieName, res.header["Set-Cookie"])
	return nil
}

func wantErr(t *testing.T, res response, status int, code string) {
	t.Helper()
	if res.status != status || res.str("error") != code || res.str("message") == "" {
		t.Fatalf("got %d %s, want %d %q with a message", res.status, res.body, status, code)
	}
	if res.header.Get("Cache-Control") != "no-store" {
		t.Errorf("refusal without Cache-Control: no-store")
	}
}

func verifier(s string) string {
	h := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

func TestLogin(t *testing.T) {
	e := newEnv(t)
	res := e.do(req{method: "POST", path: "/api/login", body: map[string]string{"email": " Alice@Example.com ", "password": alicePW}})
	if res.status != http.StatusNoContent {
		t.Fatalf("login: %d %s", res.status, res.body)
	}
	c := sessionCookie(t, res)
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Secure || c.MaxAge != int((7*24*time.Hour).Seconds()) || len(c.Value) != 43 {
		t.Fatalf("cookie over plain HTTP: %+v", c)
	}
	me := e.do(req{method: "GET", path: "/api/me", cookie: c.Value})
	if me.status != 200 || me.str("email") != alice || len(me.str("csrf")) != 43 {
		t.Fatalf("me: %d %s", me.status, me.body)
	}
	if u, _ := e.st.UserByEmail(bg, alice); !u.LastLoginAt.Equal(e.clock.Now()) {
		t.Fatalf("last login %v", u.LastLoginAt)
	}

	// The token itself is not in the database, only its hash.
	raw, _ := base64.RawURLEncoding.DecodeString(c.Value)
	id := sha256.Sum256(raw)
	if _, err := e.st.Session(bg, id[:]); err != nil {
		t.Fatalf("session by hash: %v", err)
	}
	if _, err := e.st.Session(bg, raw); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the raw token is a key: %v", err)
	}

	// One answer for every failure.
	if err := e.st.SetDisabled(bg, mustUser(t, e.st, bob).ID, true); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]map[string]string{
		"wrong password": {"email": alice, "password": "not the password"},
		"unknown email":  {"email": "nobody@example.com", "password": alicePW},
		"disabled":       {"email": bob, "password": bobPW},
		"not an email":   {"email": "alice", "password": alicePW},
	} {
		res := e.do(req{method: "POST", path: "/api/login", body: body})
		wantErr(t, res, http.StatusUnauthorized, CodeBadLogin)
		if res.str("message") != "That email and password do not match an account here." {
			t.Errorf("%s: message %q", name, res.str("message"))
		}
		if len(res.header["Set-Cookie"]) != 0 {
			t.Errorf("%s: cookie set on failure", name)
		}
	}
	wantErr(t, e.do(req{method: "POST", path: "/api/login", body: map[string]string{"email": alice}}), 400, CodeBadRequest)

	// Nothing secret in the logs.
	logs := e.logs.String()
	for _, secret := range []string{alicePW, bobPW, c.Value, me.str("csrf"), alice, "nobody@example.com", "127.0.0.1"} {
		if strings.Contains(logs, secret) {
			t.Errorf("log at info level contains %q:\n%s", secret, logs)
		}
	}
}

func mustUser(t *testing.T, st *store.Store, email string) store.User {
	t.Helper()
	u, err := st.UserByEmail(bg, email)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestUnknownEmailCostsAHash: an unknown email is checked against a dummy
// hash, so it takes about as long as a wrong password for a known one.
func TestUnknownEmailCostsAHash(t *testing.T) {
	if testing.Short() {
		t.Skip("timing")
	}
	e := newEnv(t, func(c *Config) { c.Password = Params{Memory: 16 * 1024, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32} })
	e.st.SetPassword(bg, mustUser(t, e.st, alice).ID, HashPassword(alicePW, e.cfg.Password))
	e.svc.dummyHash()
	timeIt := func(email string) time.Duration {
		best := time.Hour
		for i := 0; i < 3; i++ {
			start := time.Now()
			e.do(req{method: "POST", path: "/api/login", body: map[string]string{"email": email, "password": "wrong password!"}, remote: strconv.Itoa(i)})
			best = min(best, time.Since(start))
			e.clock.Add(time.Hour) // past the rate limit window
		}
		return best
	}
	known, unknown := timeIt(alice), timeIt("nobody@example.com")
	t.Logf("wrong password %v, unknown email %v", known, unknown)
	if unknown < known/3 {
		t.Errorf("unknown email answered in %v, a known one in %v: an email oracle", unknown, known)
	}
}

func TestCookieSecure(t *testing.T) {
	e := newEnv(t)
	e.srv.Close()
	e.start(true)
	res := e.do(req{method: "POST", path: "/api/login", body: map[string]string{"email": alice, "password": alicePW}})
	if c := sessionCookie(t, res); !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie over TLS: %+v", c)
	}
	// Plain HTTP behind a TLS proxy: the public URL decides.
	e2 := newEnv(t, func(c *Config) { c.PublicURL = "https://call.example.com" })
	res = e2.do(req{method: "POST", path: "/api/login", body: map[string]string{"email": alice, "password": alicePW}})
	if c := sessionCookie(t, res); !c.Secure {
		t.Fatalf("cookie with an https public URL: %+v", c)
	}
}

func TestRateLimitPerAccount(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 5; i++ {
		wantErr(t, e.do(req{method: "POST", path: "/api/login", body: map[string]string{"email": alice, "password": "wrong password"}}), 401, CodeBadLogin)
		e.clock.Add(time.Minute)
	}
	// Blocked now, even with the right password, until the first failure
	// is 15 minutes old.
	res := e.do(req{method: "POST", path: "/api/login", body: map[string]string{"email": "ALICE@example.com", "password": alicePW}})
	wantErr(t, res, http.StatusTooManyRequests, CodeRateLimited)
	if ra := res.header.Get("Retry-After"); ra != "600" {
		t.Fatalf("Retry-After %q, want 600 (10 minutes left)", ra)
	}
	if !strings.Contains(res.str("message"), "wait 10 minutes") {
		t.Fatalf("message %q", res.str("message"))
	}
	e.do(req{method: "POST", path: "/api/login", body: map[string]string{"email": alice, "password": alicePW}})
	if n := strings.Count(e.logs.String(), "sign-in blocked"); n != 1 {
		t.Fatalf("%d block warnings for one block:\n%s", n, e.logs.String())
	}
	// Another account from the same address is not blocked.
	e.login(bob, bobPW)
	e.clock.Add(10 * time.Minute)
	e.login(alice, alicePW)
	// Success cleared the account's failures.
	for i := 0; i < 4; i++ {
		e.do(req{method: "POST", path: "/api/login", body: map[string]string{"email": alice, "password": "wrong password"}})
	}
	e.login(alice, alicePW)

	// Unknown emails are limited the same way (no oracle in the 429 either).
	for i := 0; i < 5; i++ {
		e.do(req{method: "POST", path: "/api/login", body: map[string]string{"email": "ghost@example.com", "password": "x"}})
	}
	res = e.do(req{method: "POST", path: "/api/login", body: map[string]string{"email": "ghost@example.com", "password": "x"}})
	wantErr(t, res, http.StatusTooManyRequests, CodeRateLimited)
}

func TestRateLimitPerIP(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	const ip = "2001:db8:5:6:1::1"
	for i := 0; i < 20; i++ {
		res := e.do(req{method: "POST", path: "/api/login", remote: ip,
			body: map[string]string{"email": fmt.Sprintf("user%d@example.com", i), "password": "guess"}})
		wantErr(t, res, 401, CodeBadLogin)
	}
	// The whole /64 is blocked, for every account.
	res := e.do(req{method: "POST", path: "/api/login", remote: "2001:db8:5:6:ffff::2", body: map[string]string{"email": alice, "password": alicePW}})
	wantErr(t, res, http.StatusTooManyRequests, CodeRateLimited)
	if res.header.Get("Retry-After") != "900" || !strings.Contains(res.str("message"), "15 minutes") {
		t.Fatalf("Retry-After %q, message %q", res.header.Get("Retry-After"), res.str("message"))
	}
	// Other networks are not.
	for _, other := range []string{"2001:db8:5:7::1", "198.51.100.7"} {
		if res := e.do(req{method: "POST", path: "/api/login", remote: other, body: map[string]string{"email": alice, "password": alicePW}}); res.status != 204 {
			t.Fatalf("from %s: %d %s", other, res.status, res.body)
		}
	}
	e.clock.Add(15 * time.Minute)
	if res := e.do(req{method: "POST", path: "/api/login", remote: ip, body: map[string]string{"email": alice, "password": alicePW}}); res.status != 204 {
		t.Fatalf("after the window: %d %s", res.status, res.body)
	}
}

func TestLimiterBounded(t *testing.T) {
	l := newLimiter(3, time.Minute, 10)
	now := time.Unix(0, 0)
	for i := 0; i < 100; i++ {
		l.fail(fmt.Sprint(i), now)
	}
	if n := l.keys(); n > 10 {
		t.Fatalf("%d keys, cap 10", n)
	}
	l.fail("k", now)
	l.fail("k", now.Add(time.Second))
	l.fail("k", now.Add(2*time.Second))
	l.fail("k", now.Add(3*time.Second))
	if w := l.wait("k", now.Add(4*time.Second)); w != 57*time.Second {
		t.Fatalf("wait %v, want 57s (from the oldest of the last 3)", w)
	}
	l2 := newLimiter(2, time.Minute, 10)
	if l2.fail("x", now) || !l2.fail("x", now) {
		t.Fatal("fail does not report the failure that blocks")
	}
	l.sweep(now.Add(time.Hour))
	if n := l.keys(); n != 0 {
		t.Fatalf("%d keys after sweep", n)
	}
}

func TestOriginAndCSRF(t *testing.T) {
	e := newEnv(t)
	cookie, csrf := e.login(alice, alicePW)
	create := map[string]any{"title": "Check-up", "joinVerifier": verifier("a")}

	wantErr(t, e.do(req{method: "POST", path: "/api/consultations", body: create, cookie: cookie}), 403, CodeCSRF)
	// A token one character off (the first one changed, whatever it was).
	wrong := "x" + csrf[1:]
	if csrf[0] == 'x' {
		wrong = "y" + csrf[1:]
	}
	res := e.do(req{method: "POST", path: "/api/consultations", body: create, cookie: cookie, csrf: wrong})
	wantErr(t, res, 403, CodeCSRF)
	if !strings.Contains(res.str("message"), "does not match") {
		t.Errorf("wrong token message %q", res.str("message"))
	}
	_, otherCSRF := e.login(bob, bobPW)
	wantErr(t, e.do(req{method: "POST", path: "/api/consultations", body: create, cookie: cookie, csrf: otherCSRF}), 403, CodeCSRF)

	for _, origin := range []string{"https://evil.example", "null", "http://" + strings.TrimPrefix(e.srv.URL, "http://") + ".evil.example", "-"} {
		wantErr(t, e.do(req{method: "POST", path: "/api/consultations", body: create, cookie: cookie, csrf: csrf, origin: origin}), 403, CodeOriginForbidden)
		wantErr(t, e.do(req{method: "POST", path: "/api/login", body: map[string]string{"email": alice, "password": alicePW}, origin: origin}), 403, CodeOriginForbidden)
	}
	wantErr(t, e.do(req{method: "POST", path: "/api/consultations", body: create, cookie: cookie, csrf: csrf, origin: "-",
		header: map[string]string{"Sec-Fetch-Site": "cross-site"}}), 403, CodeOriginForbidden)

	if res := e.do(req{method: "POST", path: "/api/consultations", body: create, cookie: cookie, csrf: csrf}); res.status != 201 {
		t.Fatalf("with token and origin: %d %s", res.status, res.body)
	}
	if res := e.do(req{method: "POST", path: "/api/consultations", body: create, cookie: cookie, csrf: csrf, origin: "-",
		header: map[string]string{"Sec-Fetch-Site": "same-origin"}}); res.status != 201 {
		t.Fatalf("with Sec-Fetch-Site same-origin: %d %s", res.status, res.body)
	}

	// The public URL's origin is this site too, and only over TLS when it
	// says https.
	e2 := newEnv(t, func(c *Config) { c.PublicURL = "https://Call.Example.com/" })
	if res := e2.do(req{method: "POST", path: "/api/login", body: map[string]string{"email": alice, "password": alicePW}, origin: "https://call.example.com"}); res.status != 204 {
		t.Fatalf("public URL origin: %d %s", res.status, res.body)
	}
	wantErr(t, e2.do(req{method: "POST", path: "/api/login", body: map[string]string{"email": alice, "password": alicePW}, origin: "http://call.example.com"}), 403, CodeOriginForbidden)
}

func TestSignInRequired(t *testing.T) {
	e := newEnv(t)
	for _, q := range []req{
		{method: "GET", path: "/api/me"},
		{method: "GET", path: "/api/consultations"},
		{method: "POST", path: "/api/consultations", body: map[string]any{"title": "x"}, csrf: "x"},
		{method: "POST", path: "/api/logout", csrf: "x"},
		{method: "POST", path: "/api/rooms"},
		{method: "GET", path: "/api/me", cookie: "garbage"},
		{method: "GET", path: "/api/me", cookie: newToken()},
	} {
		res := e.do(q)
		wantErr(t, res, 401, CodeSignInRequired)
		if res.str("signIn") != "/signin" || res.str("message") != "Please sign in to do this." {
			t.Fatalf("%s %s: %s", q.method, q.path, res.body)
		}
	}
	res := e.do(req{method: "GET", path: "/host", header: map[string]string{"Accept": "text/html,*/*"}})
	if res.status != 401 || !strings.HasPrefix(res.header.Get("Content-Type"), "text/html") ||
		!bytes.Contains(res.body, []byte(`<a href="/signin">`)) || bytes.Contains(res.body, []byte("<script")) || bytes.Contains(res.body, []byte("style=")) {
		t.Fatalf("host page without a session: %d %s", res.status, res.body)
	}
	cookie, _ := e.login(alice, alicePW)
	if res := e.do(req{method: "GET", path: "/host", cookie: cookie}); res.status != 200 || string(res.body) != "host page for "+alice {
		t.Fatalf("host page: %d %s", res.status, res.body)
	}
	if res := e.do(req{method: "POST", path: "/api/rooms", cookie: cookie}); res.status != 201 {
		t.Fatalf("rooms with a session: %d", res.status)
	}
	open := newEnv(t, func(c *Config) { c.OpenRooms = true })
	if res := open.do(req{method: "POST", path: "/api/rooms"}); res.status != 201 {
		t.Fatalf("rooms with -open-rooms: %d", res.status)
	}
	if res := open.do(req{method: "GET", path: "/host"}); res.status != 401 {
		t.Fatalf("host page with -open-rooms and no session: %d", res.status)
	}
}

func TestSessionLifetime(t *testing.T) {
	e := newEnv(t)
	cookie, _ := e.login(alice, alicePW)
	me := func() int { return e.do(req{method: "GET", path: "/api/me", cookie: cookie}).status }
	// Sliding: used every 11 hours, it lives on...
	for i := 0; i < 15; i++ {
		e.clock.Add(11 * time.Hour)
		if s := me(); s != 200 {
			t.Fatalf("after %d×11h of use: %d", i+1, s)
		}
	}
	// ...but never past 7 days (168h) from sign-in (165h so far).
	e.clock.Add(11 * time.Hour)
	if s := me(); s != 401 {
		t.Fatalf("after 176h: %d, want 401 (7-day cap)", s)
	}
	// Unused for 12 hours, it ends.
	cookie, _ = e.login(alice, alicePW)
	e.clock.Add(12 * time.Hour)
	if s := me(); s != 401 {
		t.Fatalf("idle 12h: %d", s)
	}
	// The dead sessions were deleted on sight.
	if n, _ := e.st.DeleteExpiredSessions(bg, e.clock.Now().Add(time.Hour)); n != 0 {
		t.Fatalf("%d dead sessions left", n)
	}
}

func TestLogoutAndDisable(t *testing.T) {
	e := newEnv(t)
	cookie, csrf := e.login(alice, alicePW)
	wantErr(t, e.do(req{method: "POST", path: "/api/logout", cookie: cookie}), 403, CodeCSRF)
	res := e.do(req{method: "POST", path: "/api/logout", cookie: cookie, csrf: csrf})
	if res.status != 204 {
		t.Fatalf("logout: %d %s", res.status, res.body)
	}
	if c := sessionCookie(t, res); c.MaxAge != -1 || c.Value != "" {
		t.Fatalf("logout cookie: %+v", c)
	}
	wantErr(t, e.do(req{method: "GET", path: "/api/me", cookie: cookie}), 401, CodeSignInRequired)

	cookie, _ = e.login(alice, alicePW)
	if err := e.st.SetDisabled(bg, mustUser(t, e.st, alice).ID, true); err != nil {
		t.Fatal(err)
	}
	wantErr(t, e.do(req{method: "GET", path: "/api/me", cookie: cookie}), 401, CodeSignInRequired)

	// Signing in again replaces the browser's old session.
	old, _ := e.login(bob, bobPW)
	res = e.do(req{method: "POST", path: "/api/login", cookie: old, body: map[string]string{"email": bob, "password": bobPW}})
	if res.status != 204 {
		t.Fatal(res.status)
	}
	wantErr(t, e.do(req{method: "GET", path: "/api/me", cookie: old}), 401, CodeSignInRequired)
}

func TestRehashOnLogin(t *testing.T) {
	e := newEnv(t)
	old := Params{Memory: 32, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	e.st.SetPassword(bg, mustUser(t, e.st, alice).ID, HashPassword(alicePW, old))
	e.login(alice, alicePW)
	h := mustUser(t, e.st, alice).PasswordHash
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("not rehashed: %s", h)
	}
	e.login(alice, alicePW)
}

func TestBodies(t *testing.T) {
	e := newEnv(t)
	cookie, csrf := e.login(alice, alicePW)
	post := func(body any, ct string) response {
		return e.do(req{method: "POST", path: "/api/consultations", body: body, contentType: ct, cookie: cookie, csrf: csrf})
	}
	for name, body := range map[string]string{
		"not JSON":      `{"title": `,
		"an array":      `[1, 2]`,
		"wrong type":    `{"title": 5}`,
		"unknown field": `{"title": "x", "secret": "y"}`,
		"trailing data": `{"title": "x", "joinVerifier": "` + verifier("v") + `"} {}`,
		"empty":         ``,
		"null":          `null`,
	} {
		res := post(body, "")
		if name == "null" {
			// JSON null decodes to the zero request: a bad title.
			wantErr(t, res, 400, CodeBadTitle)
			continue
		}
		wantErr(t, res, 400, CodeBadRequest)
		t.Logf("%s: %s", name, res.str("message"))
	}
	wantErr(t, post(`{"title": "`+strings.Repeat("x", MaxBodyBytes)+`"}`, ""), http.StatusRequestEntityTooLarge, CodeTooLarge)
	wantErr(t, post(`{"title": "x"}`, "text/plain"), http.StatusUnsupportedMediaType, CodeUnsupportedMedia)
	wantErr(t, post(`title=x`, "application/x-www-form-urlencoded"), http.StatusUnsupportedMediaType, CodeUnsupportedMedia)
	if res := post(map[string]any{"title": "ok", "joinVerifier": verifier("v")}, "application/json; charset=utf-8"); res.status != 201 {
		t.Fatalf("charset parameter: %d %s", res.status, res.body)
	}
	wantErr(t, e.do(req{method: "POST", path: "/api/login", body: strings.Repeat(" ", MaxBodyBytes+1)}), 413, CodeTooLarge)
	wantErr(t, e.do(req{method: "GET", path: "/api/login"}), 405, CodeMethodNotAllowed)
	res := e.do(req{method: "DELETE", path: "/api/consultations", cookie: cookie, csrf: csrf})
	wantErr(t, res, 405, CodeMethodNotAllowed)
	if res.header.Get("Allow") != "GET, HEAD, POST" {
		t.Fatalf("Allow %q", res.header.Get("Allow"))
	}
	wantErr(t, e.do(req{method: "GET", path: "/api/consultations/a/b/c", cookie: cookie}), 404, CodeNotFound)
}

func TestConsultationsAPI(t *testing.T) {
	e := newEnv(t)
	cookie, csrf := e.login(alice, alicePW)
	now := e.clock.Now()
	create := func(body map[string]any) response {
		return e.do(req{method: "POST", path: "/api/consultations", body: body, cookie: cookie, csrf: csrf})
	}
	res := create(map[string]any{"title": "  Follow-up with Ann  ", "scheduledAt": now.Add(3 * time.Hour).In(time.FixedZone("", 3600)).Format(time.RFC3339), "joinVerifier": verifier("one")})
	if res.status != 201 {
		t.Fatalf("create: %d %s", res.status, res.body)
	}
	id := res.str("id")
	if !store.ValidID(id) || res.str("title") != "Follow-up with Ann" || res.str("url") != "/c/"+id || res.str("state") != "active" ||
		res.str("scheduledAt") != now.Add(3*time.Hour).Format(time.RFC3339) || res.str("expiresAt") != now.Add(27*time.Hour).Format(time.RFC3339) {
		t.Fatalf("created: %s", res.body)
	}
	adhoc := create(map[string]any{"title": "Ad hoc", "scheduledAt": nil, "joinVerifier": verifier("two")})
	if adhoc.status != 201 || adhoc.json["scheduledAt"] != nil || adhoc.str("expiresAt") != now.Add(24*time.Hour).Format(time.RFC3339) {
		t.Fatalf("ad hoc: %d %s", adhoc.status, adhoc.body)
	}
	stored, _ := e.st.Consultation(bg, id)
	if v, _ := base64.RawURLEncoding.DecodeString(verifier("one")); !bytes.Equal(stored.JoinVerifier, v) {
		t.Fatal("verifier not stored")
	}

	for _, tc := range []struct {
		body map[string]any
		code string
	}{
		{map[string]any{"title": "", "joinVerifier": verifier("x")}, CodeBadTitle},
		{map[string]any{"title": strings.Repeat("x", 121), "joinVerifier": verifier("x")}, CodeBadTitle},
		{map[string]any{"title": "a\nb", "joinVerifier": verifier("x")}, CodeBadTitle},
		{map[string]any{"title": "x", "scheduledAt": "tomorrow", "joinVerifier": verifier("x")}, CodeBadTime},
		{map[string]any{"title": "x", "scheduledAt": now.Add(-25 * time.Hour).Format(time.RFC3339), "joinVerifier": verifier("x")}, CodeBadTime},
		{map[string]any{"title": "x", "scheduledAt": now.Add(400 * 24 * time.Hour).Format(time.RFC3339), "joinVerifier": verifier("x")}, CodeBadTime},
		{map[string]any{"title": "x"}, CodeBadVerifier},
		{map[string]any{"title": "x", "joinVerifier": "short"}, CodeBadVerifier},
		{map[string]any{"title": "x", "joinVerifier": verifier("x") + "="}, CodeBadVerifier},
		{map[string]any{"title": "x", "joinVerifier": base64.StdEncoding.EncodeToString(make([]byte, 33))}, CodeBadVerifier},
	} {
		wantErr(t, create(tc.body), 400, tc.code)
	}
	// Scheduled an hour ago: the link still works for 23 hours.
	recent := create(map[string]any{"title": "Running late", "scheduledAt": now.Add(-time.Hour).Format(time.RFC3339), "joinVerifier": verifier("3")})
	if recent.status != 201 || recent.str("state") != "active" {
		t.Fatalf("scheduled an hour ago: %d %s", recent.status, recent.body)
	}

	// Bob sees none of Alice's and cannot touch them.
	bc, bcsrf := e.login(bob, bobPW)
	if l := e.do(req{method: "GET", path: "/api/consultations", cookie: bc}); len(l.json["upcoming"].([]any)) != 0 || len(l.json["past"].([]any)) != 0 {
		t.Fatalf("bob's list: %s", l.body)
	}
	for _, p := range []string{"/api/consultations/" + id + "/revoke", "/api/consultations/" + id + "/end"} {
		wantErr(t, e.do(req{method: "POST", path: p, cookie: bc, csrf: bcsrf}), 404, CodeNotFound)
	}
	wantErr(t, e.do(req{method: "GET", path: "/api/consultations/" + id, cookie: bc}), 404, CodeNotFound)
	wantErr(t, e.do(req{method: "POST", path: "/api/consultations/" + store.NewID() + "/revoke", cookie: cookie, csrf: csrf}), 404, CodeNotFound)
	wantErr(t, e.do(req{method: "POST", path: "/api/consultations/nonsense/end", cookie: cookie, csrf: csrf}), 404, CodeNotFound)

	list := func() (up, past []string) {
		l := e.do(req{method: "GET", path: "/api/consultations", cookie: cookie})
		if l.status != 200 {
			t.Fatalf("list: %d %s", l.status, l.body)
		}
		for _, x := range l.json["upcoming"].([]any) {
			up = append(up, x.(map[string]any)["title"].(string))
		}
		for _, x := range l.json["past"].([]any) {
			m := x.(map[string]any)
			past = append(past, m["title"].(string)+":"+m["state"].(string))
		}
		return
	}
	if up, past := list(); strings.Join(up, "|") != "Running late|Ad hoc|Follow-up with Ann" || len(past) != 0 {
		t.Fatalf("list: %v %v", up, past)
	}
	if res := e.do(req{method: "POST", path: "/api/consultations/" + adhoc.str("id") + "/revoke", cookie: cookie, csrf: csrf}); res.status != 204 {
		t.Fatalf("revoke: %d %s", res.status, res.body)
	}
	if res := e.do(req{method: "POST", path: "/api/consultations/" + adhoc.str("id") + "/revoke", cookie: cookie, csrf: csrf}); res.status != 204 {
		t.Fatalf("revoke twice: %d %s", res.status, res.body)
	}
	e.clock.Add(time.Minute)
	if res := e.do(req{method: "POST", path: "/api/consultations/" + recent.str("id") + "/end", cookie: cookie, csrf: csrf}); res.status != 204 {
		t.Fatalf("end: %d %s", res.status, res.body)
	}
	if up, past := list(); strings.Join(up, "|") != "Follow-up with Ann" || strings.Join(past, "|") != "Running late:ended|Ad hoc:revoked" {
		t.Fatalf("after revoke and end: %v %v", up, past)
	}
	e.clock.Add(27 * time.Hour)
	cookie, csrf = e.login(alice, alicePW) // the session idled out meanwhile
	if up, past := list(); len(up) != 0 || strings.Join(past, "|") != "Follow-up with Ann:expired|Running late:ended|Ad hoc:revoked" {
		t.Fatalf("after expiry: %v %v", up, past)
	}
	one := e.do(req{method: "GET", path: "/api/consultations/" + id, cookie: cookie})
	if one.status != 200 || one.str("state") != "expired" {
		t.Fatalf("get one: %d %s", one.status, one.body)
	}
	if strings.Contains(e.logs.String(), "Follow-up") || strings.Contains(e.logs.String(), "Ad hoc") {
		t.Fatalf("a title is in the log:\n%s", e.logs.String())
	}
}

func TestTooManyActive(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxActive = 2 })
	cookie, csrf := e.login(alice, alicePW)
	for i := 0; i < 2; i++ {
		if res := e.do(req{method: "POST", path: "/api/consultations", cookie: cookie, csrf: csrf, body: map[string]any{"title": "x", "joinVerifier": verifier("x")}}); res.status != 201 {
			t.Fatal(res.status)
		}
	}
	wantErr(t, e.do(req{method: "POST", path: "/api/consultations", cookie: cookie, csrf: csrf, body: map[string]any{"title": "x", "joinVerifier": verifier("x")}}), 429, CodeTooManyActive)
}

func TestLinkStates(t *testing.T) {
	e := newEnv(t)
	owner := mustUser(t, e.st, alice)
	now := e.clock.Now()
	mk := func() store.Consultation {
		c := store.Consultation{ID: store.NewID(), OwnerID: owner.ID, Title: "t", CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour), JoinVerifier: sha("token")}
		if err := e.st.CreateConsultation(bg, c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	active, revoked, ended, expiring := mk(), mk(), mk(), mk()
	e.st.RevokeConsultation(bg, revoked.ID, now)
	e.st.EndConsultation(bg, ended.ID, now)

	if c, err := e.svc.Consultation(bg, active.ID); err != nil || c.ID != active.ID {
		t.Fatalf("active: %v", err)
	}
	want := map[string]struct {
		code, msg string
		sentinel  error
	}{
		"bad!":         {CodeLinkMalformed, "This link is incomplete or damaged. Check that you opened the whole link, or ask the person who invited you to send it again.", ErrLinkMalformed},
		store.NewID():  {CodeLinkNotFound, "This consultation link is not known here. Check that you opened the whole link, or ask the person who invited you for a new one.", ErrLinkNotFound},
		revoked.ID:     {CodeLinkRevoked, "This consultation link was withdrawn by the person who sent it. Ask them for a new link if you still need to meet.", ErrLinkRevoked},
		ended.ID:       {CodeConsultationEnded, "This consultation has ended. Ask the person who invited you if you need to talk again.", ErrConsultationEnded},
		active.ID[:21]: {CodeLinkMalformed, "", ErrLinkMalformed},
	}
	for id, w := range want {
		_, err := e.svc.Consultation(bg, id)
		ls, ok := LinkStateOf(err)
		if !ok || ls.Code != w.code || (w.msg != "" && ls.Message != w.msg) || !errors.Is(err, w.sentinel) || LinkMessage(w.code) != ls.Message {
			t.Errorf("%q: %v %+v", id, err, ls)
		}
	}
	e.clock.Add(24 * time.Hour)
	_, err := e.svc.Consultation(bg, expiring.ID)
	if ls, _ := LinkStateOf(err); ls.Code != CodeLinkExpired || ls.Message != "This consultation link has expired. Ask the person who invited you for a new link." || !errors.Is(err, ErrLinkExpired) {
		t.Fatalf("expired: %v", err)
	}
	// The state is JSON-ready for the guest page.
	b, _ := json.Marshal(linkState(CodeLinkExpired))
	if !strings.Contains(string(b), `"error":"link-expired"`) {
		t.Fatalf("JSON %s", b)
	}
}

func sha(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

func TestSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	cookie, csrf := e.login(alice, alicePW)
	res := e.do(req{method: "POST", path: "/api/consultations", cookie: cookie, csrf: csrf, body: map[string]any{"title": "Kept", "joinVerifier": verifier("k")}})
	id := res.str("id")
	e.do(req{method: "POST", path: "/api/consultations/" + id + "/revoke", cookie: cookie, csrf: csrf})

	// Stop everything and start again on the same directory.
	e.srv.Close()
	e.svc.Close()
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.st, err = store.Open(e.dir, nil); err != nil {
		t.Fatal(err)
	}
	e.start(false)
	me := e.do(req{method: "GET", path: "/api/me", cookie: cookie})
	if me.status != 200 || me.str("csrf") != csrf {
		t.Fatalf("session after restart: %d %s", me.status, me.body)
	}
	if _, err := e.svc.Consultation(bg, id); !errors.Is(err, ErrLinkRevoked) {
		t.Fatalf("revoked consultation after restart: %v", err)
	}
	l := e.do(req{method: "GET", path: "/api/consultations", cookie: cookie})
	if past := l.json["past"].([]any); len(past) != 1 || past[0].(map[string]any)["state"] != "revoked" {
		t.Fatalf("list after restart: %s", l.body)
	}
}

func TestSweep(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.KeepPast = 48 * time.Hour })
	cookie, csrf := e.login(alice, alicePW)
	res := e.do(req{method: "POST", path: "/api/consultations", cookie: cookie, csrf: csrf, body: map[string]any{"title": "Old", "joinVerifier": verifier("o")}})
	e.clock.Add(24*time.Hour + 49*time.Hour)
	if err := e.svc.Sweep(bg); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Consultation(bg, res.str("id")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old consultation kept: %v", err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(cookie)
	id := sha256.Sum256(raw)
	if _, err := e.st.Session(bg, id[:]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired session kept: %v", err)
	}
}

// TestSessionUserForWebSocket: the handshake helper reads the cookie of
// any request, and the background sweeper starts and stops.
func TestSessionUserForWebSocket(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SweepInterval = time.Millisecond })
	cookie, _ := e.login(alice, alicePW)
	r := httptest.NewRequest("GET", "/ws", nil)
	if _, ok := e.svc.SessionUser(r); ok {
		t.Fatal("user without a cookie")
	}
	r.AddCookie(&http.Cookie{Name: CookieName, Value: cookie})
	u, ok := e.svc.SessionUser(r)
	if !ok || u.Email != alice || u.ID == 0 {
		t.Fatalf("SessionUser: %+v %v", u, ok)
	}
	if !e.svc.CanCreateRooms(r) || e.svc.OpenRooms() {
		t.Fatal("CanCreateRooms")
	}
	time.Sleep(5 * time.Millisecond)
	e.svc.Close()
	e.svc.Close()
}

func TestInfo(t *testing.T) {
	check := func(t *testing.T, e *testEnv, cookie string, want string) {
		t.Helper()
		res := e.do(req{method: "GET", path: "/api/info", cookie: cookie, origin: "-"})
		if res.status != 200 || string(bytes.TrimSpace(res.body)) != want {
			t.Fatalf("GET /api/info: %d %s, want 200 %s", res.status, res.body, want)
		}
		if res.header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(res.header.Get("Content-Type"), "application/json") {
			t.Fatalf("GET /api/info headers: %v", res.header)
		}
	}
	e := newEnv(t)
	check(t, e, "", `{"openRooms":false,"signedIn":false}`)
	check(t, e, "garbage", `{"openRooms":false,"signedIn":false}`)
	cookie, csrf := e.login(alice, alicePW)
	check(t, e, cookie, `{"openRooms":false,"signedIn":true,"email":"alice@example.com"}`)
	if r, err := http.Head(e.srv.URL + "/api/info"); err != nil || r.StatusCode != 200 {
		t.Fatalf("HEAD /api/info: %v %v", r, err)
	} else {
		r.Body.Close()
	}
	res := e.do(req{method: "POST", path: "/api/info", cookie: cookie, csrf: csrf, body: map[string]any{}})
	wantErr(t, res, 405, CodeMethodNotAllowed)
	if res.header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("Allow: %q", res.header.Get("Allow"))
	}
	// A session that ended is not signed in.
	if res := e.do(req{method: "POST", path: "/api/logout", cookie: cookie, csrf: csrf}); res.status != 204 {
		t.Fatalf("logout: %d %s", res.status, res.body)
	}
	check(t, e, cookie, `{"openRooms":false,"signedIn":false}`)
	cookie, _ = e.login(alice, alicePW)
	e.clock.Add(13 * time.Hour) // past the 12 h sliding default
	check(t, e, cookie, `{"openRooms":false,"signedIn":false}`)

	open := newEnv(t, func(c *Config) { c.OpenRooms = true })
	check(t, open, "", `{"openRooms":true,"signedIn":false}`)
	cookie, _ = open.login(bob, bobPW)
	check(t, open, cookie, `{"openRooms":true,"signedIn":true,"email":"bob@example.com"}`)
}
