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
