DROP INDEX workflow_edges_child;
DROP TABLE workflow_edges;
DROP TABLE workflow_steps;
DROP INDEX workflows_created;
DROP TABLE workflows;
ALTER TABLE tasks DROP COLUMN parents;
-- Steps that never ran keep a status the narrower constraint allows.
UPDATE tasks SET status = 'cancelled' WHERE status IN ('waiting', 'skipped');
PRAGMA writable_schema = ON;
UPDATE sqlite_master
SET sql = replace(sql, '''succeeded'', ''failed'', ''timed_out'', ''cancelled'', ''waiting'', ''skipped''))',
                  '''succeeded'', ''failed'', ''timed_out'', ''cancelled''))')
WHERE type = 'table' AND name = 'tasks';
PRAGMA writable_schema = RESET;
PRAGMA writable_schema = OFF;
