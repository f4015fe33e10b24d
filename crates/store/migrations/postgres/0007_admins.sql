-- Admins and roles in the portal: when each account last signed in, sessions
-- that can be named (without their secret), seen and ended one by one, and
-- invitations: an account created without a usable password, opened once by
-- a link whose secret is stored only as a hash.

ALTER TABLE accounts ADD COLUMN last_sign_in_at timestamptz;

-- A session's public id (its token hash stays the lookup key and is never
-- shown), when it was last used (written at most once a minute), and the
-- address and browser it signed in from, as display text.
ALTER TABLE sessions ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE sessions ALTER COLUMN id DROP DEFAULT;
ALTER TABLE sessions ADD COLUMN last_seen_at timestamptz;
UPDATE sessions SET last_seen_at = created_at;
ALTER TABLE sessions ADD COLUMN address text;
ALTER TABLE sessions ADD COLUMN user_agent text;
CREATE UNIQUE INDEX sessions_by_id ON sessions (id);

-- One invitation per account: re-inviting replaces the secret. An accepted
-- invitation keeps its row, so that opening the link again says "already used".
CREATE TABLE account_invitations (
    account_id   uuid PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    token_hash   text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL,
    created_by   text NOT NULL,
    expires_at   timestamptz NOT NULL,
    accepted_at  timestamptz
);
