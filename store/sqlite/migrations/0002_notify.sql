-- Webhook notifications (package notify): subscriptions, the outbox written
-- in the same transaction as each event, and the deliveries made from it.

CREATE TABLE notify_subscriptions (
	id         TEXT NOT NULL PRIMARY KEY,
	prefix     TEXT NOT NULL,
	config     BLOB NOT NULL,
	kek_id     TEXT NOT NULL,
	data_key   BLOB NOT NULL,
	ciphertext BLOB NOT NULL,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX notify_subscriptions_kek ON notify_subscriptions (kek_id);

-- One row per stored event while any subscription exists; the dispatcher
-- turns it into deliveries and deletes it in one transaction.
CREATE TABLE notify_outbox (
	seq           INTEGER NOT NULL PRIMARY KEY,
	at            INTEGER NOT NULL,
	kind          TEXT NOT NULL,
	credential_id TEXT NOT NULL,
	version       INTEGER NOT NULL,
	detail        BLOB NOT NULL
) STRICT;

CREATE TABLE notify_deliveries (
	id              INTEGER PRIMARY KEY AUTOINCREMENT,
	subscription_id TEXT NOT NULL,
	event_id        TEXT NOT NULL,
	kind            TEXT NOT NULL,
	credential_id   TEXT NOT NULL,
	payload         BLOB NOT NULL,
	state           TEXT NOT NULL,
	attempts        INTEGER NOT NULL,
	last_status     INTEGER NOT NULL,
	last_error      TEXT NOT NULL,
	created_at      INTEGER NOT NULL,
	updated_at      INTEGER NOT NULL,
	due_at          INTEGER NOT NULL,
	delivered_at    INTEGER,
	lease_owner     TEXT NOT NULL,
	lease_until     INTEGER NOT NULL,
	UNIQUE (subscription_id, event_id)
) STRICT;

CREATE INDEX notify_deliveries_due ON notify_deliveries (due_at) WHERE state = 'pending';
CREATE INDEX notify_deliveries_state ON notify_deliveries (state, id);
CREATE INDEX notify_deliveries_delivered ON notify_deliveries (delivered_at) WHERE state = 'delivered';
