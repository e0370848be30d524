-- Search inside tasks (the task list's q=, docs/api.md): a trigram GIN index over the name,
-- task type, payload, result and error as one text, so an ILIKE '%text%' of 3 characters or
-- more reads the index instead of every row. The expression must stay the one the store
-- queries (_pg_tasks.SEARCH_TEXT).
-- pg_trgm ships with PostgreSQL (Debian: the postgresql-<version> package; elsewhere often
-- "postgresql-contrib") and is a trusted extension: a role with CREATE on the database may
-- add it. Where it cannot be created, the migration warns and goes on without the index:
-- search still answers, by reading every task (docs/deploy.md).
DO $$
DECLARE
    trgm_schema text;
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pg_trgm is not available (%): task search works without its index, '
            'by reading every task', SQLERRM;
        RETURN;
    END;
    SELECT extnamespace::regnamespace::text INTO trgm_schema
    FROM pg_extension WHERE extname = 'pg_trgm';
    EXECUTE format(
        'CREATE INDEX tasks_search ON tasks USING gin (('
        'name || '' '' || task_type || '' '' || payload::text || '' '' '
        '|| coalesce(result::text, '''') || '' '' || coalesce(error, '''')'
        ') %s.gin_trgm_ops)', trgm_schema);
END
$$;
