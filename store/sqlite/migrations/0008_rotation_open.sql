-- Whether the credential has an open rotation (issue 15): GetCredentialState
-- reads the rotations table only when it is set. Kept by triggers, so that no
-- code path that opens, ends, moves or deletes a rotation can forget it, and
-- set here for the rotations open at upgrade time. The flag is recomputed
-- from the rotations table, never counted, so it is right whatever the order
-- of the writes (a rotation written before its credential's row included);
-- a credential's row is written only when its flag changes.
ALTER TABLE credentials ADD COLUMN rotation_open INTEGER NOT NULL DEFAULT 0 CHECK (rotation_open IN (0, 1));

UPDATE credentials SET rotation_open = 1
	WHERE EXISTS (SELECT 1 FROM rotations WHERE credential_id = credentials.id AND open);

CREATE TRIGGER rotations_open_insert AFTER INSERT ON rotations WHEN NEW.open
BEGIN
	UPDATE credentials SET rotation_open = 1 WHERE id = NEW.credential_id AND rotation_open = 0;
END;

CREATE TRIGGER rotations_open_update AFTER UPDATE OF open, credential_id ON rotations
	WHEN OLD.open IS NOT NEW.open OR OLD.credential_id IS NOT NEW.credential_id
BEGIN
	UPDATE credentials
		SET rotation_open = EXISTS (SELECT 1 FROM rotations WHERE credential_id = credentials.id AND open)
		WHERE id IN (OLD.credential_id, NEW.credential_id)
			AND rotation_open IS NOT EXISTS (SELECT 1 FROM rotations WHERE credential_id = credentials.id AND open);
END;

CREATE TRIGGER rotations_open_delete AFTER DELETE ON rotations WHEN OLD.open
BEGIN
	UPDATE credentials
		SET rotation_open = EXISTS (SELECT 1 FROM rotations WHERE credential_id = credentials.id AND open)
		WHERE id = OLD.credential_id
			AND rotation_open IS NOT EXISTS (SELECT 1 FROM rotations WHERE credential_id = credentials.id AND open);
END;

-- A credential's row written after its open rotation (a purge and a new
-- credential of the same ID, a restore writing tables in another order), or
-- written with a flag that is not so.
CREATE TRIGGER credentials_rotation_open AFTER INSERT ON credentials
	WHEN NEW.rotation_open IS NOT EXISTS (SELECT 1 FROM rotations WHERE credential_id = NEW.id AND open)
BEGIN
	UPDATE credentials SET rotation_open = 1 - rotation_open WHERE id = NEW.id;
END;
