"""SQLite: API and agent tokens (stored by the hash of their secret)."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime
from uuid import UUID

from hetuflow.errors import AgentNotFound, TokenNotFound
from hetuflow.store._rows import token_from
from hetuflow.store._sqlite_db import CODEC, micros
from hetuflow.tokens import ApiToken, NewApiToken

_COLUMNS = "id, name, role, hint, agent_id, created_at, expires_at, revoked_at"


def _get(connection: sqlite3.Connection, token_id: str) -> ApiToken:
    row = connection.execute(
        f"SELECT {_COLUMNS} FROM api_tokens WHERE id = ?", (token_id,)
    ).fetchone()
    if row is None:
        raise TokenNotFound(f"no token with id {token_id}", field="token_id")
    return token_from(row, CODEC)


def create_api_token(connection: sqlite3.Connection, token: NewApiToken, now: datetime) -> ApiToken:
    token_id = str(uuid.uuid4())
    # A deleted agent's row stays (a tombstone): the key alone would accept it.
    if (
        token.agent_id is not None
        and connection.execute(
            "SELECT 1 FROM agents WHERE id = ? AND deleted_at IS NULL", (str(token.agent_id),)
        ).fetchone()
        is None
    ):
        raise AgentNotFound(f"no agent with id {token.agent_id}", field="agent_id")
    try:
        connection.execute(
            """
            INSERT INTO api_tokens (id, name, role, secret_hash, hint, agent_id, created_at,
                                    expires_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                token_id,
                token.name,
                token.role.value,
                token.secret_hash,
                token.hint,
                CODEC.put_uuid(token.agent_id),
                micros(now),
                CODEC.put_time(token.expires_at),
            ),
        )
    except sqlite3.IntegrityError as error:
        if token.agent_id is not None and "FOREIGN KEY" in str(error):
            raise AgentNotFound(f"no agent with id {token.agent_id}", field="agent_id") from error
        raise
    return _get(connection, token_id)


def find_api_token(connection: sqlite3.Connection, secret_hash: str) -> ApiToken | None:
    row = connection.execute(
        f"SELECT {_COLUMNS} FROM api_tokens WHERE secret_hash = ?", (secret_hash,)
    ).fetchone()
    return None if row is None else token_from(row, CODEC)


def list_api_tokens(connection: sqlite3.Connection) -> list[ApiToken]:
    rows = connection.execute(
        f"SELECT {_COLUMNS} FROM api_tokens ORDER BY created_at DESC, id"
    ).fetchall()
    return [token_from(row, CODEC) for row in rows]


def revoke_api_token(connection: sqlite3.Connection, token_id: UUID, now: datetime) -> ApiToken:
    connection.execute(
        "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (micros(now), str(token_id)),
    )
    return _get(connection, str(token_id))
