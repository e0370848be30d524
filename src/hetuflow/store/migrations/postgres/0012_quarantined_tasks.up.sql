-- Poison tasks (docs/guarantees.md): a task whose attempts were lost with their agent
-- [scheduler] max_agent_crashes_per_task times ends 'quarantined' instead of going back to
-- pending.
ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check CHECK (status IN (
    'pending', 'dispatched', 'running', 'cancelling',
    'succeeded', 'failed', 'timed_out', 'cancelled', 'waiting', 'skipped', 'quarantined'));
