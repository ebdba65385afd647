package account

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/parleyhq/parley/internal/clientip"
	"github.com/parleyhq/parley/store"
)

// Scheduling bounds: a consultation may be scheduled at most maxAhead from
// now, and not so far back that its link would already have expired.
const maxAhead = 366 * 24 * time.Hour

func (s *Service) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /api/info", s.info)
	m.HandleFunc("POST /api/login", s.login)
	m.Handle("POST /api/logout", s.stateChanging(s.logout))
	m.Handle("GET /api/me", s.signedIn(s.me))
	m.Handle("GET /api/consultations", s.signedIn(s.listConsultations))
	m.Handle("POST /api/consultations", s.stateChanging(s.createConsultation))
	m.Handle("GET /api/consultations/{id}", s.signedIn(s.getConsultation))
	m.Handle("POST /api/consultations/{id}/revoke", s.stateChanging(s.revokeConsultation))
	m.Handle("POST /api/consultations/{id}/end", s.stateChanging(s.endConsultation))
	// The same paths with other methods get a JSON 405 naming the
	// allowed ones; unknown paths under the account API a JSON 404.
	for path, allow := range map[string]string{
		"/api/info": "GET, HEAD", "/api/login": "POST", "/api/logout": "POST", "/api/me": "GET, HEAD",
		"/api/consultations": "GET, HEAD, POST", "/api/consultations/{id}": "GET, HEAD",
		"/api/consultations/{id}/revoke": "POST", "/api/consultations/{id}/end": "POST",
	} {
		m.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			httpError(w, apiErr(CodeMethodNotAllowed, "This address does not take "+r.Method+" requests."))
		})
	}
	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		httpError(w, apiErr(CodeNotFound, "There is nothing at this address."))
	})
	s.mux = m
}

// handlerFunc is an API handler that returns its refusal as an error;
// serve writes it with httpError.
type handlerFunc func(w http.ResponseWriter, r *http.Request, si sessionInfo) error

// signedIn wraps a read-only handler: it needs a host session.
func (s *Service) signedIn(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		si, err := s.requireSession(r)
		if err == nil {
			err = h(w, r, si)
		}
		if err != nil {
			s.fail(w, r, err)
		}
	})
}

// stateChanging wraps a handler that changes something: it needs a
// same-origin request, a host session and the session's CSRF token in
// X-CSRF-Token, in that order.
func (s *Service) stateChanging(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := s.checkOrigin(r)
		var si sessionInfo
		if err == nil {
			si, err = s.requireSession(r)
		}
		if err == nil {
			err = checkCSRF(r, si.sess.CSRF)
		}
		if err == nil {
			err = h(w, r, si)
		}
		if err != nil {
			s.fail(w, r, err)
		}
	})
}

func (s *Service) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		if errors.Is(err, context.Canceled) {
			return // the client went away
		}
		s.log.Error("account API failed", "path", r.URL.Path, "err", err)
	}
	httpError(w, err)
}

func (s *Service) checkOrigin(r *http.Request) error {
	if !s.sameOrigin(r) {
		s.log.Debug("cross-origin request refused", "origin", r.Header.Get("Origin"), "sec-fetch-site", r.Header.Get("Sec-Fetch-Site"), "path", r.URL.Path)
		return apiErr(CodeOriginForbidden, msgOrigin)
	}
	return nil
}

func (s *Service) requireSession(r *http.Request) (sessionInfo, error) {
	si, ok, err := s.session(r)
	if err != nil {
		return si, err
	}
	if !ok {
		return si, apiErr(CodeSignInRequired, msgSignIn)
	}
	return si, nil
}

// CSRFHeader carries the session's CSRF token (from GET /api/me) on every
// state-changing request.
const CSRFHeader = "X-CSRF-Token"

func checkCSRF(r *http.Request, want string) error {
	got := r.Header.Get(CSRFHeader)
	if got == "" {
		return apiErr(CodeCSRF, msgCSRFMissing)
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return apiErr(CodeCSRF, msgCSRFWrong)
	}
	return nil
}

