-- Replays (POST /api/tasks/{id}/replay): a replayed task names the finished task it copies.
-- No foreign key: the cleanup loop deletes old finished tasks, and a replay outlives its
-- original (the link then names a task that is gone, which GET answers with 404).
ALTER TABLE tasks ADD COLUMN replay_of TEXT;
