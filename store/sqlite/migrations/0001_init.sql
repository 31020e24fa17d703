-- nebula-credential store schema, SQLite.
-- Times are INTEGER Unix microseconds in UTC; booleans are 0/1.
-- Keys compare as bytes (BINARY collation), as on PostgreSQL with COLLATE "C".

CREATE TABLE meta (
	name  TEXT NOT NULL PRIMARY KEY,
	value BLOB NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE keks (
	id         TEXT NOT NULL PRIMARY KEY,
	wrapped    BLOB NOT NULL,
	created_at INTEGER NOT NULL,
	retired_at INTEGER
) STRICT, WITHOUT ROWID;

CREATE TABLE credentials (
	id          TEXT NOT NULL PRIMARY KEY,
	type        TEXT NOT NULL,
	settings    BLOB NOT NULL,
	created_at  INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL,
	deleted_at  INTEGER,
	next_due_at INTEGER
) STRICT, WITHOUT ROWID;

CREATE INDEX credentials_due ON credentials (next_due_at) WHERE deleted_at IS NULL;

CREATE TABLE versions (
	credential_id TEXT NOT NULL,
	version       INTEGER NOT NULL,
	fields        BLOB NOT NULL,
	kek_id        TEXT NOT NULL,
	data_key      BLOB NOT NULL,
	ciphertext    BLOB NOT NULL,
	created_at    INTEGER NOT NULL,
	expires_at    INTEGER,
	PRIMARY KEY (credential_id, version)
) STRICT, WITHOUT ROWID;

CREATE INDEX versions_kek ON versions (kek_id);

-- The highest version number ever inserted per credential.
CREATE TABLE version_counters (
	credential_id TEXT NOT NULL PRIMARY KEY,
	max_version   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE labels (
	credential_id TEXT NOT NULL,
	label         TEXT NOT NULL,
	version       INTEGER NOT NULL,
	PRIMARY KEY (credential_id, label)
) STRICT, WITHOUT ROWID;

CREATE TABLE rotations (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	credential_id TEXT NOT NULL,
	kind          TEXT NOT NULL,
	step          TEXT NOT NULL,
	open          INTEGER NOT NULL CHECK (open IN (0, 1)),
	strategy      TEXT NOT NULL,
	from_version  INTEGER NOT NULL,
	to_version    INTEGER NOT NULL,
	attempt       INTEGER NOT NULL,
	error_class   TEXT NOT NULL,
	last_error    TEXT NOT NULL,
	actor         TEXT NOT NULL,
	reason        TEXT NOT NULL,
	data          BLOB NOT NULL,
	grace_ends_at INTEGER,
	due_at        INTEGER NOT NULL,
	started_at    INTEGER NOT NULL,
	updated_at    INTEGER NOT NULL,
	finished_at   INTEGER,
	lease_owner   TEXT NOT NULL,
	lease_until   INTEGER NOT NULL,
	fence         INTEGER NOT NULL
) STRICT;

-- At most one open rotation per credential.
CREATE UNIQUE INDEX rotations_one_open ON rotations (credential_id) WHERE open;
CREATE INDEX rotations_due ON rotations (due_at) WHERE open;
CREATE INDEX rotations_credential ON rotations (credential_id, id);

CREATE TABLE history (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	credential_id TEXT NOT NULL,
	at            INTEGER NOT NULL,
	action        TEXT NOT NULL,
	actor         TEXT NOT NULL,
	reason        TEXT NOT NULL,
	from_version  INTEGER NOT NULL,
	to_version    INTEGER NOT NULL,
	rotation_id   INTEGER NOT NULL,
	outcome       TEXT NOT NULL,
	detail        TEXT NOT NULL,
	duration_ms   INTEGER NOT NULL
) STRICT;

CREATE INDEX history_credential ON history (credential_id, id);

CREATE TABLE audit (
	seq       INTEGER NOT NULL PRIMARY KEY,
	at        INTEGER NOT NULL,
	payload   BLOB NOT NULL,
	prev_hash BLOB NOT NULL,
	hash      BLOB NOT NULL
) STRICT;

CREATE TABLE tokens (
	id         TEXT NOT NULL PRIMARY KEY,
	name       TEXT NOT NULL,
	hash       BLOB NOT NULL UNIQUE,
	grants     BLOB NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER
) STRICT, WITHOUT ROWID;

CREATE TABLE events (
	seq           INTEGER NOT NULL PRIMARY KEY,
	at            INTEGER NOT NULL,
	kind          TEXT NOT NULL,
	credential_id TEXT NOT NULL,
	version       INTEGER NOT NULL,
	detail        BLOB NOT NULL
) STRICT;