// decodeJSON reads a request body of at most MaxBodyBytes holding exactly
// one JSON object with only the fields of v.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return apiErr(CodeUnsupportedMedia, msgUnsupported)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return apiErr(CodeTooLarge, fmt.Sprintf("%s The limit is %d KiB.", msgTooLarge, MaxBodyBytes>>10))
	}
	if err != nil {
		return err
	}
	return decodeBody(body, v)
}

// decodeBody is decodeJSON's parser, apart for the fuzzer.
func decodeBody(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apiErr(CodeBadRequest, "The request is not valid JSON for this address: "+jsonProblem(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return apiErr(CodeBadRequest, "The request has data after its JSON object.")
	}
	return nil
}

// jsonProblem says what is wrong with a body in words that name no
// internal type.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "the body is empty."
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON ends too early."
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d.", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("%q must be a %s.", typ.Field, jsonKind(typ.Type.Kind().String()))
		}
		return "the body must be a JSON object."
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ") + "."
	}
	return "malformed JSON."
}

func jsonKind(k string) string {
	switch k {
	case "string", "ptr":
		return "string"
	case "bool":
		return "boolean"
	}
	return k
}

// ---- what the pages need to know ----

// InfoResponse is the answer to GET /api/info: what the landing and
// sign-in pages show. It needs no session and changes nothing.
type InfoResponse struct {
	OpenRooms bool   `json:"openRooms"`       // anyone may start a plain call (-open-rooms)
	SignedIn  bool   `json:"signedIn"`        // the request carries a valid host session
	Email     string `json:"email,omitempty"` // the signed-in host's, only when SignedIn
}

