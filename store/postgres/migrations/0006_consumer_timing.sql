-- What a consumer reports about how long it may keep using a version after it
-- stopped being current (issue 13): its refresh interval (a cache TTL, a poll
-- interval) and, for a pool, its drain timeout. Milliseconds; 0 = not reported.
ALTER TABLE consumers ADD COLUMN refresh_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE consumers ADD COLUMN drain_ms BIGINT NOT NULL DEFAULT 0;
