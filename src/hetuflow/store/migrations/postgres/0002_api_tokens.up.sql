-- API and agent tokens. Only the SHA-256 of a secret is kept; a token is found by that hash.
-- An agent token belongs to its agent and goes with it.

CREATE TABLE api_tokens (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    role text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer', 'agent')),
    secret_hash text NOT NULL UNIQUE,
    hint text NOT NULL,
    agent_id uuid REFERENCES agents (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    revoked_at timestamptz,
    CHECK ((role = 'agent') = (agent_id IS NOT NULL))
);

CREATE INDEX api_tokens_agent ON api_tokens (agent_id) WHERE agent_id IS NOT NULL;
