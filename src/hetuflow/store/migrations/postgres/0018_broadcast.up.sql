-- Broadcast (docs/guarantees.md, Broadcast): a parent task (broadcast_policy set, status
-- waiting, never dispatched) and one child per matching agent, pinned to it
-- (pinned_agent_id: only a claim for that agent takes it) and linked by broadcast_of. The
-- parent ends in the transaction that ends its last child.
ALTER TABLE tasks ADD COLUMN pinned_agent_id uuid;
ALTER TABLE tasks ADD COLUMN broadcast_of uuid;
ALTER TABLE tasks ADD COLUMN broadcast_policy text
    CHECK (broadcast_policy IS NULL OR broadcast_policy IN ('all', 'any'));
-- A parent's children (the settle counts them; a cancel of the parent stops them).
CREATE INDEX tasks_broadcast_of ON tasks (broadcast_of) WHERE broadcast_of IS NOT NULL;
-- A deleted agent's pending pinned children (cancelled with it).
CREATE INDEX tasks_pinned ON tasks (pinned_agent_id) WHERE pinned_agent_id IS NOT NULL;
