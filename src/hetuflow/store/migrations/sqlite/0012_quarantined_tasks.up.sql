-- Poison tasks (docs/guarantees.md): a task whose attempts were lost with their agent
-- [scheduler] max_agent_crashes_per_task times ends 'quarantined' instead of going back to
-- pending. The CHECK constraint is widened in place, as in 0007 (no row is rewritten).
PRAGMA writable_schema = ON;
UPDATE sqlite_master
SET sql = replace(sql, '''waiting'', ''skipped''))',
                  '''waiting'', ''skipped'', ''quarantined''))')
WHERE type = 'table' AND name = 'tasks';
PRAGMA writable_schema = RESET;
PRAGMA writable_schema = OFF;
