-- PostgreSQL only (0005_change_notify.sql there: NOTIFY on change). Kept so
-- that the migration numbers of both stores stay the same.
SELECT 1;
