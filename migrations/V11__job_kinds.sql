-- Which runner protocol a job is for, and its input file: `native` jobs go to machines of
-- warden's own protocol, `project_w` jobs (Project-W settings and an audio
-- or video file) only to machines registered the Project-W way.
ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'native' CHECK (kind IN ('native', 'project_w'));
-- The job's input file (a FileRef: id, hash, size, media type, name).
ALTER TABLE jobs ADD COLUMN input JSONB;
CREATE INDEX jobs_queue_by_kind ON jobs (kind, priority DESC, submitted_at, id) WHERE status = 'queued';

-- The head of the queue for one kind (see V4 for why the plan is pinned).
CREATE FUNCTION queue_head(tags TEXT[], n INTEGER, skip UUID[], wanted TEXT)
RETURNS SETOF UUID
LANGUAGE sql STABLE
SET enable_sort = off
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $$
    SELECT id FROM jobs
    WHERE status = 'queued' AND kind = wanted AND required_tags <@ tags AND NOT (id = ANY(skip))
    ORDER BY kind, priority DESC, submitted_at, id
    LIMIT n
$$;
