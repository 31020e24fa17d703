-- PostgreSQL only (0004_concurrency.sql there). Kept so that the migration
-- numbers of both stores stay the same.
SELECT 1;
