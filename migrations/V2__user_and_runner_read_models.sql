-- Read models: disposable, rebuilt from the log by `warden replay`.
CREATE TABLE users (
    id              UUID PRIMARY KEY,
    provider        TEXT        NOT NULL,
    email           TEXT,
    password_hash   TEXT,
    role            TEXT        NOT NULL CHECK (role IN ('user', 'support', 'admin')),
    origin          TEXT        NOT NULL,
    provisioning_id TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    deleted_at      TIMESTAMPTZ,
    version         BIGINT      NOT NULL
);
CREATE INDEX users_email ON users (lower(email)) WHERE deleted_at IS NULL;

CREATE TABLE runners (
    id                  UUID PRIMARY KEY,
    token_hash          TEXT        NOT NULL,
    status              TEXT        NOT NULL CHECK (status IN ('active', 'invalidated')),
    description         TEXT,
    tags                TEXT[]      NOT NULL DEFAULT '{}',
    created_by          UUID,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    invalidated_at      TIMESTAMPTZ,
    invalidation_reason TEXT,
    version             BIGINT      NOT NULL
);
CREATE UNIQUE INDEX runners_token_hash ON runners (token_hash);
