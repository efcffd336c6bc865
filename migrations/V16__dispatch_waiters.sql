-- Machines waiting for work, per instance (issue 13): before assigning a
-- job, a dispatcher leaves it to a higher-priority machine that waits on
-- another instance and can take it. Operational state that each instance
-- rewrites while it runs (not a read model, not in the log): UNLOGGED, so
-- a crash empties it and replicas do not carry it.
CREATE UNLOGGED TABLE dispatch_waiters (
    instance_id UUID    NOT NULL,
    waiter      TEXT    NOT NULL,
    runner_id   UUID    NOT NULL,
    priority    INTEGER NOT NULL,
    tags        TEXT[]  NOT NULL,
    kind        TEXT    NOT NULL,
    PRIMARY KEY (instance_id, waiter)
);
