"""SQLite: agents (create, connect, status, heartbeats, reaping, tombstones)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from hetuflow.errors import AgentDeleted, AgentNameTaken, AgentNotFound
from hetuflow.models import Agent, AgentRegistration, AgentStatus, AttemptRef, NewAgent
from hetuflow.store._claims import Aging
from hetuflow.store._rows import agent_from
from hetuflow.store._rules import (
    ACTIVE_SQL,
    agent_online,
    agent_sources,
    generated_agent_name,
    tombstone_name,
)
from hetuflow.store._sqlite_attempts import release
from hetuflow.store._sqlite_broadcast import cancel_pinned
from hetuflow.store._sqlite_db import CODEC, id_list, micros
from hetuflow.store._workflow_rows import Committed

# INDEXED BY: left alone, SQLite counts through tasks_agent_created, i.e. every task the agent
# ever ran; (agent_id, status) seeks straight to the active ones.
_SELECT_AGENTS = f"""
SELECT a.*, (SELECT count(*) FROM tasks AS t INDEXED BY tasks_agent_status
             WHERE t.agent_id = a.id AND t.status IN {ACTIVE_SQL}) AS running
FROM agents AS a"""


def _one(connection: sqlite3.Connection, where: str, value: str) -> Agent | None:
    """The live agent (not a tombstone) matching ``where``."""
    row = connection.execute(
        f"{_SELECT_AGENTS} WHERE a.deleted_at IS NULL AND {where}", (value,)
    ).fetchone()
    return None if row is None else agent_from(row, CODEC)


def get_agent(connection: sqlite3.Connection, agent_id: UUID) -> Agent | None:
    return _one(connection, "a.id = ?", str(agent_id))


def get_agent_by_name(connection: sqlite3.Connection, name: str) -> Agent | None:
    return _one(connection, "a.name = ?", name)


def _must_get(connection: sqlite3.Connection, agent_id: UUID | str) -> Agent:
    agent = _one(connection, "a.id = ?", str(agent_id))
    if agent is None:
        raise AgentNotFound(f"agent {agent_id} does not exist", field="agent_id")
    return agent


def list_agents(connection: sqlite3.Connection, statuses: Sequence[AgentStatus]) -> list[Agent]:
    where = " WHERE a.deleted_at IS NULL"
    params: list[str] = []
    if statuses:
        where += f" AND a.status IN ({', '.join('?' for _ in statuses)})"
        params = [status.value for status in statuses]
    rows = connection.execute(f"{_SELECT_AGENTS}{where} ORDER BY a.name", params)
    return [agent_from(row, CODEC) for row in rows]


def create_agent(connection: sqlite3.Connection, agent: NewAgent, now: datetime) -> Agent:
    agent_id = str(uuid.uuid4())
    try:
        connection.execute(
            """
            INSERT INTO agents (id, name, capabilities, supported_task_types,
                                max_concurrent_tasks, enabled, status, created_at)
            VALUES (?, ?, ?, ?, ?, ?, 'offline', ?)""",
            (
                agent_id,
                agent.name,
                CODEC.put_texts(agent.capabilities),
                CODEC.put_texts(agent.supported_task_types),
                agent.max_concurrent_tasks,
                agent.enabled,
                micros(now),
            ),
        )
    except sqlite3.IntegrityError as error:
        raise AgentNameTaken(f"an agent named {agent.name!r} exists", field="name") from error
    return _must_get(connection, agent_id)


_LAST_HEARD = "coalesce(a.last_heartbeat_at, a.connected_at, a.created_at)"
"""When an agent was last heard from: its last heartbeat, else its connection, else its
creation (a pre-created agent that never connected)."""


def _tombstone(
    connection: sqlite3.Connection,
    agent_id: UUID,
    now: datetime,
    committed: Committed | None = None,
) -> bool:
    """Tombstone one offline agent (one conditional update, so a registration committed
    first keeps it), release what it still holds and delete its tokens; whether it did."""
    key = str(agent_id)
    row = connection.execute(
        """
        UPDATE agents SET deleted_at = ?, name = ?, node_id = NULL
        WHERE id = ? AND deleted_at IS NULL AND status = 'offline'
        RETURNING id""",
        (micros(now), tombstone_name(agent_id), key),
    ).fetchone()
    if row is None:
        return False
    release(connection, [agent_id], now, committed=committed)
    cancel_pinned(connection, agent_id, now)  # broadcast children it will never run
    connection.execute("DELETE FROM api_tokens WHERE agent_id = ?", (key,))
    return True


def delete_agent(
    connection: sqlite3.Connection,
    agent_id: UUID,
    now: datetime,
    committed: Committed | None = None,
) -> None:
    """Tombstone an offline agent; ``AgentOnline`` if the store records a connection."""
    if not _tombstone(connection, agent_id, now, committed):
        agent = _one(connection, "a.id = ?", str(agent_id))
        if agent is None:
            raise AgentNotFound(f"agent {agent_id} does not exist", field="agent_id")
        raise agent_online(agent)


def prune_agents(
    connection: sqlite3.Connection,
    offline_before: datetime,
    now: datetime,
    limit: int,
    committed: Committed | None = None,
) -> list[Agent]:
    """Tombstone offline agents last heard from before ``offline_before``, oldest first (the
    single writer keeps the read and the updates together)."""
    rows = connection.execute(
        f"""{_SELECT_AGENTS}
        WHERE a.deleted_at IS NULL AND a.status = 'offline' AND {_LAST_HEARD} < ?
        ORDER BY {_LAST_HEARD}, a.id LIMIT ?""",
        (micros(offline_before), limit),
    ).fetchall()
    stale = [agent_from(row, CODEC) for row in rows]
    return [agent for agent in stale if _tombstone(connection, agent.id, now, committed)]


def set_agent_enabled(connection: sqlite3.Connection, agent_id: UUID, enabled: bool) -> Agent:
    connection.execute(
        "UPDATE agents SET enabled = ? WHERE id = ? AND deleted_at IS NULL",
        (enabled, str(agent_id)),
    )
    return _must_get(connection, str(agent_id))


def _unknown(connection: sqlite3.Connection, agent_id: UUID) -> AgentDeleted | AgentNotFound:
    """Why no live row has this id: a tombstone (``AgentDeleted``) or no row at all."""
    row = connection.execute(
        "SELECT 1 FROM agents WHERE id = ? AND deleted_at IS NOT NULL", (str(agent_id),)
    ).fetchone()
    if row is not None:
        return AgentDeleted(f"agent {agent_id} was deleted", field="agent_id")
    return AgentNotFound(f"agent {agent_id} does not exist", field="agent_id")


def connect_agent(
    connection: sqlite3.Connection, registration: AgentRegistration, node_id: str, now: datetime
) -> Agent:
    stamp = micros(now)
    declared = (
        CODEC.put_texts(registration.capabilities),
        CODEC.put_texts(registration.supported_task_types),
        registration.max_concurrent_tasks,
    )
    if registration.agent_id is not None:
        row = connection.execute(
            """
            UPDATE agents
            SET capabilities = ?, supported_task_types = ?, max_concurrent_tasks = ?,
                status = CASE WHEN drained THEN 'draining' ELSE 'online' END,
                node_id = ?, session = session + 1,
                connected_at = ?, last_heartbeat_at = ?
            WHERE id = ? AND deleted_at IS NULL
            RETURNING id""",
            (*declared, node_id, stamp, stamp, str(registration.agent_id)),
        ).fetchone()
        if row is None:
            raise _unknown(connection, registration.agent_id)
    else:
        row = connection.execute(
            """
            INSERT INTO agents (id, name, capabilities, supported_task_types,
                                max_concurrent_tasks, status, node_id, session,
                                connected_at, last_heartbeat_at, created_at)
            VALUES (?, ?, ?, ?, ?, 'online', ?, 1, ?, ?, ?)
            ON CONFLICT (name) DO UPDATE
            SET capabilities = excluded.capabilities,
                supported_task_types = excluded.supported_task_types,
                max_concurrent_tasks = excluded.max_concurrent_tasks,
                status = CASE WHEN agents.drained THEN 'draining' ELSE 'online' END,
                node_id = excluded.node_id, session = agents.session + 1,
                connected_at = excluded.connected_at, last_heartbeat_at = excluded.connected_at
            RETURNING id""",
            (
                str(uuid.uuid4()),
                registration.name or generated_agent_name(),
                *declared,
                node_id,
                stamp,
                stamp,
                stamp,
            ),
        ).fetchone()
    return _must_get(connection, row["id"])


def set_agent_status(
    connection: sqlite3.Connection, agent_id: UUID, status: AgentStatus, session: int
) -> bool:
    sources = agent_sources(status)
    cursor = connection.execute(
        f"""
        UPDATE agents
        SET status = ?, node_id = CASE WHEN ? = 'offline' THEN NULL ELSE node_id END
        WHERE id = ? AND session = ? AND status IN ({", ".join("?" for _ in sources)})""",
        (status.value, status.value, str(agent_id), session, *sources),
    )
    return cursor.rowcount > 0


def set_agent_draining(connection: sqlite3.Connection, agent_id: UUID, draining: bool) -> Agent:
    connection.execute(_DRAIN if draining else _RESUME, (str(agent_id),))
    return _must_get(connection, str(agent_id))


_DRAIN = """
UPDATE agents SET drained = 1, status = 'draining'
WHERE id = ? AND deleted_at IS NULL AND status IN ('online', 'draining')"""
"""Only a connected agent; it stays drained across reconnects (``connect_agent``)."""

_RESUME = """
UPDATE agents SET drained = 0,
                  status = CASE WHEN status = 'draining' THEN 'online' ELSE status END
