-- PostgreSQL schema: ids are uuid, times timestamptz, documents jsonb.
CREATE TABLE tenants (
    id                    uuid PRIMARY KEY,
    name                  text NOT NULL UNIQUE,
    created_at            timestamptz NOT NULL,
    enrollment_key_hash   text NOT NULL UNIQUE,
    scim_token_hash       text NOT NULL UNIQUE,
    config_version        bigint NOT NULL DEFAULT 0,
    -- Bumped by every write that can change a decision; nodes compare it with
    -- their in-memory snapshot before answering a sync.
    data_version          bigint NOT NULL DEFAULT 0,
    last_scim_request_at  timestamptz
);

CREATE TABLE api_tokens (
    token_hash  text PRIMARY KEY,
    tenant_id   uuid REFERENCES tenants(id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('super_admin', 'admin', 'viewer')),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE users (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_name       text NOT NULL,
    user_name_key   text NOT NULL,
    display_name    text,
    external_id     text,
    active          boolean NOT NULL DEFAULT true,
    source          text NOT NULL DEFAULT 'local',
    scim_json       jsonb,
    -- Bumped on every change; the SCIM ETag.
    version         bigint NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    -- Users deleted by the directory stay, so that their devices are explained.
    deleted_at      timestamptz
);
CREATE UNIQUE INDEX users_by_name ON users (tenant_id, user_name_key) WHERE deleted_at IS NULL;
CREATE INDEX users_by_external_id ON users (tenant_id, external_id);

CREATE TABLE groups (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    display_name    text NOT NULL,
    name_key        text NOT NULL,
    external_id     text,
    source          text NOT NULL DEFAULT 'local',
    scim_json       jsonb,
    version         bigint NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX groups_by_name ON groups (tenant_id, name_key, id);
CREATE INDEX groups_by_external_id ON groups (tenant_id, external_id);

CREATE TABLE user_memberships (
    group_id  uuid NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id   uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX user_memberships_by_user ON user_memberships (user_id);

CREATE TABLE group_nesting (
    container_id  uuid NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    member_id     uuid NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    PRIMARY KEY (container_id, member_id)
);
CREATE INDEX group_nesting_by_member ON group_nesting (member_id);

CREATE TABLE device_groups (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        text NOT NULL,
    name_key    text NOT NULL,
    rule_json   jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    UNIQUE (tenant_id, name_key)
);

CREATE TABLE devices (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id        uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash     text NOT NULL UNIQUE,
    hostname_key   text NOT NULL,
    report_json    jsonb NOT NULL,
    enrolled_at    timestamptz NOT NULL,
    last_sync_at   timestamptz NOT NULL
);
CREATE INDEX devices_by_tenant ON devices (tenant_id, id);
CREATE INDEX devices_by_user ON devices (user_id);
CREATE INDEX devices_by_hostname ON devices (tenant_id, hostname_key);

CREATE TABLE settings (
    tenant_id           uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    service             text NOT NULL,
    enabled_by_default  boolean NOT NULL,
    user_groups_json    jsonb NOT NULL,
    device_groups_json  jsonb NOT NULL,
    logout_on_enable    boolean NOT NULL,
    version             bigint NOT NULL,
    PRIMARY KEY (tenant_id, service)
);

CREATE TABLE config_versions (
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    version      bigint NOT NULL,
    service      text NOT NULL,
    actor        text NOT NULL,
    at           timestamptz NOT NULL,
    before_json  jsonb NOT NULL,
    after_json   jsonb NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    tenant_id    uuid REFERENCES tenants(id) ON DELETE CASCADE,
    at           timestamptz NOT NULL,
    actor        text NOT NULL,
    action       text NOT NULL,
    target       text NOT NULL,
    before_json  jsonb,
    after_json   jsonb
);
CREATE INDEX audit_by_tenant ON audit_log (tenant_id, id);
