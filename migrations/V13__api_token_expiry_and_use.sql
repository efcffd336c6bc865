-- API tokens expire (issue 11): the read model keeps the expiry from
-- ApiTokenCreated; tokens created before have none.
ALTER TABLE api_tokens ADD COLUMN expires_at TIMESTAMPTZ;

-- When each API token was last used, to the minute. Operational state,
-- not a read model (no event per request): it is not rebuilt from the log
-- and goes with the token's user.
CREATE TABLE api_token_usage (
    token_id     UUID PRIMARY KEY,
    last_used_at TIMESTAMPTZ NOT NULL
);
