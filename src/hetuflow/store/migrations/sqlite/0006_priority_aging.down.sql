DROP INDEX tasks_claim;
CREATE INDEX tasks_claim ON tasks (priority DESC, created_at, id) WHERE status = 'pending';
ALTER TABLE tasks DROP COLUMN claim_key;
