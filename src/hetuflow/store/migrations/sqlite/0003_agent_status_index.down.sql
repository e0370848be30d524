DROP INDEX tasks_agent_status;
CREATE INDEX tasks_active_agent ON tasks (agent_id)
    WHERE status IN ('cancelling', 'dispatched', 'running');
