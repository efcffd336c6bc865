-- Runner settings and token reset with a grace period.
ALTER TABLE runners
    ADD COLUMN paused                     BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN priority                   INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN previous_token_hash        TEXT,
    ADD COLUMN previous_token_valid_until TIMESTAMPTZ;
CREATE INDEX runners_previous_token_hash ON runners (previous_token_hash)
    WHERE previous_token_hash IS NOT NULL;
CREATE INDEX runners_tags ON runners USING gin (tags);

-- Hosts sharing a runner token. `version` is the stream version, as in
-- every read model; the runner software's version is `runner_version`.
CREATE TABLE runner_machines (
    id              UUID PRIMARY KEY,
    runner_id       UUID        NOT NULL,
    system_id       TEXT        NOT NULL,
    name            TEXT,
    runner_version  TEXT,
    revision        TEXT,
    platform        TEXT,
    architecture    TEXT,
    source_code_url TEXT,
    priority        INTEGER,
    ip_address      TEXT,
    registered_at   TIMESTAMPTZ NOT NULL,
    contacted_at    TIMESTAMPTZ NOT NULL,
    -- Tombstone: a redelivered registration cannot revive a pruned row.
    pruned_at       TIMESTAMPTZ,
    version         BIGINT      NOT NULL
);
CREATE INDEX runner_machines_runner ON runner_machines (runner_id);
CREATE INDEX runner_machines_contacted_at ON runner_machines (contacted_at);

CREATE TABLE jobs (
    id              UUID PRIMARY KEY,
    submitted_by    UUID        NOT NULL,
    status          TEXT        NOT NULL CHECK (status IN ('queued', 'assigned', 'succeeded', 'failed', 'aborted', 'cancelled')),
    payload         JSONB       NOT NULL,
    required_tags   TEXT[]      NOT NULL DEFAULT '{}',
    priority        INTEGER     NOT NULL DEFAULT 0,
    runner_id       UUID,
    machine_id      UUID,
    cancel_requested BOOLEAN    NOT NULL DEFAULT false,
    progress        DOUBLE PRECISION,
    progress_message TEXT,
    result          JSONB,
    requeue_count   INTEGER     NOT NULL DEFAULT 0,
    submitted_at    TIMESTAMPTZ NOT NULL,
    assigned_at     TIMESTAMPTZ,
    finished_at     TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL,
    version         BIGINT      NOT NULL
);
-- The queue: what assignment scans, oldest first within a priority.
CREATE INDEX jobs_queue ON jobs (priority DESC, submitted_at, id) WHERE status = 'queued';
CREATE INDEX jobs_submitted_by ON jobs (submitted_by, submitted_at DESC);
CREATE INDEX jobs_runner ON jobs (runner_id) WHERE runner_id IS NOT NULL;

-- State of the job re-assignment reaction, kept at the reaction's own
-- checkpoint (not the projectors'): which runner holds which job, and
-- which runners are gone.
CREATE TABLE reassignment_held_jobs (
    job_id    UUID PRIMARY KEY,
    runner_id UUID NOT NULL
);
CREATE INDEX reassignment_held_jobs_runner ON reassignment_held_jobs (runner_id);
CREATE TABLE reassignment_gone_runners (
    runner_id UUID PRIMARY KEY
);
