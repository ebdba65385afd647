package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/account"
	"github.com/parleyhq/parley/config"
	"github.com/parleyhq/parley/signaling"
	"github.com/parleyhq/parley/store"
)

// TestAccountsMounted: with a store, the account API is served beside
// signaling, behind the same security headers, and its data outlives the
// server.
func TestAccountsMounted(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.AddUser(context.Background(), "host@example.com", account.HashPassword("a host password", account.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}), time.Now()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.TURNListen = ""
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), Listeners{HTTP: ln}, WithStore(st))
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	}()
	if s.Accounts() == nil {
		t.Fatal("no account service with a store")
	}
	base := "http://" + ln.Addr().String()
	post := func(path, body, cookie, csrf string) *http.Response {
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
		req.Header.Set("Origin", base)
		req.Header.Set("Content-Type", "application/json")
		if cookie != "" {
			req.Header.Set("Cookie", account.CookieName+"="+cookie)
		}
		if csrf != "" {
			req.Header.Set(account.CSRFHeader, csrf)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := post("/api/login", `{"email":"host@example.com","password":"a host password"}`, "", "")
	res.Body.Close()
	if res.StatusCode != 204 || res.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("login: %s, CSP %q", res.Status, res.Header.Get("Content-Security-Policy"))
	}
	var cookie string
	for _, c := range res.Cookies() {
		if c.Name == account.CookieName {
			cookie = c.Value
		}
	}
	req, _ := http.NewRequest("GET", base+"/api/me", nil)
	req.Header.Set("Cookie", account.CookieName+"="+cookie)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var me account.MeResponse
	json.NewDecoder(res.Body).Decode(&me)
	res.Body.Close()
	if res.StatusCode != 200 || me.Email != "host@example.com" || me.CSRF == "" {
		t.Fatalf("me: %s %+v", res.Status, me)
	}
	res = post("/api/consultations", `{"title":"Check-up","joinVerifier":"`+strings.Repeat("A", 43)+`"}`, cookie, me.CSRF)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 201 || !bytes.Contains(b, []byte(`"state":"active"`)) {
		t.Fatalf("create: %s %s", res.Status, b)
	}
	// Signaling keeps the rest of /api. Closed by default: a room needs a
	// host session (or -open-rooms).
	verifier := `{"joinVerifier":"` + strings.Repeat("A", 43) + `"}`
	res = post("/api/rooms", verifier, "", "")
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 401 || !bytes.Contains(b, []byte(`"error":"sign-in-required"`)) || !bytes.Contains(b, []byte(`"signIn":"/signin"`)) {
		t.Fatalf("rooms without a session: %s %s", res.Status, b)
	}
	res = post("/api/rooms", verifier, cookie, "")
	res.Body.Close()
	if res.StatusCode != 201 {
		t.Fatalf("rooms with a host session: %s", res.Status)
	}
	res, _ = http.Get(base + "/api/me")
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 401 || !bytes.Contains(b, []byte(`"signIn":"/signin"`)) {
		t.Fatalf("me without a session: %s %s", res.Status, b)
	}
}

// TestNoStoreNoAccounts: New without a store serves as before.
func TestNoStoreNoAccounts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.TURNListen = ""
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), Listeners{HTTP: ln})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Close()
	if s.Accounts() != nil {
		t.Fatal("account service without a store")
	}
	res, err := http.Get("http://" + ln.Addr().String() + "/api/me")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 404 {
		t.Fatalf("/api/me without accounts: %s", res.Status)
	}
}

// TestHostJoinsOwnConsultation: the signed-in owner who opens a
// consultation's WebSocket is its host (welcome, role host), not a guest in
// its waiting room. The session is looked up when the join arrives, after
// the upgrade's HTTP handler has returned and cancelled its request context.
func TestHostJoinsOwnConsultation(t *testing.T) {
	st, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.AddUser(context.Background(), "host@example.com", account.HashPassword("a host password", account.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}), time.Now()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.TURNListen = ""
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), Listeners{HTTP: ln}, WithStore(st))
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	}()
	base := "http://" + ln.Addr().String()
	do := func(method, path, body, cookie, csrf string) *http.Response {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Origin", base)
		req.Header.Set("Content-Type", "application/json")
		if cookie != "" {
			req.Header.Set("Cookie", account.CookieName+"="+cookie)
		}
		if csrf != "" {
			req.Header.Set(account.CSRFHeader, csrf)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := do("POST", "/api/login", `{"email":"host@example.com","password":"a host password"}`, "", "")
	res.Body.Close()
	var cookie string
	for _, c := range res.Cookies() {
		if c.Name == account.CookieName {
			cookie = c.Value
		}
	}
	res = do("GET", "/api/me", "", cookie, "")
	var me account.MeResponse
	json.NewDecoder(res.Body).Decode(&me)
	res.Body.Close()

	token := make([]byte, signaling.JoinTokenBytes)
	for i := range token {
		token[i] = byte(i)
	}
	verifier := base64.RawURLEncoding.EncodeToString(signaling.JoinVerifier(token))
	res = do("POST", "/api/consultations", `{"title":"Check-up","joinVerifier":"`+verifier+`"}`, cookie, me.CSRF)
	var c account.ConsultationView
	json.NewDecoder(res.Body).Decode(&c)
	res.Body.Close()
	if res.StatusCode != 201 {
		t.Fatalf("create: %s", res.Status)
	}

	// First message after joining, for a connection with or without the host's cookie.
	first := func(cookie string) signaling.Message {
		h := http.Header{"Origin": {base}}
		if cookie != "" {
			h.Set("Cookie", account.CookieName+"="+cookie)
		}
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/ws", h)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		time.Sleep(50 * time.Millisecond) // the upgrade's handler has returned by now
		if err := ws.WriteJSON(signaling.Message{Type: signaling.TypeJoin, Version: signaling.ProtocolVersion, Room: c.ID, Name: "someone", Token: base64.RawURLEncoding.EncodeToString(token)}); err != nil {
			t.Fatal(err)
		}
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			var m signaling.Message
			if err := ws.ReadJSON(&m); err != nil {
				t.Fatal(err)
			}
			if m.Type == signaling.TypeWelcome || m.Type == signaling.TypeWaiting || m.Type == "error" {
				return m
			}
		}
	}
	if m := first(cookie); m.Type != signaling.TypeWelcome || m.Role != signaling.RoleHost {
		t.Fatalf("the signed-in owner got %s (role %q) %+v, want welcome as host", m.Type, m.Role, m)
	}
	if m := first(""); m.Type != signaling.TypeWaiting {
		t.Fatalf("a guest got %s, want waiting", m.Type)
	}
}
