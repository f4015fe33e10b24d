-- A rollback records the version it restored, so that the history can say
-- "restored from vN" rather than show an anonymous change.
ALTER TABLE config_versions ADD COLUMN restored_from bigint;
