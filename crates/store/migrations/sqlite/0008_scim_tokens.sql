-- SCIM tokens get a lifecycle: when each was created and last used, and a
-- rotation that keeps the previous token working for a grace period, so that
-- provisioning does not break while the new token is pasted into the identity
-- provider. Authentication looks a token up here by its hash.
--
-- tenants.scim_token_hash stays (SQLite cannot drop a UNIQUE column) and is
-- kept equal to the newest token's hash; nothing authenticates with it.
CREATE TABLE scim_tokens (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    -- Written at most once a minute, like api_tokens.last_used_at.
    last_used_at  INTEGER,
    -- Set when a newer token replaces this one: the end of its grace period.
    expires_at    INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX scim_tokens_by_tenant ON scim_tokens (tenant_id, created_at);

-- Each tenant's one token moves in: created at its last rotation (from the
-- audit log) or with the tenant, last used at the tenant's last SCIM request
-- if that came after it was created.
INSERT INTO scim_tokens (id, tenant_id, token_hash, created_at, last_used_at)
SELECT lower(hex(randomblob(16))), t.id, t.scim_token_hash, c.created_at,
       CASE WHEN t.last_scim_request_at >= c.created_at THEN t.last_scim_request_at END
  FROM tenants t
  JOIN (SELECT tt.id,
               COALESCE((SELECT MAX(a.at) FROM audit_log a
                          WHERE a.tenant_id = tt.id AND a.action = 'scim_token.rotate'),
                        tt.created_at) AS created_at
          FROM tenants tt) c ON c.id = t.id;
UPDATE scim_tokens
   SET id = substr(id, 1, 8) || '-' || substr(id, 9, 4) || '-' || substr(id, 13, 4) || '-'
            || substr(id, 17, 4) || '-' || substr(id, 21, 12)
 WHERE length(id) = 32;
