-- Time-bound grants: one user (optionally one device) gets one service from
-- starts_at to ends_at, with a justification. A grant ends by itself at
-- ends_at or earlier when revoked; rows are kept for the record.
CREATE TABLE grants (
    id                    TEXT PRIMARY KEY,
    tenant_id             TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id               TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id             TEXT REFERENCES devices(id) ON DELETE CASCADE,
    service               TEXT NOT NULL,
    starts_at             INTEGER NOT NULL,
    ends_at               INTEGER NOT NULL,
    justification         TEXT NOT NULL,
    overrides_exclusions  INTEGER NOT NULL DEFAULT 0,
    created_at            INTEGER NOT NULL,
    created_by            TEXT NOT NULL,
    created_by_kind       TEXT NOT NULL,
    created_by_id         TEXT NOT NULL,
    revoked_at            INTEGER,
    revoked_by            TEXT,
    revoked_by_kind       TEXT,
    revoked_by_id         TEXT,
    CHECK (ends_at > starts_at)
);
-- Snapshots load the grants that have not ended.
CREATE INDEX grants_by_tenant_end ON grants (tenant_id, ends_at);
