-- Audit actors are principals: a kind and an id that callers cannot choose,
-- beside the display name kept in `actor`. Rows written before carry the kind
-- 'unverified', since their name alone proves nothing.
ALTER TABLE audit_log ADD COLUMN actor_kind TEXT NOT NULL DEFAULT 'unverified';
ALTER TABLE audit_log ADD COLUMN actor_id TEXT NOT NULL DEFAULT '';
ALTER TABLE config_versions ADD COLUMN actor_kind TEXT NOT NULL DEFAULT 'unverified';
ALTER TABLE config_versions ADD COLUMN actor_id TEXT NOT NULL DEFAULT '';

-- A deleted group that entitlements still select stays there as a tombstone
-- that matches nothing; its name is kept so that explanations can name it.
CREATE TABLE deleted_groups (
    tenant_id   UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('user', 'device')),
    id          UUID NOT NULL,
    name        TEXT NOT NULL,
    deleted_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, kind, id)
);

-- Attested ownership: what a scoped enrollment key or an administrator vouched
-- for overrides what the device reports. Approval mode keeps new devices
-- pending, with no group-based service, until an administrator approves them.
ALTER TABLE tenants ADD COLUMN device_approval BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE devices ADD COLUMN attested_ownership TEXT;
ALTER TABLE devices ADD COLUMN attested_by TEXT;
ALTER TABLE devices ADD COLUMN pending_approval BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE enrollment_keys (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    ownership   TEXT CHECK (ownership IN ('corporate', 'personal')),
    expires_at  TIMESTAMPTZ,
    max_uses    BIGINT,
    uses        BIGINT NOT NULL DEFAULT 0,
    revoked_at  TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX enrollment_keys_by_tenant ON enrollment_keys (tenant_id, created_at);
