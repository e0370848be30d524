-- hetuflow schema, PostgreSQL dialect.
-- Priority is Priority.rank (0 low .. 3 critical) so claim order is an index scan.
-- Capability and task-type lists are text[] so "required <@ offered" is one operator.

CREATE TABLE agents (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    capabilities text[] NOT NULL DEFAULT '{}',
    supported_task_types text[] NOT NULL DEFAULT '{}',
    max_concurrent_tasks integer NOT NULL DEFAULT 1 CHECK (max_concurrent_tasks >= 0),
    enabled boolean NOT NULL DEFAULT true,
    status text NOT NULL DEFAULT 'offline'
        CHECK (status IN ('online', 'offline', 'draining')),
    node_id text,
    session bigint NOT NULL DEFAULT 0,
    last_heartbeat_at timestamptz,
    connected_at timestamptz,
    created_at timestamptz NOT NULL
);

CREATE INDEX agents_status ON agents (status);

CREATE TABLE cron_jobs (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    cron_expression text NOT NULL,
    timezone text NOT NULL DEFAULT 'UTC',
    task_type text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}',
    priority smallint NOT NULL DEFAULT 1,
    required_capabilities text[] NOT NULL DEFAULT '{}',
    timeout_seconds double precision,
    max_retries integer NOT NULL DEFAULT 0,
    backoff_seconds double precision NOT NULL DEFAULT 60,
    backoff_factor double precision NOT NULL DEFAULT 2,
    max_backoff_seconds double precision NOT NULL DEFAULT 3600,
    enabled boolean NOT NULL DEFAULT true,
    misfire_policy text NOT NULL DEFAULT 'run_once',
    catch_up_limit integer NOT NULL DEFAULT 1,
    overlap_policy text NOT NULL DEFAULT 'allow',
    start_deadline_seconds double precision,
    next_fire_at timestamptz,
    last_fire_at timestamptz,
    last_task_id uuid,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE INDEX cron_jobs_due ON cron_jobs (next_fire_at) WHERE enabled;

CREATE TABLE tasks (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    task_type text NOT NULL,
    priority smallint NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}',
    required_capabilities text[] NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'pending' CHECK (status IN (
        'pending', 'dispatched', 'running', 'cancelling',
        'succeeded', 'failed', 'timed_out', 'cancelled')),
    scheduled_at timestamptz NOT NULL,
    timeout_seconds double precision,
    max_retries integer NOT NULL DEFAULT 0,
    backoff_seconds double precision NOT NULL DEFAULT 60,
    backoff_factor double precision NOT NULL DEFAULT 2,
    max_backoff_seconds double precision NOT NULL DEFAULT 3600,
    idempotency_key text,
    result jsonb,
    error text,
    attempts integer NOT NULL DEFAULT 0,
    failures integer NOT NULL DEFAULT 0,
    agent_id uuid REFERENCES agents (id) ON DELETE SET NULL,
    cron_job_id uuid REFERENCES cron_jobs (id) ON DELETE SET NULL,
    cron_tick_at timestamptz,
    progress double precision,
    log_seq bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz
);

CREATE INDEX tasks_claim ON tasks (priority DESC, created_at, id) WHERE status = 'pending';
CREATE INDEX tasks_scheduled ON tasks (scheduled_at) WHERE status = 'pending';
CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_active_agent ON tasks (agent_id)
    WHERE status IN ('cancelling', 'dispatched', 'running');
CREATE INDEX tasks_created ON tasks (created_at DESC, id DESC);
CREATE INDEX tasks_status_created ON tasks (status, created_at DESC);
CREATE INDEX tasks_type_created ON tasks (task_type, created_at DESC);
CREATE INDEX tasks_agent_created ON tasks (agent_id, created_at DESC);
CREATE INDEX tasks_cron_job_created ON tasks (cron_job_id, created_at DESC);
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE attempts (
    task_id uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    number integer NOT NULL,
    agent_id uuid REFERENCES agents (id) ON DELETE SET NULL,
    dispatched_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    outcome text CHECK (outcome IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'lost')),
    error text,
    PRIMARY KEY (task_id, number)
);

CREATE INDEX attempts_agent ON attempts (agent_id);

CREATE TABLE task_logs (
    task_id uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    attempt integer NOT NULL,
    stream text NOT NULL,
    line text NOT NULL,
    at timestamptz NOT NULL,
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE cron_ticks (
    cron_job_id uuid NOT NULL REFERENCES cron_jobs (id) ON DELETE CASCADE,
    tick_at timestamptz NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('fired', 'skipped')),
    task_id uuid,
    reason text,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (cron_job_id, tick_at)
);
