-- What each device's agent applied (issue 13): the config version of the
-- policy it acts on, when the server first heard of that version, and each
-- service's state. Device telemetry like last_sync_at: written only when the
-- agent reports something different, never audited. NULL until an agent
-- reports it (older agents never do).
ALTER TABLE devices ADD COLUMN applied_config_version bigint;
ALTER TABLE devices ADD COLUMN applied_at timestamptz;
ALTER TABLE devices ADD COLUMN service_states jsonb;
