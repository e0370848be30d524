DROP INDEX tasks_pinned;
DROP INDEX tasks_broadcast_of;
ALTER TABLE tasks DROP COLUMN broadcast_policy;
ALTER TABLE tasks DROP COLUMN broadcast_of;
ALTER TABLE tasks DROP COLUMN pinned_agent_id;
