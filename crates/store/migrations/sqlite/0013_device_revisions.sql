-- Device revisions (issue 14): every write that changes what a decision reads
-- of a device (enrollment, a new report, approval, attested ownership,
-- removal) takes its tenant's next revision and stamps the device with it, so
-- that a node keeping the tenant's devices in memory reads only what changed
-- since the revision it holds. The counter's row is locked until commit, so
-- revisions become visible in order: a reader that sees revision N also sees
-- every write numbered below it. Removed devices leave a row here.
CREATE TABLE device_revisions (
    tenant_id  TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    revision   INTEGER NOT NULL
);
ALTER TABLE devices ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
CREATE INDEX devices_by_revision ON devices (tenant_id, revision);
CREATE TABLE device_removals (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    revision   INTEGER NOT NULL,
    device_id  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, revision, device_id)
);
