-- The freshest contact of each runner machine, shared by all instances
-- (issue 13): the log records a contact at most every
-- runners.contact_record_interval; in between, every instance writes the
-- contacts it saw here, in one batch a second. Operational state, not a
-- read model (not rebuilt from the log); a crash loses at most a second.
CREATE TABLE machine_contacts (
    machine_id   UUID PRIMARY KEY,
    contacted_at TIMESTAMPTZ NOT NULL
);

-- When a job's progress was last recorded in the log, by any instance:
-- progress reports come with every heartbeat, through any instance, and
-- are recorded at most every runners.progress_record_interval per job.
CREATE TABLE progress_recordings (
    job_id      UUID PRIMARY KEY,
    recorded_at TIMESTAMPTZ NOT NULL
);
