package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/parleyhq/parley/signaling"
	"github.com/parleyhq/parley/store"
)

// persister writes signaling's rooms, members and rosters to the store
// behind the calls: signaling calls it with room locks held, so each change
// is queued and a goroutine applies them in order. Close drains the queue
// (Shutdown calls it last, so what the pages need to resume is on disk).
type persister struct {
	st   *store.Store
	log  *slog.Logger
	ops  chan func(ctx context.Context) error
	done chan struct{}
	once sync.Once
	mu   sync.Mutex
	shut bool
}

// persistQueue bounds the changes waiting to be written; past it a change
// is written inline rather than lost.
const persistQueue = 4096

func newPersister(st *store.Store, log *slog.Logger) *persister {
	p := &persister{st: st, log: log, ops: make(chan func(context.Context) error, persistQueue), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *persister) run() {
	defer close(p.done)
	for op := range p.ops {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := op(ctx); err != nil {
			p.log.Warn("saving call state failed; a restart may lose this call", "err", err)
		}
		cancel()
	}
}

func (p *persister) do(op func(ctx context.Context) error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shut {
		return
	}
	select {
	case p.ops <- op:
	default:
		// The writer is behind: wait for room rather than drop a change.
		p.ops <- op
	}
}

// Close writes what is queued and stops the writer.
func (p *persister) Close() {
	p.once.Do(func() {
		p.mu.Lock()
		p.shut = true
		close(p.ops)
		p.mu.Unlock()
		<-p.done
	})
}

func (p *persister) SaveRoom(r signaling.SavedRoom) {
	if r.Consultation {
		return // consultations are kept by the account layer
	}
	p.do(func(ctx context.Context) error {
		return p.st.SaveRoom(ctx, store.Room{ID: r.ID, JoinVerifier: r.Verifier, CreatedAt: r.Created, LastUsedAt: r.LastUsed, JoinedEver: r.Joined})
	})
}

func (p *persister) DeleteRoom(id string) {
	p.do(func(ctx context.Context) error {
		if err := p.st.DeleteRoom(ctx, id); err != nil {
			return err
		}
		return p.st.DeleteRoomMembers(ctx, id)
	})
}

func (p *persister) SaveMember(room string, m signaling.SavedMember) {
	role := m.Role
	if role == "" {
		role = store.RoleMember
	}
	p.do(func(ctx context.Context) error {
		now := time.Now()
		return p.st.SaveMember(ctx, store.Member{RoomID: room, PeerID: m.ID, DisplayName: m.Name, ResumeHash: m.ResumeHash,
			Role: role, Admitted: m.Admitted, JoinedAt: m.Joined, LastSeen: now})
	})
}

func (p *persister) DeleteMember(room, peer string) {
	p.do(func(ctx context.Context) error { return p.st.DeleteMember(ctx, room, peer) })
}

func (p *persister) SaveRoster(room string, roster []byte) {
	r := append([]byte(nil), roster...)
	p.do(func(ctx context.Context) error { return p.st.SaveRoster(ctx, room, r, time.Now()) })
}

// restoredRooms reads back the rooms to take back after a restart: open
// rooms with their members, and consultations that had members.
func restoredRooms(ctx context.Context, st *store.Store) ([]signaling.RestoredRoom, error) {
	rooms, err := st.LoadRooms(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []signaling.RestoredRoom
	add := func(sr signaling.SavedRoom) error {
		seen[sr.ID] = true
		ms, err := st.LoadMembers(ctx, sr.ID)
		if err != nil {
			return err
		}
		rr := signaling.RestoredRoom{Room: sr}
		for _, m := range ms {
			role := m.Role
			if role == store.RoleMember {
				role = ""
			}
			rr.Members = append(rr.Members, signaling.SavedMember{ID: m.PeerID, Name: m.DisplayName, Role: role, ResumeHash: m.ResumeHash, Admitted: m.Admitted, Joined: m.JoinedAt})
		}
		if rr.Roster, err = st.Roster(ctx, sr.ID); err != nil {
			return err
		}
		out = append(out, rr)
		return nil
	}
	for _, r := range rooms {
		if err := add(signaling.SavedRoom{ID: r.ID, Verifier: r.JoinVerifier, Created: r.CreatedAt, LastUsed: r.LastUsedAt, Joined: r.JoinedEver}); err != nil {
			return nil, err
		}
	}
	ids, err := st.MemberRooms(ctx)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		if _, err := st.Consultation(ctx, id); err != nil {
			// Members of a room that is gone.
			if err := st.DeleteRoomMembers(ctx, id); err != nil {
				return nil, err
			}
			continue
		}
		now := time.Now()
		if err := add(signaling.SavedRoom{ID: id, Created: now, LastUsed: now, Joined: true, Consultation: true}); err != nil {
			return nil, err
		}
	}
	return out, nil
}
