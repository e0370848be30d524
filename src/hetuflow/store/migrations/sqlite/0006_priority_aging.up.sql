-- Priority aging (docs/guarantees.md, "Ordering and aging"). The claim orders pending tasks by
-- claim_key, a virtual deadline in microseconds since the Unix epoch, computed when a task is
-- inserted: when it became due (its scheduled_at, never before its created_at) minus its
-- priority rank times [scheduler] priority_aging_seconds. One column, one partial index: the
-- claim stays one index scan. Tasks that can still become pending get the default step
-- (60 s) here; finished tasks never do and keep 0. (SQLite cannot drop the default later;
-- every insert names the column.)
ALTER TABLE tasks ADD COLUMN claim_key INTEGER NOT NULL DEFAULT 0;
UPDATE tasks
SET claim_key = max(scheduled_at, created_at) - priority * 60000000
WHERE status IN ('pending', 'dispatched', 'running', 'cancelling');
DROP INDEX tasks_claim;
CREATE INDEX tasks_claim ON tasks (claim_key, id) WHERE status = 'pending';
