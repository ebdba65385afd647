package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var ctx = context.Background()

// t0 is the tests' clock origin, at a whole millisecond like stored times.
var t0 = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

func openT(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestMigrateFromEmpty(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s := openT(t, dir)
	v, err := s.SchemaVersion(ctx)
	if err != nil || v != len(migrations) {
		t.Fatalf("schema version %d %v, want %d", v, err, len(migrations))
	}
	for _, table := range []string{"users", "sessions", "consultations", "rooms", "room_members"} {
		var n int
		if err := s.db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?`, table).Scan(&n); err != nil || n != 1 {
			t.Errorf("table %s: %d %v", table, n, err)
		}
	}
	var mode string
	s.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode)
	var fk, sync int
	s.db.QueryRow(`PRAGMA foreign_keys`).Scan(&fk)
	s.db.QueryRow(`PRAGMA synchronous`).Scan(&sync)
	if mode != "wal" || fk != 1 || sync != 1 {
		t.Errorf("journal_mode %q foreign_keys %d synchronous %d, want wal 1 1 (NORMAL)", mode, fk, sync)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v %v, want 0700", fi.Mode().Perm(), err)
	}
	if fi, err := os.Stat(filepath.Join(dir, DBFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("db file mode %v %v, want 0600", fi.Mode().Perm(), err)
	}
}

func TestReopenIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 3; i++ {
		s, err := Open(dir, nil)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if v, _ := s.SchemaVersion(ctx); v != len(migrations) {
			t.Fatalf("open %d: version %d", i, v)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	if _, err := s.db.Exec(fmt.Sprintf("PRAGMA user_version = %d", len(migrations)+1)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := Open(dir, nil)
	if !errors.Is(err, ErrSchemaTooNew) || !strings.Contains(err.Error(), "schema version") {
		t.Fatalf("newer schema: %v", err)
	}
}

func TestLaterMigrationAndRollback(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	if _, err := s.AddUser(ctx, "a@example.com", "h", t0); err != nil {
		t.Fatal(err)
	}
	s.Close()

	saved := migrations
	t.Cleanup(func() { migrations = saved })
	// A broken second migration: the first statement works, the second
	// fails, and neither may stick.
	migrations = append(append([][]string{}, saved...), []string{
		`ALTER TABLE users ADD COLUMN nickname TEXT`,
		`THIS IS NOT SQL`,
	})
	if _, err := Open(dir, nil); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("migration %d", len(saved)+1)) {
		t.Fatalf("broken migration: %v", err)
	}
	migrations = append(append([][]string{}, saved...), []string{`ALTER TABLE users ADD COLUMN nickname TEXT`})
	s = openT(t, dir)
	if v, _ := s.SchemaVersion(ctx); v != len(saved)+1 {
		t.Fatalf("version after the added migration: %d", v)
	}
	var n int
	if err := s.db.QueryRow(`SELECT count(*) FROM users WHERE nickname IS NULL`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("migrated data: %d %v", n, err)
	}
}

func TestSecondServerRefused(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	_, err := Open(dir, nil)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Fatalf("second Open: %v", err)
	}
	// An admin command may still use the directory beside the server.
	admin, err := OpenShared(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddUser(ctx, "admin@example.com", "h", t0); err != nil {
		t.Fatal(err)
	}
	admin.Close()
	if _, err := s.UserByEmail(ctx, "admin@example.com"); err != nil {
		t.Fatalf("server does not see the admin's user: %v", err)
	}
	s.Close()
	s2, err := Open(dir, nil)
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	s2.Close()
}

func TestNormalizeEmail(t *testing.T) {
	good := map[string]string{
		"Alice@Example.COM":   "alice@example.com",
		"  bob@example.org\n": "bob@example.org",
		"x+tag@sub.example.c": "x+tag@sub.example.c",
		"root@localhost":      "root@localhost",
	}
	for in, want := range good {
		if got, err := NormalizeEmail(in); err != nil || got != want {
			t.Errorf("NormalizeEmail(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "alice", "@example.com", "alice@", "Alice <alice@example.com>", "a b@example.com",
		"a@b@c", "a@.example.com", "a@example..com", "a\x00@example.com", strings.Repeat("a", 250) + "@x.io", "a@example.com."} {
		if got, err := NormalizeEmail(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("NormalizeEmail(%q) = %q, %v; want ErrInvalid", in, got, err)
		}
	}
}

func TestUsers(t *testing.T) {
	s := openT(t, t.TempDir())
	u, err := s.AddUser(ctx, "Alice@Example.com", "hash1", t0)
	if err != nil {
		t.Fatal(err)
	}
	if u.ID == 0 || u.Email != "alice@example.com" || u.Disabled || !u.CreatedAt.Equal(t0) || !u.LastLoginAt.IsZero() {
		t.Fatalf("added: %+v", u)
	}
	if _, err := s.AddUser(ctx, "ALICE@example.com", "hash2", t0); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate email: %v", err)
	}
	if _, err := s.AddUser(ctx, "not an email", "h", t0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad email: %v", err)
	}
	if _, err := s.AddUser(ctx, "b@example.com", "", t0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty hash: %v", err)
	}
	if _, err := s.UserByEmail(ctx, "nobody@example.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown email: %v", err)
	}
	if _, err := s.UserByID(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	if err := s.SetPassword(ctx, u.ID, "hash3"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPassword(ctx, 999, "hash3"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("password of unknown id: %v", err)
	}
	if err := s.TouchLogin(ctx, u.ID, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, err := s.UserByEmail(ctx, " alice@EXAMPLE.com")
	if err != nil || got.PasswordHash != "hash3" || !got.LastLoginAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("after updates: %+v %v", got, err)
	}
	s.AddUser(ctx, "carol@example.com", "h", t0)
	s.AddUser(ctx, "bob@example.com", "h", t0)
	list, err := s.ListUsers(ctx)
	if err != nil || len(list) != 3 || list[0].Email != "alice@example.com" || list[1].Email != "bob@example.com" {
		t.Fatalf("list: %+v %v", list, err)
	}

	// Disabling signs the account out.
	sess := Session{ID: hash("tok"), UserID: u.ID, CSRF: "c", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), LastSeen: t0}
	if err := s.CreateSession(ctx, sess); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDisabled(ctx, u.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session(ctx, sess.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("session after disable: %v", err)
	}
	if got, _ := s.UserByID(ctx, u.ID); !got.Disabled {
		t.Fatal("not disabled")
	}
	if err := s.SetDisabled(ctx, u.ID, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.UserByID(ctx, u.ID); got.Disabled {
		t.Fatal("not enabled again")
	}
	if err := s.SetDisabled(ctx, 999, true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("disable unknown: %v", err)
	}
}

func hash(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

func TestSessions(t *testing.T) {
	s := openT(t, t.TempDir())
	u, _ := s.AddUser(ctx, "a@example.com", "h", t0)
	se := Session{ID: hash("one"), UserID: u.ID, CSRF: "csrf1", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), LastSeen: t0}
	if err := s.CreateSession(ctx, se); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSession(ctx, se); !errors.Is(err, ErrExists) {
		t.Fatalf("same id twice: %v", err)
	}
	orphan := se
	orphan.ID, orphan.UserID = hash("orphan"), 999
	if err := s.CreateSession(ctx, orphan); !errors.Is(err, ErrNotFound) {
		t.Fatalf("session of unknown user: %v", err)
	}
	short := se
	short.ID = []byte("short")
	if err := s.CreateSession(ctx, short); !errors.Is(err, ErrInvalid) {
		t.Fatalf("short id: %v", err)
	}
	got, user, err := s.SessionUser(ctx, se.ID)
	if err != nil || !bytes.Equal(got.ID, se.ID) || got.CSRF != "csrf1" || !got.ExpiresAt.Equal(se.ExpiresAt) || user.Email != "a@example.com" {
		t.Fatalf("SessionUser: %+v %+v %v", got, user, err)
	}
	if err := s.TouchSession(ctx, se.ID, t0.Add(30*time.Minute), t0.Add(90*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Session(ctx, se.ID); !got.ExpiresAt.Equal(t0.Add(90*time.Minute)) || !got.LastSeen.Equal(t0.Add(30*time.Minute)) {
		t.Fatalf("touched: %+v", got)
	}
	if err := s.TouchSession(ctx, hash("none"), t0, t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("touch missing: %v", err)
	}
	two := Session{ID: hash("two"), UserID: u.ID, CSRF: "csrf2", CreatedAt: t0, ExpiresAt: t0.Add(time.Minute), LastSeen: t0}
	s.CreateSession(ctx, two)
	if n, err := s.DeleteExpiredSessions(ctx, t0.Add(time.Minute)); err != nil || n != 1 {
		t.Fatalf("expired sweep: %d %v", n, err)
	}
	if _, err := s.Session(ctx, two.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired session kept: %v", err)
	}
	s.CreateSession(ctx, Session{ID: hash("three"), UserID: u.ID, CSRF: "c", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), LastSeen: t0})
	if n, err := s.DeleteUserSessions(ctx, u.ID); err != nil || n != 2 {
		t.Fatalf("delete user sessions: %d %v", n, err)
	}
	if err := s.DeleteSession(ctx, se.ID); err != nil {
		t.Fatalf("delete missing session: %v", err)
	}
}

func newConsultation(owner int64, title string, created time.Time, ttl time.Duration) Consultation {
	return Consultation{ID: NewID(), OwnerID: owner, Title: title, CreatedAt: created, ExpiresAt: created.Add(ttl), JoinVerifier: hash(title)}
}

func TestConsultations(t *testing.T) {
	s := openT(t, t.TempDir())
	u, _ := s.AddUser(ctx, "a@example.com", "h", t0)
	other, _ := s.AddUser(ctx, "b@example.com", "h", t0)

	c := newConsultation(u.ID, "Follow-up", t0, 24*time.Hour)
	c.ScheduledAt = t0.Add(2 * time.Hour)
	c.ExpiresAt = c.ScheduledAt.Add(24 * time.Hour)
	if err := s.CreateConsultation(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateConsultation(ctx, c); !errors.Is(err, ErrExists) {
		t.Fatalf("same id twice: %v", err)
	}
	bad := []func(*Consultation){
		func(c *Consultation) { c.ID = "short" },
		func(c *Consultation) { c.Title = "  " },
		func(c *Consultation) { c.Title = "a\x07b" },
		func(c *Consultation) { c.JoinVerifier = c.JoinVerifier[:31] },
		func(c *Consultation) { c.JoinVerifier = nil },
	}
	for i, f := range bad {
		x := newConsultation(u.ID, "x", t0, time.Hour)
		f(&x)
		if err := s.CreateConsultation(ctx, x); !errors.Is(err, ErrInvalid) {
			t.Errorf("bad consultation %d: %v", i, err)
		}
	}
	orphan := newConsultation(999, "x", t0, time.Hour)
	if err := s.CreateConsultation(ctx, orphan); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown owner: %v", err)
	}
	got, err := s.Consultation(ctx, c.ID)
	if err != nil || got.Title != "Follow-up" || !got.ScheduledAt.Equal(c.ScheduledAt) || !bytes.Equal(got.JoinVerifier, c.JoinVerifier) || got.OwnerID != u.ID {
		t.Fatalf("get: %+v %v", got, err)
	}
	if _, err := s.Consultation(ctx, "not-an-id"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("malformed id: %v", err)
	}
	if _, err := s.Consultation(ctx, NewID()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}

	// States with a moving clock.
	if st := got.State(t0); st != StateActive {
		t.Fatalf("state at creation: %s", st)
	}
	if st := got.State(c.ExpiresAt.Add(-time.Millisecond)); st != StateActive {
		t.Fatalf("state just before expiry: %s", st)
	}
	if st := got.State(c.ExpiresAt); st != StateExpired {
		t.Fatalf("state at expiry: %s", st)
	}
	if err := s.EndConsultation(ctx, c.ID, t0.Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	s.EndConsultation(ctx, c.ID, t0.Add(4*time.Hour))
	got, _ = s.Consultation(ctx, c.ID)
	if st := got.State(t0.Add(3 * time.Hour)); st != StateEnded || !got.EndedAt.Equal(t0.Add(3*time.Hour)) {
		t.Fatalf("ended: %s %v", st, got.EndedAt)
	}
	if st := got.State(c.ExpiresAt.Add(time.Hour)); st != StateEnded {
		t.Fatalf("ended, then past expiry: %s", st)
	}
	if err := s.RevokeConsultation(ctx, c.ID, t0.Add(5*time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Consultation(ctx, c.ID)
	if st := got.State(t0.Add(5 * time.Hour)); st != StateRevoked {
		t.Fatalf("revoked: %s", st)
	}
	if in := got.InactiveSince(t0.Add(6 * time.Hour)); !in.Equal(t0.Add(3 * time.Hour)) {
		t.Fatalf("inactive since %v, want the end time", in)
	}
	if err := s.RevokeConsultation(ctx, NewID(), t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
	if err := s.SetConsultationLocked(ctx, c.ID, true); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Consultation(ctx, c.ID); !got.Locked {
		t.Fatal("not locked")
	}

	// Listing: upcoming by scheduled time, past by when they stopped.
	later := newConsultation(u.ID, "Later", t0, 24*time.Hour)
	later.ScheduledAt = t0.Add(48 * time.Hour)
	later.ExpiresAt = later.ScheduledAt.Add(24 * time.Hour)
	soon := newConsultation(u.ID, "Ad hoc", t0.Add(time.Minute), 24*time.Hour)
	old := newConsultation(u.ID, "Old", t0.Add(-72*time.Hour), 24*time.Hour)
	theirs := newConsultation(other.ID, "Theirs", t0, 24*time.Hour)
	for _, x := range []Consultation{later, soon, old, theirs} {
		if err := s.CreateConsultation(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	up, past, err := s.ListConsultations(ctx, u.ID, t0.Add(6*time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(up) != 2 || up[0].ID != soon.ID || up[1].ID != later.ID {
		t.Fatalf("upcoming: %v", titles(up))
	}
	if len(past) != 2 || past[0].ID != c.ID || past[1].ID != old.ID {
		t.Fatalf("past: %v", titles(past))
	}
	if _, past, _ := s.ListConsultations(ctx, u.ID, t0.Add(6*time.Hour), 1); len(past) != 1 {
		t.Fatalf("past limit: %v", titles(past))
	}
	if n, _ := s.CountActiveConsultations(ctx, u.ID, t0.Add(6*time.Hour)); n != 2 {
		t.Fatalf("active count %d", n)
	}

	// Purge: consultations inactive for long enough go, with their members.
	s.SaveMember(ctx, Member{RoomID: old.ID, PeerID: "p1", DisplayName: "Ann", ResumeHash: hash("r"), Role: RoleGuest, JoinedAt: t0, LastSeen: t0})
	n, err := s.DeleteConsultationsInactiveSince(ctx, t0.Add(-time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
	if _, err := s.Consultation(ctx, old.ID); !errors.Is(err, ErrNotFound) {
		t.Fatal("old consultation kept")
	}
	if m, _ := s.LoadMembers(ctx, old.ID); len(m) != 0 {
		t.Fatal("old consultation's members kept")
	}
	if _, err := s.Consultation(ctx, c.ID); err != nil {
		t.Fatal("recent consultation purged")
	}
}

func titles(cs []Consultation) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Title)
	}
	return out
}

func TestNormalizeTitle(t *testing.T) {
	if got, err := NormalizeTitle("  Check-up 🩺  "); err != nil || got != "Check-up 🩺" {
		t.Fatalf("%q %v", got, err)
	}
	if _, err := NormalizeTitle(strings.Repeat("é", MaxTitleLen)); err != nil {
		t.Fatalf("%d characters: %v", MaxTitleLen, err)
	}
	for _, in := range []string{"", " \t ", strings.Repeat("a", MaxTitleLen+1), "a\nb", "a\u202eb", "\xff", "a\u2028b"} {
		if _, err := NormalizeTitle(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("NormalizeTitle(%q): %v", in, err)
		}
	}
}

func TestIDs(t *testing.T) {
	id := NewID()
	if len(id) != IDLen || !ValidID(id) {
		t.Fatalf("NewID %q", id)
	}
	// The last character carries 2 bits of padding: a non-canonical twin
	// of a valid id (same bytes, other spelling) is refused.
	zero := strings.Repeat("A", IDLen)
	if !ValidID(zero) || ValidID(zero[:IDLen-1]+"B") {
		t.Errorf("canonical %q or its twin misjudged", zero)
	}
	for _, bad := range []string{"", "abc", id + "A", strings.Repeat("!", IDLen), id[:IDLen-1] + "B"} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q)", bad)
		}
	}
}

func TestRoomsAndMembers(t *testing.T) {
	s := openT(t, t.TempDir())
	r := Room{ID: NewID(), CreatedAt: t0, LastUsedAt: t0}
	if err := s.SaveRoom(ctx, r); err != nil {
		t.Fatal(err)
	}
	withV := Room{ID: NewID(), JoinVerifier: hash("v"), CreatedAt: t0.Add(time.Second), LastUsedAt: t0}
	if err := s.SaveRoom(ctx, withV); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveRoom(ctx, Room{ID: "bad", CreatedAt: t0, LastUsedAt: t0}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad room id: %v", err)
	}
	if err := s.SaveRoom(ctx, Room{ID: NewID(), JoinVerifier: []byte{1}, CreatedAt: t0, LastUsedAt: t0}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad verifier: %v", err)
	}
	if err := s.TouchRoom(ctx, r.ID, t0.Add(time.Hour), true); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchRoom(ctx, r.ID, t0.Add(30*time.Minute), false); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchRoom(ctx, NewID(), t0, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("touch unknown room: %v", err)
	}
	rooms, err := s.LoadRooms(ctx)
	if err != nil || len(rooms) != 2 {
		t.Fatalf("load: %+v %v", rooms, err)
	}
	if rooms[0].ID != r.ID || !rooms[0].JoinedEver || !rooms[0].LastUsedAt.Equal(t0.Add(time.Hour)) || rooms[0].JoinVerifier != nil {
		t.Fatalf("room 0: %+v", rooms[0])
	}
	if !bytes.Equal(rooms[1].JoinVerifier, hash("v")) || rooms[1].JoinedEver {
		t.Fatalf("room 1: %+v", rooms[1])
	}

	m := Member{RoomID: r.ID, PeerID: "peer-1", DisplayName: "Dr. Ann", ResumeHash: hash("resume"), Role: RoleHost, Admitted: true, JoinedAt: t0, LastSeen: t0}
	if err := s.SaveMember(ctx, m); err != nil {
		t.Fatal(err)
	}
	m2 := Member{RoomID: r.ID, PeerID: "peer-2", DisplayName: "Bob", ResumeHash: hash("r2"), Role: RoleGuest, JoinedAt: t0.Add(time.Minute), LastSeen: t0.Add(time.Hour)}
	s.SaveMember(ctx, m2)
	m.DisplayName = "Dr. Ann B."
	if err := s.SaveMember(ctx, m); err != nil {
		t.Fatal("upsert:", err)
	}
	for i, f := range []func(*Member){
		func(m *Member) { m.Role = "admin" },
		func(m *Member) { m.ResumeHash = nil },
		func(m *Member) { m.PeerID = "" },
		func(m *Member) { m.RoomID = "x" },
		func(m *Member) { m.DisplayName = strings.Repeat("x", MaxDisplayNameLen+1) },
	} {
		x := m
		f(&x)
		if err := s.SaveMember(ctx, x); !errors.Is(err, ErrInvalid) {
			t.Errorf("bad member %d: %v", i, err)
		}
	}
	ms, err := s.LoadMembers(ctx, r.ID)
	if err != nil || len(ms) != 2 || ms[0].DisplayName != "Dr. Ann B." || !ms[0].Admitted || ms[0].Role != RoleHost || ms[1].PeerID != "peer-2" {
		t.Fatalf("members: %+v %v", ms, err)
	}
	if err := s.TouchMember(ctx, r.ID, "peer-1", t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, err := s.DeleteMembersSeenBefore(ctx, t0.Add(90*time.Minute)); err != nil || n != 1 {
		t.Fatalf("delete seen before: %d %v", n, err)
	}
	if ms, _ := s.LoadMembers(ctx, r.ID); len(ms) != 1 || ms[0].PeerID != "peer-1" {
		t.Fatalf("after sweep: %+v", ms)
	}
	if err := s.DeleteMember(ctx, r.ID, "peer-1"); err != nil {
		t.Fatal(err)
	}
	s.SaveMember(ctx, m)
	if err := s.DeleteRoom(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	if ms, _ := s.LoadMembers(ctx, r.ID); len(ms) != 0 {
		t.Fatal("members of a deleted room kept")
	}
	if n, err := s.DeleteRoomsUnusedSince(ctx, t0.Add(time.Minute)); err != nil || n != 1 {
		t.Fatalf("unused sweep: %d %v", n, err)
	}
	if rooms, _ := s.LoadRooms(ctx); len(rooms) != 0 {
		t.Fatalf("rooms left: %+v", rooms)
	}
}

func TestSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := s.AddUser(ctx, "a@example.com", "h", t0)
	c := newConsultation(u.ID, "Kept", t0, time.Hour)
	s.CreateConsultation(ctx, c)
	s.RevokeConsultation(ctx, c.ID, t0.Add(time.Minute))
	se := Session{ID: hash("s"), UserID: u.ID, CSRF: "c", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), LastSeen: t0}
	s.CreateSession(ctx, se)
	r := Room{ID: NewID(), CreatedAt: t0, LastUsedAt: t0}
	s.SaveRoom(ctx, r)
	s.SaveMember(ctx, Member{RoomID: r.ID, PeerID: "p", DisplayName: "N", ResumeHash: hash("x"), Role: RoleMember, JoinedAt: t0, LastSeen: t0})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openT(t, dir)
	if got, err := s.Consultation(ctx, c.ID); err != nil || got.State(t0.Add(2*time.Minute)) != StateRevoked {
		t.Fatalf("consultation after reopen: %+v %v", got, err)
	}
	if _, user, err := s.SessionUser(ctx, se.ID); err != nil || user.ID != u.ID {
		t.Fatalf("session after reopen: %v", err)
	}
	if rooms, _ := s.LoadRooms(ctx); len(rooms) != 1 || rooms[0].ID != r.ID {
		t.Fatalf("rooms after reopen: %+v", rooms)
	}
	if ms, _ := s.LoadMembers(ctx, r.ID); len(ms) != 1 {
		t.Fatalf("members after reopen: %+v", ms)
	}
}

// TestConcurrentUse writes from many goroutines through the server's store
// and an admin's at once: every write lands, none fails with "busy".
func TestConcurrentUse(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	admin, err := OpenShared(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	owner, _ := s.AddUser(ctx, "owner@example.com", "h", t0)
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errc := make(chan error, workers*each*3)
	for w := 0; w < workers; w++ {
		st := s
		if w%2 == 1 {
			st = admin
		}
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				u, err := st.AddUser(ctx, fmt.Sprintf("u%d-%d@example.com", w, i), "h", t0)
				if err != nil {
					errc <- err
					continue
				}
				id := hash(fmt.Sprintf("%d-%d", w, i))
				if err := st.CreateSession(ctx, Session{ID: id, UserID: u.ID, CSRF: "c", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), LastSeen: t0}); err != nil {
					errc <- err
				}
				if err := st.CreateConsultation(ctx, newConsultation(owner.ID, fmt.Sprint(w, i), t0, time.Hour)); err != nil {
					errc <- err
				}
				if _, _, err := st.SessionUser(ctx, id); err != nil {
					errc <- err
				}
			}
		}(w)
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	users, _ := s.ListUsers(ctx)
	up, _, _ := s.ListConsultations(ctx, owner.ID, t0, 0)
	if len(users) != workers*each+1 || len(up) != workers*each {
		t.Fatalf("%d users, %d consultations", len(users), len(up))
	}
}

func TestClosedStore(t *testing.T) {
	s, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := s.ListUsers(ctx); err == nil {
		t.Fatal("query on a closed store")
	}
}
