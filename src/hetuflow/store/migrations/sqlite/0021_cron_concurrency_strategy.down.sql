ALTER TABLE cron_jobs DROP COLUMN concurrency_strategy;
