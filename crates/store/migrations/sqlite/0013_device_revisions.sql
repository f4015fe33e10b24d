-- Device revisions (issue 14): a node that keeps a tenant's devices in memory
-- reads only the devices changed since the revision it holds. A write that
-- changes what a decision reads of a device (enrollment, a new report,
-- approval, attested ownership, removal) only marks it changed (revision
-- NULL), so that writers never wait for each other; the next reader stamps
-- every marked row with the tenant's next revision, taken from a counter row
-- locked until that commit, so that stamps become visible in order: a reader
-- that sees revision N also sees every row stamped N or less. Rows that
-- existed before this migration read as revision 0. Removed devices leave a
-- row in device_removals, stamped the same way.
CREATE TABLE device_revisions (
    tenant_id  TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    revision   INTEGER NOT NULL
);
ALTER TABLE devices ADD COLUMN revision INTEGER DEFAULT 0;
CREATE INDEX devices_by_revision ON devices (tenant_id, revision);
CREATE TABLE device_removals (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    device_id  TEXT NOT NULL,
    revision   INTEGER,
    PRIMARY KEY (tenant_id, device_id)
);
CREATE INDEX device_removals_by_revision ON device_removals (tenant_id, revision);
