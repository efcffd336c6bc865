-- Appends maintain every index of the events table. recorded_at grows with
-- the log, so a BRIN index (a few pages for millions of rows, nearly free
-- to maintain) serves the audit trail's time ranges instead of a B-tree.
DROP INDEX events_recorded_at;
CREATE INDEX events_recorded_at_brin ON events USING brin (recorded_at);
