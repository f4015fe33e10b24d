-- Times are Unix milliseconds (INTEGER); JSON documents are TEXT.
CREATE TABLE tenants (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL UNIQUE,
    created_at            INTEGER NOT NULL,
    enrollment_key_hash   TEXT NOT NULL UNIQUE,
    scim_token_hash       TEXT NOT NULL UNIQUE,
    config_version        INTEGER NOT NULL DEFAULT 0,
    -- Bumped by every write that can change a decision; nodes compare it with
    -- their in-memory snapshot before answering a sync.
    data_version          INTEGER NOT NULL DEFAULT 0,
    last_scim_request_at  INTEGER
);

CREATE TABLE api_tokens (
    token_hash  TEXT PRIMARY KEY,
    tenant_id   TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('super_admin', 'admin', 'viewer')),
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_name       TEXT NOT NULL,
    user_name_key   TEXT NOT NULL,
    display_name    TEXT,
    external_id     TEXT,
    active          INTEGER NOT NULL DEFAULT 1,
    source          TEXT NOT NULL DEFAULT 'local',
    scim_json       TEXT,
    -- Bumped on every change; the SCIM ETag.
    version         INTEGER NOT NULL DEFAULT 1,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    -- Users deleted by the directory stay, so that their devices are explained.
    deleted_at      INTEGER
);
CREATE UNIQUE INDEX users_by_name ON users (tenant_id, user_name_key) WHERE deleted_at IS NULL;
CREATE INDEX users_by_external_id ON users (tenant_id, external_id);

CREATE TABLE groups (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    display_name    TEXT NOT NULL,
    name_key        TEXT NOT NULL,
    external_id     TEXT,
    source          TEXT NOT NULL DEFAULT 'local',
    scim_json       TEXT,
    version         INTEGER NOT NULL DEFAULT 1,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX groups_by_name ON groups (tenant_id, name_key, id);
CREATE INDEX groups_by_external_id ON groups (tenant_id, external_id);

CREATE TABLE user_memberships (
    group_id  TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX user_memberships_by_user ON user_memberships (user_id);

CREATE TABLE group_nesting (
    container_id  TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    member_id     TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    PRIMARY KEY (container_id, member_id)
);
CREATE INDEX group_nesting_by_member ON group_nesting (member_id);

CREATE TABLE device_groups (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    name_key    TEXT NOT NULL,
    rule_json   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, name_key)
);

CREATE TABLE devices (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash     TEXT NOT NULL UNIQUE,
    hostname_key   TEXT NOT NULL,
    report_json    TEXT NOT NULL,
    enrolled_at    INTEGER NOT NULL,
    last_sync_at   INTEGER NOT NULL
);
CREATE INDEX devices_by_tenant ON devices (tenant_id, id);
CREATE INDEX devices_by_user ON devices (user_id);
CREATE INDEX devices_by_hostname ON devices (tenant_id, hostname_key);

CREATE TABLE settings (
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    service             TEXT NOT NULL,
    enabled_by_default  INTEGER NOT NULL,
    user_groups_json    TEXT NOT NULL,
    device_groups_json  TEXT NOT NULL,
    logout_on_enable    INTEGER NOT NULL,
    version             INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, service)
);

CREATE TABLE config_versions (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    service      TEXT NOT NULL,
    actor        TEXT NOT NULL,
    at           INTEGER NOT NULL,
    before_json  TEXT NOT NULL,
    after_json   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    at           INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT NOT NULL,
    before_json  TEXT,
    after_json   TEXT
);
CREATE INDEX audit_by_tenant ON audit_log (tenant_id, id);
