-- queue_head (V11) as PL/pgSQL: the same query and the same pinned plan
-- (the SET clauses apply while it runs, planning included), but planned
-- once per session. The SET clauses keep PostgreSQL from inlining an SQL
-- function, so as one it parsed and planned its body on every call: 5 %
-- of PostgreSQL's CPU time in the assignment benchmark (perf profile in
-- docs/performance.md).
CREATE OR REPLACE FUNCTION queue_head(tags TEXT[], n INTEGER, skip UUID[], wanted TEXT)
RETURNS SETOF UUID
LANGUAGE plpgsql STABLE
SET enable_sort = off
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $$
BEGIN
    RETURN QUERY
        SELECT jobs.id FROM jobs
        WHERE jobs.status = 'queued' AND jobs.kind = wanted AND jobs.required_tags <@ tags
          AND NOT (jobs.id = ANY(skip))
        ORDER BY jobs.kind, jobs.priority DESC, jobs.submitted_at, jobs.id
        LIMIT n;
END
$$;
