-- What a node's sync cache checks a cached device against (issue 14). It moves
-- on, in the same transaction, with every change made to one of the tenant's
-- devices by anyone but the device's own syncs: approval, attested ownership,
-- removal (and its token, user or tenant, should anything ever change them).
-- A change to settings, groups, users or grants moves data_version only: a
-- cached device stays as good as a fresh read, and only the snapshot must be
-- rebuilt. Triggers keep it, not the application's writes, so that no write
-- path, present or future, and no node of an older version can remove a
-- device without the other nodes' caches noticing.
ALTER TABLE tenants ADD COLUMN device_trust_version bigint NOT NULL DEFAULT 0;

CREATE FUNCTION bump_device_trust_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE tenants SET device_trust_version = device_trust_version + 1
         WHERE id = OLD.tenant_id;
    ELSE
        UPDATE tenants SET device_trust_version = device_trust_version + 1
         WHERE id IN (OLD.tenant_id, NEW.tenant_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER devices_trust_removed AFTER DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION bump_device_trust_version();

CREATE TRIGGER devices_trust_changed
    AFTER UPDATE OF tenant_id, user_id, token_hash, attested_ownership, attested_by, pending_approval
    ON devices
    FOR EACH ROW
    WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id
       OR OLD.user_id IS DISTINCT FROM NEW.user_id
       OR OLD.token_hash IS DISTINCT FROM NEW.token_hash
       OR OLD.attested_ownership IS DISTINCT FROM NEW.attested_ownership
       OR OLD.attested_by IS DISTINCT FROM NEW.attested_by
       OR OLD.pending_approval IS DISTINCT FROM NEW.pending_approval)
    EXECUTE FUNCTION bump_device_trust_version();
