-- Workflows (docs/workflows.md): steps are tasks; a step whose parents have not all finished
-- is 'waiting', a step that will never run is 'skipped'. SQLite cannot alter a CHECK
-- constraint: the tasks table's is widened in place (the procedure SQLite documents for
-- loosening a constraint, which rewrites no row; every stored status stays valid), then the
-- schema is reloaded.
PRAGMA writable_schema = ON;
UPDATE sqlite_master
SET sql = replace(sql, '''succeeded'', ''failed'', ''timed_out'', ''cancelled''))',
                  '''succeeded'', ''failed'', ''timed_out'', ''cancelled'', ''waiting'', ''skipped''))')
WHERE type = 'table' AND name = 'tasks';
PRAGMA writable_schema = RESET;
PRAGMA writable_schema = OFF;

-- A released step's parents' results, {step name: result}, handed to its handler.
ALTER TABLE tasks ADD COLUMN parents TEXT;

CREATE TABLE workflows (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    on_failure TEXT NOT NULL CHECK (on_failure IN ('stop', 'continue')),
    cancelled_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE INDEX workflows_created ON workflows (created_at DESC, id DESC);

-- One row per step: the task that runs it, and how many of its parents are unfinished.
CREATE TABLE workflow_steps (
    task_id TEXT PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    workflow_id TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    run_if TEXT NOT NULL CHECK (run_if IN ('all_succeeded', 'all_done', 'any_failed')),
    parents_left INTEGER NOT NULL CHECK (parents_left >= 0),
    UNIQUE (workflow_id, name)
);

CREATE TABLE workflow_edges (
    parent_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    child_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (parent_id, child_id)
);

CREATE INDEX workflow_edges_child ON workflow_edges (child_id);
