-- A cron job's concurrency strategy (docs/cron.md): given to every task it creates, as a
-- task's concurrency_strategy (queue, cancel_newest, cancel_in_progress).
ALTER TABLE cron_jobs ADD COLUMN concurrency_strategy TEXT NOT NULL DEFAULT 'queue';
