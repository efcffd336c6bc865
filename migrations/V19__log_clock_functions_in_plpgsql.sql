-- The log clock's functions (V14) as PL/pgSQL: same results, but their
-- statement is planned once per session. As SQL functions they could not
-- be inlined (a subquery) and were parsed, analysed and planned on every
-- call: once per appended event (the transaction_id default) and once per
-- read of the log, about a tenth of PostgreSQL's CPU time per append
-- (perf profile in docs/performance.md).
CREATE OR REPLACE FUNCTION log_transaction_id() RETURNS BIGINT LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN pg_current_xact_id()::text::bigint + (SELECT xid_offset FROM log_clock);
END
$$;

CREATE OR REPLACE FUNCTION log_horizon() RETURNS BIGINT LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN pg_snapshot_xmin(pg_current_snapshot())::text::bigint + (SELECT xid_offset FROM log_clock);
END
$$;
