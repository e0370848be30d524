-- hetuflow schema, SQLite dialect.
-- Timestamps are INTEGER microseconds since the Unix epoch (UTC); JSON and UUIDs are TEXT.
-- Priority is Priority.rank (0 low .. 3 critical) so claim order is an index scan.

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    capabilities TEXT NOT NULL DEFAULT '[]',
    supported_task_types TEXT NOT NULL DEFAULT '[]',
    max_concurrent_tasks INTEGER NOT NULL DEFAULT 1 CHECK (max_concurrent_tasks >= 0),
    enabled INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL DEFAULT 'offline'
        CHECK (status IN ('online', 'offline', 'draining')),
    node_id TEXT,
    session INTEGER NOT NULL DEFAULT 0,
    last_heartbeat_at INTEGER,
    connected_at INTEGER,
    created_at INTEGER NOT NULL
);

CREATE INDEX agents_status ON agents (status);

CREATE TABLE cron_jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    cron_expression TEXT NOT NULL,
    timezone TEXT NOT NULL DEFAULT 'UTC',
    task_type TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}',
    priority INTEGER NOT NULL DEFAULT 1,
    required_capabilities TEXT NOT NULL DEFAULT '[]',
    timeout_seconds REAL,
    max_retries INTEGER NOT NULL DEFAULT 0,
    backoff_seconds REAL NOT NULL DEFAULT 60,
    backoff_factor REAL NOT NULL DEFAULT 2,
    max_backoff_seconds REAL NOT NULL DEFAULT 3600,
    enabled INTEGER NOT NULL DEFAULT 1,
    misfire_policy TEXT NOT NULL DEFAULT 'run_once',
    catch_up_limit INTEGER NOT NULL DEFAULT 1,
    overlap_policy TEXT NOT NULL DEFAULT 'allow',
    start_deadline_seconds REAL,
    next_fire_at INTEGER,
    last_fire_at INTEGER,
    last_task_id TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE INDEX cron_jobs_due ON cron_jobs (next_fire_at) WHERE enabled = 1;

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    task_type TEXT NOT NULL,
    priority INTEGER NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}',
    required_capabilities TEXT NOT NULL DEFAULT '[]',
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN (
        'pending', 'dispatched', 'running', 'cancelling',
        'succeeded', 'failed', 'timed_out', 'cancelled')),
    scheduled_at INTEGER NOT NULL,
    timeout_seconds REAL,
    max_retries INTEGER NOT NULL DEFAULT 0,
    backoff_seconds REAL NOT NULL DEFAULT 60,
    backoff_factor REAL NOT NULL DEFAULT 2,
    max_backoff_seconds REAL NOT NULL DEFAULT 3600,
    idempotency_key TEXT,
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    agent_id TEXT REFERENCES agents (id) ON DELETE SET NULL,
    cron_job_id TEXT REFERENCES cron_jobs (id) ON DELETE SET NULL,
    cron_tick_at INTEGER,
    progress REAL,
    log_seq INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER
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
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    agent_id TEXT REFERENCES agents (id) ON DELETE SET NULL,
    dispatched_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    outcome TEXT CHECK (outcome IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'lost')),
    error TEXT,
    PRIMARY KEY (task_id, number)
);

CREATE INDEX attempts_agent ON attempts (agent_id);

CREATE TABLE task_logs (
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    stream TEXT NOT NULL,
    line TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE cron_ticks (
    cron_job_id TEXT NOT NULL REFERENCES cron_jobs (id) ON DELETE CASCADE,
    tick_at INTEGER NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('fired', 'skipped')),
    task_id TEXT,
    reason TEXT,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (cron_job_id, tick_at)
);
