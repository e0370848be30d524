-- Quarantined tasks keep a status the narrower constraint allows (their error says why).
UPDATE tasks SET status = 'failed' WHERE status = 'quarantined';
ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check CHECK (status IN (
    'pending', 'dispatched', 'running', 'cancelling',
    'succeeded', 'failed', 'timed_out', 'cancelled', 'waiting', 'skipped'));
