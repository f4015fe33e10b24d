-- Scheduled entitlement saves: validated when scheduled, applied once at
-- apply_at through the same save (If-Match against expected_version). The
-- claim, the save and the outcome are one transaction under the tenant's
-- write lock, so a change is applied exactly once whichever node gets there
-- first, and a crash before the commit leaves it pending.
-- status: pending, applied, conflict, failed, cancelled.
CREATE TABLE scheduled_changes (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    service           text NOT NULL,
    settings_json     jsonb NOT NULL,
    expected_version  bigint NOT NULL,
    apply_at          timestamptz NOT NULL,
    status            text NOT NULL DEFAULT 'pending',
    created_at        timestamptz NOT NULL,
    created_by        text NOT NULL,
    created_by_kind   text NOT NULL,
    created_by_id     text NOT NULL,
    -- When the outcome (applied, conflict, failed, cancelled) was recorded.
    outcome_at        timestamptz,
    outcome_message   text,
    -- The config version the apply wrote (applied only).
    config_version    bigint,
    -- The node that applied it, or who cancelled it.
    outcome_by        text
);
CREATE INDEX scheduled_changes_due ON scheduled_changes (status, apply_at);
CREATE INDEX scheduled_changes_by_tenant ON scheduled_changes (tenant_id, created_at);
