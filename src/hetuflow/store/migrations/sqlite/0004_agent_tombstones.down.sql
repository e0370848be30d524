-- Tombstones become real deletes again (their tasks' and attempts' agent_id go NULL).
DELETE FROM agents WHERE deleted_at IS NOT NULL;
ALTER TABLE agents DROP COLUMN deleted_at;
