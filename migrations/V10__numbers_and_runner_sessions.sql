-- Integer numbers of runners and jobs (the Project-W protocol's ids). A
-- number is drawn from a sequence when the runner or job is created and
-- recorded in its creation event, so a replay gives the same numbers.
-- Runners and jobs created before this release have none.
CREATE SEQUENCE runner_numbers;
CREATE SEQUENCE job_numbers;
ALTER TABLE runners ADD COLUMN number BIGINT;
CREATE UNIQUE INDEX runners_number ON runners (number) WHERE number IS NOT NULL;
ALTER TABLE jobs ADD COLUMN number BIGINT;
CREATE UNIQUE INDEX jobs_number ON jobs (number) WHERE number IS NOT NULL;

-- Sessions of Project-W runner machines (opened by register, ended by
-- unregister, invalidation or silence). Operational state shared by every
-- instance, not a read model: the token is kept only as its SHA-256.
CREATE TABLE runner_sessions (
    id           UUID PRIMARY KEY,
    runner_id    UUID        NOT NULL,
    machine_id   UUID        NOT NULL,
    token_hash   TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at    TIMESTAMPTZ,
    close_reason TEXT
);
CREATE UNIQUE INDEX runner_sessions_token ON runner_sessions (token_hash);
CREATE INDEX runner_sessions_open ON runner_sessions (last_seen_at) WHERE closed_at IS NULL;
CREATE INDEX runner_sessions_runner ON runner_sessions (runner_id) WHERE closed_at IS NULL;
