-- Credentials get a lifecycle: API tokens can be listed, expire and be revoked;
-- portal accounts can be disabled; account emails are unique per tenant.
-- This migration touches only api_tokens and accounts.

-- API tokens: a stable id to name a token without its secret, who created it,
-- an optional expiry, the last use (written at most once a minute) and the
-- revocation time. Tokens created before this migration get a random id.
ALTER TABLE api_tokens ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE api_tokens ALTER COLUMN id DROP DEFAULT;
ALTER TABLE api_tokens ADD COLUMN created_by text;
ALTER TABLE api_tokens ADD COLUMN expires_at timestamptz;
ALTER TABLE api_tokens ADD COLUMN last_used_at timestamptz;
ALTER TABLE api_tokens ADD COLUMN revoked_at timestamptz;
CREATE UNIQUE INDEX api_tokens_by_id ON api_tokens (id);
CREATE INDEX api_tokens_by_tenant ON api_tokens (tenant_id, created_at);

-- Accounts: the email was unique across every tenant, so one tenant learned
-- another's admin emails from a 409 and could squat them. One email per tenant;
-- super admins (no tenant) are unique among themselves.
ALTER TABLE accounts DROP CONSTRAINT accounts_email_key_key;
ALTER TABLE accounts ADD COLUMN disabled_at timestamptz;
CREATE UNIQUE INDEX accounts_email_per_tenant ON accounts (tenant_id, email_key)
    WHERE tenant_id IS NOT NULL;
CREATE UNIQUE INDEX accounts_email_super_admin ON accounts (email_key)
    WHERE tenant_id IS NULL;
CREATE INDEX accounts_by_email ON accounts (email_key);
