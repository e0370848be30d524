-- Search inside tasks (the task list's q=, docs/api.md): a trigram full-text index over the
-- name, task type, payload, result and error, so a substring of 3 characters or more is found
-- without reading every row. Its rowid is the task's rowid.
--
-- Deferred: writing FTS5 segments in every transaction that touches tasks doubled the cost of
-- a one-task create (652 -> 1,491 us, docs/benchmarks.md). So the triggers on tasks only note
-- the changed rowid in tasks_search_pending (on insert, on a change of one of the five columns
-- and on delete), and the SQLite store's indexer (``_sqlite_search``, every second, on the
-- writer thread) moves those rows into tasks_search in batches: their old index rows out, the
-- current text of those that still exist in, the batch out of tasks_search_pending. A search
-- reads the index for the tasks that are not pending and LIKE for those that are, so it is
-- exact at every moment (``_sqlite_tasks._text_clause``).
--
-- A regular FTS5 table (its own copy of the text), not external content: the indexer deletes
-- a task's index rows by rowid, after the task's text has changed or the task is gone, which
-- an external-content table can only do given the old values.
-- The existing tasks are indexed here, at once (the same cost as building the index in one
-- go: ~45 s at 1 M tasks), so that searches are fast from the first start after the upgrade.
-- If the index ever drifts (a hand edit with the triggers dropped), mark every task pending:
--   INSERT OR IGNORE INTO tasks_search_pending (task_rowid) SELECT rowid FROM tasks;
CREATE VIRTUAL TABLE tasks_search USING fts5 (
    name, task_type, payload, result, error, tokenize = 'trigram'
);
INSERT INTO tasks_search (rowid, name, task_type, payload, result, error)
SELECT rowid, name, task_type, payload, result, error FROM tasks;
CREATE TABLE tasks_search_pending (task_rowid INTEGER PRIMARY KEY);
CREATE TRIGGER tasks_search_insert AFTER INSERT ON tasks BEGIN
    INSERT OR IGNORE INTO tasks_search_pending (task_rowid) VALUES (new.rowid);
END;
CREATE TRIGGER tasks_search_delete AFTER DELETE ON tasks BEGIN
    INSERT OR IGNORE INTO tasks_search_pending (task_rowid) VALUES (old.rowid);
END;
CREATE TRIGGER tasks_search_update AFTER UPDATE OF name, task_type, payload, result, error
ON tasks
WHEN old.name IS NOT new.name OR old.task_type IS NOT new.task_type
  OR old.payload IS NOT new.payload OR old.result IS NOT new.result
  OR old.error IS NOT new.error
BEGIN
    INSERT OR IGNORE INTO tasks_search_pending (task_rowid) VALUES (new.rowid);
END;
