-- Changes other servers must hear about at once (issue 14): a NOTIFY on the
-- channel nebula_credential, payload "<schema>.<table>", sent at commit by any
-- statement that appends events or changes tokens or keys.

CREATE FUNCTION nebula_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('nebula_credential', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
	RETURN NULL;
END
$$;

CREATE TRIGGER events_notify AFTER INSERT ON events
	FOR EACH STATEMENT EXECUTE FUNCTION nebula_notify_change();
CREATE TRIGGER tokens_notify AFTER INSERT OR UPDATE OR DELETE ON tokens
	FOR EACH STATEMENT EXECUTE FUNCTION nebula_notify_change();
CREATE TRIGGER keks_notify AFTER INSERT OR UPDATE OR DELETE ON keks
	FOR EACH STATEMENT EXECUTE FUNCTION nebula_notify_change();
CREATE TRIGGER meta_notify AFTER INSERT OR UPDATE OR DELETE ON meta
	FOR EACH STATEMENT EXECUTE FUNCTION nebula_notify_change();
