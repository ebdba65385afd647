package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// SessionIDLen is the length of a session id: a SHA-256 digest of the random
// token in the cookie. The token itself is never stored, so a copy of the
// database does not sign anyone in.
const SessionIDLen = 32

// Session is one signed-in browser.
type Session struct {
	ID        []byte // SHA-256 of the cookie token
	UserID    int64
	CSRF      string // the token state-changing requests must echo in X-CSRF-Token
	CreatedAt time.Time
	ExpiresAt time.Time
	LastSeen  time.Time
}

const sessionCols = `id, user_id, csrf, created_at, expires_at, last_seen`

func scanSession(row interface{ Scan(...any) error }, extra ...any) (Session, error) {
	var se Session
	var created, expires, seen int64
	dest := append([]any{&se.ID, &se.UserID, &se.CSRF, &created, &expires, &seen}, extra...)
	if err := row.Scan(dest...); err != nil {
		return Session{}, dbErr(err)
	}
	se.CreatedAt, se.ExpiresAt, se.LastSeen = fromMS(created), fromMS(expires), fromMS(seen)
	return se, nil
}

// CreateSession stores a new session. The error wraps ErrNotFound when the
// user does not exist, ErrExists when the id is taken, ErrInvalid for an id
// that is not SessionIDLen bytes.
func (s *Store) CreateSession(ctx context.Context, se Session) error {
	if len(se.ID) != SessionIDLen || se.CSRF == "" {
		return fmt.Errorf("%w: session id or CSRF token", ErrInvalid)
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO sessions (`+sessionCols+`) VALUES (?, ?, ?, ?, ?, ?)`,
		se.ID, se.UserID, se.CSRF, ms(se.CreatedAt), ms(se.ExpiresAt), ms(se.LastSeen))
	if err != nil {
		return fmt.Errorf("create session: %w", dbErr(err))
	}
	return nil
}

// Session returns the session with that id, expired or not: callers compare
// ExpiresAt with their clock.
func (s *Store) Session(ctx context.Context, id []byte) (Session, error) {
	return scanSession(s.db.QueryRowContext(ctx, `SELECT `+sessionCols+` FROM sessions WHERE id = ?`, id))
}

// SessionUser returns the session with that id and its account in one query.
func (s *Store) SessionUser(ctx context.Context, id []byte) (Session, User, error) {
	row := s.db.QueryRowContext(ctx, `SELECT s.id, s.user_id, s.csrf, s.created_at, s.expires_at, s.last_seen,
		u.id, u.email, u.password_hash, u.disabled, u.created_at, u.last_login_at
		FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?`, id)
	var u User
	var created int64
	var last sql.NullInt64
	se, err := scanSession(row, &u.ID, &u.Email, &u.PasswordHash, &u.Disabled, &created, &last)
	if err != nil {
		return Session{}, User{}, err
	}
	u.CreatedAt, u.LastLoginAt = fromMS(created), fromNullMS(last)
	return se, u, nil
}

// TouchSession records activity and moves the expiry (sliding sessions).
func (s *Store) TouchSession(ctx context.Context, id []byte, lastSeen, expiresAt time.Time) error {
	return affected(s.db.ExecContext(ctx, `UPDATE sessions SET last_seen = ?, expires_at = ? WHERE id = ?`,
		ms(lastSeen), ms(expiresAt), id))
}

// DeleteSession removes one session; deleting a missing one is not an error.
func (s *Store) DeleteSession(ctx context.Context, id []byte) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM sessions WHERE id = ?`, id)
	return dbErr(err)
}

// DeleteUserSessions signs an account out everywhere and returns how many
// sessions it had.
func (s *Store) DeleteUserSessions(ctx context.Context, userID int64) (int64, error) {
	return rowsAffected(s.db.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = ?`, userID))
}

// DeleteExpiredSessions removes the sessions whose expiry is at or before
// now and returns how many.
func (s *Store) DeleteExpiredSessions(ctx context.Context, now time.Time) (int64, error) {
	return rowsAffected(s.db.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at <= ?`, ms(now)))
}
