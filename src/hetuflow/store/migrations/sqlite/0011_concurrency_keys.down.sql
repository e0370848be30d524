ALTER TABLE cron_jobs DROP COLUMN max_concurrent_per_key;
ALTER TABLE cron_jobs DROP COLUMN concurrency_key;
DROP INDEX tasks_concurrency_open;
ALTER TABLE tasks DROP COLUMN max_concurrent_per_key;
ALTER TABLE tasks DROP COLUMN concurrency_key;
