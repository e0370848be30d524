-- Triggers, hooks and events (docs/triggers.md). An event id is delivered once: its primary
-- key decides; event_tasks and event_workflows list what that first delivery created (no
-- foreign keys: the cleanup loop deletes old finished tasks and workflows, the record of the
-- delivery stays). A trigger creates a task or a workflow, never both.
CREATE TABLE triggers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    event_key TEXT NOT NULL,
    filter TEXT NOT NULL,
    task TEXT,
    workflow TEXT,
    created_at INTEGER NOT NULL,
    CHECK ((task IS NULL) <> (workflow IS NULL))
);

CREATE INDEX triggers_event_key ON triggers (event_key);

CREATE TABLE hooks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    event_key TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    data TEXT NOT NULL,
    matched INTEGER NOT NULL,
    received_at INTEGER NOT NULL
);

CREATE TABLE event_tasks (
    event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    trigger_name TEXT NOT NULL,
    PRIMARY KEY (event_id, position)
);

CREATE TABLE event_workflows (
    event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    workflow_id TEXT NOT NULL,
    trigger_name TEXT NOT NULL,
    PRIMARY KEY (event_id, position)
);
