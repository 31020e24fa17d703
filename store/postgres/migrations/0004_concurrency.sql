-- Concurrent writers (issue 14). Events are numbered from a sequence under a
-- transaction-level advisory lock instead of MAX(seq)+1, and audit entries
-- are committed into audit_pending with their operation and chained into
-- audit afterwards by a single appender: no writer reads a shared tail row.

CREATE SEQUENCE events_seq AS BIGINT;
SELECT setval('events_seq', (SELECT COALESCE(MAX(seq), 0) + 1 FROM events), false);

CREATE TABLE audit_pending (
	id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at      TIMESTAMPTZ NOT NULL,
	payload BYTEA NOT NULL
);
