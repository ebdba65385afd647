package turn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pion/logging"
)

// slogFactory bridges pion's logging.LoggerFactory onto a *slog.Logger.
// Pion's scope becomes the "component" attribute.
//
// Pion logs some conditions a remote party controls at Info, once per
// packet (e.g. "No Permission or Channel exists" for every datagram sprayed
// at a relay port), so lines at Info and above go through lim when it is
// set. Debug is not limited: whoever enables it asked for volume.
type slogFactory struct {
	l   *slog.Logger
	lim *logLimiter
}

func (f slogFactory) NewLogger(scope string) logging.LeveledLogger {
	return &slogLeveled{l: f.l.With("component", scope), lim: f.lim}
}

// slogLeveled maps pion levels: Trace is dropped, Debug → Debug, Info →
// Info, Warn → Warn, Error → Error. Pion logs at Debug on every relayed
// packet, so the formatted variants check Enabled before formatting.
type slogLeveled struct {
	l   *slog.Logger
	lim *logLimiter
}

func (s *slogLeveled) logf(level slog.Level, format string, args ...any) {
	ctx := context.Background()
	if level >= slog.LevelWarn && routineClose(format, args) {
		// A client that hangs up (TURN over TLS or TCP) makes pion report
		// the failed close as an error; it is a normal end of a call.
		level = slog.LevelDebug
	}
	if !s.l.Enabled(ctx, level) || !s.allow(ctx, level) {
		return
	}
	s.l.Log(ctx, level, fmt.Sprintf(format, args...))
}

// routineClose reports whether a pion error is only a connection the other
// side already closed.
func routineClose(format string, args []any) bool {
	if !strings.HasPrefix(format, "Failed to close conn") {
		return false
	}
	for _, a := range args {
		if err, ok := a.(error); ok && (errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)) {
			return true
		}
	}
	return false
}

func (s *slogLeveled) log(level slog.Level, msg string) {
	ctx := context.Background()
	if !s.l.Enabled(ctx, level) || !s.allow(ctx, level) {
		return
	}
	s.l.Log(ctx, level, msg)
}

func (s *slogLeveled) allow(ctx context.Context, level slog.Level) bool {
	if s.lim == nil || level < slog.LevelInfo {
		return true
	}
	ok, suppressed := s.lim.allow(time.Now())
	if suppressed > 0 {
		s.l.Log(ctx, slog.LevelWarn, "pion log lines suppressed", "count", suppressed)
	}
	return ok
}

func (s *slogLeveled) Trace(string)                      {}
func (s *slogLeveled) Tracef(string, ...any)             {}
func (s *slogLeveled) Debug(msg string)                  { s.log(slog.LevelDebug, msg) }
func (s *slogLeveled) Debugf(format string, args ...any) { s.logf(slog.LevelDebug, format, args...) }
func (s *slogLeveled) Info(msg string)                   { s.log(slog.LevelInfo, msg) }
func (s *slogLeveled) Infof(format string, args ...any)  { s.logf(slog.LevelInfo, format, args...) }
func (s *slogLeveled) Warn(msg string)                   { s.log(slog.LevelWarn, msg) }
func (s *slogLeveled) Warnf(format string, args ...any)  { s.logf(slog.LevelWarn, format, args...) }
func (s *slogLeveled) Error(msg string)                  { s.log(slog.LevelError, msg) }
func (s *slogLeveled) Errorf(format string, args ...any) { s.logf(slog.LevelError, format, args...) }

// logLimiter caps refusal log lines, so that a client spraying bad
// credentials or forbidden peers cannot flood the log. Counters are kept
// regardless; only the lines are limited.
type logLimiter struct {
	mu         sync.Mutex
	perWindow  int
	window     time.Duration
	start      time.Time
	n          int
	suppressed int
}

// allow reports whether one more line may be logged now, and how many lines
// were suppressed in the previous window (to be reported once).
func (ll *logLimiter) allow(now time.Time) (ok bool, suppressed int) {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	if now.Sub(ll.start) >= ll.window {
		suppressed, ll.suppressed = ll.suppressed, 0
		ll.start, ll.n = now, 0
	}
	if ll.n >= ll.perWindow {
		ll.suppressed++
		return false, suppressed
	}
	ll.n++
	return true, suppressed
}
