package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/mail"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxEmailLen is the longest email address accepted (RFC 5321's path limit).
const MaxEmailLen = 254

// User is a host account.
type User struct {
	ID           int64
	Email        string // lowercased
	PasswordHash string // PHC string; see account.HashPassword
	Disabled     bool
	CreatedAt    time.Time
	LastLoginAt  time.Time // zero: never signed in
}

// NormalizeEmail trims and lowercases an email address and checks that it
// is a bare address (local@domain, no display name or angle brackets, no
// spaces or control characters, at most MaxEmailLen bytes). The error wraps
// ErrInvalid.
func NormalizeEmail(s string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(s))
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w: email %s", ErrInvalid, why)
	}
	switch {
	case e == "":
		return bad("is empty")
	case len(e) > MaxEmailLen:
		return bad(fmt.Sprintf("is longer than %d bytes", MaxEmailLen))
	case !utf8.ValidString(e):
		return bad("is not valid UTF-8")
	case strings.IndexFunc(e, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return bad("contains spaces or control characters")
	}
	a, err := mail.ParseAddress(e)
	if err != nil || a.Name != "" || a.Address != e {
		return bad("is not an address like name@example.com")
	}
	local, domain, ok := strings.Cut(e, "@")
	if !ok || local == "" || domain == "" || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || strings.Contains(domain, "..") {
		return bad("is not an address like name@example.com")
	}
	return e, nil
}

const userCols = `id, email, password_hash, disabled, created_at, last_login_at`

func scanUser(row interface{ Scan(...any) error }) (User, error) {
	var u User
	var created int64
	var last sql.NullInt64
	if err := row.Scan(&u.ID, &u.Email, &u.PasswordHash, &u.Disabled, &created, &last); err != nil {
		return User{}, dbErr(err)
	}
	u.CreatedAt, u.LastLoginAt = fromMS(created), fromNullMS(last)
	return u, nil
}

// AddUser creates an enabled account. The email is normalised; the error
// wraps ErrInvalid for a malformed email or an empty hash, ErrExists when
// the email is taken.
func (s *Store) AddUser(ctx context.Context, email, passwordHash string, now time.Time) (User, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return User{}, err
	}
	if passwordHash == "" {
		return User{}, fmt.Errorf("%w: empty password hash", ErrInvalid)
	}
	row := s.db.QueryRowContext(ctx,
		`INSERT INTO users (email, password_hash, created_at) VALUES (?, ?, ?) RETURNING `+userCols,
		e, passwordHash, ms(now))
	u, err := scanUser(row)
	if err != nil {
		return User{}, fmt.Errorf("add user: %w", err)
	}
	return u, nil
}

// UserByEmail finds an account by email (normalised first).
func (s *Store) UserByEmail(ctx context.Context, email string) (User, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return User{}, err
	}
	return scanUser(s.db.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE email = ?`, e))
}

// UserByID finds an account by id.
func (s *Store) UserByID(ctx context.Context, id int64) (User, error) {
	return scanUser(s.db.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE id = ?`, id))
}

// ListUsers returns every account, by email.
func (s *Store) ListUsers(ctx context.Context) ([]User, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+userCols+` FROM users ORDER BY email`)
	if err != nil {
		return nil, dbErr(err)
	}
	defer rows.Close()
	var out []User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, dbErr(rows.Err())
}

// SetPassword replaces an account's password hash. It does not end the
// account's sessions; callers that want that call DeleteUserSessions.
func (s *Store) SetPassword(ctx context.Context, userID int64, passwordHash string) error {
	if passwordHash == "" {
		return fmt.Errorf("%w: empty password hash", ErrInvalid)
	}
	return affected(s.db.ExecContext(ctx, `UPDATE users SET password_hash = ? WHERE id = ?`, passwordHash, userID))
}

// SetDisabled disables or enables an account. Disabling deletes the
// account's sessions in the same transaction, so it is signed out at once.
func (s *Store) SetDisabled(ctx context.Context, userID int64, disabled bool) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return dbErr(err)
	}
	defer tx.Rollback()
	if err := affected(tx.ExecContext(ctx, `UPDATE users SET disabled = ? WHERE id = ?`, disabled, userID)); err != nil {
		return err
	}
	if disabled {
		if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = ?`, userID); err != nil {
			return dbErr(err)
		}
	}
	return dbErr(tx.Commit())
}

// TouchLogin records a successful sign-in.
func (s *Store) TouchLogin(ctx context.Context, userID int64, now time.Time) error {
	return affected(s.db.ExecContext(ctx, `UPDATE users SET last_login_at = ? WHERE id = ?`, ms(now), userID))
}
