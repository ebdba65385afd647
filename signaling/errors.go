package signaling

import (
	"errors"
	"net/http"
)

// Error codes sent in "error" messages. Each is documented in docs/protocol.md.
const (
	CodeBadMessage      = "bad-message"      // not a JSON object, or a field of the wrong type or size
	CodeUnknownType     = "unknown-type"     // "type" names no message of this protocol version
	CodeVersion         = "version"          // the client speaks a protocol version this server does not
	CodeNotJoined       = "not-joined"       // a message other than join before join
	CodeAlreadyJoined   = "already-joined"   // a second join on one connection
	CodeRoomNotFound    = "room-not-found"   // no room with that id (never created, or expired)
	CodeRoomFull        = "room-full"        // the room already has MaxPeers participants
	CodeBadName         = "bad-name"         // display name empty, too long or with control characters
	CodeUnknownPeer     = "unknown-peer"     // "to" names nobody in the room
	CodeRateLimited     = "rate-limited"     // too many messages per second; the message was dropped
	CodeTooManyRooms    = "too-many-rooms"   // room creation refused: per-IP or server-wide limit
	CodeInternal        = "internal"         // a server fault
	CodeOriginForbidden = "origin-forbidden" // HTTP only: the page's origin may not open the WebSocket
	CodeBadToken        = "bad-token"        // join without the link's join token, or with a wrong one

	// Consultations. The link-* and consultation-ended codes come from the
	// consultation store (account package) when a guest link stops working.
	CodeLinkExpired       = "link-expired"       // the consultation's guest link has expired
	CodeLinkRevoked       = "link-revoked"       // the host revoked the guest link
	CodeConsultationEnded = "consultation-ended" // the consultation is over
	CodeLocked            = "locked"             // the host locked the consultation: no new guests
	CodeWaitingFull       = "waiting-full"       // too many guests wait already
	CodeDenied            = "denied"             // the host did not let this guest in
	CodeRemoved           = "removed"            // the host took this participant out
	CodeEnded             = "ended"              // the host ended the consultation for everyone
	CodeNotHost           = "not-host"           // a host-only message from someone else
	CodeNotAdmitted       = "not-admitted"       // a waiting guest sent what only members may
	CodeReplaced          = "replaced"           // the host opened the consultation in another window
	CodeResumeFailed      = "resume-failed"      // the place to resume is gone: join again as a new participant
)

// WebSocket close codes Parley uses (RFC 6455 §7.4).
const (
	CloseNormal      = 1000 // leave, a failed join, or the end of a connection
	CloseGoingAway   = 1001 // (not sent any more; see CloseRestart)
	CloseRestart     = 1012 // the server is restarting: reconnect and resume
	ClosePolicy      = 1008 // sustained message flood
	CloseTooBig      = 1009 // a message over MaxMessageSize
	CloseSlowReader  = 4000 // the client did not read its messages fast enough
	CloseIdleTimeout = 4001 // no pong within the keepalive timeout
	CloseJoinRefused = 4003 // join refused: missing or wrong join token (the link is incomplete)
	CloseLinkClosed  = 4004 // join refused: the consultation's link expired or was revoked, or it ended
	CloseDenied      = 4005 // the host did not let this guest in
	CloseRemoved     = 4006 // the host took this participant out
	CloseEnded       = 4007 // the host ended the consultation
	CloseLocked      = 4008 // join refused: the consultation is locked, or its waiting room is full
	CloseReplaced    = 4009 // the host's connection was replaced by a newer one (another window)
)

// closeCodeFor is the close code that follows an error with this code.
func closeCodeFor(code string) int {
	switch code {
	case CodeBadToken:
		return CloseJoinRefused
	case CodeLinkExpired, CodeLinkRevoked, CodeConsultationEnded:
		return CloseLinkClosed
	case CodeDenied:
		return CloseDenied
	case CodeRemoved:
		return CloseRemoved
	case CodeEnded:
		return CloseEnded
	case CodeLocked, CodeWaitingFull:
		return CloseLocked
	case CodeReplaced:
		return CloseReplaced
	}
	return CloseNormal
}

