-- Tamper evidence: every event's hash chains to the previous event of its
-- stream: hash = sha256(previous hash || content hash). The content hash
-- is computed by warden over the event's canonical bytes (see
-- src/event_store/chain.rs); events written before this column existed
-- have none and are reported as unverifiable.
ALTER TABLE events ADD COLUMN hash BYTEA;

-- Audit queries: by who (a user, a runner or a system component), by type,
-- by time; by stream uses events_stream_version_unique.
CREATE INDEX events_actor ON events (
    (coalesce(metadata->'actor'->>'user_id', metadata->'actor'->>'runner_id', metadata->'actor'->>'component')),
    position
);
CREATE INDEX events_type ON events (event_type, position);
CREATE INDEX events_recorded_at ON events (recorded_at, position);

-- Admin read-model queries: keyset pagination newest first, and filters.
CREATE INDEX users_created ON users (created_at DESC, id DESC);
CREATE INDEX users_provider_role ON users (provider, role);
CREATE INDEX runners_created ON runners (created_at DESC, id DESC);
CREATE INDEX runners_status ON runners (status, created_at DESC);
CREATE INDEX jobs_status_submitted ON jobs (status, submitted_at DESC, id DESC);
CREATE INDEX jobs_submitted ON jobs (submitted_at DESC, id DESC);
