ALTER TABLE tasks DROP COLUMN rate_limits;
DROP TABLE task_rate_limits;
DROP TABLE rate_limit_spends;
DROP TABLE rate_limits;
DROP INDEX tasks_replay_of;
ALTER TABLE cron_jobs DROP COLUMN retry_on;
ALTER TABLE cron_jobs DROP COLUMN backoff_jitter;
ALTER TABLE tasks DROP COLUMN retry_on;
ALTER TABLE tasks DROP COLUMN backoff_jitter;
