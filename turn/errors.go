package turn

import "errors"

var (
	// ErrInvalidConfig is wrapped by every error Config.Validate returns; the
	// message names the offending field, e.g. "turn: Secret: must be at least 16 bytes".
	ErrInvalidConfig = errors.New("turn: invalid config")

	// ErrNoSockets is returned by New when neither packet conns nor listeners are given.
	ErrNoSockets = errors.New("turn: no sockets to serve on")

	// ErrNilSocket is returned by New when a packet conn or listener is nil.
	ErrNilSocket = errors.New("turn: nil socket")

	// ErrMalformedUsername is returned by the username parser when a TURN
	// username is not "<decimal unix expiry>[:<id>]".
	ErrMalformedUsername = errors.New("turn: malformed username")

	// ErrExpiredUsername means the expiry in a TURN username lies in the past.
	ErrExpiredUsername = errors.New("turn: expired username")

	// ErrTCPRelayUnsupported is returned for RFC 6062 TCP relay allocations,
	// which Parley does not offer. TURN over TCP (a TCP connection to the
	// server carrying UDP relay allocations) is supported.
	ErrTCPRelayUnsupported = errors.New("turn: TCP relay allocations are not supported")

	// ErrAddressFamily is returned when a client asks for a relay address of
	// a family other than the one of Config.PublicIP.
	ErrAddressFamily = errors.New("turn: relay address family not offered")

	// ErrPortInUse is returned when no free relay port was found in the
	// configured range after several random tries.
	ErrPortInUse = errors.New("turn: no free relay port in range")

	// ErrUnsupportedConn is returned by SetSocketBuffers for values that do
	// not expose a raw socket (syscall.Conn).
	ErrUnsupportedConn = errors.New("turn: not a socket")
)

// configError names the Config field that failed validation.
type configError struct {
	field, msg string
}

func (e *configError) Error() string { return "turn: " + e.field + ": " + e.msg }

func (e *configError) Unwrap() error { return ErrInvalidConfig }

var (
	// ErrPortOutOfRange is returned when a client's RESERVATION-TOKEN or
	// EVEN-PORT request leads to a port outside RelayPortMin..RelayPortMax.
	ErrPortOutOfRange = errors.New("turn: requested relay port outside the configured range")

	errNotUDPAddr = errors.New("turn: relay: destination is not a UDP address")
)

// ErrQuotaReached is returned to pion when opening a relay socket would
// exceed Config.MaxAllocationsPerUser or Config.MaxAllocations. The
// QuotaHandler normally refuses first, with 486; this catches concurrent
// Allocates that both passed it.
var ErrQuotaReached = errors.New("turn: allocation quota reached")
