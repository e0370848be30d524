ALTER TABLE workflow_steps DROP COLUMN map_count;
ALTER TABLE workflow_steps DROP COLUMN map_index;
ALTER TABLE workflow_steps DROP COLUMN map_over;
