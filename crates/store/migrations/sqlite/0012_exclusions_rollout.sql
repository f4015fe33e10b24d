-- Exclusion groups and staged rollout per service (issue 15). Existing rows
-- read as "no exclusions, rolled out to 100 %", which is what they meant.
ALTER TABLE settings ADD COLUMN exclude_user_groups_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE settings ADD COLUMN exclude_device_groups_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE settings ADD COLUMN rollout_percent INTEGER NOT NULL DEFAULT 100
    CHECK (rollout_percent BETWEEN 1 AND 100);
