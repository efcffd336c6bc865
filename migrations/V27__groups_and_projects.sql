-- Groups and projects (issue 26): the scopes runners and jobs belong to,
-- and their members. Read models of the `scope-<id>` streams.
CREATE TABLE scopes (
    id           UUID PRIMARY KEY,
    kind         TEXT        NOT NULL CHECK (kind IN ('group', 'project')),
    name         TEXT        NOT NULL,
    -- The group it sits in; NULL for a top-level group.
    parent_id    UUID,
    archived     BOOLEAN     NOT NULL DEFAULT false,
    -- NULL: the configured default (scopes.runner_limit).
    runner_limit BIGINT,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    version      BIGINT      NOT NULL
);
CREATE INDEX scopes_parent ON scopes (parent_id, name);

-- One row per (scope, user) ever a member; `active` is false once removed.
CREATE TABLE scope_members (
    id         UUID PRIMARY KEY,
    scope_id   UUID        NOT NULL,
    user_id    UUID        NOT NULL,
    role       TEXT        CHECK (role IN ('member', 'manager')),
    source     TEXT        CHECK (source IN ('api', 'mapping')),
    active     BOOLEAN     NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    version    BIGINT      NOT NULL
);
CREATE INDEX scope_members_user ON scope_members (user_id) WHERE active;
CREATE INDEX scope_members_scope ON scope_members (scope_id) WHERE active;

-- Every runner and job so far is an instance runner or job (NULL).
ALTER TABLE runners ADD COLUMN scope_id UUID;
CREATE INDEX runners_scope ON runners (scope_id) WHERE scope_id IS NOT NULL;
ALTER TABLE jobs ADD COLUMN scope_id UUID;
CREATE INDEX jobs_queue_by_scope ON jobs (scope_id, kind, priority DESC, submitted_at, id)
    WHERE status = 'queued' AND scope_id IS NOT NULL;
CREATE INDEX jobs_scope ON jobs (scope_id, submitted_at DESC) WHERE scope_id IS NOT NULL;

-- The scope and every scope below it.
CREATE FUNCTION scope_and_below(root UUID) RETURNS UUID[]
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE below(id) AS (
        SELECT root
        UNION
        SELECT scopes.id FROM scopes JOIN below ON scopes.parent_id = below.id
    )
    SELECT array_agg(id) FROM below
$$;

-- The scope and every group above it, nearest first.
CREATE FUNCTION scope_and_above(leaf UUID) RETURNS UUID[]
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE above(id, depth) AS (
        SELECT leaf, 0
        UNION
        SELECT scopes.parent_id, above.depth + 1 FROM scopes JOIN above ON scopes.id = above.id
        WHERE scopes.parent_id IS NOT NULL
    )
    SELECT array_agg(id ORDER BY depth) FROM above
$$;

-- The head of the queue for a runner of `runner_scope`: jobs submitted to
-- that scope or below it. Instance runners keep `queue_head` (the pinned
-- walk of the whole queue); a scoped runner reads only its scopes' jobs
-- through jobs_queue_by_scope and sorts them, so a long queue of other
-- scopes' jobs costs it nothing.
CREATE FUNCTION scoped_queue_head(tags TEXT[], n INTEGER, skip UUID[], wanted TEXT, runner_scope UUID)
RETURNS SETOF UUID
LANGUAGE sql STABLE AS $$
    SELECT jobs.id FROM jobs
    WHERE jobs.status = 'queued' AND jobs.scope_id = ANY(scope_and_below(runner_scope))
      AND jobs.kind = wanted AND jobs.required_tags <@ tags
      AND NOT (jobs.id = ANY(skip))
    ORDER BY jobs.priority DESC, jobs.submitted_at, jobs.id
    LIMIT n
$$;

-- Service accounts (cc-backend's `api` role): never log in, act with API
-- tokens only.
ALTER TABLE users DROP CONSTRAINT users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check CHECK (role IN ('user', 'support', 'admin', 'api'));
