package signaling

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// Consultation is what signaling knows of a consultation: a room whose
// host (a signed-in account) lets guests in from a waiting room.
type Consultation struct {
	ID          string
	Verifier    []byte // V of the guest link's join token (docs/security.md §2.5)
	Title       string
	HostName    string    // how guests see the host while they wait; may be empty
	ScheduledAt time.Time // zero: not scheduled
	Locked      bool
}

// Consultations connects signaling to where consultations are kept (the
// account package over the store; server wires them).
type Consultations interface {
	// Lookup returns the consultation that room id belongs to. When its
	// link does not work the error is a *ProtocolError whose code and
	// message say why (link-expired, link-revoked, consultation-ended);
	// ErrRoomNotFound when there is none.
	Lookup(ctx context.Context, id string) (Consultation, error)
	// IsHost reports whether r (the WebSocket upgrade, with its cookies)
	// carries the session of the consultation's host.
	IsHost(r *http.Request, id string) bool
	// SetLocked records the lock the host set; End, that it ended.
	SetLocked(ctx context.Context, id string, locked bool) error
	End(ctx context.Context, id string) error
}

// MaxWaiting is how many guests may wait in one consultation's waiting room.
const MaxWaiting = 8

func boolp(b bool) *bool { return &b }

// enterWaiting puts a guest of a consultation in its waiting room. rm.mu is
// held. The guest gets "waiting" (its id, the title, whether the host is
// there), not "welcome": no peer list, no ICE servers, no roster.
func (c *client) enterWaiting(rm *room) error {
	if rm.locked {
		return protoErr(CodeLocked, msgLocked, nil)
	}
	if len(rm.waiting) >= MaxWaiting {
		return protoErr(CodeWaitingFull, msgWaitingFull, nil)
	}
	c.room, c.role, c.waiting = rm, RoleGuest, true
	rm.waiting[c.id] = c
	rm.waitOrd = append(rm.waitOrd, c.id)
	rm.lastUsed = time.Now()
	tok, hash := newResume()
	c.resumeHash = hash
	c.srv.persist.SaveMember(rm.id, c.saved())
	c.queue(Message{Type: TypeWaiting, Version: ProtocolVersion, ID: c.id, Title: rm.consult.Title, HostName: rm.consult.HostName, HostPresent: boolp(rm.host != nil), Resume: tok})
	if rm.host != nil {
		rm.host.queue(Message{Type: TypeKnock, Peer: &Peer{ID: c.id, Name: c.name}})
	}
	c.log = c.log.With("peer", c.id)
	c.log.Info("waiting for the host")
	return nil
}

// knocks lists the waiting guests for the host. rm.mu is held.
func (rm *room) knocks() []Knock {
	out := make([]Knock, 0, len(rm.waitOrd))
	for _, id := range rm.waitOrd {
		if w := rm.waiting[id]; w != nil {
			out = append(out, Knock{ID: id, Name: w.name, Payload: w.knock})
		}
	}
	return out
}

// leaveWaiting takes a waiting guest out of the waiting room. rm.mu is held.
func (rm *room) leaveWaiting(c *client) {
	if rm.waiting[c.id] != c {
		return
	}
	delete(rm.waiting, c.id)
	c.srv.persist.DeleteMember(rm.id, c.id)
	for i, id := range rm.waitOrd {
		if id == c.id {
			rm.waitOrd = append(rm.waitOrd[:i], rm.waitOrd[i+1:]...)
			break
		}
	}
	if rm.host != nil {
		rm.host.queue(Message{Type: TypeKnockLeft, ID: c.id})
	}
}

