-- A log clock that survives moving between clusters (issue 12).
--
-- events.transaction_id is the writing transaction's id *plus an offset*
-- kept here, and the reader's horizon is the oldest running transaction's
-- id plus the same offset. Transaction ids belong to one cluster: after a
-- pg_dump/pg_restore (or logical replication) into another cluster the
-- stored ids can be far ahead of the new cluster's own, which made the
-- restored log invisible to readers and put new events before old ones.
-- Start-up then raises the offset (src/log/clock.rs) so every new id is
-- above every stored one; see docs/architecture.md for the proof.
CREATE TABLE log_clock (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    xid_offset BIGINT  NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO log_clock (xid_offset) VALUES (0);

-- The log id of the calling transaction (assigns it a transaction id).
CREATE FUNCTION log_transaction_id() RETURNS BIGINT LANGUAGE sql VOLATILE AS $$
    SELECT pg_current_xact_id()::text::bigint + (SELECT xid_offset FROM log_clock)
$$;

-- Every event with a log id below this was written by a finished
-- transaction: no event can still appear below it.
CREATE FUNCTION log_horizon() RETURNS BIGINT LANGUAGE sql STABLE AS $$
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint + (SELECT xid_offset FROM log_clock)
$$;

ALTER TABLE events ALTER COLUMN transaction_id SET DEFAULT log_transaction_id();
