package turn

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Quota refusal reasons, as logged.
const (
	reasonUserQuota  = "user-quota"
	reasonTotalQuota = "total-quota"
)

// quotas counts open relay sockets per user and in total. The counts are
// taken when a relay socket opens (relayGenerator) and given back when it
// closes, so they cannot leak: every path that ends an allocation closes
// its socket. Pion's QuotaHandler, called just before, only checks them,
// to answer 486; two concurrent Allocates that both pass the check are
// settled by acquire, and the loser gets pion's 508.
type quotas struct {
	perUser int // <= 0: no limit
	total   int // <= 0: no limit

	mu    sync.Mutex
	users map[string]int
	n     int
}

func newQuotas(perUser, total int) *quotas {
	return &quotas{perUser: perUser, total: total, users: make(map[string]int)}
}

// check reports why one more allocation for user would be refused, or "".
func (q *quotas) check(user string) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.checkLocked(user)
}

func (q *quotas) checkLocked(user string) string {
	switch {
	case q.total > 0 && q.n >= q.total:
		return reasonTotalQuota
	case q.perUser > 0 && q.users[user] >= q.perUser:
		return reasonUserQuota
	}
	return ""
}

// acquire counts one allocation for user unless a quota refuses it.
func (q *quotas) acquire(user string) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	if why := q.checkLocked(user); why != "" {
		return why
	}
	q.users[user]++
	q.n++
	return ""
}

// release gives back an allocation counted by acquire.
func (q *quotas) release(user string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.n--
	if q.users[user] <= 1 {
		delete(q.users, user) // the map holds only users with allocations
	} else {
		q.users[user]--
	}
}

// authLimiterMaxSources bounds the sources the authentication failure
// limiter remembers, about 50 bytes each.
const authLimiterMaxSources = 1 << 16

// authLimiter rate-limits failed authentications per source with one
// token bucket each, kept as GCRA's theoretical arrival time (tat): a
// failure moves tat to max(tat, now) + interval, and a source is blocked
// while tat - now > (burst-1) * interval, i.e. after burst failures in a
// row, until one interval has passed. A source whose tat has passed is in
// the same state as an unknown one, so it can be forgotten: the map holds
// only sources that failed recently, and is bounded by max.
type authLimiter struct {
	interval  time.Duration // time to earn back one failure
	tolerance time.Duration // (burst-1) * interval
	max       int

	mu   sync.Mutex
	tats map[netip.Addr]time.Time
}

// newAuthLimiter allows burst failures, then one per window/burst.
func newAuthLimiter(burst int, window time.Duration, maxSources int) *authLimiter {
	interval := window / time.Duration(burst)
	return &authLimiter{
		interval:  interval,
		tolerance: time.Duration(burst-1) * interval,
		max:       maxSources,
		tats:      make(map[netip.Addr]time.Time),
	}
}

// sourceKey is what the limiter counts by: the IPv4 address, or the /64
// of an IPv6 address, since a single IPv6 host usually has a whole /64.
func sourceKey(a net.Addr) (netip.Addr, bool) {
	ip := addrIP(a).Unmap().WithZone("")
	switch {
	case !ip.IsValid():
		return netip.Addr{}, false
	case ip.Is6():
		return netip.PrefixFrom(ip, 64).Masked().Addr(), true
	}
	return ip, true
}

// blocked reports whether src has no failures left.
func (l *authLimiter) blocked(src netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	tat, ok := l.tats[src]
	return ok && tat.Sub(now) > l.tolerance
}

// fail records a failed authentication from src and reports whether it
// used up src's last allowed failure (to log the block once).
func (l *authLimiter) fail(src netip.Addr, now time.Time) (nowBlocked bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	tat, ok := l.tats[src]
	if !ok && len(l.tats) >= l.max {
		l.evict(now)
	}
	wasBlocked := ok && tat.Sub(now) > l.tolerance
	if tat.Before(now) {
		tat = now
	}
	tat = tat.Add(l.interval)
	l.tats[src] = tat
	return !wasBlocked && tat.Sub(now) > l.tolerance
}

// evict makes room: it forgets every source whose bucket is full again,
// and if that frees less than an eighth of the map, arbitrary sources
// until it does (Go randomizes map iteration). A flood of sources thus
// costs amortized O(1) per new source; the price is that some blocked
// sources get a fresh bucket early.
func (l *authLimiter) evict(now time.Time) {
	for k, tat := range l.tats {
		if !tat.After(now) {
			delete(l.tats, k)
		}
	}
	target := l.max - l.max/8
	for k := range l.tats {
		if len(l.tats) <= target {
			break
		}
		delete(l.tats, k)
	}
}

func (l *authLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.tats)
}

// minBandwidthBurst is the smallest burst of a bandwidth cap: well above
// the largest UDP payload a relay reads (1600 bytes), and a video key
// frame of a small stream at once.
const minBandwidthBurst = 64 << 10

// newBandwidthLimiter returns a token bucket of bytesPerSec with a tenth of
// a second's burst (at least minBandwidthBurst), or nil for no cap.
func newBandwidthLimiter(bytesPerSec int) *rate.Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bytesPerSec), max(bytesPerSec/10, minBandwidthBurst))
}
