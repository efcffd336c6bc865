-- The head of the job queue for a machine with `tags`: what assignment
-- reads many times a second. The planner misjudges `required_tags <@ tags`
-- (it estimates a handful of rows) and sorts every queued job, which
-- grows with the queue. Walking the `jobs_queue` index in order and
-- stopping after `n` rows is always right here, so this function pins
-- that plan with SET clauses (they apply only while it runs).
CREATE FUNCTION queue_head(tags TEXT[], n INTEGER, skip UUID[])
RETURNS SETOF UUID
LANGUAGE sql STABLE
SET enable_sort = off
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $$
    SELECT id FROM jobs
    WHERE status = 'queued' AND required_tags <@ tags AND NOT (id = ANY(skip))
    ORDER BY priority DESC, submitted_at, id
    LIMIT n
$$;