// info answers GET /api/info. The session cookie is HttpOnly, so a page
// cannot see by itself whether its browser is signed in; this says so
// without a 401. Other sites cannot read the answer (no CORS headers) nor
// send the cookie with it (SameSite=Strict). Like every request with a
// session, it slides the session's expiry.
func (s *Service) info(w http.ResponseWriter, r *http.Request) {
	si, ok, err := s.session(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res := InfoResponse{OpenRooms: s.cfg.OpenRooms, SignedIn: ok}
	if ok {
		res.Email = si.user.Email
	}
	writeJSON(w, http.StatusOK, res)
}

// ---- sign-in ----

type loginRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

// login answers POST /api/login: 204 and a session cookie, or 401
// bad-login whatever the reason (unknown email, wrong password, disabled
// account), after the same amount of work; 429 while the account or the
// client's network has too many recent failures.
func (s *Service) login(w http.ResponseWriter, r *http.Request) {
	if err := s.doLogin(w, r); err != nil {
		s.fail(w, r, err)
	}
}

func (s *Service) doLogin(w http.ResponseWriter, r *http.Request) error {
	if err := s.checkOrigin(r); err != nil {
		return err
	}
	var req loginRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Email) == "" || req.Password == "" {
		return apiErr(CodeBadRequest, "Enter your email address and your password.")
	}
	ctx := r.Context()
	ip := clientip.FromRequest(r, s.cfg.TrustedProxies)
	ipKey := clientip.LimitKey(ip)
	acctKey := strings.ToLower(strings.TrimSpace(req.Email))
	if len(acctKey) > store.MaxEmailLen {
		acctKey = acctKey[:store.MaxEmailLen]
	}
	now := s.cfg.Now()
	if wait := max(s.byAccount.wait(acctKey, now), s.byIP.wait(ipKey, now)); wait > 0 {
		scope := "account"
		if s.byIP.wait(ipKey, now) > 0 {
			scope = "ip"
		}
		// One line per refused attempt only at debug: a flood must not
		// flood the log. The block itself was logged once, at warn.
		s.log.Debug("sign-in refused: rate limited", "scope", scope, "retry-after", wait.Round(time.Second), "email", acctKey, "ip", ip)
		return &apiError{code: CodeRateLimited, message: rateMessage(wait), retryAfter: wait}
	}

	u, err := s.st.UserByEmail(ctx, req.Email)
	known := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrInvalid) {
		return err
	}
	phc := s.dummyHash()
	if known {
		phc = u.PasswordHash
	}
	ok, stale, err := s.verify(ctx, req.Password, phc)
	if err != nil && !errors.Is(err, ErrBadHash) {
		return err
	}
	if err != nil {
		s.log.Error("stored password hash is unreadable", "user", u.ID, "err", err)
	}
	if !ok || !known || u.Disabled {
		now = s.cfg.Now()
		if s.byAccount.fail(acctKey, now) {
			s.log.Warn("sign-in blocked: too many failures for one account", "window", s.cfg.FailureWindow)
		}
		if s.byIP.fail(ipKey, now) {
			s.log.Warn("sign-in blocked: too many failures from one network", "window", s.cfg.FailureWindow)
		}
		s.log.Info("sign-in failed")
		s.log.Debug("sign-in failed", "email", acctKey, "ip", ip, "known", known, "disabled", u.Disabled)
		return apiErr(CodeBadLogin, msgBadLogin)
	}

	s.byAccount.reset(acctKey)
	if stale {
		if h, err := s.hash(ctx, req.Password); err == nil {
			if err := s.st.SetPassword(ctx, u.ID, h); err != nil {
				s.log.Warn("cannot store the rehashed password", "user", u.ID, "err", err)
			} else {
				s.log.Info("password rehashed with the current parameters", "user", u.ID)
			}
		}
	}
	// A session cookie the browser already had is replaced, not kept
	// beside the new one (no fixation).
	if c, err := r.Cookie(CookieName); err == nil {
		if id, ok := sessionID(c.Value); ok {
			s.st.DeleteSession(ctx, id)
		}
	}
	now = s.cfg.Now()
	token := newToken()
	id, _ := sessionID(token)
	se := store.Session{
		ID: id, UserID: u.ID, CSRF: newToken(),
		CreatedAt: now, LastSeen: now,
		ExpiresAt: min64(now.Add(s.cfg.SessionTTL), now.Add(s.cfg.SessionMaxAge)),
	}
	if err := s.st.CreateSession(ctx, se); err != nil {
		return err
	}
	if err := s.st.TouchLogin(ctx, u.ID, now); err != nil {
		s.log.Warn("cannot record the sign-in time", "user", u.ID, "err", err)
	}
	s.setCookie(w, r, token, s.cfg.SessionMaxAge)
	s.log.Info("host signed in", "user", u.ID)
	s.log.Debug("host signed in", "user", u.ID, "email", u.Email, "ip", ip)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// rateMessage says how long to wait, in whole minutes.
func rateMessage(wait time.Duration) string {
	mins := int((wait + time.Minute - 1) / time.Minute)
	if mins <= 1 {
		return "Too many failed sign-in attempts. Please wait a minute and try again."
	}
	return fmt.Sprintf("Too many failed sign-in attempts. Please wait %d minutes and try again.", mins)
}