WHERE id = ? AND deleted_at IS NULL"""
"""Connected or not: an offline agent drained before it left connects ``online`` again."""


def release_agent(
    connection: sqlite3.Connection,
    agent_id: UUID,
    now: datetime,
    keep: Sequence[AttemptRef],
    session: int | None,
    aging: Aging | None = None,
    crash_limit: int = 0,
    committed: Committed | None = None,
) -> list[UUID]:
    """``release`` of one agent; with ``session``, only while that is the agent's current one
    (the single writer orders this against ``connect_agent``)."""
    if session is not None:
        row = connection.execute(
            "SELECT session FROM agents WHERE id = ?", (str(agent_id),)
        ).fetchone()
        if row is None or row["session"] != session:
            return []
    return release(
        connection, [agent_id], now, keep, aging=aging, crash_limit=crash_limit, committed=committed
    )


def record_heartbeats(
    connection: sqlite3.Connection, agent_ids: Sequence[UUID], now: datetime
) -> list[UUID]:
    """Record the heartbeats; return the agents among them that are deleted (or unknown).
    The second read runs only when the update missed some."""
    unique = sorted(set(agent_ids))
    listed = id_list(unique)
    cursor = connection.execute(
        "UPDATE agents SET last_heartbeat_at = ?"
        " WHERE id IN (SELECT value FROM json_each(?)) AND deleted_at IS NULL",
        (micros(now), listed),
    )
    if cursor.rowcount >= len(unique):
        return []
    live = {
        row["id"]
        for row in connection.execute(
            "SELECT id FROM agents"
            " WHERE id IN (SELECT value FROM json_each(?)) AND deleted_at IS NULL",
            (listed,),
        )
    }
    return [agent_id for agent_id in unique if str(agent_id) not in live]


def reap_agents(
    connection: sqlite3.Connection,
    stale_before: datetime,
    now: datetime,
    aging: Aging | None = None,
    crash_limit: int = 0,
    committed: Committed | None = None,
) -> list[UUID]:
    rows = connection.execute(
        """
        UPDATE agents SET status = 'offline', node_id = NULL
        WHERE status IN ('online', 'draining')
          AND coalesce(last_heartbeat_at, connected_at, created_at) < ?
        RETURNING id""",
        (micros(stale_before),),
    ).fetchall()
    reaped = sorted(row["id"] for row in rows)
    if reaped:
        release(connection, reaped, now, aging=aging, crash_limit=crash_limit, committed=committed)
    return [UUID(agent_id) for agent_id in reaped]
