-- Workflows (docs/workflows.md): steps are tasks; a step whose parents have not all finished
-- is 'waiting', a step that will never run is 'skipped'.
ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check CHECK (status IN (
    'pending', 'dispatched', 'running', 'cancelling',
    'succeeded', 'failed', 'timed_out', 'cancelled', 'waiting', 'skipped'));

-- A released step's parents' results, {step name: result}, handed to its handler.
ALTER TABLE tasks ADD COLUMN parents jsonb;

CREATE TABLE workflows (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    on_failure text NOT NULL CHECK (on_failure IN ('stop', 'continue')),
    cancelled_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE INDEX workflows_created ON workflows (created_at DESC, id DESC);

-- One row per step: the task that runs it, and how many of its parents are unfinished.
CREATE TABLE workflow_steps (
    task_id uuid PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    workflow_id uuid NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    name text NOT NULL,
    position integer NOT NULL,
    run_if text NOT NULL CHECK (run_if IN ('all_succeeded', 'all_done', 'any_failed')),
    parents_left integer NOT NULL CHECK (parents_left >= 0),
    UNIQUE (workflow_id, name)
);

CREATE TABLE workflow_edges (
    parent_id uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    child_id uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (parent_id, child_id)
);

CREATE INDEX workflow_edges_child ON workflow_edges (child_id);
