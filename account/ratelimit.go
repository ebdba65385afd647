package account

import (
	"sync"
	"time"
)

// limiter counts failures per key in a sliding window: a key with limit
// failures in the last window is blocked until the oldest of them is window
// old. It lives in memory only; a restart forgets it.
type limiter struct {
	limit   int
	window  time.Duration
	maxKeys int

	mu    sync.Mutex
	fails map[string][]time.Time // oldest first, at most limit entries
}

func newLimiter(limit int, window time.Duration, maxKeys int) *limiter {
	return &limiter{limit: limit, window: window, maxKeys: maxKeys, fails: map[string][]time.Time{}}
}

// wait returns how long key is still blocked at now (0: not blocked).
func (l *limiter) wait(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.prune(key, now)
	if len(f) < l.limit {
		return 0
	}
	return f[0].Add(l.window).Sub(now)
}

// fail records a failure for key at now and reports whether that failure
// blocked the key.
func (l *limiter) fail(key string, now time.Time) (blocked bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.prune(key, now)
	if f == nil && len(l.fails) >= l.maxKeys {
		l.sweepLocked(now)
		for k := range l.fails { // still full: forget an arbitrary key
			if len(l.fails) < l.maxKeys {
				break
			}
			delete(l.fails, k)
		}
	}
	if len(f) >= l.limit {
		f = f[1:]
	}
	l.fails[key] = append(f, now)
	return len(f)+1 == l.limit
}

// reset forgets key's failures (after a successful sign-in).
func (l *limiter) reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.fails, key)
}

// prune drops key's failures older than the window and returns the rest.
func (l *limiter) prune(key string, now time.Time) []time.Time {
	f := l.fails[key]
	i := 0
	for i < len(f) && !now.Before(f[i].Add(l.window)) {
		i++
	}
	if i == len(f) {
		delete(l.fails, key)
		return nil
	}
	if i > 0 {
		f = append(f[:0:0], f[i:]...)
		l.fails[key] = f
	}
	return f
}

func (l *limiter) sweep(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
}

func (l *limiter) sweepLocked(now time.Time) {
	for k := range l.fails {
		l.prune(k, now)
	}
}

func (l *limiter) keys() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.fails)
}
