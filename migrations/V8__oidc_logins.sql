-- OIDC logins under way: the PKCE verifier and nonce of each authorization
-- request, keyed by the SHA-256 of its state, used once by the callback and
-- forgotten after 10 minutes. Operational state, not a read model.
CREATE TABLE oidc_logins (
    state_hash    TEXT PRIMARY KEY,
    provider      TEXT        NOT NULL,
    pkce_verifier TEXT        NOT NULL,
    nonce         TEXT        NOT NULL,
    want_admin    BOOLEAN     NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX oidc_logins_created ON oidc_logins (created_at);
