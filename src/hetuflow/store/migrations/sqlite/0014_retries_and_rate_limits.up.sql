-- Retries as users expect (docs/guarantees.md#retries): jitter on the backoff (a fraction
-- 0..1 of the delay, drawn per retry) and the kinds of failure that are retried at all
-- (a JSON array of text, as required_capabilities).
ALTER TABLE tasks ADD COLUMN backoff_jitter REAL NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN retry_on TEXT NOT NULL DEFAULT '["failed","timed_out","agent_lost"]';
ALTER TABLE cron_jobs ADD COLUMN backoff_jitter REAL NOT NULL DEFAULT 0;
ALTER TABLE cron_jobs ADD COLUMN retry_on TEXT NOT NULL DEFAULT '["failed","timed_out","agent_lost"]';
-- The dead-letter view (GET /api/tasks?final=true) lists failed tasks that no task retries
-- or replays yet: a probe of replay_of per failed task.
CREATE INDEX tasks_replay_of ON tasks (replay_of) WHERE replay_of IS NOT NULL;
-- Rate limits (docs/guarantees.md#rate-limits): at most max_units units dispatched in any
-- window of per_seconds. Each dispatch of a task that names the limit is recorded as a
-- spend; a claim counts the spends of the window that ends at its instant.
CREATE TABLE rate_limits (
    name TEXT PRIMARY KEY,
    max_units INTEGER NOT NULL CHECK (max_units > 0),
    per_seconds REAL NOT NULL CHECK (per_seconds > 0),
    created_at INTEGER NOT NULL
);
CREATE TABLE rate_limit_spends (
    name TEXT NOT NULL REFERENCES rate_limits (name) ON DELETE CASCADE,
    at INTEGER NOT NULL,
    units INTEGER NOT NULL
);
CREATE INDEX rate_limit_spends_window ON rate_limit_spends (name, at);
-- What each task spends (the foreign key refuses an unknown name at create; deleting a
-- limit frees its tasks). tasks.rate_limits repeats it as the task shows it (NULL: none).
CREATE TABLE task_rate_limits (
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    name TEXT NOT NULL REFERENCES rate_limits (name) ON DELETE CASCADE,
    units INTEGER NOT NULL CHECK (units > 0),
    PRIMARY KEY (task_id, name)
);
CREATE INDEX task_rate_limits_name ON task_rate_limits (name);
ALTER TABLE tasks ADD COLUMN rate_limits TEXT;
