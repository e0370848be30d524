-- Retries as users expect (docs/guarantees.md#retries): jitter on the backoff (a fraction
-- 0..1 of the delay, drawn per retry) and the kinds of failure that are retried at all.
ALTER TABLE tasks ADD COLUMN backoff_jitter double precision NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN retry_on text[] NOT NULL DEFAULT '{failed,timed_out,agent_lost}';
ALTER TABLE cron_jobs ADD COLUMN backoff_jitter double precision NOT NULL DEFAULT 0;
ALTER TABLE cron_jobs ADD COLUMN retry_on text[] NOT NULL DEFAULT '{failed,timed_out,agent_lost}';
-- The dead-letter view (GET /api/tasks?final=true) lists failed tasks that no task retries
-- or replays yet: a probe of replay_of per failed task.
CREATE INDEX tasks_replay_of ON tasks (replay_of) WHERE replay_of IS NOT NULL;
