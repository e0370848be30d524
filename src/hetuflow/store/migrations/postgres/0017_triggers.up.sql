-- Triggers, hooks and events (docs/triggers.md). An event id is delivered once: its primary
-- key decides (a concurrent delivery of the same id waits for the first one's commit and
-- inserts nothing); event_tasks and event_workflows list what that first delivery created (no
-- foreign keys: the cleanup loop deletes old finished tasks and workflows, the record of the
-- delivery stays). A trigger creates a task or a workflow, never both.
CREATE TABLE triggers (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    event_key text NOT NULL,
    filter jsonb NOT NULL,
    task jsonb,
    workflow jsonb,
    created_at timestamptz NOT NULL,
    CHECK ((task IS NULL) <> (workflow IS NULL))
);

CREATE INDEX triggers_event_key ON triggers (event_key);

CREATE TABLE hooks (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    event_key text NOT NULL,
    secret text NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE events (
    id text PRIMARY KEY,
    key text NOT NULL,
    data jsonb NOT NULL,
    matched integer NOT NULL,
    received_at timestamptz NOT NULL
);

CREATE TABLE event_tasks (
    event_id text NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    position integer NOT NULL,
    task_id uuid NOT NULL,
    trigger_name text NOT NULL,
    PRIMARY KEY (event_id, position)
);

CREATE TABLE event_workflows (
    event_id text NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    position integer NOT NULL,
    workflow_id uuid NOT NULL,
    trigger_name text NOT NULL,
    PRIMARY KEY (event_id, position)
);
