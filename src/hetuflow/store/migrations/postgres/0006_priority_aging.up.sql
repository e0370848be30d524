-- Priority aging (docs/guarantees.md, "Ordering and aging"). The claim orders pending tasks by
-- claim_key, a virtual deadline in microseconds since the Unix epoch, computed when a task is
-- inserted: when it became due (its scheduled_at, never before its created_at) minus its
-- priority rank times [scheduler] priority_aging_seconds. One column, one partial index: the
-- claim stays one index scan. Tasks that can still become pending get the default step
-- (60 s) here; finished tasks never do and keep 0.
ALTER TABLE tasks ADD COLUMN claim_key bigint NOT NULL DEFAULT 0;
UPDATE tasks
SET claim_key = (extract(epoch FROM greatest(scheduled_at, created_at)) * 1000000)::bigint
                - priority * 60000000
WHERE status IN ('pending', 'dispatched', 'running', 'cancelling');
ALTER TABLE tasks ALTER COLUMN claim_key DROP DEFAULT;
DROP INDEX tasks_claim;
CREATE INDEX tasks_claim ON tasks (claim_key, id) WHERE status = 'pending';
