DROP INDEX tasks_concurrency_open;
ALTER TABLE tasks DROP COLUMN max_concurrent_per_key;
ALTER TABLE tasks DROP COLUMN concurrency_key;
