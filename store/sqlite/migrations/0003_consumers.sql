-- What each consumer (agent, pool) of a credential last confirmed.
CREATE TABLE consumers (
	id            TEXT NOT NULL,
	credential_id TEXT NOT NULL,
	name          TEXT NOT NULL,
	host          TEXT NOT NULL,
	kind          TEXT NOT NULL,
	version       INTEGER NOT NULL,
	action_ok     INTEGER NOT NULL CHECK (action_ok IN (0, 1)),
	action_error  TEXT NOT NULL,
	token_id      TEXT NOT NULL,
	first_seen    INTEGER NOT NULL,
	last_seen     INTEGER NOT NULL,
	PRIMARY KEY (credential_id, id)
) STRICT, WITHOUT ROWID;

CREATE INDEX consumers_last_seen ON consumers (last_seen);
