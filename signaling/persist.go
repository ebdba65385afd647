package signaling

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"time"
)

// Calls survive a dropped WebSocket, a network change and a server restart
// (docs/protocol.md, Resume). Every member gets a resume token in its
// welcome (or waiting) message; the server keeps only its SHA-256. When a
// connection ends without a leave, the member stays in its room, detached,
// for ResumeGrace: messages for it are kept (up to maxPending), the others
// hear nothing. A new connection whose join carries the room's join token
// and the resume token takes the member's place — same peer id, no leave
// and join — and gets what was kept. Rooms and members are also written to
// a Persister, so a restarted server takes its pages back the same way.

const (
	// DefaultResumeGrace is how long a member whose connection dropped
	// keeps its place (and how long after a restart members have to come
	// back); Config.ResumeGrace.
	DefaultResumeGrace = 60 * time.Second
	// maxPending bounds the messages kept for a detached member. Past it,
	// its resume is refused: the page joins again as a new participant.
	maxPending = 512
)

// Persister keeps rooms, members and rosters so calls survive a restart.
// Its methods are called with room locks held: they must not block (an
// implementation queues and writes behind).
type Persister interface {
	SaveRoom(r SavedRoom)
	DeleteRoom(id string)
	SaveMember(room string, m SavedMember)
	DeleteMember(room, peer string)
	SaveRoster(room string, roster []byte)
}

// SavedRoom is what a Persister keeps of a room.
type SavedRoom struct {
	ID           string
	Verifier     []byte
	Created      time.Time
	LastUsed     time.Time
	Joined       bool
	Consultation bool // its record lives with the consultations
}

// SavedMember is what a Persister keeps of a member.
type SavedMember struct {
	ID         string
	Name       string
	Role       string // RoleHost, RoleGuest, or "" in an open room
	ResumeHash []byte // SHA-256 of the resume token
	Admitted   bool   // false: in the waiting room
	Joined     time.Time
}

// RestoredRoom is a room to take back after a restart, with its members and
// (for a consultation) its latest roster.
type RestoredRoom struct {
	Room    SavedRoom
	Members []SavedMember
	Roster  []byte
}

type noPersist struct{}

func (noPersist) SaveRoom(SavedRoom)             {}
func (noPersist) DeleteRoom(string)              {}
func (noPersist) SaveMember(string, SavedMember) {}
func (noPersist) DeleteMember(string, string)    {}
func (noPersist) SaveRoster(string, []byte)      {}

// newResume makes a resume token and its hash.
func newResume() (token string, hash []byte) {
	token = newID(32)
	h := sha256.Sum256([]byte(token))
	return token, h[:]
}

// resumeMatches compares a presented token with a member's hash in
// constant time.
func resumeMatches(token string, hash []byte) bool {
	if len(token) != base64.RawURLEncoding.EncodedLen(32) || len(hash) != sha256.Size {
		return false
	}
	h := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(h[:], hash) == 1
}

// saved is what a Persister keeps of c. rm.mu is held.
func (c *client) saved() SavedMember {
	return SavedMember{ID: c.id, Name: c.name, Role: c.role, ResumeHash: c.resumeHash, Admitted: !c.waiting, Joined: c.joinedAt}
}

// savedRoom is what a Persister keeps of rm. rm.mu is held.
func (rm *room) saved() SavedRoom {
	return SavedRoom{ID: rm.id, Verifier: rm.verifier, Created: rm.created, LastUsed: rm.lastUsed, Joined: rm.joined, Consultation: rm.consult != nil}
}

