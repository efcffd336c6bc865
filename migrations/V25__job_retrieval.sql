-- When the machine a job was assigned to fetched it (JobRetrieved,
-- Project-W's retrieve_job_info; issue 24, item 12): a job cancelled
-- before then ends at once, one not fetched in time goes back to the
-- queue, and only a machine working on its job is told to abort it.
ALTER TABLE jobs ADD COLUMN retrieved_at TIMESTAMPTZ;
CREATE INDEX jobs_assigned_unretrieved ON jobs (assigned_at)
    WHERE status = 'assigned' AND retrieved_at IS NULL AND kind = 'project_w';
