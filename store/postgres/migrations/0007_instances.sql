-- The server processes that use this store (issue 14): each one upserts its
-- row at every heartbeat; "nebula-credential status" lists them.
CREATE TABLE instances (
	id             TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	host           TEXT NOT NULL,
	address        TEXT NOT NULL,
	version        TEXT NOT NULL,
	started_at     TIMESTAMPTZ NOT NULL,
	last_heartbeat TIMESTAMPTZ NOT NULL
);