// detach keeps c's place after its connection ended without a leave: the
// others hear nothing for ResumeGrace, and messages for it are kept.
// Reports whether it did (c must still be the member with its id).
func (c *client) detach() bool {
	rm := c.room
	if rm == nil || c.resumeHash == nil {
		return false
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if rm.peers[c.id] != c && rm.waiting[c.id] != c {
		return false
	}
	c.pmu.Lock()
	c.detached = true
	// Messages queued but not yet written (a failed write, or a writer
	// that had not got to them) are kept for the resume as well.
	for _, m := range c.out[c.head:] {
		c.keepLocked(m)
	}
	c.out, c.head = nil, 0
	c.pmu.Unlock()
	c.detachedAt = time.Now()
	c.graceTimer(c.srv.cfg.ResumeGrace)
	c.log.Info("connection lost; keeping the place for a resume", "grace", c.srv.cfg.ResumeGrace)
	return true
}

// graceTimer removes c for good if it is still detached after d. rm.mu is held.
func (c *client) graceTimer(d time.Duration) {
	rm := c.room
	time.AfterFunc(d, func() {
		rm.mu.Lock()
		defer rm.mu.Unlock()
		c.pmu.Lock()
		still := c.detached
		c.pmu.Unlock()
		if !still {
			return
		}
		if c.waiting {
			rm.leaveWaiting(c)
		} else {
			rm.removePeer(c, "disconnected")
		}
		c.srv.persist.DeleteMember(rm.id, c.id)
	})
}

// resume lets c (a new connection) take the place of the member whose
// resume token it brings. rm.mu is held. The old connection, if it is
// still open (a network change the server has not noticed), is closed.
func (c *client) resume(rm *room, token string) error {
	var old *client
	for _, p := range rm.peers {
		if resumeMatches(token, p.resumeHash) {
			old = p
		}
	}
	for _, p := range rm.waiting {
		if resumeMatches(token, p.resumeHash) {
			old = p
		}
	}
	if old == nil {
		return protoErr(CodeResumeFailed, msgResumeFailed, nil)
	}
	old.pmu.Lock()
	overflow := old.overflow
	// What the old connection had queued but not written (it may still
	// look alive after a network change), then what came while detached.
	pending := append(old.out[old.head:len(old.out):len(old.out)], old.pending...)
	old.out, old.head = nil, 0
	old.pending, old.detached = nil, false // stops its grace timer
	old.pmu.Unlock()
	if overflow {
		// Too much happened meanwhile: a clean new join is safer.
		if old.waiting {
			rm.leaveWaiting(old)
		} else {
			rm.removePeer(old, "disconnected")
		}
		c.srv.persist.DeleteMember(rm.id, old.id)
		return protoErr(CodeResumeFailed, msgResumeFailed, nil)
	}
	if old.ws != nil {
		old.closeWith(CloseReplaced, "resumed elsewhere")
	}
	c.id, c.name, c.role, c.waiting, c.knock, c.joinedAt = old.id, old.name, old.role, old.waiting, old.knock, old.joinedAt
	c.room = rm
	tok, hash := newResume()
	c.resumeHash = hash
	// Kept before the welcome goes out (the write may be immediate).
	c.srv.persist.SaveMember(rm.id, c.saved())
	if c.waiting {
		rm.waiting[c.id] = c
		c.queue(Message{Type: TypeWaiting, Version: ProtocolVersion, ID: c.id, Title: rm.consult.Title, HostPresent: boolp(rm.host != nil), Resume: tok, Resumed: true})
	} else {
		rm.peers[c.id] = c
		if rm.host == old {
			rm.host = c
		}
		c.queue(rm.welcomeFor(c, c.srv.cfg.ICEServers(c.req, c.id), tok, true))
	}
	for _, m := range pending {
		// The new welcome or waiting above replaces any kept one (which
		// carries a resume token that no longer counts).
		if bytes.HasPrefix(m, []byte(`{"type":"welcome"`)) || bytes.HasPrefix(m, []byte(`{"type":"waiting"`)) {
			continue
		}
		c.enqueue(m)
	}
	rm.lastUsed = time.Now()
	c.log = c.log.With("peer", c.id)
	c.log.Info("resumed", "kept", len(pending))
	return nil
}

// restore takes rooms back after a restart: each member is detached, with
// ResumeGrace to come back.
func (s *Server) restore(rooms []RestoredRoom) {
	for _, r := range rooms {
		rm := s.rooms.restore(r.Room)
		if rm == nil {
			continue
		}
		rm.mu.Lock()
		if len(r.Roster) > 0 {
			rm.roster = json.RawMessage(r.Roster)
		}
		for _, m := range r.Members {
			c := &client{
				srv: s, log: s.log.With("peer", m.ID), stop: make(chan struct{}), done: make(chan struct{}),
				id: m.ID, name: m.Name, role: m.Role, room: rm, waiting: !m.Admitted, resumeHash: m.ResumeHash,
				joinedAt: m.Joined, detached: true, detachedAt: time.Now(),
			}
			if c.waiting {
				if rm.consult == nil {
					continue
				}
				rm.waiting[c.id] = c
				rm.waitOrd = append(rm.waitOrd, c.id)
			} else {
				rm.peers[c.id] = c
				rm.order = append(rm.order, c.id)
				if c.role == RoleHost {
					rm.host = c
				}
			}
			c.graceTimer(s.cfg.ResumeGrace)
		}
		rm.mu.Unlock()
		s.log.Info("room restored", "members", len(r.Members))
	}
}
