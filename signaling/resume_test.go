package signaling

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// memPersist is a Persister in memory, for tests.
type memPersist struct {
	mu      sync.Mutex
	rooms   map[string]SavedRoom
	members map[string]map[string]SavedMember
	rosters map[string][]byte
}

func newMemPersist() *memPersist {
	return &memPersist{rooms: map[string]SavedRoom{}, members: map[string]map[string]SavedMember{}, rosters: map[string][]byte{}}
}

func (p *memPersist) SaveRoom(r SavedRoom) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rooms[r.ID] = r
}

func (p *memPersist) DeleteRoom(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.rooms, id)
	delete(p.members, id)
	delete(p.rosters, id)
}

func (p *memPersist) SaveMember(room string, m SavedMember) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.members[room] == nil {
		p.members[room] = map[string]SavedMember{}
	}
	p.members[room][m.ID] = m
}

func (p *memPersist) DeleteMember(room, peer string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.members[room], peer)
}

func (p *memPersist) SaveRoster(room string, roster []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rosters[room] = roster
}

func (p *memPersist) restored() []RestoredRoom {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []RestoredRoom
	for id, r := range p.rooms {
		rr := RestoredRoom{Room: r, Roster: p.rosters[id]}
		for _, m := range p.members[id] {
			rr.Members = append(rr.Members, m)
		}
		out = append(out, rr)
	}
	return out
}

// joinWith joins, or resumes with a resume token, and returns the reply.
func (c *wsClient) joinWith(room, name, resume string) Message {
	c.t.Helper()
	c.send(Message{Type: TypeJoin, Version: ProtocolVersion, Room: room, Name: name, Token: tokenOf(room), Resume: resume})
	return c.read()
}

// quiet reports whether nothing arrives for d.
func (c *wsClient) quiet(d time.Duration) (Message, bool) {
	m, err := c.tryRead(d)
	return m, err != nil
}

// TestResumeAfterDrop: a connection that drops without a leave keeps its
// place; the others hear nothing; messages for it are kept and delivered
// when it comes back with its resume token, under the same peer id.
func TestResumeAfterDrop(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	room := createRoom(t, ts)
	a := dial(t, ts)
	wa := a.join(room, "Alice")
	b := dial(t, ts)
	wb := b.join(room, "Bob")
	a.expect(TypePeerJoined)
	if wb.Resume == "" || wa.Resume == "" || wa.Resume == wb.Resume {
		t.Fatalf("resume tokens %q %q", wa.Resume, wb.Resume)
	}
	b.ws.Close() // the network dropped: no leave, no close frame
	if m, quiet := a.quiet(400 * time.Millisecond); !quiet {
		t.Fatalf("Alice was told something when Bob's connection dropped: %+v", m)
	}
	a.send(Message{Type: TypeOffer, To: wb.ID, SDP: "v=0 kept for Bob"})
	a.sendRaw(`{"type":"e2ee","payload":{"t":"kept"}}`)
	if m, quiet := a.quiet(200 * time.Millisecond); !quiet {
		t.Fatalf("an offer to a detached member was refused: %+v", m)
	}

	b2 := dial(t, ts)
	w := b2.joinWith(room, "Bob", wb.Resume)
	if w.Type != TypeWelcome || !w.Resumed || w.ID != wb.ID || len(w.Peers) != 1 || w.Peers[0].ID != wa.ID {
		t.Fatalf("resumed welcome %+v", w)
	}
	if w.Resume == "" || w.Resume == wb.Resume {
		t.Fatal("a resume gives a new resume token")
	}
	if off := b2.expect(TypeOffer); off.SDP != "v=0 kept for Bob" || off.From != wa.ID {
		t.Fatalf("kept offer %+v", off)
	}
	if e := b2.expect(TypeE2EE); string(e.Payload) != `{"t":"kept"}` {
		t.Fatalf("kept e2ee %+v", e)
	}
	if m, quiet := a.quiet(300 * time.Millisecond); !quiet {
		t.Fatalf("Alice saw the resume: %+v", m)
	}
	// Live again: messages flow both ways under the old id.
	a.send(Message{Type: TypeAnswer, To: wb.ID, SDP: "v=0 live"})
	if m := b2.expect(TypeAnswer); m.From != wa.ID {
		t.Fatalf("answer %+v", m)
	}

	// The old token does not work twice.
	b3 := dial(t, ts)
	if m := b3.joinWith(room, "Bob", wb.Resume); m.Type != TypeError || m.Code != CodeResumeFailed {
		t.Fatalf("a used resume token: %+v", m)
	}
	// Nor does one without the join token (resume needs the link too).
	b4 := dial(t, ts)
	b4.send(Message{Type: TypeJoin, Version: ProtocolVersion, Room: room, Name: "Bob", Resume: w.Resume})
	b4.expectError(CodeBadToken)
}

