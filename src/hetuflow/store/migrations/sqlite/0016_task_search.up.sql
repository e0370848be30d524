-- Search inside tasks (the task list's q=, docs/api.md): a trigram full-text index over the
-- name, task type, payload, result and error, so a substring of 3 characters or more is found
-- without reading every row. External content: the text stays in tasks, only the index is
-- added; its rowid is the task's rowid. Triggers keep it in step with every insert, update of
-- those columns and delete (a finish writes result or error: one delete and one insert here).
-- If it ever drifts (a hand edit with the triggers dropped), rebuild it:
--   INSERT INTO tasks_search (tasks_search) VALUES ('rebuild');
CREATE VIRTUAL TABLE tasks_search USING fts5 (
    name, task_type, payload, result, error,
    content = 'tasks', content_rowid = 'rowid', tokenize = 'trigram'
);
INSERT INTO tasks_search (tasks_search) VALUES ('rebuild');
CREATE TRIGGER tasks_search_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO tasks_search (rowid, name, task_type, payload, result, error)
    VALUES (new.rowid, new.name, new.task_type, new.payload, new.result, new.error);
END;
CREATE TRIGGER tasks_search_delete AFTER DELETE ON tasks BEGIN
    INSERT INTO tasks_search (tasks_search, rowid, name, task_type, payload, result, error)
    VALUES ('delete', old.rowid, old.name, old.task_type, old.payload, old.result, old.error);
END;
CREATE TRIGGER tasks_search_update AFTER UPDATE OF name, task_type, payload, result, error
ON tasks
WHEN old.name IS NOT new.name OR old.task_type IS NOT new.task_type
  OR old.payload IS NOT new.payload OR old.result IS NOT new.result
  OR old.error IS NOT new.error
BEGIN
    INSERT INTO tasks_search (tasks_search, rowid, name, task_type, payload, result, error)
    VALUES ('delete', old.rowid, old.name, old.task_type, old.payload, old.result, old.error);
    INSERT INTO tasks_search (rowid, name, task_type, payload, result, error)
    VALUES (new.rowid, new.name, new.task_type, new.payload, new.result, new.error);
END;
