"""PostgreSQL: agents (create, connect, status, heartbeats, reaping, tombstones)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from hetuflow.clock import utc
from hetuflow.errors import AgentDeleted, AgentNameTaken, AgentNotFound
from hetuflow.models import Agent, AgentRegistration, AgentStatus, AttemptRef, NewAgent, Task
from hetuflow.store._claims import Aging
from hetuflow.store._pg_attempts import release
from hetuflow.store._pg_broadcast import cancel_pinned
from hetuflow.store._pg_db import CODEC, Conn, uid
from hetuflow.store._rows import agent_from, task_from
from hetuflow.store._rules import (
    ACTIVE_SQL,
    agent_online,
    agent_sources,
    generated_agent_name,
    tombstone_name,
)
from hetuflow.store._workflow_rows import Committed

_SELECT_AGENTS = f"""
SELECT a.*, (SELECT count(*) FROM tasks AS t
             WHERE t.agent_id = a.id AND t.status IN {ACTIVE_SQL}) AS running
FROM agents AS a"""

_CONNECT_BY_ID = """
UPDATE agents
SET capabilities = $1, supported_task_types = $2, max_concurrent_tasks = $3,
    status = CASE WHEN drained THEN 'draining' ELSE 'online' END,
    node_id = $4, session = session + 1,
    connected_at = $5, last_heartbeat_at = $5
WHERE id = $6 AND deleted_at IS NULL
RETURNING id"""

_LIVE = f"{_SELECT_AGENTS} WHERE a.deleted_at IS NULL"
"""Live agents only: a deleted agent's row (its tombstone) is never listed nor found."""

_CONNECT_BY_NAME = """
INSERT INTO agents (id, name, capabilities, supported_task_types, max_concurrent_tasks,
                    status, node_id, session, connected_at, last_heartbeat_at, created_at)
VALUES ($6, $7, $1, $2, $3, 'online', $4, 1, $5, $5, $5)
ON CONFLICT (name) DO UPDATE
SET capabilities = excluded.capabilities,
    supported_task_types = excluded.supported_task_types,
    max_concurrent_tasks = excluded.max_concurrent_tasks,
    status = CASE WHEN agents.drained THEN 'draining' ELSE 'online' END,
    node_id = excluded.node_id, session = agents.session + 1,
    connected_at = excluded.connected_at, last_heartbeat_at = excluded.connected_at
RETURNING id"""


_AGENT_FIELDS = (
    "id",
    "name",
    "capabilities",
    "supported_task_types",
    "max_concurrent_tasks",
    "enabled",
    "drained",
    "status",
    "node_id",
    "session",
    "running",
    "last_heartbeat_at",
    "connected_at",
    "created_at",
)
ONLINE_AGENTS_ARRAY = f"""ARRAY(
    SELECT ROW({", ".join(f"a.{name}" for name in _AGENT_FIELDS)})
    FROM ({_LIVE} AND a.status = 'online') AS a ORDER BY a.name)"""
"""The online agents (``list_agents``) as one array of anonymous records, their fields in
the order of ``_AGENT_FIELDS``: a statement reads them beside another row in one round trip
(``get_task_and_agents``)."""


def agents_from_array(records: Sequence[tuple[object, ...]]) -> list[Agent]:
    """The agents of an ``ONLINE_AGENTS_ARRAY`` column."""
    return [agent_from(dict(zip(_AGENT_FIELDS, record, strict=True)), CODEC) for record in records]


_TASK_AND_AGENTS = f"""
SELECT t.*, CASE WHEN t.status = 'pending' AND t.scheduled_at <= $2
                 THEN {ONLINE_AGENTS_ARRAY} END AS online_agents
FROM tasks AS t WHERE t.id = $1"""


async def get_task_and_agents(
    connection: Conn, task_id: UUID, now: datetime
) -> tuple[Task | None, list[Agent] | None]:
    """``Store.get_task_and_agents`` in one statement: the online agents ride in an array
    column, filled only for a pending task due at ``now`` (``Task.is_due_pending``)."""
    row = await connection.fetchrow(_TASK_AND_AGENTS, task_id, now)
    if row is None:
        return None, None
    records = row["online_agents"]
    return task_from(row, CODEC), None if records is None else agents_from_array(records)


async def get_agent(connection: Conn, agent_id: UUID) -> Agent | None:
    row = await connection.fetchrow(f"{_LIVE} AND a.id = $1", agent_id)
    return None if row is None else agent_from(row, CODEC)


async def get_agent_by_name(connection: Conn, name: str) -> Agent | None:
    row = await connection.fetchrow(f"{_LIVE} AND a.name = $1", name)
    return None if row is None else agent_from(row, CODEC)


