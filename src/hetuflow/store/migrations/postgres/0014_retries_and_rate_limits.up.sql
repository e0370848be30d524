-- Retries as users expect (docs/guarantees.md#retries): jitter on the backoff (a fraction
-- 0..1 of the delay, drawn per retry) and the kinds of failure that are retried at all.
ALTER TABLE tasks ADD COLUMN backoff_jitter double precision NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN retry_on text[] NOT NULL DEFAULT '{failed,timed_out,agent_lost}';
ALTER TABLE cron_jobs ADD COLUMN backoff_jitter double precision NOT NULL DEFAULT 0;
ALTER TABLE cron_jobs ADD COLUMN retry_on text[] NOT NULL DEFAULT '{failed,timed_out,agent_lost}';
-- The dead-letter view (GET /api/tasks?final=true) lists failed tasks that no task retries
-- or replays yet: a probe of replay_of per failed task.
CREATE INDEX tasks_replay_of ON tasks (replay_of) WHERE replay_of IS NOT NULL;
-- Rate limits (docs/guarantees.md#rate-limits): at most max_units units dispatched in any
-- window of per_seconds, across all nodes. Each dispatch of a task that names the limit is
-- recorded as a spend; a claim counts the spends of the window that ends at its instant.
CREATE TABLE rate_limits (
    name text PRIMARY KEY,
    max_units integer NOT NULL CHECK (max_units > 0),
    per_seconds double precision NOT NULL CHECK (per_seconds > 0),
    created_at timestamptz NOT NULL
);
CREATE TABLE rate_limit_spends (
    name text NOT NULL REFERENCES rate_limits (name) ON DELETE CASCADE,
    at timestamptz NOT NULL,
    units integer NOT NULL
);
CREATE INDEX rate_limit_spends_window ON rate_limit_spends (name, at);
-- What each task spends (the foreign key refuses an unknown name at create; deleting a
-- limit frees its tasks). tasks.rate_limits repeats it as the task shows it (NULL: none).
CREATE TABLE task_rate_limits (
    task_id uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    name text NOT NULL REFERENCES rate_limits (name) ON DELETE CASCADE,
    units integer NOT NULL CHECK (units > 0),
    PRIMARY KEY (task_id, name)
);
CREATE INDEX task_rate_limits_name ON task_rate_limits (name);
ALTER TABLE tasks ADD COLUMN rate_limits jsonb;
