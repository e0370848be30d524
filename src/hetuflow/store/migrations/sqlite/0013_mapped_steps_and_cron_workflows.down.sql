ALTER TABLE cron_ticks DROP COLUMN workflow_id;
ALTER TABLE cron_jobs DROP COLUMN workflow;
ALTER TABLE workflow_steps DROP COLUMN map_count;
ALTER TABLE workflow_steps DROP COLUMN map_index;
ALTER TABLE workflow_steps DROP COLUMN map_over;
