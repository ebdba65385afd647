// Package store keeps Parley's durable state in an embedded SQLite database
// (modernc.org/sqlite: pure Go, no cgo, nothing to start): host accounts,
// their sign-in sessions, consultations with their guest links, and the
// plain rooms and room members that must survive a restart.
//
// The database is one file, parley.db, in a data directory the caller names.
// Open creates the directory (0700) and the file (0600) when missing, turns on
// WAL, a busy timeout, foreign keys and synchronous=NORMAL on every
// connection, and brings the schema up to date with the ordered migrations in
// migrations.go. The schema version is SQLite's user_version; a database
// written by a newer Parley is refused (ErrSchemaTooNew) rather than guessed
// at.
//
// One server owns a data directory at a time: Open holds an exclusive flock
// on parley.lock and a second server fails with ErrLocked. Short-lived admin
// commands (`parley user ...`) use OpenShared, which skips that lock: SQLite
// itself serialises their writes with the server's, and the server reads
// accounts and sessions from the database on every request, so a change made
// by the command line takes effect at once.
//
// Every method takes a context and returns the sentinels of errors.go,
// wrapped with %w. Times are stored as Unix milliseconds (UTC); callers pass
// "now" in, so tests control the clock. The store never logs a password
// hash, token, title or display name.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// File names inside the data directory.
const (
	DBFile   = "parley.db"   // the database (plus parley.db-wal and parley.db-shm while open)
	LockFile = "parley.lock" // flocked by the server that owns the directory
)

// BusyTimeout is how long a statement waits for another writer (another
// connection of this process, or `parley user`) before failing.
const BusyTimeout = 5 * time.Second

// Store is an open data directory. It is safe for concurrent use.
type Store struct {
	db   *sql.DB
	log  *slog.Logger
	dir  string
	lock *os.File // nil for OpenShared

	mu     sync.Mutex
	closed bool
}

// Open opens the data directory dir for a server: it takes the directory's
// lock (ErrLocked if another server holds it), opens or creates parley.db and
// migrates its schema.
func Open(dir string, logger *slog.Logger) (*Store, error) {
	return open(dir, logger, true)
}

// OpenShared opens dir like Open but without taking the server lock, for
// short-lived admin commands that may run beside a server.
func OpenShared(dir string, logger *slog.Logger) (*Store, error) {
	return open(dir, logger, false)
}

func open(dir string, logger *slog.Logger, exclusive bool) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if dir == "" {
		return nil, fmt.Errorf("%w: empty data directory", ErrInvalid)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: data directory: %w", err)
	}
	s := &Store{log: logger, dir: dir}
	if exclusive {
		f, err := lockDir(filepath.Join(dir, LockFile))
		if err != nil {
			return nil, err
		}
		s.lock = f
	}
	path := filepath.Join(dir, DBFile)
	// Create the file ourselves so it is 0600 from the start; SQLite gives
	// the -wal and -shm files the database file's permissions.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		s.unlock()
		return nil, fmt.Errorf("store: %w", err)
	}
	f.Close()

	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(BusyTimeout.Milliseconds()))
	q.Set("_journal_mode", "WAL")
	q.Set("_foreign_keys", "1")
	q.Set("_synchronous", "NORMAL")
	// Write transactions take the write lock at BEGIN, so two of them
	// never deadlock upgrading a read lock; the busy timeout queues them.
	q.Set("_txlock", "immediate")
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		s.unlock()
		return nil, fmt.Errorf("store: %w", err)
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	db.SetConnMaxIdleTime(5 * time.Minute)
	s.db = db

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.migrate(ctx); err != nil {
		db.Close()
		s.unlock()
		return nil, err
	}
	return s, nil
}

// Dir is the data directory.
func (s *Store) Dir() string { return s.dir }

// Close closes the database and releases the directory's lock.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.db.Close()
	s.unlock()
	if err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

func (s *Store) unlock() {
	if s.lock != nil {
		unlockDir(s.lock)
		s.lock = nil
	}
}

// SchemaVersion is the database's schema version (user_version).
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return 0, dbErr(err)
	}
	return v, nil
}

// migrate applies the migrations the database lacks, each in its own
// transaction together with the new user_version, so a crash leaves the
// schema at one version or the next, never in between.
func (s *Store) migrate(ctx context.Context) error {
	for {
		done, err := s.migrateOne(ctx)
		if err != nil || done {
			return err
		}
	}
}

func (s *Store) migrateOne(ctx context.Context) (done bool, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("store: migrate: %w", dbErr(err))
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return false, fmt.Errorf("store: migrate: %w", dbErr(err))
	}
	switch {
	case v > len(migrations):
		return false, fmt.Errorf("%w: %s has schema version %d, this Parley knows up to %d; run the newer Parley or restore a backup",
			ErrSchemaTooNew, filepath.Join(s.dir, DBFile), v, len(migrations))
	case v == len(migrations):
		return true, nil
	}
	for i, stmt := range migrations[v] {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return false, fmt.Errorf("store: migration %d, statement %d: %w", v+1, i+1, err)
		}
	}
	// PRAGMA takes no bound parameters; v+1 is our own integer.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
		return false, fmt.Errorf("store: migrate: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("store: migrate: %w", dbErr(err))
	}
	s.log.Info("store: schema migrated", "from", v, "to", v+1)
	return false, nil
}

// dbErr maps SQLite's constraint errors to the package's sentinels and
// leaves other errors as they are.
func dbErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if errors.Is(err, sql.ErrConnDone) || (err.Error() == "sql: database is closed") {
		return fmt.Errorf("%w: %v", ErrClosed, err)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return fmt.Errorf("%w: %v", ErrExists, err)
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return fmt.Errorf("%w: %v", ErrNotFound, err)
		case sqlite3.SQLITE_CONSTRAINT_CHECK, sqlite3.SQLITE_CONSTRAINT_NOTNULL:
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	return fmt.Errorf("store: %w", err)
}

// affected turns "no row changed" into ErrNotFound.
func affected(res sql.Result, err error) error {
	if err != nil {
		return dbErr(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return dbErr(err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// rowsAffected returns how many rows a statement changed.
func rowsAffected(res sql.Result, err error) (int64, error) {
	if err != nil {
		return 0, dbErr(err)
	}
	n, err := res.RowsAffected()
	return n, dbErr(err)
}

// ms is how times are stored: Unix milliseconds.
func ms(t time.Time) int64 { return t.UnixMilli() }

// fromMS reads a stored time back, in UTC.
func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

// nullMS stores a zero time as NULL.
func nullMS(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMilli(), Valid: true}
}

// fromNullMS reads NULL back as the zero time.
func fromNullMS(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMS(v.Int64)
}
