-- Admin read-model queries (src/admin_queries.rs): each filter offered
-- has an index that also serves the keyset order (time DESC, id DESC).
CREATE INDEX users_provider_created ON users (provider, created_at DESC, id DESC);
CREATE INDEX users_role_created ON users (role, created_at DESC, id DESC);
CREATE INDEX runner_machines_registered ON runner_machines (registered_at DESC, id DESC)
    WHERE pruned_at IS NULL;
CREATE INDEX runner_machines_runner_registered ON runner_machines (runner_id, registered_at DESC, id DESC)
    WHERE pruned_at IS NULL;
CREATE INDEX jobs_runner_submitted ON jobs (runner_id, submitted_at DESC, id DESC)
    WHERE runner_id IS NOT NULL;
CREATE INDEX jobs_submitted_by_submitted ON jobs (submitted_by, submitted_at DESC, id DESC);
DROP INDEX jobs_submitted_by;
