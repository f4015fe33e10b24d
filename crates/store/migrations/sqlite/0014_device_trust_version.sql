-- What a node's sync cache checks a cached device against (issue 14). It moves
-- on, in the same transaction, with every change made to one of the tenant's
-- devices by anyone but the device's own syncs: approval, attested ownership,
-- removal (and its token, user or tenant, should anything ever change them).
-- A change to settings, groups, users or grants moves data_version only: a
-- cached device stays as good as a fresh read, and only the snapshot must be
-- rebuilt. Triggers keep it, not the application's writes, so that no write
-- path, present or future, and no node of an older version can remove a
-- device without the other nodes' caches noticing.
ALTER TABLE tenants ADD COLUMN device_trust_version INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER devices_trust_removed AFTER DELETE ON devices
BEGIN
    UPDATE tenants SET device_trust_version = device_trust_version + 1
     WHERE id = OLD.tenant_id;
END;

CREATE TRIGGER devices_trust_changed
AFTER UPDATE OF tenant_id, user_id, token_hash, attested_ownership, attested_by, pending_approval
ON devices
WHEN OLD.tenant_id IS NOT NEW.tenant_id
  OR OLD.user_id IS NOT NEW.user_id
  OR OLD.token_hash IS NOT NEW.token_hash
  OR OLD.attested_ownership IS NOT NEW.attested_ownership
  OR OLD.attested_by IS NOT NEW.attested_by
  OR OLD.pending_approval IS NOT NEW.pending_approval
BEGIN
    UPDATE tenants SET device_trust_version = device_trust_version + 1
     WHERE id IN (OLD.tenant_id, NEW.tenant_id);
END;