var (
	// ErrRoomNotFound means no room has that id.
	ErrRoomNotFound = errors.New("signaling: room not found")
	// ErrRoomFull means the room has MaxPeers participants already.
	ErrRoomFull = errors.New("signaling: room full")
	// ErrTooManyRooms means a room-creation limit was hit.
	ErrTooManyRooms = errors.New("signaling: too many rooms")
	// ErrBadName means a display name was refused.
	ErrBadName = errors.New("signaling: bad display name")
	// ErrBadMessage means a message could not be decoded.
	ErrBadMessage = errors.New("signaling: bad message")
	// ErrUnknownType means a message type is not part of the protocol.
	ErrUnknownType = errors.New("signaling: unknown message type")
	// ErrBadToken means a join carried no join token or a wrong one.
	ErrBadToken = errors.New("signaling: bad join token")

	// errTooBig means a client's message is over MaxMessageSize (close 1009).
	errTooBig = errors.New("signaling: message over the size limit")
)

// ProtocolError is an error with a code from the list above, sent to the
// client in an "error" message.
type ProtocolError struct {
	Code    string
	Message string // plain words, shown to the user as is
	Err     error  // the sentinel it wraps, if any
}

func (e *ProtocolError) Error() string { return "signaling: " + e.Code + ": " + e.Message }
func (e *ProtocolError) Unwrap() error { return e.Err }

func protoErr(code, msg string, err error) *ProtocolError {
	return &ProtocolError{Code: code, Message: msg, Err: err}
}

// httpError maps an error to an HTTP status and a JSON body
// {"error": code, "message": text}. It is the one place that does so.
func httpError(w http.ResponseWriter, err error) {
	status, code, msg := http.StatusInternalServerError, CodeInternal, "Something went wrong on the server. Please try again."
	var pe *ProtocolError
	switch {
	case errors.As(err, &pe):
		code, msg = pe.Code, pe.Message
		switch pe.Code {
		case CodeRoomNotFound:
			status = http.StatusNotFound
		case CodeTooManyRooms:
			status = http.StatusTooManyRequests
		case CodeOriginForbidden:
			status = http.StatusForbidden
		case CodeBadMessage:
			status = http.StatusBadRequest
		case CodeBadToken:
			status = http.StatusForbidden
		case CodeLinkExpired, CodeLinkRevoked, CodeConsultationEnded:
			status = http.StatusGone
		}
	case errors.Is(err, ErrRoomNotFound):
		status, code, msg = http.StatusNotFound, CodeRoomNotFound, msgRoomNotFound
	case errors.Is(err, ErrTooManyRooms):
		status, code, msg = http.StatusTooManyRequests, CodeTooManyRooms, msgTooManyRooms
	}
	writeJSON(w, status, map[string]string{"error": code, "message": msg})
}

const (
	msgRoomNotFound = "This call link is not valid any more. Ask the person who sent it for a new link."
	msgRoomFull     = "This call already has the most people it can hold. Ask the organiser to start a new call."
	msgTooManyRooms = "Too many calls were started from your network just now. Please wait a few minutes and try again."
	msgServerFull   = "This server is holding as many calls as it can right now. Please try again later."
	msgLocked       = "The host has locked this consultation, so nobody else can join now. Contact the person who invited you."
	msgWaitingFull  = "Too many people are waiting to join this consultation. Please try again in a few minutes."
	msgDenied       = "The host did not let you in to this consultation. If you think this is a mistake, contact the person who invited you."
	msgRemoved      = "The host removed you from this consultation."
	msgEnded        = "The host ended the consultation. Thank you for joining."
	msgNotHost      = "Only the host of this consultation can do that."
	msgNotAdmitted  = "The host has not let you in yet. Please wait."
	msgReplaced     = "You opened this consultation in another window, so it was closed here."
	msgResumeFailed = "Your place in the call could not be kept. Joining again as a new participant."
	msgBadToken     = "This link is incomplete, so you cannot join. Ask the person who sent it to copy the whole link, including the part after \"#\", and send it again."
)
