-- nebula-credential store schema, PostgreSQL.
-- Keys use COLLATE "C" so that they sort by bytes, as on SQLite.

CREATE TABLE meta (
	name  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	value BYTEA NOT NULL
);

CREATE TABLE keks (
	id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	wrapped    BYTEA NOT NULL,
	created_at TIMESTAMPTZ NOT NULL,
	retired_at TIMESTAMPTZ
);

CREATE TABLE credentials (
	id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	type        TEXT COLLATE "C" NOT NULL,
	settings    BYTEA NOT NULL,
	created_at  TIMESTAMPTZ NOT NULL,
	updated_at  TIMESTAMPTZ NOT NULL,
	deleted_at  TIMESTAMPTZ,
	next_due_at TIMESTAMPTZ
);

CREATE INDEX credentials_due ON credentials (next_due_at) WHERE deleted_at IS NULL;

CREATE TABLE versions (
	credential_id TEXT COLLATE "C" NOT NULL,
	version       BIGINT NOT NULL,
	fields        BYTEA NOT NULL,
	kek_id        TEXT COLLATE "C" NOT NULL,
	data_key      BYTEA NOT NULL,
	ciphertext    BYTEA NOT NULL,
	created_at    TIMESTAMPTZ NOT NULL,
	expires_at    TIMESTAMPTZ,
	PRIMARY KEY (credential_id, version)
);

CREATE INDEX versions_kek ON versions (kek_id);

-- The highest version number ever inserted per credential.
CREATE TABLE version_counters (
	credential_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	max_version   BIGINT NOT NULL
);

CREATE TABLE labels (
	credential_id TEXT COLLATE "C" NOT NULL,
	label         TEXT COLLATE "C" NOT NULL,
	version       BIGINT NOT NULL,
	PRIMARY KEY (credential_id, label)
);

CREATE TABLE rotations (
	id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	credential_id TEXT COLLATE "C" NOT NULL,
	kind          TEXT NOT NULL,
	step          TEXT NOT NULL,
	open          BOOLEAN NOT NULL,
	strategy      TEXT NOT NULL,
	from_version  BIGINT NOT NULL,
	to_version    BIGINT NOT NULL,
	attempt       BIGINT NOT NULL,
	error_class   TEXT NOT NULL,
	last_error    TEXT NOT NULL,
	actor         TEXT NOT NULL,
	reason        TEXT NOT NULL,
	data          BYTEA NOT NULL,
	grace_ends_at TIMESTAMPTZ,
	due_at        TIMESTAMPTZ NOT NULL,
	started_at    TIMESTAMPTZ NOT NULL,
	updated_at    TIMESTAMPTZ NOT NULL,
	finished_at   TIMESTAMPTZ,
	lease_owner   TEXT NOT NULL,
	lease_until   TIMESTAMPTZ NOT NULL,
	fence         BIGINT NOT NULL
);

-- At most one open rotation per credential.
CREATE UNIQUE INDEX rotations_one_open ON rotations (credential_id) WHERE open;
CREATE INDEX rotations_due ON rotations (due_at) WHERE open;
CREATE INDEX rotations_credential ON rotations (credential_id, id);

CREATE TABLE history (
	id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	credential_id TEXT COLLATE "C" NOT NULL,
	at            TIMESTAMPTZ NOT NULL,
	action        TEXT NOT NULL,
	actor         TEXT NOT NULL,
	reason        TEXT NOT NULL,
	from_version  BIGINT NOT NULL,
	to_version    BIGINT NOT NULL,
	rotation_id   BIGINT NOT NULL,
	outcome       TEXT NOT NULL,
	detail        TEXT NOT NULL,
	duration_ms   BIGINT NOT NULL
);

CREATE INDEX history_credential ON history (credential_id, id);

CREATE TABLE audit (
	seq       BIGINT NOT NULL PRIMARY KEY,
	at        TIMESTAMPTZ NOT NULL,
	payload   BYTEA NOT NULL,
	prev_hash BYTEA NOT NULL,
	hash      BYTEA NOT NULL
);

CREATE TABLE tokens (
	id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	name       TEXT NOT NULL,
	hash       BYTEA NOT NULL UNIQUE,
	grants     BYTEA NOT NULL,
	created_at TIMESTAMPTZ NOT NULL,
	expires_at TIMESTAMPTZ
);

CREATE TABLE events (
	seq           BIGINT NOT NULL PRIMARY KEY,
	at            TIMESTAMPTZ NOT NULL,
	kind          TEXT NOT NULL,
	credential_id TEXT COLLATE "C" NOT NULL,
	version       BIGINT NOT NULL,
	detail        BYTEA NOT NULL
);
