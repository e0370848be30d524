-- SQLite only (its partial index on active tasks made status changes dear). PostgreSQL keeps
-- tasks_active_agent: it adds an index entry only when the new row version matches.
SELECT 1;
