package store

import "errors"

var (
	// ErrNotFound means no row has that key (or, for an insert, the row it
	// refers to, such as a session's user, does not exist).
	ErrNotFound = errors.New("store: not found")
	// ErrExists means a row with that key already exists (a user with that
	// email, a consultation with that id).
	ErrExists = errors.New("store: already exists")
	// ErrInvalid means a value was refused before it reached the database:
	// a malformed email, an empty title, a verifier of the wrong length.
	ErrInvalid = errors.New("store: invalid value")
	// ErrSchemaTooNew means the database was written by a newer Parley
	// whose schema this binary does not know.
	ErrSchemaTooNew = errors.New("store: the database is newer than this program")
	// ErrLocked means another Parley server is using the data directory.
	ErrLocked = errors.New("store: the data directory is in use by another Parley server")
	// ErrClosed means the store was closed.
	ErrClosed = errors.New("store: closed")
)
