-- Bounded uploads (issue 24, items 2 and 3): when a file's writer last
-- wrote (uploads in progress, and abandoned ones, are told apart by it),
-- and for a job's result, the job and the machine that stored it: a result
-- may only point at files stored for its own job by its own machine.
ALTER TABLE files ADD COLUMN last_written_at TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE files ADD COLUMN job_id UUID;
ALTER TABLE files ADD COLUMN machine_id UUID;
