DROP INDEX tasks_replay_of;
ALTER TABLE cron_jobs DROP COLUMN retry_on;
ALTER TABLE cron_jobs DROP COLUMN backoff_jitter;
ALTER TABLE tasks DROP COLUMN retry_on;
ALTER TABLE tasks DROP COLUMN backoff_jitter;
