-- API and agent tokens. Only the SHA-256 of a secret is kept; a token is found by that hash.
-- An agent token belongs to its agent and goes with it.

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer', 'agent')),
    secret_hash TEXT NOT NULL UNIQUE,
    hint TEXT NOT NULL,
    agent_id TEXT REFERENCES agents (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    CHECK ((role = 'agent') = (agent_id IS NOT NULL))
);

CREATE INDEX api_tokens_agent ON api_tokens (agent_id) WHERE agent_id IS NOT NULL;
