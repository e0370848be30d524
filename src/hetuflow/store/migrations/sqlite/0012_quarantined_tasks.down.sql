-- Quarantined tasks keep a status the narrower constraint allows (their error says why).
UPDATE tasks SET status = 'failed' WHERE status = 'quarantined';
PRAGMA writable_schema = ON;
UPDATE sqlite_master
SET sql = replace(sql, '''waiting'', ''skipped'', ''quarantined''))',
                  '''waiting'', ''skipped''))')
WHERE type = 'table' AND name = 'tasks';
PRAGMA writable_schema = RESET;
PRAGMA writable_schema = OFF;
