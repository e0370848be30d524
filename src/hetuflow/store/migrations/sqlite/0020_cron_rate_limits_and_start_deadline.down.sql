DROP INDEX tasks_start_deadline;
ALTER TABLE tasks DROP COLUMN start_deadline_at;
DROP TABLE cron_job_rate_limits;
ALTER TABLE cron_jobs DROP COLUMN rate_limits;
