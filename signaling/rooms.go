package signaling

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/netip"
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

// room is one call. Its fields are guarded by the room's mutex.
type room struct {
	id       string
	mu       sync.Mutex
	peers    map[string]*client
	order    []string // join order, for a stable peer list
	created  time.Time
	lastUsed time.Time
	// verifier is V = SHA-256("parley/1 join-verifier" || T_join), given
	// when the room was made; every join must bring T_join.
	verifier []byte
	joined   bool // someone has joined at least once

	// A consultation (consult != nil): a waiting room the host controls.
	consult *Consultation
	waiting map[string]*client // guests the host has not let in yet
	waitOrd []string           // their arrival order
	host    *client            // the host's connection, while in the room
	roster  json.RawMessage    // the latest roster the host sent (opaque)
	locked  bool
}

// registry holds the rooms and the per-IP creation limits.
type registry struct {
	mu       sync.Mutex
	rooms    map[string]*room
	perIP    map[string]*ipLimit
	maxRooms int
	perHour  int
	ttl      time.Duration // forget a room nobody has been in for this long
	unused   time.Duration // forget a room nobody ever joined after this long
	now      func() time.Time
	swept    time.Time
	consults Consultations // nil: no consultations
	persist  Persister
}

type ipLimit struct {
	lim  *rate.Limiter
	seen time.Time
}

func newRegistry(maxRooms, perHour int, ttl, unused time.Duration) *registry {
	return &registry{
		rooms:    map[string]*room{},
		perIP:    map[string]*ipLimit{},
		maxRooms: maxRooms,
		perHour:  perHour,
		ttl:      ttl,
		unused:   unused,
		now:      time.Now,
		persist:  noPersist{},
	}
}

// limitKey is what per-address limits count: an IPv4 address, or the /64
// of an IPv6 address (one subscriber usually holds a whole /64).
func limitKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// create makes a room for a request from ip, with the join verifier V.
func (g *registry) create(ip string, verifier []byte) (*room, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	g.expireLocked(now)
	if len(g.rooms) >= g.maxRooms {
		return nil, protoErr(CodeTooManyRooms, msgServerFull, ErrTooManyRooms)
	}
	key := limitKey(ip)
	l := g.perIP[key]
	if l == nil {
		// A bucket of perHour rooms refilled evenly over the hour.
		l = &ipLimit{lim: rate.NewLimiter(rate.Every(time.Hour/time.Duration(g.perHour)), g.perHour)}
		g.perIP[key] = l
	}
	l.seen = now
	if !l.lim.AllowN(now, 1) {
		return nil, ErrTooManyRooms
	}
	r := &room{id: newID(RoomIDBytes), peers: map[string]*client{}, created: now, lastUsed: now, verifier: verifier}
	g.rooms[r.id] = r
	g.persist.SaveRoom(r.saved())
	return r, nil
}

// get returns the room with that id, if it exists and has not expired. A
// consultation's room is made when first asked for, while its link works;
// when it does not, the error is the *ProtocolError to show (link-expired
// and the like).
func (g *registry) get(ctx context.Context, id string) (*room, error) {
	if !validRoomID(id) {
		return nil, ErrRoomNotFound
	}
	g.mu.Lock()
	g.expireLocked(g.now())
	r := g.rooms[id]
	g.mu.Unlock()
	if r != nil {
		if r.consult != nil {
			// The link may have expired, been revoked or ended since.
			if _, err := g.consults.Lookup(ctx, id); err != nil {
				return nil, err
			}
		}
		return r, nil
	}
	if g.consults == nil {
		return nil, ErrRoomNotFound
	}
	c, err := g.consults.Lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if r := g.rooms[id]; r != nil {
		return r, nil
	}
	now := g.now()
	r = &room{id: id, peers: map[string]*client{}, created: now, lastUsed: now, verifier: c.Verifier, joined: true,
		consult: &c, waiting: map[string]*client{}, locked: c.Locked}
	g.rooms[id] = r
	return r, nil
}

// drop forgets a room (a consultation that ended).
func (g *registry) drop(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.rooms, id)
	g.persist.DeleteRoom(id)
}

// restore puts back a room kept before a restart: an open room as it was;
// a consultation only while its link still works. Nil if it is gone.
func (g *registry) restore(s SavedRoom) *room {
	if !validRoomID(s.ID) {
		return nil
	}
	r := &room{id: s.ID, peers: map[string]*client{}, created: s.Created, lastUsed: s.LastUsed, verifier: s.Verifier, joined: s.Joined}
	if s.Consultation {
		if g.consults == nil {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := g.consults.Lookup(ctx, s.ID)
		cancel()
		if err != nil {
			g.persist.DeleteRoom(s.ID)
			return nil
		}
		r.consult, r.verifier, r.waiting, r.locked, r.joined = &c, c.Verifier, map[string]*client{}, c.Locked, true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if old := g.rooms[s.ID]; old != nil {
		return old
	}
	g.rooms[s.ID] = r
	return r
}

// count returns the number of rooms held (consultations included).
func (g *registry) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.rooms)
}

// expireLocked forgets rooms nobody has been in for ttl, rooms nobody ever
// joined after unused (so that rooms made and abandoned cannot keep the
// server full), and per-IP limits that are full again.
func (g *registry) expireLocked(now time.Time) {
	if now.Sub(g.swept) < time.Minute {
		return
	}
	g.swept = now
	for id, r := range g.rooms {
		r.mu.Lock()
		idle := len(r.peers) == 0 && (now.Sub(r.lastUsed) > g.ttl || !r.joined && now.Sub(r.created) > g.unused)
		if r.consult != nil {
			// Its record lives in the store; the room is made again when
			// someone comes back.
			idle = len(r.peers) == 0 && len(r.waiting) == 0 && now.Sub(r.lastUsed) > 10*time.Minute
		}
		r.mu.Unlock()
		if idle {
			delete(g.rooms, id)
			if r.consult == nil {
				g.persist.DeleteRoom(id)
			}
		}
	}
	for ip, l := range g.perIP {
		if now.Sub(l.seen) > time.Hour {
			delete(g.perIP, ip)
		}
	}
}