// TestResumeReplacesLiveConnection: after a network change the old
// connection may look alive; the resume takes over and the old one is closed.
func TestResumeReplacesLiveConnection(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	room := createRoom(t, ts)
	a := dial(t, ts)
	wa := a.join(room, "Alice")
	b := dial(t, ts)
	b.join(room, "Bob")
	a2 := dial(t, ts)
	w := a2.joinWith(room, "Alice", wa.Resume)
	if !w.Resumed || w.ID != wa.ID {
		t.Fatalf("resume %+v", w)
	}
	if code := a.expectClose(); code != CloseReplaced {
		t.Fatalf("old connection closed with %d", code)
	}
	if m, quiet := b.quiet(300 * time.Millisecond); !quiet {
		t.Fatalf("Bob saw the takeover: %+v", m)
	}
}

// TestGraceExpires: a member that does not come back within the grace
// leaves for good, and its token is void.
func TestGraceExpires(t *testing.T) {
	_, ts := newTestServer(t, Config{ResumeGrace: 300 * time.Millisecond})
	room := createRoom(t, ts)
	a := dial(t, ts)
	a.join(room, "Alice")
	b := dial(t, ts)
	wb := b.join(room, "Bob")
	b.ws.Close()
	if pl := a.expect(TypePeerLeft); pl.ID != wb.ID || pl.Reason != "disconnected" {
		t.Fatalf("peer-left %+v", pl)
	}
	if m := dial(t, ts).joinWith(room, "Bob", wb.Resume); m.Code != CodeResumeFailed {
		t.Fatalf("resume after the grace: %+v", m)
	}
}

// TestResumeOverflow: too much kept for a detached member → its resume is
// refused (a clean new join is safer), and the others are told it left.
func TestResumeOverflow(t *testing.T) {
	_, ts := newTestServer(t, Config{MessagesPerSecond: 10000, MessageBurst: 10000})
	room := createRoom(t, ts)
	a := dial(t, ts)
	a.join(room, "Alice")
	b := dial(t, ts)
	wb := b.join(room, "Bob")
	a.expect(TypePeerJoined)
	b.ws.Close()
	time.Sleep(100 * time.Millisecond)
	for i := 0; i < maxPending+5; i++ {
		a.send(Message{Type: TypeCandidate, To: wb.ID})
	}
	time.Sleep(200 * time.Millisecond)
	if m := dial(t, ts).joinWith(room, "Bob", wb.Resume); m.Code != CodeResumeFailed {
		t.Fatalf("resume after overflow: %+v", m)
	}
	if pl := a.expect(TypePeerLeft); pl.ID != wb.ID {
		t.Fatalf("peer-left %+v", pl)
	}
}

// TestRestartKeepsCalls: a server that shuts down (close 1012) and a new one
// restored from the same Persister take the pages back under their ids.
func TestRestartKeepsCalls(t *testing.T) {
	p := newMemPersist()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	mk := func() (*Server, *httptest.Server) {
		s := New(Config{Persister: p}, quiet)
		ts := httptest.NewServer(s)
		return s, ts
	}
	s1, ts1 := mk()
	room := createRoom(t, ts1)
	a := dial(t, ts1)
	wa := a.join(room, "Alice")
	b := dial(t, ts1)
	wb := b.join(room, "Bob")
	a.expect(TypePeerJoined)
	done := make(chan error, 1)
	go func() { done <- s1.Shutdown(t.Context()) }()
	for _, c := range []*wsClient{a, b} {
		if code := c.expectClose(); code != CloseRestart {
			t.Fatalf("shutdown closed with %d, want %d", code, CloseRestart)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ts1.Close()

	s2, ts2 := mk()
	defer ts2.Close()
	s2.Restore(p.restored())
	if s2.Rooms() != 1 {
		t.Fatalf("rooms after restore: %d", s2.Rooms())
	}
	a2 := dial(t, ts2)
	w := a2.joinWith(room, "Alice", wa.Resume)
	if w.Type != TypeWelcome || w.ID != wa.ID || len(w.Peers) != 1 || w.Peers[0].ID != wb.ID || w.Peers[0].Name != "Bob" {
		t.Fatalf("Alice after the restart %+v", w)
	}
	a2.send(Message{Type: TypeOffer, To: wb.ID, SDP: "v=0 after restart"})
	b2 := dial(t, ts2)
	if w := b2.joinWith(room, "Bob", wb.Resume); w.ID != wb.ID || !w.Resumed {
		t.Fatalf("Bob after the restart %+v", w)
	}
	if off := b2.expect(TypeOffer); off.From != wa.ID {
		t.Fatalf("offer kept across the restart %+v", off)
	}
	if m, quiet := a2.quiet(300 * time.Millisecond); !quiet {
		t.Fatalf("Alice saw Bob come back: %+v", m)
	}
	// A new person still joins as usual.
	c := dial(t, ts2)
	wc := c.join(room, "Carol")
	if len(wc.Peers) != 2 {
		t.Fatalf("Carol sees %+v", wc.Peers)
	}
	// The persister holds all three.
	p.mu.Lock()
	n := len(p.members[room])
	p.mu.Unlock()
	if n != 3 {
		t.Fatalf("persisted members: %d", n)
	}
}