async def _must_get(connection: Conn, agent_id: UUID) -> Agent:
    agent = await get_agent(connection, agent_id)
    if agent is None:
        raise AgentNotFound(f"agent {agent_id} does not exist", field="agent_id")
    return agent


async def list_agents(connection: Conn, statuses: Sequence[AgentStatus]) -> list[Agent]:
    if statuses:
        rows = await connection.fetch(
            f"{_LIVE} AND a.status = ANY($1::text[]) ORDER BY a.name",
            [status.value for status in statuses],
        )
    else:
        rows = await connection.fetch(f"{_LIVE} ORDER BY a.name")
    return [agent_from(row, CODEC) for row in rows]


async def create_agent(connection: Conn, agent: NewAgent, now: datetime) -> Agent:
    agent_id = uuid.uuid4()
    try:
        await connection.execute(
            """
            INSERT INTO agents (id, name, capabilities, supported_task_types,
                                max_concurrent_tasks, enabled, status, created_at)
            VALUES ($1, $2, $3, $4, $5, $6, 'offline', $7)""",
            agent_id,
            agent.name,
            list(agent.capabilities),
            list(agent.supported_task_types),
            agent.max_concurrent_tasks,
            agent.enabled,
            utc(now),
        )
    except asyncpg.UniqueViolationError as error:
        raise AgentNameTaken(f"an agent named {agent.name!r} exists", field="name") from error
    return await _must_get(connection, agent_id)


_LAST_HEARD = "coalesce(a.last_heartbeat_at, a.connected_at, a.created_at)"
"""When an agent was last heard from: its last heartbeat, else its connection, else its
creation (a pre-created agent that never connected)."""


async def _tombstone(
    connection: Conn, agent_id: UUID, now: datetime, committed: Committed | None = None
) -> bool:
    """Tombstone one offline agent, release what it still holds and delete its tokens;
    whether it did.

    One conditional update, which locks the row: a ``connect_agent`` of the same agent
    either committed first (the agent is online: not tombstoned) or waits for this
    transaction and then finds a tombstone (``AgentDeleted``)."""
    deleted = await connection.fetchval(
        """
        UPDATE agents SET deleted_at = $2, name = $3, node_id = NULL
        WHERE id = $1 AND deleted_at IS NULL AND status = 'offline'
        RETURNING id""",
        agent_id,
        utc(now),
        tombstone_name(agent_id),
    )
    if deleted is None:
        return False
    await release(connection, [agent_id], now, committed=committed)
    await cancel_pinned(connection, agent_id, now)  # broadcast children it will never run
    await connection.execute("DELETE FROM api_tokens WHERE agent_id = $1", agent_id)
    return True


async def delete_agent(
    connection: Conn, agent_id: UUID, now: datetime, committed: Committed | None = None
) -> None:
    """Tombstone an offline agent; ``AgentOnline`` if the store records a connection."""
    if not await _tombstone(connection, agent_id, now, committed):
        agent = await get_agent(connection, agent_id)
        if agent is None:
            raise AgentNotFound(f"agent {agent_id} does not exist", field="agent_id")
        raise agent_online(agent)


async def prune_agents(
    connection: Conn,
    offline_before: datetime,
    now: datetime,
    limit: int,
    committed: Committed | None = None,
) -> list[Agent]:
    """Tombstone offline agents last heard from before ``offline_before``, oldest first.

    The rows are locked as they are read (``FOR UPDATE``, re-checked against a connect that
    committed meanwhile; ``SKIP LOCKED``: one being connected or pruned elsewhere is left)."""
    rows = await connection.fetch(
        f"""{_LIVE} AND a.status = 'offline' AND {_LAST_HEARD} < $1
        ORDER BY {_LAST_HEARD}, a.id LIMIT $2 FOR UPDATE OF a SKIP LOCKED""",
        utc(offline_before),
        limit,
    )
    pruned: list[Agent] = []
    for row in rows:
        agent = agent_from(row, CODEC)
        if await _tombstone(connection, agent.id, now, committed):
            pruned.append(agent)
    return pruned


async def set_agent_enabled(connection: Conn, agent_id: UUID, enabled: bool) -> Agent:
    await connection.execute(
        "UPDATE agents SET enabled = $2 WHERE id = $1 AND deleted_at IS NULL", agent_id, enabled
    )
    return await _must_get(connection, agent_id)


