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
    tenant_id  uuid PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    revision   bigint NOT NULL
);
ALTER TABLE devices ADD COLUMN revision bigint DEFAULT 0;
ALTER TABLE devices ALTER COLUMN revision DROP DEFAULT;
CREATE INDEX devices_by_revision ON devices (tenant_id, revision);
CREATE TABLE device_removals (
    tenant_id  uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    device_id  uuid NOT NULL,
    revision   bigint,
    PRIMARY KEY (tenant_id, device_id)
);
CREATE INDEX device_removals_by_revision ON device_removals (tenant_id, revision);
