package account

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Error codes of the account API, in the "error" field of every refusal.
// Each is documented in docs/accounts.md with its HTTP status.
const (
	CodeBadRequest         = "bad-request"            // 400: not a JSON object, unknown field, wrong type, trailing data
	CodeTooLarge           = "too-large"              // 413: body over MaxBodyBytes
	CodeUnsupportedMedia   = "unsupported-media-type" // 415: a JSON body without Content-Type: application/json
	CodeBadLogin           = "bad-login"              // 401: email and password do not match an enabled account
	CodeRateLimited        = "rate-limited"           // 429: too many failed sign-ins for this account or network; see Retry-After
	CodeSignInRequired     = "sign-in-required"       // 401: no valid host session
	CodeCSRF               = "csrf"                   // 403: X-CSRF-Token missing or not this session's
	CodeOriginForbidden    = "origin-forbidden"       // 403: the request did not come from this site's own page
	CodeBadTitle           = "bad-title"              // 400: consultation title empty, too long or with control characters
	CodeBadTime            = "bad-time"               // 400: scheduledAt not RFC 3339, or too far in the past or future
	CodeBadVerifier        = "bad-verifier"           // 400: joinVerifier not 32 bytes of unpadded base64url
	CodeNotFound           = "not-found"              // 404: no such consultation among the signed-in host's (or no such API path)
	CodeMethodNotAllowed   = "method-not-allowed"     // 405: the path exists, the method does not; see Allow
	CodeTooManyActive      = "too-many-consultations" // 429: the host has MaxActive consultations whose links still work
	CodeInternal           = "internal"               // 500: a server fault
	CodeServiceUnavailable = "unavailable"            // 503: the server is shutting down
)

// Guest link codes: why a consultation link does not work. The guest's page
// shows the matching message (LinkMessage) and signaling sends the code as
// its error.
const (
	CodeLinkExpired       = "link-expired"
	CodeLinkRevoked       = "link-revoked"
	CodeConsultationEnded = "consultation-ended"
	CodeLinkNotFound      = "link-not-found"
	CodeLinkMalformed     = "link-malformed"
)

var (
	// ErrBadLogin means the email and password match no enabled account.
	ErrBadLogin = errors.New("account: email and password do not match")
	// ErrPasswordTooShort means a new password has fewer than MinPasswordLen characters.
	ErrPasswordTooShort = fmt.Errorf("account: the password must be at least %d characters", MinPasswordLen)
	// ErrPasswordTooLong means a new password has more than MaxPasswordLen bytes.
	ErrPasswordTooLong = fmt.Errorf("account: the password must be at most %d bytes", MaxPasswordLen)
	// ErrPasswordInvalid means a new password is not valid UTF-8 or holds a
	// control character (a stray newline, NUL or escape).
	ErrPasswordInvalid = errors.New("account: the password must be text without control characters")
	// ErrBadHash means a stored password hash is not a PHC argon2id string
	// this package can check.
	ErrBadHash = errors.New("account: malformed password hash")

	// The guest link sentinels; LinkState unwraps to them.
	ErrLinkExpired       = errors.New("account: consultation link expired")
	ErrLinkRevoked       = errors.New("account: consultation link revoked")
	ErrConsultationEnded = errors.New("account: consultation ended")
	ErrLinkNotFound      = errors.New("account: consultation link not found")
	ErrLinkMalformed     = errors.New("account: consultation link malformed")
)

// Messages shown to guests for each link code, in plain words.
var linkMessages = map[string]string{
	CodeLinkExpired:       "This consultation link has expired. Ask the person who invited you for a new link.",
	CodeLinkRevoked:       "This consultation link was withdrawn by the person who sent it. Ask them for a new link if you still need to meet.",
	CodeConsultationEnded: "This consultation has ended. Ask the person who invited you if you need to talk again.",
	CodeLinkNotFound:      "This consultation link is not known here. Check that you opened the whole link, or ask the person who invited you for a new one.",
	CodeLinkMalformed:     "This link is incomplete or damaged. Check that you opened the whole link, or ask the person who invited you to send it again.",
}

