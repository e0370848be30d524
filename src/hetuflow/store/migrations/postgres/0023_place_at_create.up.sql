-- A create whose new tasks free slots can take at once is one statement when no stored task
-- would go before them (store/_pg_tasks.py, place_at_create): this gate, then the insert.
-- The gate takes the claim lock when there is a global limit, as every claim does, and says
-- whether the new tasks may be placed without a claim round: the active tasks plus the ones
-- being placed stay within the limit, and no pending task of the offered types is due (it
-- would be claimed first: the caller then makes the whole claim instead).
-- VOLATILE: each query here reads a fresh snapshot, taken after the lock, so the count sees
-- every claim committed before it (a query of the calling statement would not).
CREATE FUNCTION hetuflow_place_at_create(
    claim_lock bigint, global_limit int, placed int, task_types text[], horizon timestamptz
) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF placed = 0 THEN
        RETURN true;
    END IF;
    IF global_limit IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(claim_lock);
        -- The active statuses as ACTIVE_SQL (store/_rules.py) writes them.
        IF (SELECT count(*) FROM tasks WHERE status IN ('cancelling', 'dispatched', 'running'))
                + placed > global_limit THEN
            RETURN false;
        END IF;
    END IF;
    RETURN NOT EXISTS (
        SELECT 1 FROM tasks
        WHERE status = 'pending' AND task_type = ANY (task_types) AND scheduled_at <= horizon);
END
$$;
