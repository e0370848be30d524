DROP TABLE workflow_edges;
DROP TABLE workflow_steps;
DROP TABLE workflows;
ALTER TABLE tasks DROP COLUMN parents;
-- Steps that never ran keep a status the narrower constraint allows.
UPDATE tasks SET status = 'cancelled' WHERE status IN ('waiting', 'skipped');
ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check CHECK (status IN (
    'pending', 'dispatched', 'running', 'cancelling',
    'succeeded', 'failed', 'timed_out', 'cancelled'));