var linkSentinels = map[string]error{
	CodeLinkExpired:       ErrLinkExpired,
	CodeLinkRevoked:       ErrLinkRevoked,
	CodeConsultationEnded: ErrConsultationEnded,
	CodeLinkNotFound:      ErrLinkNotFound,
	CodeLinkMalformed:     ErrLinkMalformed,
}

// LinkMessage is the plain-language message for a guest link code, or ""
// for a code that is not one of them.
func LinkMessage(code string) string { return linkMessages[code] }

// LinkState says why a guest link does not work: a code from the Link*
// constants and the message to show the guest. It is the error
// (*Service).Consultation returns for a link that does not work, and
// unwraps to the matching sentinel (ErrLinkExpired, ...).
type LinkState struct {
	Code    string `json:"error"`
	Message string `json:"message"`
}

func linkState(code string) LinkState { return LinkState{Code: code, Message: linkMessages[code]} }

func (l LinkState) Error() string { return "account: " + l.Code }
func (l LinkState) Unwrap() error { return linkSentinels[l.Code] }

// LinkStateOf returns the LinkState in err's chain, if there is one.
func LinkStateOf(err error) (LinkState, bool) {
	var l LinkState
	ok := errors.As(err, &l)
	return l, ok
}

// apiError is a refusal of the account API: a code from the list above and
// a message in plain words, shown to the user as is.
type apiError struct {
	code       string
	message    string
	retryAfter time.Duration // for rate-limited
	err        error
}

func (e *apiError) Error() string { return "account: " + e.code + ": " + e.message }
func (e *apiError) Unwrap() error { return e.err }

func apiErr(code, message string) *apiError { return &apiError{code: code, message: message} }

// statusOf is the HTTP status of each code.
var statusOf = map[string]int{
	CodeBadRequest:         http.StatusBadRequest,
	CodeBadTitle:           http.StatusBadRequest,
	CodeBadTime:            http.StatusBadRequest,
	CodeBadVerifier:        http.StatusBadRequest,
	CodeTooLarge:           http.StatusRequestEntityTooLarge,
	CodeUnsupportedMedia:   http.StatusUnsupportedMediaType,
	CodeBadLogin:           http.StatusUnauthorized,
	CodeSignInRequired:     http.StatusUnauthorized,
	CodeCSRF:               http.StatusForbidden,
	CodeOriginForbidden:    http.StatusForbidden,
	CodeNotFound:           http.StatusNotFound,
	CodeMethodNotAllowed:   http.StatusMethodNotAllowed,
	CodeRateLimited:        http.StatusTooManyRequests,
	CodeTooManyActive:      http.StatusTooManyRequests,
	CodeInternal:           http.StatusInternalServerError,
	CodeServiceUnavailable: http.StatusServiceUnavailable,
}

// Messages for refusals that have only one wording.
const (
	msgBadLogin      = "That email and password do not match an account here."
	msgSignIn        = "Please sign in to do this."
	msgCSRFMissing   = "This request is missing its security token. Reload the page and try again."
	msgCSRFWrong     = "This request's security token does not match your session. Reload the page and try again."
	msgOrigin        = "This request did not come from this site's own pages, so it was refused."
	msgNotFound      = "There is no such consultation among yours."
	msgInternal      = "Something went wrong on the server. Please try again."
	msgUnavailable   = "The server is restarting. Please try again in a moment."
	msgTooLarge      = "The request is too large."
	msgUnsupported   = "Send the request as JSON (Content-Type: application/json)."
	msgTooManyActive = "You have too many consultations whose links still work. End or revoke some first."
	signInPath       = "/signin"
)

// httpError writes err as the JSON body {"error": code, "message": text}
// with the code's status. It is the one place that maps errors to HTTP.
// Errors that are not refusals become 500 "internal" and are not shown.
func httpError(w http.ResponseWriter, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = apiErr(CodeInternal, msgInternal)
	}
	status, ok := statusOf[ae.code]
	if !ok {
		status = http.StatusInternalServerError
	}
	body := map[string]string{"error": ae.code, "message": ae.message}
	if ae.code == CodeSignInRequired {
		body["signIn"] = signInPath
	}
	if ae.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((ae.retryAfter+time.Second-1)/time.Second)))
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