func (s *Service) logout(w http.ResponseWriter, r *http.Request, si sessionInfo) error {
	if err := s.st.DeleteSession(r.Context(), si.sess.ID); err != nil {
		return err
	}
	s.clearCookie(w, r)
	s.log.Info("host signed out", "user", si.user.ID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// MeResponse is the answer to GET /api/me.
type MeResponse struct {
	Email string `json:"email"`
	CSRF  string `json:"csrf"` // send it back in X-CSRF-Token
}

func (s *Service) me(w http.ResponseWriter, r *http.Request, si sessionInfo) error {
	writeJSON(w, http.StatusOK, MeResponse{Email: si.user.Email, CSRF: si.sess.CSRF})
	return nil
}

// ---- consultations ----

// CreateRequest is the body of POST /api/consultations.
type CreateRequest struct {
	Title        string  `json:"title"`
	ScheduledAt  *string `json:"scheduledAt"`  // RFC 3339, or null/absent for "now"
	JoinVerifier string  `json:"joinVerifier"` // unpadded base64url of 32 bytes
	HostName     string  `json:"hostName"`     // optional: how guests see the host while they wait
}

// ConsultationView is a consultation as the API shows it to its host.
type ConsultationView struct {
	ID          string     `json:"id"`
	Title       string     `json:"title"`
	ScheduledAt *time.Time `json:"scheduledAt"` // null when unscheduled
	CreatedAt   time.Time  `json:"createdAt"`
	ExpiresAt   time.Time  `json:"expiresAt"`
	RevokedAt   *time.Time `json:"revokedAt,omitempty"`
	EndedAt     *time.Time `json:"endedAt,omitempty"`
	URL         string     `json:"url"` // /c/<id>; the page adds #k=<secret>
	State       string     `json:"state"`
	Locked      bool       `json:"locked"`
	HostName    string     `json:"hostName,omitempty"`
}

// ListResponse is the answer to GET /api/consultations.
type ListResponse struct {
	Upcoming []ConsultationView `json:"upcoming"`
	Past     []ConsultationView `json:"past"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func view(c store.Consultation, now time.Time) ConsultationView {
	return ConsultationView{
		ID: c.ID, Title: c.Title, ScheduledAt: timePtr(c.ScheduledAt),
		CreatedAt: c.CreatedAt, ExpiresAt: c.ExpiresAt,
		RevokedAt: timePtr(c.RevokedAt), EndedAt: timePtr(c.EndedAt),
		URL: "/c/" + c.ID, State: string(c.State(now)), Locked: c.Locked, HostName: c.HostName,
	}
}

// parseCreate checks a CreateRequest at now and turns it into the
// consultation's title, scheduled time (zero when none) and verifier.
func parseCreate(req CreateRequest, now time.Time, inviteTTL time.Duration) (title string, sched time.Time, verifier []byte, err error) {
	title, terr := store.NormalizeTitle(req.Title)
	if terr != nil {
		return "", time.Time{}, nil, apiErr(CodeBadTitle, fmt.Sprintf("Give the consultation a title of 1 to %d characters, without line breaks or control characters.", store.MaxTitleLen))
	}
	if req.ScheduledAt != nil && *req.ScheduledAt != "" {
		t, perr := time.Parse(time.RFC3339, *req.ScheduledAt)
		switch {
		case perr != nil:
			return "", time.Time{}, nil, apiErr(CodeBadTime, "The scheduled time must be a date and time like 2025-03-01T14:30:00+01:00.")
		case t.Add(inviteTTL).Before(now):
			return "", time.Time{}, nil, apiErr(CodeBadTime, "That time is so far in the past that the link would already have expired.")
		case t.After(now.Add(maxAhead)):
			return "", time.Time{}, nil, apiErr(CodeBadTime, "A consultation can be scheduled at most a year ahead.")
		}
		sched = t.UTC().Truncate(time.Millisecond)
	}
	v, verr := base64.RawURLEncoding.Strict().DecodeString(req.JoinVerifier)
	if verr != nil || len(v) != store.VerifierLen {
		return "", time.Time{}, nil, apiErr(CodeBadVerifier, "The page sent a malformed join verifier. Reload the page and try again.")
	}
	return title, sched, v, nil
}

func (s *Service) createConsultation(w http.ResponseWriter, r *http.Request, si sessionInfo) error {
	var req CreateRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	title, sched, verifier, err := parseCreate(req, now, s.cfg.InviteTTL)
	if err != nil {
		return err
	}
	hostName, herr := store.NormalizeHostName(req.HostName)
	if herr != nil {
		return apiErr(CodeBadTitle, fmt.Sprintf("Your name as guests see it can be at most %d characters, without line breaks or control characters.", store.MaxHostNameLen))
	}
	n, err := s.st.CountActiveConsultations(ctx, si.user.ID, now)
	if err != nil {
		return err
	}
	if n >= s.cfg.MaxActive {
		return apiErr(CodeTooManyActive, msgTooManyActive)
	}
	start := now
	if !sched.IsZero() {
		start = sched
	}
	c := store.Consultation{
		OwnerID: si.user.ID, Title: title, ScheduledAt: sched, CreatedAt: now,
		ExpiresAt: start.Add(s.cfg.InviteTTL), JoinVerifier: verifier, HostName: hostName,
	}
	for try := 0; ; try++ {
		c.ID = store.NewID()
		err = s.st.CreateConsultation(ctx, c)
		if !errors.Is(err, store.ErrExists) || try == 2 {
			break
		}
	}
	if err != nil {
		return err
	}
	s.log.Info("consultation created", "user", si.user.ID, "scheduled", !sched.IsZero())
	writeJSON(w, http.StatusCreated, view(c, now))
	return nil
}

func (s *Service) listConsultations(w http.ResponseWriter, r *http.Request, si sessionInfo) error {
	now := s.cfg.Now()
	up, past, err := s.st.ListConsultations(r.Context(), si.user.ID, now, s.cfg.PastLimit)
	if err != nil {
		return err
	}
	res := ListResponse{Upcoming: make([]ConsultationView, 0, len(up)), Past: make([]ConsultationView, 0, len(past))}
	for _, c := range up {
		res.Upcoming = append(res.Upcoming, view(c, now))
	}
	for _, c := range past {
		res.Past = append(res.Past, view(c, now))
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// owned returns the consultation named in the path if the signed-in host
// owns it; anyone else gets not-found, so ids are no oracle.
func (s *Service) owned(r *http.Request, si sessionInfo) (store.Consultation, error) {
	c, err := s.st.Consultation(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) || (err == nil && c.OwnerID != si.user.ID) {
		return store.Consultation{}, apiErr(CodeNotFound, msgNotFound)
	}
	return c, err
}

func (s *Service) getConsultation(w http.ResponseWriter, r *http.Request, si sessionInfo) error {
	c, err := s.owned(r, si)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, view(c, s.cfg.Now()))
	return nil
}

func (s *Service) revokeConsultation(w http.ResponseWriter, r *http.Request, si sessionInfo) error {
	c, err := s.owned(r, si)
	if err != nil {
		return err
	}
	if err := s.st.RevokeConsultation(r.Context(), c.ID, s.cfg.Now()); err != nil {
		return err
	}
	s.log.Info("consultation link revoked", "user", si.user.ID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Service) endConsultation(w http.ResponseWriter, r *http.Request, si sessionInfo) error {
	c, err := s.owned(r, si)
	if err != nil {
		return err
	}
	if err := s.st.EndConsultation(r.Context(), c.ID, s.cfg.Now()); err != nil {
		return err
	}
	s.log.Info("consultation ended", "user", si.user.ID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- guest links ----

// Consultation returns the consultation a guest link names, for the guest's
// page and the WebSocket join. When the link does not work the error is a
// LinkState (errors.As, or LinkStateOf) with the code and plain-language
// message to show: link-malformed for an id of the wrong shape,
// link-not-found, link-revoked, consultation-ended or link-expired (checked
// in that order; the consultation is returned with the last three). Other
// errors are storage failures.
func (s *Service) Consultation(ctx context.Context, id string) (store.Consultation, error) {
	if !store.ValidID(id) {
		return store.Consultation{}, linkState(CodeLinkMalformed)
	}
	c, err := s.st.Consultation(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Consultation{}, linkState(CodeLinkNotFound)
	}
	if err != nil {
		return store.Consultation{}, err
	}
	switch c.State(s.cfg.Now()) {
	case store.StateRevoked:
		return c, linkState(CodeLinkRevoked)
	case store.StateEnded:
		return c, linkState(CodeConsultationEnded)
	case store.StateExpired:
		return c, linkState(CodeLinkExpired)
	}
	return c, nil
}
