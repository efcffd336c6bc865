-- Which warden instances are alive (issue 13): each serving instance
-- upserts its row every few seconds. Operational state, not a read model.
CREATE TABLE instances (
    id           UUID PRIMARY KEY,
    hostname     TEXT        NOT NULL,
    pid          INTEGER     NOT NULL,
    version      TEXT        NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    leads        TEXT[]      NOT NULL DEFAULT '{}'
);
CREATE INDEX instances_last_seen ON instances (last_seen_at);
