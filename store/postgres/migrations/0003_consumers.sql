-- What each consumer (agent, pool) of a credential last confirmed.
CREATE TABLE consumers (
	id            TEXT COLLATE "C" NOT NULL,
	credential_id TEXT COLLATE "C" NOT NULL,
	name          TEXT NOT NULL,
	host          TEXT NOT NULL,
	kind          TEXT NOT NULL,
	version       BIGINT NOT NULL,
	action_ok     BOOLEAN NOT NULL,
	action_error  TEXT NOT NULL,
	token_id      TEXT NOT NULL,
	first_seen    TIMESTAMPTZ NOT NULL,
	last_seen     TIMESTAMPTZ NOT NULL,
	PRIMARY KEY (credential_id, id)
);

CREATE INDEX consumers_last_seen ON consumers (last_seen);
