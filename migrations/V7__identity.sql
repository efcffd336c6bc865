-- Identity: LDAP and OIDC users, API tokens, session revocation, and the
-- login throttle.

-- `provider` is `local`, `ldap:<name>` or `oidc:<name>`; `external_id` the
-- directory uid or the OIDC subject (blanked on deletion).
ALTER TABLE users
    ADD COLUMN external_id TEXT,
    ADD COLUMN sessions_revoked_at TIMESTAMPTZ;

-- Long-lived API tokens (hash only), owned by the users projector.
CREATE TABLE api_tokens (
    id          UUID PRIMARY KEY,
    user_id     UUID        NOT NULL,
    name        TEXT        NOT NULL,
    token_hash  TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ,
    version     BIGINT      NOT NULL
);
CREATE UNIQUE INDEX api_tokens_hash ON api_tokens (token_hash);
CREATE INDEX api_tokens_user ON api_tokens (user_id, created_at DESC);

-- Failed password logins per key (an account at a source address, or a
-- source address), shared by every instance. Operational state, not a read
-- model: it is not rebuilt from the log.
CREATE TABLE login_failures (
    key          TEXT PRIMARY KEY,
    failures     INTEGER     NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    locked_until TIMESTAMPTZ
);
