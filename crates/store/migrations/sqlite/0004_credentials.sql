-- Credentials get a lifecycle: API tokens can be listed, expire and be revoked;
-- portal accounts can be disabled; account emails are unique per tenant.
-- This migration touches only api_tokens, accounts and sessions.

-- API tokens: a stable id to name a token without its secret, who created it,
-- an optional expiry, the last use (written at most once a minute) and the
-- revocation time. Tokens created before this migration get a random id.
ALTER TABLE api_tokens ADD COLUMN id TEXT;
ALTER TABLE api_tokens ADD COLUMN created_by TEXT;
ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE api_tokens ADD COLUMN last_used_at INTEGER;
ALTER TABLE api_tokens ADD COLUMN revoked_at INTEGER;
UPDATE api_tokens SET id = lower(hex(randomblob(16))) WHERE id IS NULL;
UPDATE api_tokens
   SET id = substr(id, 1, 8) || '-' || substr(id, 9, 4) || '-' || substr(id, 13, 4) || '-'
            || substr(id, 17, 4) || '-' || substr(id, 21, 12)
 WHERE length(id) = 32;
CREATE UNIQUE INDEX api_tokens_by_id ON api_tokens (id);
CREATE INDEX api_tokens_by_tenant ON api_tokens (tenant_id, created_at);

-- Accounts: the email was unique across every tenant, so one tenant learned
-- another's admin emails from a 409 and could squat them. SQLite cannot drop
-- an inline UNIQUE constraint, so the table is rebuilt; sessions reference it
-- and are rebuilt around it (dropping accounts would otherwise cascade to them).
CREATE TABLE sessions_keep AS SELECT * FROM sessions;
DROP TABLE sessions;

CREATE TABLE accounts_new (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    email          TEXT NOT NULL,
    email_key      TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('super_admin', 'admin', 'viewer')),
    failed_logins  INTEGER NOT NULL DEFAULT 0,
    locked_until   INTEGER,
    created_at     INTEGER NOT NULL,
    disabled_at    INTEGER
);
INSERT INTO accounts_new (id, tenant_id, email, email_key, password_hash, role, failed_logins,
                          locked_until, created_at)
    SELECT id, tenant_id, email, email_key, password_hash, role, failed_logins, locked_until,
           created_at
      FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_new RENAME TO accounts;
-- One email per tenant; super admins (no tenant) are unique among themselves.
CREATE UNIQUE INDEX accounts_email_per_tenant ON accounts (tenant_id, email_key)
    WHERE tenant_id IS NOT NULL;
CREATE UNIQUE INDEX accounts_email_super_admin ON accounts (email_key)
    WHERE tenant_id IS NULL;
CREATE INDEX accounts_by_email ON accounts (email_key);

CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
INSERT INTO sessions (token_hash, account_id, csrf_token, created_at, expires_at)
    SELECT token_hash, account_id, csrf_token, created_at, expires_at FROM sessions_keep;
DROP TABLE sessions_keep;
CREATE INDEX sessions_by_account ON sessions (account_id);
