-- Deleting an agent leaves a tombstone: the row stays (deleted_at set, its name freed), so
-- nothing that still names the agent (a claim, a task's history, a reconnect) meets a missing
-- row, and a reconnect with the deleted id is refused (close code 4010) instead of coming back.
ALTER TABLE agents ADD COLUMN deleted_at timestamptz;
