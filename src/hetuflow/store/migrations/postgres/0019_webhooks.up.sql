-- Outgoing webhooks (docs/webhooks.md). A task (or every task of a cron job) may name a
-- webhook_url; when the task reaches a final status, the trigger below writes one delivery row
-- into the outbox in the transaction that settles it, whichever path settles it (a result, a
-- cancel, a lost agent, a workflow or broadcast settle...): no delivery is lost when a node
-- crashes, and none is written twice (only the change into a final status fires it; a final
-- status never changes, except when a workflow retry runs the step again, which then ends
-- again and is reported again). The row carries the task's final state, so what is delivered
-- is what was settled. The delivery service claims due rows (FOR UPDATE SKIP LOCKED, a lease
-- in next_attempt_at fenced by claim_token) and POSTs them. pg_notify wakes it at commit.
ALTER TABLE tasks ADD COLUMN webhook_url text;
ALTER TABLE cron_jobs ADD COLUMN webhook_url text;

CREATE TABLE webhook_deliveries (
    id uuid PRIMARY KEY,
    task_id uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    url text NOT NULL,
    name text NOT NULL,
    task_type text NOT NULL,
    status text NOT NULL,
    result jsonb,
    error text,
    task_attempts integer NOT NULL,
    cron_job_id uuid,
    finished_at timestamptz NOT NULL,
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'given_up')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    claim_token uuid,
    last_attempt_at timestamptz,
    last_status_code integer,
    last_error text,
    delivered_at timestamptz,
    created_at timestamptz NOT NULL
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, id)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (task_id);

CREATE FUNCTION hetuflow_task_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (
        id, task_id, url, name, task_type, status, result, error, task_attempts, cron_job_id,
        finished_at, next_attempt_at, created_at)
    VALUES (
        gen_random_uuid(), NEW.id, NEW.webhook_url, NEW.name, NEW.task_type, NEW.status,
        NEW.result, NEW.error, NEW.attempts, NEW.cron_job_id,
        coalesce(NEW.finished_at, NEW.updated_at), NEW.updated_at, NEW.updated_at);
    PERFORM pg_notify('hetuflow_webhooks_due', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_webhook AFTER UPDATE OF status ON tasks FOR EACH ROW
    WHEN (NEW.webhook_url IS NOT NULL
          AND NEW.status IN ('cancelled', 'failed', 'quarantined', 'skipped', 'succeeded',
                             'timed_out')
          AND OLD.status NOT IN ('cancelled', 'failed', 'quarantined', 'skipped', 'succeeded',
                                 'timed_out'))
    EXECUTE FUNCTION hetuflow_task_webhook();
