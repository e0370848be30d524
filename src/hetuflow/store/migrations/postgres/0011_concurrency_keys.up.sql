-- Concurrency keys (docs/guarantees.md): at most max_concurrent_per_key active tasks with one
-- concurrency_key. NULL max_concurrent_per_key: the [concurrency] limit of the task type, else 1.
ALTER TABLE tasks ADD COLUMN concurrency_key TEXT;
ALTER TABLE tasks ADD COLUMN max_concurrent_per_key INTEGER;
-- The claim counts the active tasks of each key it meets, a create with a cancel strategy
-- the unfinished ones; unkeyed and finished tasks are not in it.
CREATE INDEX tasks_concurrency_open ON tasks (concurrency_key, status)
    WHERE concurrency_key IS NOT NULL
      AND status IN ('cancelling', 'dispatched', 'pending', 'running');
-- A cron job's key and limit, carried by every task it creates.
ALTER TABLE cron_jobs ADD COLUMN concurrency_key TEXT;
ALTER TABLE cron_jobs ADD COLUMN max_concurrent_per_key INTEGER;
