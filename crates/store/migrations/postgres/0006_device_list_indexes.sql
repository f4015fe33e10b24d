-- Device listings page in keyset order (sort key, id): with the id in the
-- index, a page of 50 is an index range scan instead of a sort of the fleet.
DROP INDEX devices_by_hostname;
CREATE INDEX devices_by_hostname ON devices (tenant_id, hostname_key, id);
CREATE INDEX devices_by_last_seen ON devices (tenant_id, last_sync_at, id);
