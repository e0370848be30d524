-- An operator's drain (POST /api/agents/{id}/drain) is kept with the agent until resumed: a
-- drained agent that reconnects, to this node or another, comes back `draining`
-- (docs/guarantees.md, Agents). An agent draining before this migration was drained either by
-- an operator or by itself (shutting down): that is not recorded, so none starts drained.
ALTER TABLE agents ADD COLUMN drained boolean NOT NULL DEFAULT false;
