-- Time-bound grants: one user (optionally one device) gets one service from
-- starts_at to ends_at, with a justification. A grant ends by itself at
-- ends_at or earlier when revoked; rows are kept for the record.
CREATE TABLE grants (
    id                    uuid PRIMARY KEY,
    tenant_id             uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id               uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id             uuid REFERENCES devices(id) ON DELETE CASCADE,
    service               text NOT NULL,
    starts_at             timestamptz NOT NULL,
    ends_at               timestamptz NOT NULL,
    justification         text NOT NULL,
    overrides_exclusions  boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL,
    created_by            text NOT NULL,
    created_by_kind       text NOT NULL,
    created_by_id         text NOT NULL,
    revoked_at            timestamptz,
    revoked_by            text,
    revoked_by_kind       text,
    revoked_by_id         text,
    CHECK (ends_at > starts_at)
);
-- Snapshots load the grants that have not ended.
CREATE INDEX grants_by_tenant_end ON grants (tenant_id, ends_at);
