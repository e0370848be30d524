DROP INDEX tasks_cron_job_created;
CREATE INDEX tasks_cron_job_created ON tasks (cron_job_id, created_at DESC);
DROP INDEX tasks_agent_status;
CREATE INDEX tasks_active_agent ON tasks (agent_id)
    WHERE status IN ('cancelling', 'dispatched', 'running');
