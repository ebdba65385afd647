package turn

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pion/logging"
)

// slogFactory bridges pion's logging.LoggerFactory onto a *slog.Logger.
// Pion's scope becomes the "component" attribute.
type slogFactory struct{ l *slog.Logger }

func (f slogFactory) NewLogger(scope string) logging.LeveledLogger {
	return &slogLeveled{l: f.l.With("component", scope)}
}

// slogLeveled maps pion levels: Trace is dropped, Debug → Debug, Info →
// Info, Warn → Warn, Error → Error. Pion logs at Debug on every relayed
// packet, so the formatted variants check Enabled before formatting.
type slogLeveled struct{ l *slog.Logger }

func (s *slogLeveled) logf(level slog.Level, format string, args ...any) {
	ctx := context.Background()
	if !s.l.Enabled(ctx, level) {
		return
	}
	s.l.Log(ctx, level, fmt.Sprintf(format, args...))
}

func (s *slogLeveled) Trace(string)                      {}
func (s *slogLeveled) Tracef(string, ...any)             {}
func (s *slogLeveled) Debug(msg string)                  { s.l.Debug(msg) }
func (s *slogLeveled) Debugf(format string, args ...any) { s.logf(slog.LevelDebug, format, args...) }
func (s *slogLeveled) Info(msg string)                   { s.l.Info(msg) }
func (s *slogLeveled) Infof(format string, args ...any)  { s.logf(slog.LevelInfo, format, args...) }
func (s *slogLeveled) Warn(msg string)                   { s.l.Warn(msg) }
func (s *slogLeveled) Warnf(format string, args ...any)  { s.logf(slog.LevelWarn, format, args...) }
func (s *slogLeveled) Error(msg string)                  { s.l.Error(msg) }
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
