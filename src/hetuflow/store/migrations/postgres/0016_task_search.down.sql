-- The pg_trgm extension stays: other objects may use it.
DROP INDEX IF EXISTS tasks_search;
