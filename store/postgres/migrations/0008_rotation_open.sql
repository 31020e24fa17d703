-- Whether the credential has an open rotation (issue 15): GetCredentialState
-- reads the rotations table only when it is set. Kept by triggers, so that no
-- code path that opens, ends, moves or deletes a rotation can forget it, and
-- set here for the rotations open at upgrade time. The flag is recomputed
-- from the rotations table, never counted, so it is right whatever the order
-- of the writes (a rotation written before its credential's row included);
-- a credential's row is written only when its flag changes. Writes run
-- SERIALIZABLE, so the recomputation cannot miss a concurrent change.
ALTER TABLE credentials ADD COLUMN rotation_open BOOLEAN NOT NULL DEFAULT FALSE;

UPDATE credentials SET rotation_open = TRUE
	WHERE EXISTS (SELECT 1 FROM rotations WHERE credential_id = credentials.id AND open);

-- nebula_set_rotation_open sets the flag of credential id from the rotations
-- table, writing the row only if the flag changes.
CREATE FUNCTION nebula_set_rotation_open(cid TEXT) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	o BOOLEAN := EXISTS (SELECT 1 FROM rotations WHERE credential_id = cid AND open);
BEGIN
	UPDATE credentials SET rotation_open = o WHERE id = cid AND rotation_open IS DISTINCT FROM o;
END
$$;

CREATE FUNCTION nebula_rotation_open() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP IN ('UPDATE', 'DELETE') THEN
		PERFORM nebula_set_rotation_open(OLD.credential_id);
	END IF;
	IF TG_OP IN ('INSERT', 'UPDATE') AND (TG_OP = 'INSERT' OR NEW.credential_id IS DISTINCT FROM OLD.credential_id) THEN
		PERFORM nebula_set_rotation_open(NEW.credential_id);
	END IF;
	RETURN NULL;
END
$$;

CREATE TRIGGER rotations_open_insert AFTER INSERT ON rotations
	FOR EACH ROW WHEN (NEW.open) EXECUTE FUNCTION nebula_rotation_open();
CREATE TRIGGER rotations_open_update AFTER UPDATE OF open, credential_id ON rotations
	FOR EACH ROW WHEN (OLD.open IS DISTINCT FROM NEW.open OR OLD.credential_id IS DISTINCT FROM NEW.credential_id)
	EXECUTE FUNCTION nebula_rotation_open();
CREATE TRIGGER rotations_open_delete AFTER DELETE ON rotations
	FOR EACH ROW WHEN (OLD.open) EXECUTE FUNCTION nebula_rotation_open();

-- A credential's row written after its open rotation (a purge and a new
-- credential of the same ID, a restore writing tables in another order), or
-- written with a flag that is not so.
CREATE FUNCTION nebula_credential_rotation_open() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM nebula_set_rotation_open(NEW.id);
	RETURN NULL;
END
$$;

CREATE TRIGGER credentials_rotation_open AFTER INSERT ON credentials
	FOR EACH ROW EXECUTE FUNCTION nebula_credential_rotation_open();
