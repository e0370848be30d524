-- Fan-out from data (docs/workflows.md, Fan-out): a step that maps over a parent's result
-- (map_over, the parent's step name) runs as one child step per item once that parent
-- succeeds. A child step has map_index (its item's position) and an edge to its mapped step;
-- the mapped step records map_count once it has fanned out, and waits for its children.
ALTER TABLE workflow_steps ADD COLUMN map_over TEXT;
ALTER TABLE workflow_steps ADD COLUMN map_index INTEGER;
ALTER TABLE workflow_steps ADD COLUMN map_count INTEGER;

-- Cron jobs that start workflows (docs/cron.md): the workflow document (as POST
-- /api/workflows takes it) instead of a task spec, and each tick's workflow.
ALTER TABLE cron_jobs ADD COLUMN workflow TEXT;
ALTER TABLE cron_ticks ADD COLUMN workflow_id TEXT;
