package signaling

import (
	"crypto/rand"
	"encoding/base64"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RoomIDBytes is how many random bytes make a room id: 128 bits, written as
// 22 characters of unpadded base64url.
const RoomIDBytes = 16

// newID returns n random bytes as unpadded base64url.
func newID(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails on supported platforms (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// validRoomID reports whether s has the shape of a room id.
func validRoomID(s string) bool {
	if len(s) != base64.RawURLEncoding.EncodedLen(RoomIDBytes) {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil
}

// room is one call. Its peers map is guarded by the room's mutex.
type room struct {
	id       string
	mu       sync.Mutex
	peers    map[string]*client
	order    []string // join order, for a stable peer list
	lastUsed time.Time
}

// registry holds the rooms and the per-IP creation limits.
type registry struct {
	mu       sync.Mutex
	rooms    map[string]*room
	perIP    map[string]*ipLimit
	maxRooms int
	perHour  int
	ttl      time.Duration
	now      func() time.Time
	swept    time.Time
}

type ipLimit struct {
	lim  *rate.Limiter
	seen time.Time
}

func newRegistry(maxRooms, perHour int, ttl time.Duration) *registry {
	return &registry{
		rooms:    map[string]*room{},
		perIP:    map[string]*ipLimit{},
		maxRooms: maxRooms,
		perHour:  perHour,
		ttl:      ttl,
		now:      time.Now,
	}
}

// create makes a room for a request from ip.
func (g *registry) create(ip string) (*room, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	g.expireLocked(now)
	if len(g.rooms) >= g.maxRooms {
		return nil, protoErr(CodeTooManyRooms, msgServerFull, ErrTooManyRooms)
	}
	l := g.perIP[ip]
	if l == nil {
		// A bucket of perHour rooms refilled evenly over the hour.
		l = &ipLimit{lim: rate.NewLimiter(rate.Every(time.Hour/time.Duration(g.perHour)), g.perHour)}
		g.perIP[ip] = l
	}
	l.seen = now
	if !l.lim.AllowN(now, 1) {
		return nil, ErrTooManyRooms
	}
	r := &room{id: newID(RoomIDBytes), peers: map[string]*client{}, lastUsed: now}
	g.rooms[r.id] = r
	return r, nil
}

// get returns the room with that id, if it exists and has not expired.
func (g *registry) get(id string) (*room, error) {
	if !validRoomID(id) {
		return nil, ErrRoomNotFound
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.expireLocked(g.now())
	r := g.rooms[id]
	if r == nil {
		return nil, ErrRoomNotFound
	}
	return r, nil
}

// count returns the number of rooms held.
func (g *registry) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.rooms)
}

// expireLocked forgets rooms nobody has been in for ttl, and per-IP limits
// that are full again.
func (g *registry) expireLocked(now time.Time) {
	if now.Sub(g.swept) < time.Minute {
		return
	}
	g.swept = now
	for id, r := range g.rooms {
		r.mu.Lock()
		idle := len(r.peers) == 0 && now.Sub(r.lastUsed) > g.ttl
		r.mu.Unlock()
		if idle {
			delete(g.rooms, id)
		}
	}
	for ip, l := range g.perIP {
		if now.Sub(l.seen) > time.Hour {
			delete(g.perIP, ip)
		}
	}
}
