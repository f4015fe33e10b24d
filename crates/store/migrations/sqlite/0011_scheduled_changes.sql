-- Scheduled entitlement saves: validated when scheduled, applied once at
-- apply_at through the same save (If-Match against expected_version). The
-- claim, the save and the outcome are one transaction under the tenant's
-- write lock, so a change is applied exactly once whichever node gets there
-- first, and a crash before the commit leaves it pending.
-- status: pending, applied, conflict, failed, cancelled.
CREATE TABLE scheduled_changes (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    service           TEXT NOT NULL,
    settings_json     TEXT NOT NULL,
    expected_version  INTEGER NOT NULL,
    apply_at          INTEGER NOT NULL,
    status            TEXT NOT NULL DEFAULT 'pending',
    created_at        INTEGER NOT NULL,
    created_by        TEXT NOT NULL,
    created_by_kind   TEXT NOT NULL,
    created_by_id     TEXT NOT NULL,
    -- When the outcome (applied, conflict, failed, cancelled) was recorded.
    outcome_at        INTEGER,
    outcome_message   TEXT,
    -- The config version the apply wrote (applied only).
    config_version    INTEGER,
    -- The node that applied it, or who cancelled it.
    outcome_by        TEXT
);
CREATE INDEX scheduled_changes_due ON scheduled_changes (status, apply_at);
CREATE INDEX scheduled_changes_by_tenant ON scheduled_changes (tenant_id, created_at);
