-- Cheaper writes on the hot path. Only tasks a cron job fired are looked up by cron job:
-- other tasks need no entry. (SQLite also replaces its partial index on active tasks; here
-- tasks_active_agent stays: PostgreSQL adds an entry only when the new row version matches.)
DROP INDEX tasks_cron_job_created;
CREATE INDEX tasks_cron_job_created ON tasks (cron_job_id, created_at DESC)
    WHERE cron_job_id IS NOT NULL;
