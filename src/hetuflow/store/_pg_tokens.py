"""PostgreSQL: API and agent tokens (stored by the hash of their secret)."""

from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

import asyncpg

from hetuflow.clock import utc
from hetuflow.errors import AgentNotFound, TokenNotFound
from hetuflow.store._pg_db import CODEC, Conn
from hetuflow.store._rows import token_from
from hetuflow.tokens import ApiToken, NewApiToken

_COLUMNS = "id, name, role, hint, agent_id, created_at, expires_at, revoked_at"


async def _get(connection: Conn, token_id: UUID) -> ApiToken:
    row = await connection.fetchrow(f"SELECT {_COLUMNS} FROM api_tokens WHERE id = $1", token_id)
    if row is None:
        raise TokenNotFound(f"no token with id {token_id}", field="token_id")
    return token_from(row, CODEC)


async def create_api_token(connection: Conn, token: NewApiToken, now: datetime) -> ApiToken:
    token_id = uuid.uuid4()
    # A deleted agent's row stays (a tombstone): the key alone would accept it. The share
    # lock makes a concurrent delete wait, then delete this token with the others.
    if token.agent_id is not None and not await connection.fetchval(
        "SELECT 1 FROM agents WHERE id = $1 AND deleted_at IS NULL FOR SHARE", token.agent_id
    ):
        raise AgentNotFound(f"no agent with id {token.agent_id}", field="agent_id")
    try:
        await connection.execute(
            """
            INSERT INTO api_tokens (id, name, role, secret_hash, hint, agent_id, created_at,
                                    expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            token_id,
            token.name,
            token.role.value,
            token.secret_hash,
            token.hint,
            token.agent_id,
            utc(now),
            CODEC.put_time(token.expires_at),
        )
    except asyncpg.ForeignKeyViolationError as error:
        raise AgentNotFound(f"no agent with id {token.agent_id}", field="agent_id") from error
    return await _get(connection, token_id)


async def find_api_token(connection: Conn, secret_hash: str) -> ApiToken | None:
    row = await connection.fetchrow(
        f"SELECT {_COLUMNS} FROM api_tokens WHERE secret_hash = $1", secret_hash
    )
    return None if row is None else token_from(row, CODEC)


async def list_api_tokens(connection: Conn) -> list[ApiToken]:
    rows = await connection.fetch(f"SELECT {_COLUMNS} FROM api_tokens ORDER BY created_at DESC, id")
    return [token_from(row, CODEC) for row in rows]


async def revoke_api_token(connection: Conn, token_id: UUID, now: datetime) -> ApiToken:
    await connection.execute(
        "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        utc(now),
        token_id,
    )
    return await _get(connection, token_id)
