-- Webhook notifications (package notify): subscriptions, the outbox written
-- in the same transaction as each event, and the deliveries made from it.

CREATE TABLE notify_subscriptions (
	id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	prefix     TEXT COLLATE "C" NOT NULL,
	config     BYTEA NOT NULL,
	kek_id     TEXT COLLATE "C" NOT NULL,
	data_key   BYTEA NOT NULL,
	ciphertext BYTEA NOT NULL,
	created_at TIMESTAMPTZ NOT NULL,
	updated_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX notify_subscriptions_kek ON notify_subscriptions (kek_id);

-- One row per stored event while any subscription exists; the dispatcher
-- turns it into deliveries and deletes it in one transaction.
CREATE TABLE notify_outbox (
	seq           BIGINT NOT NULL PRIMARY KEY,
	at            TIMESTAMPTZ NOT NULL,
	kind          TEXT NOT NULL,
	credential_id TEXT COLLATE "C" NOT NULL,
	version       BIGINT NOT NULL,
	detail        BYTEA NOT NULL
);

CREATE TABLE notify_deliveries (
	id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	subscription_id TEXT COLLATE "C" NOT NULL,
	event_id        TEXT COLLATE "C" NOT NULL,
	kind            TEXT NOT NULL,
	credential_id   TEXT COLLATE "C" NOT NULL,
	payload         BYTEA NOT NULL,
	state           TEXT NOT NULL,
	attempts        BIGINT NOT NULL,
	last_status     BIGINT NOT NULL,
	last_error      TEXT NOT NULL,
	created_at      TIMESTAMPTZ NOT NULL,
	updated_at      TIMESTAMPTZ NOT NULL,
	due_at          TIMESTAMPTZ NOT NULL,
	delivered_at    TIMESTAMPTZ,
	lease_owner     TEXT NOT NULL,
	lease_until     TIMESTAMPTZ NOT NULL,
	UNIQUE (subscription_id, event_id)
);

CREATE INDEX notify_deliveries_due ON notify_deliveries (due_at) WHERE state = 'pending';
CREATE INDEX notify_deliveries_state ON notify_deliveries (state, id);
CREATE INDEX notify_deliveries_delivered ON notify_deliveries (delivered_at) WHERE state = 'delivered';
