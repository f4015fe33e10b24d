-- Admins and roles in the portal: when each account last signed in, sessions
-- that can be named (without their secret), seen and ended one by one, and
-- invitations: an account created without a usable password, opened once by
-- a link whose secret is stored only as a hash.

ALTER TABLE accounts ADD COLUMN last_sign_in_at INTEGER;

-- A session's public id (its token hash stays the lookup key and is never
-- shown), when it was last used (written at most once a minute), and the
-- address and browser it signed in from, as display text.
ALTER TABLE sessions ADD COLUMN id TEXT;
ALTER TABLE sessions ADD COLUMN last_seen_at INTEGER;
ALTER TABLE sessions ADD COLUMN address TEXT;
ALTER TABLE sessions ADD COLUMN user_agent TEXT;
UPDATE sessions SET id = lower(hex(randomblob(16))), last_seen_at = created_at;
UPDATE sessions
   SET id = substr(id, 1, 8) || '-' || substr(id, 9, 4) || '-' || substr(id, 13, 4) || '-'
            || substr(id, 17, 4) || '-' || substr(id, 21, 12)
 WHERE length(id) = 32;
CREATE UNIQUE INDEX sessions_by_id ON sessions (id);

-- One invitation per account: re-inviting replaces the secret. An accepted
-- invitation keeps its row, so that opening the link again says "already used".
CREATE TABLE account_invitations (
    account_id   TEXT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    expires_at   INTEGER NOT NULL,
    accepted_at  INTEGER
);
