-- What a node's sync cache checks a cached device against (issue 14). It moves
-- on, in the same transaction, with every change made to one of the tenant's
-- devices by anyone but the device's own syncs: approval, attested ownership,
-- removal. A change to settings, groups, users or grants moves data_version
-- only: a cached device stays as good as a fresh read through it, and only the
-- snapshot must be rebuilt.
ALTER TABLE tenants ADD COLUMN device_trust_version bigint NOT NULL DEFAULT 0;
