package store

// migrations are the schema's history, oldest first. Migration i (from 0)
// takes the database from user_version i to i+1; Open applies the missing
// ones in order, each in one transaction. Never edit a migration that has
// shipped: append a new one.
//
// Conventions: times are INTEGER Unix milliseconds (UTC), NULL for "never";
// booleans are INTEGER 0/1; ids made by Parley are TEXT (22 characters of
// unpadded base64url for 16 random bytes).
var migrations = [][]string{
	// 1: accounts, sessions, consultations, rooms and room members.
	{
		`CREATE TABLE users (
			id            INTEGER PRIMARY KEY,
			email         TEXT    NOT NULL UNIQUE CHECK (email <> '' AND email = lower(email)),
			password_hash TEXT    NOT NULL,           -- PHC string: $argon2id$v=19$m=..,t=..,p=..$salt$hash
			disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
			created_at    INTEGER NOT NULL,
			last_login_at INTEGER                     -- NULL: never signed in
		)`,
		`CREATE TABLE sessions (
			id         BLOB    PRIMARY KEY CHECK (length(id) = 32), -- SHA-256 of the cookie token; the token is never stored
			user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
			csrf       TEXT    NOT NULL,
			created_at INTEGER NOT NULL,
			expires_at INTEGER NOT NULL,
			last_seen  INTEGER NOT NULL
		) WITHOUT ROWID`,
		`CREATE INDEX sessions_user ON sessions(user_id)`,
		`CREATE INDEX sessions_expiry ON sessions(expires_at)`,
		`CREATE TABLE consultations (
			id            TEXT    PRIMARY KEY CHECK (length(id) = 22), -- also the room id
			owner_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
			title         TEXT    NOT NULL CHECK (title <> ''),
			scheduled_at  INTEGER,                                    -- NULL: not scheduled
			created_at    INTEGER NOT NULL,
			expires_at    INTEGER NOT NULL,                           -- the guest link stops working here
			revoked_at    INTEGER,
			ended_at      INTEGER,
			join_verifier BLOB    NOT NULL CHECK (length(join_verifier) = 32),
			locked        INTEGER NOT NULL DEFAULT 0 CHECK (locked IN (0, 1))
		) WITHOUT ROWID`,
		`CREATE INDEX consultations_owner ON consultations(owner_id, created_at)`,
		`CREATE TABLE rooms (
			id            TEXT    PRIMARY KEY CHECK (length(id) = 22),
			join_verifier BLOB    CHECK (join_verifier IS NULL OR length(join_verifier) = 32),
			created_at    INTEGER NOT NULL,
			last_used_at  INTEGER NOT NULL,
			joined_ever   INTEGER NOT NULL DEFAULT 0 CHECK (joined_ever IN (0, 1))
		) WITHOUT ROWID`,
		// room_id names a row of rooms or of consultations, so it has no
		// foreign key; DeleteRoom and the consultation purge remove members.
		`CREATE TABLE room_members (
			room_id      TEXT    NOT NULL,
			peer_id      TEXT    NOT NULL,
			display_name TEXT    NOT NULL,
			resume_hash  BLOB    NOT NULL CHECK (length(resume_hash) = 32), -- SHA-256 of the resume token
			role         TEXT    NOT NULL CHECK (role IN ('host', 'guest', 'member')),
			admitted     INTEGER NOT NULL DEFAULT 0 CHECK (admitted IN (0, 1)),
			joined_at    INTEGER NOT NULL,
			last_seen    INTEGER NOT NULL,
			PRIMARY KEY (room_id, peer_id)
		) WITHOUT ROWID`,
		`CREATE INDEX room_members_seen ON room_members(last_seen)`,
	},
	// 2: the latest roster a consultation's host signed (opaque JSON), so
	// a call survives a restart; the host's display name for guests.
	{
		`CREATE TABLE room_rosters (
			room_id    TEXT    PRIMARY KEY CHECK (length(room_id) = 22),
			roster     TEXT    NOT NULL,
			updated_at INTEGER NOT NULL
		) WITHOUT ROWID`,
		`ALTER TABLE consultations ADD COLUMN host_name TEXT NOT NULL DEFAULT ''`,
	},
}
