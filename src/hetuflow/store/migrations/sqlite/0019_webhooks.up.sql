-- Outgoing webhooks (docs/webhooks.md). A task (or every task of a cron job) may name a
-- webhook_url; when the task reaches a final status, the trigger below writes one delivery row
-- into the outbox in the transaction that settles it, whichever path settles it: no delivery
-- is lost when the server crashes, and none is written twice (only the change into a final
-- status fires it). The row carries the task's final state. The delivery service claims due
-- rows (a lease in next_attempt_at fenced by claim_token) and POSTs them.
ALTER TABLE tasks ADD COLUMN webhook_url TEXT;
ALTER TABLE cron_jobs ADD COLUMN webhook_url TEXT;

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    name TEXT NOT NULL,
    task_type TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    task_attempts INTEGER NOT NULL,
    cron_job_id TEXT,
    finished_at INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'given_up')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claim_token TEXT,
    last_attempt_at INTEGER,
    last_status_code INTEGER,
    last_error TEXT,
    delivered_at INTEGER,
    created_at INTEGER NOT NULL
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, id)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (task_id);

-- The id: a random UUID (version 4) as text.
CREATE TRIGGER tasks_webhook AFTER UPDATE OF status ON tasks
    WHEN NEW.webhook_url IS NOT NULL
         AND NEW.status IN ('cancelled', 'failed', 'quarantined', 'skipped', 'succeeded',
                            'timed_out')
         AND OLD.status NOT IN ('cancelled', 'failed', 'quarantined', 'skipped', 'succeeded',
                                'timed_out')
BEGIN
    INSERT INTO webhook_deliveries (
        id, task_id, url, name, task_type, status, result, error, task_attempts, cron_job_id,
        finished_at, next_attempt_at, created_at)
    VALUES (
        lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4'
            || substr(lower(hex(randomblob(2))), 2) || '-'
            || substr('89ab', 1 + (abs(random()) % 4), 1)
            || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6))),
        NEW.id, NEW.webhook_url, NEW.name, NEW.task_type, NEW.status, NEW.result, NEW.error,
        NEW.attempts, NEW.cron_job_id, coalesce(NEW.finished_at, NEW.updated_at),
        NEW.updated_at, NEW.updated_at);
END;
