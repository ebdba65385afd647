package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// IDBytes is how many random bytes make a consultation or room id: 128 bits,
// written as IDLen characters of unpadded base64url.
const (
	IDBytes = 16
	IDLen   = 22
)

// VerifierLen is the length of a join verifier: SHA-256 of the join token
// the browser derives from the link secret. The store keeps it opaque.
const VerifierLen = 32

// MaxTitleLen is the longest consultation title, in characters.
const MaxTitleLen = 120

// NewID returns a fresh random id (IDBytes bytes as unpadded base64url).
func NewID() string {
	b := make([]byte, IDBytes)
	rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b)
}

// ValidID reports whether s has the shape NewID makes: IDLen characters of
// canonical unpadded base64url.
func ValidID(s string) bool {
	if len(s) != IDLen {
		return false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return err == nil && len(b) == IDBytes
}

// NormalizeTitle trims a consultation title and checks it: 1 to
// MaxTitleLen characters, valid UTF-8, no control characters and no
// bidirectional overrides (which could make a title read differently from
// what it is). The error wraps ErrInvalid.
func NormalizeTitle(s string) (string, error) {
	t := strings.TrimSpace(s)
	n := utf8.RuneCountInString(t)
	switch {
	case !utf8.ValidString(t):
		return "", fmt.Errorf("%w: title is not valid UTF-8", ErrInvalid)
	case n == 0:
		return "", fmt.Errorf("%w: title is empty", ErrInvalid)
	case n > MaxTitleLen:
		return "", fmt.Errorf("%w: title is longer than %d characters", ErrInvalid, MaxTitleLen)
	case strings.IndexFunc(t, badTitleRune) >= 0:
		return "", fmt.Errorf("%w: title contains control characters", ErrInvalid)
	}
	return t, nil
}

// MaxHostNameLen bounds the name a host shows guests, in characters.
const MaxHostNameLen = 64

// NormalizeHostName checks the name a host shows its guests ("Dr. Ana
// Ruiz"): trimmed, 0..MaxHostNameLen characters, no control characters.
func NormalizeHostName(s string) (string, error) {
	t := strings.TrimSpace(s)
	switch {
	case !utf8.ValidString(t):
		return "", fmt.Errorf("%w: host name is not valid UTF-8", ErrInvalid)
	case utf8.RuneCountInString(t) > MaxHostNameLen:
		return "", fmt.Errorf("%w: host name is longer than %d characters", ErrInvalid, MaxHostNameLen)
	case strings.IndexFunc(t, badTitleRune) >= 0:
		return "", fmt.Errorf("%w: host name contains control characters", ErrInvalid)
	}
	return t, nil
}

func badTitleRune(r rune) bool {
	return unicode.IsControl(r) || r == utf8.RuneError ||
		(r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069) || // bidi embeddings, overrides, isolates
		r == 0x2028 || r == 0x2029 // line and paragraph separators
}

// State is where a consultation's guest link stands.
type State string

// The states, in the order State checks them.
const (
	StateRevoked State = "revoked" // the host revoked the link
	StateEnded   State = "ended"   // the host ended the consultation
	StateExpired State = "expired" // the link's time ran out
	StateActive  State = "active"  // the link works
)

// Consultation is a scheduled or ad-hoc call a host created; its id is also
// the id of its room.
type Consultation struct {
	ID           string
	OwnerID      int64
	Title        string
	ScheduledAt  time.Time // zero: not scheduled
	CreatedAt    time.Time
	ExpiresAt    time.Time // the guest link stops working here
	RevokedAt    time.Time // zero: not revoked
	EndedAt      time.Time // zero: not ended
	JoinVerifier []byte    // VerifierLen bytes
	Locked       bool
	HostName     string // how guests see the host ("Dr. Ana Ruiz"); may be empty
}

// State reports the link's state at now. A revoked link reads as revoked
// even after it ended or expired, and an ended consultation as ended even
// after its link expired: the host's action is the more useful answer.
func (c Consultation) State(now time.Time) State {
	switch {
	case !c.RevokedAt.IsZero():
		return StateRevoked
	case !c.EndedAt.IsZero():
		return StateEnded
	case !now.Before(c.ExpiresAt):
		return StateExpired
	}
	return StateActive
}

// InactiveSince is when the link stopped working (the earliest of
// revocation, end and expiry), or the zero time while it still works at now.
func (c Consultation) InactiveSince(now time.Time) time.Time {
	if c.State(now) == StateActive {
		return time.Time{}
	}
	t := c.ExpiresAt
	for _, u := range []time.Time{c.RevokedAt, c.EndedAt} {
		if !u.IsZero() && u.Before(t) {
			t = u
		}
	}
	return t
}

const consultationCols = `id, owner_id, title, scheduled_at, created_at, expires_at, revoked_at, ended_at, join_verifier, locked, host_name`

func scanConsultation(row interface{ Scan(...any) error }) (Consultation, error) {
	var c Consultation
	var sched, revoked, ended sql.NullInt64
	var created, expires int64
	if err := row.Scan(&c.ID, &c.OwnerID, &c.Title, &sched, &created, &expires, &revoked, &ended, &c.JoinVerifier, &c.Locked, &c.HostName); err != nil {
		return Consultation{}, dbErr(err)
	}
	c.ScheduledAt, c.CreatedAt, c.ExpiresAt = fromNullMS(sched), fromMS(created), fromMS(expires)
	c.RevokedAt, c.EndedAt = fromNullMS(revoked), fromNullMS(ended)
	return c, nil
}

// CreateConsultation stores a new consultation. The caller makes the id
// (NewID), the times and the verifier. The error wraps ErrInvalid for a
// malformed id, title or verifier, ErrNotFound when the owner does not
// exist, ErrExists when the id is taken.
func (s *Store) CreateConsultation(ctx context.Context, c Consultation) error {
	if !ValidID(c.ID) {
		return fmt.Errorf("%w: consultation id", ErrInvalid)
	}
	if _, err := NormalizeTitle(c.Title); err != nil {
		return err
	}
	if len(c.JoinVerifier) != VerifierLen {
		return fmt.Errorf("%w: join verifier must be %d bytes", ErrInvalid, VerifierLen)
	}
	if c.CreatedAt.IsZero() || c.ExpiresAt.IsZero() {
		return fmt.Errorf("%w: consultation times", ErrInvalid)
	}
	if c.HostName != "" {
		if _, err := NormalizeHostName(c.HostName); err != nil {
			return err
		}
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO consultations (`+consultationCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.ID, c.OwnerID, c.Title, nullMS(c.ScheduledAt), ms(c.CreatedAt), ms(c.ExpiresAt),
		nullMS(c.RevokedAt), nullMS(c.EndedAt), c.JoinVerifier, c.Locked, c.HostName)
	if err != nil {
		return fmt.Errorf("create consultation: %w", dbErr(err))
	}
	return nil
}

// Consultation returns the consultation with that id.
func (s *Store) Consultation(ctx context.Context, id string) (Consultation, error) {
	if !ValidID(id) {
		return Consultation{}, ErrNotFound
	}
	return scanConsultation(s.db.QueryRowContext(ctx, `SELECT `+consultationCols+` FROM consultations WHERE id = ?`, id))
}

// activeSQL is true for a consultation whose link works at the bound time.
const activeSQL = `(revoked_at IS NULL AND ended_at IS NULL AND expires_at > ?)`

// ListConsultations returns an owner's consultations split at now:
// upcoming are those whose link still works (State active), soonest first
// by scheduled time (creation time when unscheduled); past are the others
// (expired, revoked, ended), most recently stopped first, at most pastLimit
// of them (all when pastLimit <= 0).
func (s *Store) ListConsultations(ctx context.Context, ownerID int64, now time.Time, pastLimit int) (upcoming, past []Consultation, err error) {
	query := func(q string, args ...any) ([]Consultation, error) {
		rows, err := s.db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, dbErr(err)
		}
		defer rows.Close()
		out := []Consultation{}
		for rows.Next() {
			c, err := scanConsultation(rows)
			if err != nil {
				return nil, err
			}
			out = append(out, c)
		}
		return out, dbErr(rows.Err())
	}
	upcoming, err = query(`SELECT `+consultationCols+` FROM consultations
		WHERE owner_id = ? AND `+activeSQL+`
		ORDER BY COALESCE(scheduled_at, created_at), created_at, id`, ownerID, ms(now))
	if err != nil {
		return nil, nil, err
	}
	limit := -1
	if pastLimit > 0 {
		limit = pastLimit
	}
	past, err = query(`SELECT `+consultationCols+` FROM consultations
		WHERE owner_id = ? AND NOT `+activeSQL+`
		ORDER BY min(expires_at, COALESCE(revoked_at, expires_at), COALESCE(ended_at, expires_at)) DESC, id
		LIMIT ?`, ownerID, ms(now), limit)
	if err != nil {
		return nil, nil, err
	}
	return upcoming, past, nil
}

// CountActiveConsultations returns how many of an owner's links work at now.
func (s *Store) CountActiveConsultations(ctx context.Context, ownerID int64, now time.Time) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM consultations WHERE owner_id = ? AND `+activeSQL, ownerID, ms(now)).Scan(&n)
	return n, dbErr(err)
}

// RevokeConsultation revokes the guest link at now. Revoking twice keeps
// the first time.
func (s *Store) RevokeConsultation(ctx context.Context, id string, now time.Time) error {
	return affected(s.db.ExecContext(ctx, `UPDATE consultations SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`, ms(now), id))
}

// EndConsultation marks the consultation ended at now. Ending twice keeps
// the first time.
func (s *Store) EndConsultation(ctx context.Context, id string, now time.Time) error {
	return affected(s.db.ExecContext(ctx, `UPDATE consultations SET ended_at = COALESCE(ended_at, ?) WHERE id = ?`, ms(now), id))
}

// SetConsultationLocked locks or unlocks the consultation's room.
func (s *Store) SetConsultationLocked(ctx context.Context, id string, locked bool) error {
	return affected(s.db.ExecContext(ctx, `UPDATE consultations SET locked = ? WHERE id = ?`, locked, id))
}

// DeleteConsultationsInactiveSince deletes the consultations whose link
// stopped working (revoked, ended or expired) before t, with their room
// members, and returns how many consultations it deleted.
func (s *Store) DeleteConsultationsInactiveSince(ctx context.Context, t time.Time) (int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, dbErr(err)
	}
	defer tx.Rollback()
	const stale = `min(expires_at, COALESCE(revoked_at, expires_at), COALESCE(ended_at, expires_at)) < ?`
	if _, err := tx.ExecContext(ctx, `DELETE FROM room_members WHERE room_id IN (SELECT id FROM consultations WHERE `+stale+`)`, ms(t)); err != nil {
		return 0, dbErr(err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM room_rosters WHERE room_id IN (SELECT id FROM consultations WHERE `+stale+`)`, ms(t)); err != nil {
		return 0, dbErr(err)
	}
	n, err := rowsAffected(tx.ExecContext(ctx, `DELETE FROM consultations WHERE `+stale, ms(t)))
	if err != nil {
		return 0, err
	}
	return n, dbErr(tx.Commit())
}