// fromWaiting handles a message of a guest still in the waiting room: its
// hello (an e2ee broadcast) is kept and passed to the host as a knock;
// anything else is refused.
func (c *client) fromWaiting(m *Message) {
	rm := c.room
	if m.Type != TypeE2EE || m.To != "" {
		c.sendError(protoErr(CodeNotAdmitted, msgNotAdmitted, nil))
		return
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if !c.waiting {
		// Let in meanwhile: an e2ee message like any member's.
		rm.mu.Unlock()
		c.forward(m)
		rm.mu.Lock()
		return
	}
	c.knock = m.Payload
	if rm.host != nil {
		rm.host.queue(Message{Type: TypeKnock, Peer: &Peer{ID: c.id, Name: c.name}, Payload: m.Payload})
	}
}

// hostMessage handles admit, deny, remove, roster and end, which only the
// consultation's host may send. It reports whether to end the connection.
func (c *client) hostMessage(m *Message) bool {
	rm := c.room
	if rm == nil || rm.consult == nil || c.role != RoleHost {
		c.sendError(protoErr(CodeNotHost, msgNotHost, nil))
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	switch m.Type {
	case TypeEnd:
		if err := c.srv.consults.End(ctx, rm.id); err != nil {
			c.log.Error("ending a consultation", "err", err)
			c.sendError(protoErr(CodeInternal, "The consultation could not be ended. Please try again.", err))
			return false
		}
		c.srv.rooms.drop(rm.id)
		rm.mu.Lock()
		var everyone []*client
		for _, p := range rm.peers {
			if p != c {
				everyone = append(everyone, p)
			}
		}
		for _, w := range rm.waiting {
			everyone = append(everyone, w)
		}
		// Gone for good: nobody keeps a place to resume.
		for _, p := range everyone {
			if p.waiting {
				rm.leaveWaiting(p)
			} else {
				rm.removePeer(p, "ended")
			}
		}
		rm.mu.Unlock()
		for _, p := range everyone {
			p.refuse(protoErr(CodeEnded, msgEnded, nil))
		}
		c.log.Info("consultation ended by the host")
		c.leaveRoom("ended")
		c.closeWith(CloseEnded, CodeEnded)
		return true
	case TypeRoster:
		if m.Locked != nil {
			if err := c.srv.consults.SetLocked(ctx, rm.id, *m.Locked); err != nil {
				c.log.Error("locking a consultation", "err", err)
				c.sendError(protoErr(CodeInternal, "The lock could not be saved. Please try again.", err))
				return false
			}
		}
		rm.mu.Lock()
		if m.Locked != nil {
			rm.locked = *m.Locked
		}
		rm.setRoster(c, m.Roster)
		rm.mu.Unlock()
	case TypeAdmit:
		rm.mu.Lock()
		w := rm.waiting[m.To]
		switch {
		case w == nil:
			rm.mu.Unlock()
			c.queue(Message{Type: TypeError, Code: CodeUnknownPeer, Message: "That guest is no longer waiting.", Reason: m.To})
			return false
		case len(rm.peers) >= MaxPeers:
			rm.mu.Unlock()
			c.sendError(protoErr(CodeRoomFull, msgRoomFull, ErrRoomFull))
			return false
		}
		delete(rm.waiting, w.id)
		w.waiting = false
		c.srv.persist.SaveMember(rm.id, w.saved())
		for i, id := range rm.waitOrd {
			if id == w.id {
				rm.waitOrd = append(rm.waitOrd[:i], rm.waitOrd[i+1:]...)
				break
			}
		}
		// Members get the roster that names the newcomer before they hear
		// of it; the newcomer gets it in its welcome.
		rm.setRoster(c, m.Roster)
		w.waiting = false
		var ice []ICEServer
		if w.req != nil { // nil: kept across a restart; its resume brings fresh ones
			ice = c.srv.cfg.ICEServers(w.req, w.id)
		}
		rm.admit(w, ice)
		rm.mu.Unlock()
		c.log.Info("guest admitted")
	case TypeDeny:
		rm.mu.Lock()
		w := rm.waiting[m.To]
		if w != nil {
			rm.leaveWaiting(w)
		}
		rm.mu.Unlock()
		if w == nil {
			c.queue(Message{Type: TypeError, Code: CodeUnknownPeer, Message: "That guest is no longer waiting.", Reason: m.To})
			return false
		}
		w.refuse(protoErr(CodeDenied, msgDenied, nil))
		c.log.Info("guest denied")
	case TypeRemove:
		rm.mu.Lock()
		p := rm.peers[m.To]
		if p == nil || p == c {
			rm.mu.Unlock()
			c.queue(Message{Type: TypeError, Code: CodeUnknownPeer, Message: "That participant is no longer in the call.", Reason: m.To})
			return false
		}
		rm.setRoster(c, m.Roster)
		rm.mu.Unlock()
		p.refuse(protoErr(CodeRemoved, msgRemoved, nil))
		c.log.Info("participant removed by the host")
	}
	return false
}

// setRoster keeps the host's latest roster and passes it to every member
// but the host. rm.mu is held.
func (rm *room) setRoster(host *client, roster json.RawMessage) {
	rm.roster = append(json.RawMessage(nil), roster...)
	host.srv.persist.SaveRoster(rm.id, rm.roster)
	data, _ := json.Marshal(Message{Type: TypeRoster, Roster: rm.roster})
	for _, p := range rm.peers {
		if p != host {
			p.enqueue(data)
		}
	}
}

// refuse sends e and closes with its code (from any goroutine).
func (c *client) refuse(e *ProtocolError) {
	c.sendError(e)
	c.closeWith(closeCodeFor(e.Code), e.Code)
}
