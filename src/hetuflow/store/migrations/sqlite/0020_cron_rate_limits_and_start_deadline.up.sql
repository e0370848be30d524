-- Rate limits on cron jobs (docs/cron.md): a job names the rate limits every task it creates
-- spends from. cron_jobs.rate_limits holds them as the job shows them (NULL: none);
-- cron_job_rate_limits links them to the limits, so that deleting a limit takes it out of
-- the jobs that name it.
ALTER TABLE cron_jobs ADD COLUMN rate_limits TEXT;
CREATE TABLE cron_job_rate_limits (
    cron_job_id TEXT NOT NULL REFERENCES cron_jobs (id) ON DELETE CASCADE,
    name TEXT NOT NULL REFERENCES rate_limits (name) ON DELETE CASCADE,
    units INTEGER NOT NULL CHECK (units > 0),
    PRIMARY KEY (cron_job_id, name)
);
CREATE INDEX cron_job_rate_limits_name ON cron_job_rate_limits (name);
-- A broadcast's start deadline (docs/guarantees.md, Broadcast): a child still pending at
-- this instant ends failed (its agent did not start it in time).
ALTER TABLE tasks ADD COLUMN start_deadline_at INTEGER;
CREATE INDEX tasks_start_deadline ON tasks (start_deadline_at)
    WHERE start_deadline_at IS NOT NULL AND status = 'pending';
