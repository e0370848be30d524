DROP INDEX tasks_cron_job_created;
CREATE INDEX tasks_cron_job_created ON tasks (cron_job_id, created_at DESC);