async def _unknown(connection: Conn, agent_id: UUID) -> AgentDeleted | AgentNotFound:
    """Why no live row has this id: a tombstone (``AgentDeleted``) or no row at all."""
    if await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM agents WHERE id = $1 AND deleted_at IS NOT NULL)", agent_id
    ):
        return AgentDeleted(f"agent {agent_id} was deleted", field="agent_id")
    return AgentNotFound(f"agent {agent_id} does not exist", field="agent_id")


async def connect_agent(
    connection: Conn, registration: AgentRegistration, node_id: str, now: datetime
) -> Agent:
    declared = (
        list(registration.capabilities),
        list(registration.supported_task_types),
        registration.max_concurrent_tasks,
        node_id,
        utc(now),
    )
    if registration.agent_id is not None:
        agent_id = await connection.fetchval(_CONNECT_BY_ID, *declared, registration.agent_id)
        if agent_id is None:
            raise await _unknown(connection, registration.agent_id)
    else:
        name = registration.name or generated_agent_name()
        agent_id = await connection.fetchval(_CONNECT_BY_NAME, *declared, uuid.uuid4(), name)
    return await _must_get(connection, uid(agent_id))


async def set_agent_status(
    connection: Conn, agent_id: UUID, status: AgentStatus, session: int
) -> bool:
    result = await connection.execute(
        """
        UPDATE agents
        SET status = $1, node_id = CASE WHEN $1 = 'offline' THEN NULL ELSE node_id END
        WHERE id = $2 AND session = $3 AND status = ANY($4::text[])""",
        status.value,
        agent_id,
        session,
        list(agent_sources(status)),
    )
    return result != "UPDATE 0"


async def set_agent_draining(connection: Conn, agent_id: UUID, draining: bool) -> Agent:
    await connection.execute(_DRAIN if draining else _RESUME, agent_id)
    return await _must_get(connection, agent_id)


_DRAIN = """
UPDATE agents SET drained = true, status = 'draining'
WHERE id = $1 AND deleted_at IS NULL AND status IN ('online', 'draining')"""
"""Only a connected agent; it stays drained across reconnects (``connect_agent``)."""

_RESUME = """
UPDATE agents SET drained = false,
                  status = CASE WHEN status = 'draining' THEN 'online' ELSE status END
WHERE id = $1 AND deleted_at IS NULL"""
"""Connected or not: an offline agent drained before it left connects ``online`` again."""


async def release_agent(
    connection: Conn,
    agent_id: UUID,
    now: datetime,
    keep: Sequence[AttemptRef],
    session: int | None,
    aging: Aging | None = None,
    crash_limit: int = 0,
    committed: Committed | None = None,
) -> list[UUID]:
    """``release`` of one agent; with ``session``, only while that is the agent's current one.
    The agent's row stays locked until the transaction ends, so a concurrent ``connect_agent``
    (which bumps the session) waits for the release or makes it do nothing."""
    if session is not None:
        current = await connection.fetchval(
            "SELECT session FROM agents WHERE id = $1 FOR UPDATE", agent_id
        )
        if current != session:
            return []
    return await release(
        connection, [agent_id], now, keep, aging=aging, crash_limit=crash_limit, committed=committed
    )


async def record_heartbeats(
    connection: Conn, agent_ids: Sequence[UUID], now: datetime
) -> list[UUID]:
    """Record the heartbeats; return the agents among them that are deleted (or unknown).
    The second read runs only when the update missed some."""
    unique = sorted(set(agent_ids))
    status = await connection.execute(
        "UPDATE agents SET last_heartbeat_at = $1"
        " WHERE id = ANY($2::uuid[]) AND deleted_at IS NULL",
        utc(now),
        unique,
    )
    if int(status.rsplit(" ", 1)[-1]) >= len(unique):
        return []
    rows = await connection.fetch(
        "SELECT id FROM agents WHERE id = ANY($1::uuid[]) AND deleted_at IS NULL", unique
    )
    live = {uid(row["id"]) for row in rows}
    return [agent_id for agent_id in unique if agent_id not in live]


async def reap_agents(
    connection: Conn,
    stale_before: datetime,
    now: datetime,
    aging: Aging | None = None,
    crash_limit: int = 0,
    committed: Committed | None = None,
) -> list[UUID]:
    rows = await connection.fetch(
        """
        UPDATE agents SET status = 'offline', node_id = NULL
        WHERE status IN ('online', 'draining')
          AND coalesce(last_heartbeat_at, connected_at, created_at) < $1
        RETURNING id""",
        utc(stale_before),
    )
    reaped = sorted(uid(row["id"]) for row in rows)
    if reaped:
        await release(
            connection, reaped, now, aging=aging, crash_limit=crash_limit, committed=committed
        )
    return reaped
