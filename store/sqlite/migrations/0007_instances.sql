-- The server processes that use this store (issue 14): each one upserts its
-- row at every heartbeat; "nebula-credential status" lists them.
CREATE TABLE instances (
	id             TEXT NOT NULL PRIMARY KEY,
	host           TEXT NOT NULL,
	address        TEXT NOT NULL,
	version        TEXT NOT NULL,
	started_at     INTEGER NOT NULL,
	last_heartbeat INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
