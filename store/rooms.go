package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Room is a plain ("open") room, made without an account, kept so its link
// survives a restart.
type Room struct {
	ID           string // IDLen characters, like a consultation id
	JoinVerifier []byte // nil, or VerifierLen bytes
	CreatedAt    time.Time
	LastUsedAt   time.Time
	JoinedEver   bool // someone has joined it at least once
}

// SaveRoom inserts a room or replaces the stored one with the same id.
func (s *Store) SaveRoom(ctx context.Context, r Room) error {
	if !ValidID(r.ID) {
		return fmt.Errorf("%w: room id", ErrInvalid)
	}
	if r.JoinVerifier != nil && len(r.JoinVerifier) != VerifierLen {
		return fmt.Errorf("%w: join verifier must be %d bytes", ErrInvalid, VerifierLen)
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO rooms (id, join_verifier, created_at, last_used_at, joined_ever)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET join_verifier = excluded.join_verifier, created_at = excluded.created_at,
			last_used_at = excluded.last_used_at, joined_ever = excluded.joined_ever`,
		r.ID, r.JoinVerifier, ms(r.CreatedAt), ms(r.LastUsedAt), r.JoinedEver)
	if err != nil {
		return fmt.Errorf("save room: %w", dbErr(err))
	}
	return nil
}

// TouchRoom records use of a room at t; joined also sets JoinedEver (it is
// never cleared).
func (s *Store) TouchRoom(ctx context.Context, id string, t time.Time, joined bool) error {
	return affected(s.db.ExecContext(ctx, `UPDATE rooms SET last_used_at = max(last_used_at, ?), joined_ever = max(joined_ever, ?) WHERE id = ?`,
		ms(t), joined, id))
}

// DeleteRoom removes a room and its members; a missing room is not an error.
func (s *Store) DeleteRoom(ctx context.Context, id string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return dbErr(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM room_members WHERE room_id = ?`, id); err != nil {
		return dbErr(err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM room_rosters WHERE room_id = ?`, id); err != nil {
		return dbErr(err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM rooms WHERE id = ?`, id); err != nil {
		return dbErr(err)
	}
	return dbErr(tx.Commit())
}

// DeleteRoomsUnusedSince removes the rooms last used before t, with their
// members, and returns how many rooms.
func (s *Store) DeleteRoomsUnusedSince(ctx context.Context, t time.Time) (int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, dbErr(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM room_members WHERE room_id IN (SELECT id FROM rooms WHERE last_used_at < ?)`, ms(t)); err != nil {
		return 0, dbErr(err)
	}
	n, err := rowsAffected(tx.ExecContext(ctx, `DELETE FROM rooms WHERE last_used_at < ?`, ms(t)))
	if err != nil {
		return 0, err
	}
	return n, dbErr(tx.Commit())
}

// LoadRooms returns every stored room, oldest first.
func (s *Store) LoadRooms(ctx context.Context) ([]Room, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, join_verifier, created_at, last_used_at, joined_ever FROM rooms ORDER BY created_at, id`)
	if err != nil {
		return nil, dbErr(err)
	}
	defer rows.Close()
	var out []Room
	for rows.Next() {
		var r Room
		var created, used int64
		if err := rows.Scan(&r.ID, &r.JoinVerifier, &created, &used, &r.JoinedEver); err != nil {
			return nil, dbErr(err)
		}
		r.CreatedAt, r.LastUsedAt = fromMS(created), fromMS(used)
		out = append(out, r)
	}
	return out, dbErr(rows.Err())
}

// Member roles.
const (
	RoleHost   = "host"
	RoleGuest  = "guest"
	RoleMember = "member" // a participant of a plain room
)

// Limits on member fields, checked before they reach the database.
const (
	MaxPeerIDLen      = 64
	MaxDisplayNameLen = 256 // bytes
	ResumeHashLen     = 32  // SHA-256 of the resume token
)

// Member is a participant of a room or consultation, kept so a call can be
// resumed after a restart.
type Member struct {
	RoomID      string
	PeerID      string
	DisplayName string
	ResumeHash  []byte // ResumeHashLen bytes; the token itself is never stored
	Role        string // RoleHost, RoleGuest or RoleMember
	Admitted    bool
	JoinedAt    time.Time
	LastSeen    time.Time
}

// SaveMember inserts a member or replaces the stored one with the same room
// and peer id.
func (s *Store) SaveMember(ctx context.Context, m Member) error {
	switch {
	case !ValidID(m.RoomID):
		return fmt.Errorf("%w: room id", ErrInvalid)
	case m.PeerID == "" || len(m.PeerID) > MaxPeerIDLen:
		return fmt.Errorf("%w: peer id", ErrInvalid)
	case len(m.DisplayName) > MaxDisplayNameLen || !utf8.ValidString(m.DisplayName):
		return fmt.Errorf("%w: display name", ErrInvalid)
	case len(m.ResumeHash) != ResumeHashLen:
		return fmt.Errorf("%w: resume hash must be %d bytes", ErrInvalid, ResumeHashLen)
	case m.Role != RoleHost && m.Role != RoleGuest && m.Role != RoleMember:
		return fmt.Errorf("%w: role %q", ErrInvalid, m.Role)
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO room_members (room_id, peer_id, display_name, resume_hash, role, admitted, joined_at, last_seen)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (room_id, peer_id) DO UPDATE SET display_name = excluded.display_name, resume_hash = excluded.resume_hash,
			role = excluded.role, admitted = excluded.admitted, joined_at = excluded.joined_at, last_seen = excluded.last_seen`,
		m.RoomID, m.PeerID, m.DisplayName, m.ResumeHash, m.Role, m.Admitted, ms(m.JoinedAt), ms(m.LastSeen))
	if err != nil {
		return fmt.Errorf("save member: %w", dbErr(err))
	}
	return nil
}

// DeleteMember removes one member; a missing one is not an error.
func (s *Store) DeleteMember(ctx context.Context, roomID, peerID string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM room_members WHERE room_id = ? AND peer_id = ?`, roomID, peerID)
	return dbErr(err)
}

// LoadMembers returns a room's members in the order they joined.
func (s *Store) LoadMembers(ctx context.Context, roomID string) ([]Member, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT room_id, peer_id, display_name, resume_hash, role, admitted, joined_at, last_seen
		FROM room_members WHERE room_id = ? ORDER BY joined_at, peer_id`, roomID)
	if err != nil {
		return nil, dbErr(err)
	}
	defer rows.Close()
	var out []Member
	for rows.Next() {
		var m Member
		var joined, seen int64
		if err := rows.Scan(&m.RoomID, &m.PeerID, &m.DisplayName, &m.ResumeHash, &m.Role, &m.Admitted, &joined, &seen); err != nil {
			return nil, dbErr(err)
		}
		m.JoinedAt, m.LastSeen = fromMS(joined), fromMS(seen)
		out = append(out, m)
	}
	return out, dbErr(rows.Err())
}

// TouchMember records that a member was seen at t.
func (s *Store) TouchMember(ctx context.Context, roomID, peerID string, t time.Time) error {
	return affected(s.db.ExecContext(ctx, `UPDATE room_members SET last_seen = max(last_seen, ?) WHERE room_id = ? AND peer_id = ?`, ms(t), roomID, peerID))
}

// DeleteMembersSeenBefore removes members last seen before t and returns
// how many.
func (s *Store) DeleteMembersSeenBefore(ctx context.Context, t time.Time) (int64, error) {
	return rowsAffected(s.db.ExecContext(ctx, `DELETE FROM room_members WHERE last_seen < ?`, ms(t)))
}

// MaxRosterLen bounds a stored roster (the signaling server's payload limit).
const MaxRosterLen = 16 << 10

// SaveRoster keeps the latest roster of a consultation room (opaque JSON).
func (s *Store) SaveRoster(ctx context.Context, roomID string, roster []byte, t time.Time) error {
	if !ValidID(roomID) {
		return fmt.Errorf("%w: room id", ErrInvalid)
	}
	if len(roster) == 0 || len(roster) > MaxRosterLen || !utf8.Valid(roster) {
		return fmt.Errorf("%w: roster", ErrInvalid)
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO room_rosters (room_id, roster, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (room_id) DO UPDATE SET roster = excluded.roster, updated_at = excluded.updated_at`, roomID, string(roster), ms(t))
	if err != nil {
		return fmt.Errorf("save roster: %w", dbErr(err))
	}
	return nil
}

// Roster returns a room's stored roster, or nil.
func (s *Store) Roster(ctx context.Context, roomID string) ([]byte, error) {
	var r string
	err := s.db.QueryRowContext(ctx, `SELECT roster FROM room_rosters WHERE room_id = ?`, roomID).Scan(&r)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, nil
		}
		return nil, dbErr(err)
	}
	return []byte(r), nil
}

// MemberRooms returns the ids of the rooms (and consultations) that have
// stored members.
func (s *Store) MemberRooms(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT room_id FROM room_members ORDER BY room_id`)
	if err != nil {
		return nil, dbErr(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, dbErr(err)
		}
		out = append(out, id)
	}
	return out, dbErr(rows.Err())
}

// DeleteRoomMembers removes every member and the roster of a room (a
// consultation that ended), keeping the room's own row if any.
func (s *Store) DeleteRoomMembers(ctx context.Context, roomID string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM room_members WHERE room_id = ?`, roomID); err != nil {
		return dbErr(err)
	}
	_, err := s.db.ExecContext(ctx, `DELETE FROM room_rosters WHERE room_id = ?`, roomID)
	return dbErr(err)
}
