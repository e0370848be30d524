"""PostgreSQL: broadcasts (create, settle, cancel; see ``_broadcast``).

Lock order: a child's row before its parent's. Every path that ends a child (finish,
release, cancel) has the child locked when ``settle`` locks the parent (``FOR UPDATE``) and
reads the children in a later statement, so it sees every child ended by a transaction that
held the parent before it: of two last children ending at once, the second settles. A cancel
of the parent locks its children (in id order, as a finish batch does) before the parent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from uuid import UUID

from hetuflow.clock import utc
from hetuflow.errors import NoAgentForBroadcast
from hetuflow.models import BatchItem, BroadcastPolicy, NewBroadcast, NewTask, Task, TaskStatus
from hetuflow.store._broadcast import (
    DELETED_AGENT_ERROR,
    NOT_STARTED_ERROR,
    PARENT_CANCELLED_ERROR,
    ChildEnd,
    in_batch,
    join_batch,
    no_agent,
    settle_parent,
    split_batch,
    start_deadline,
)
from hetuflow.store._claims import Aging
from hetuflow.store._pg_db import CODEC, Conn, uid
from hetuflow.store._pg_tasks import insert_tasks
from hetuflow.store._rows import task_from, task_status

_MATCHING_AGENTS = """
SELECT id, name FROM agents
WHERE status = 'online' AND enabled AND deleted_at IS NULL
  AND $1 = ANY(supported_task_types) AND capabilities @> $2::text[]
ORDER BY name
FOR KEY SHARE"""
"""``FOR KEY SHARE``: a delete of one of them (which renames it) waits for this create, and
then cancels the child pinned to it; heartbeats and status changes do not wait."""


async def create_broadcast(
    connection: Conn, broadcast: NewBroadcast, now: datetime, aging: Aging
) -> tuple[Task, list[Task]]:
    """The parent (waiting) and one pending child per matching agent, pinned to it;
    ``NoAgentForBroadcast`` (nothing written) when no agent matches."""
    task = broadcast.task
    agents = await connection.fetch(
        _MATCHING_AGENTS, task.task_type, sorted(set(task.required_capabilities))
    )
    if not agents:
        raise no_agent(task)
    child = replace(task, webhook_url=None)  # only the parent reports its end
    created = await insert_tasks(connection, [task, *[child] * len(agents)], now, aging)
    parent, children = created[0][0], [made for made, _ in created[1:]]
    deadline = start_deadline(broadcast, now)
    await connection.execute(
        "UPDATE tasks SET status = 'waiting', broadcast_policy = $2, start_deadline_at = $3"
        " WHERE id = $1",
        parent.id,
        broadcast.policy.value,
        deadline,
    )
    await connection.execute(
        """UPDATE tasks AS t SET pinned_agent_id = c.agent_id, broadcast_of = $3,
            start_deadline_at = $4
        FROM unnest($1::uuid[], $2::uuid[]) AS c(id, agent_id) WHERE t.id = c.id""",
        [child.id for child in children],
        [row["id"] for row in agents],
        parent.id,
        deadline,
    )
    parent = replace(
        parent,
        status=TaskStatus.WAITING,
        broadcast_policy=broadcast.policy,
        start_deadline_at=deadline,
    )
    children = [
        replace(
            child,
            pinned_agent_id=uid(row["id"]),
            broadcast_of=parent.id,
            start_deadline_at=deadline,
        )
        for child, row in zip(children, agents, strict=True)
    ]
    return parent, children


async def create_batch(
    connection: Conn, items: Sequence[NewTask | NewBroadcast], now: datetime, aging: Aging
) -> list[BatchItem]:
    """``Store.create_batch``: the plain tasks, then each broadcast, in the caller's
    transaction; a broadcast no agent matches raises ``NoAgentForBroadcast`` naming its item
    (the transaction rolls back: nothing is created)."""
    plain, broadcasts = split_batch(items)
    made = await insert_tasks(connection, plain, now, aging) if plain else []
    parents: dict[int, tuple[Task, list[Task]]] = {}
    for index, broadcast in broadcasts:
        try:
            parents[index] = await create_broadcast(connection, broadcast, now, aging)
        except NoAgentForBroadcast as error:
            raise in_batch(error, index) from error
    return join_batch(items, made, parents)


_EXPIRE = f"""
UPDATE tasks AS t SET status = 'failed', finished_at = $1, updated_at = $1,
    error = '{NOT_STARTED_ERROR}: agent ' || coalesce(
        (SELECT CASE WHEN a.deleted_at IS NOT NULL THEN t.pinned_agent_id::text ELSE a.name END
            || ' was ' || CASE
                WHEN a.deleted_at IS NOT NULL THEN 'deleted'
                WHEN NOT a.enabled THEN 'disabled'
                WHEN a.status = 'online' THEN 'online (busy, or the task held back)'
                ELSE a.status END
         FROM agents AS a WHERE a.id = t.pinned_agent_id),
        t.pinned_agent_id::text)
FROM (SELECT id FROM tasks
      WHERE status = 'pending' AND start_deadline_at <= $1
      ORDER BY id FOR UPDATE SKIP LOCKED) AS due
WHERE t.id = due.id AND t.status = 'pending'
RETURNING t.*"""
"""Served by the partial index ``tasks_start_deadline``: only a broadcast's children are
pending with a start deadline (its parent waits). ``SKIP LOCKED``: a child a claim
(or another node's expiry) holds is left to it; the claim starts it, or the next pass ends
it. The children are locked before their parents (``settle``), the module's lock order."""


async def any_expired(connection: Conn, now: datetime) -> bool:
    """Whether a pending child is past its start deadline (one read, outside a transaction:
    most passes find none)."""
    found = await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'pending' AND start_deadline_at <= $1)",
        utc(now),
    )
    return bool(found)


async def expire_children(connection: Conn, now: datetime) -> list[Task]:
    """``Store.expire_broadcast_children``: the pending children past their start deadline
    fail (their error naming the agent and how it was), and their parents settle."""
    rows = await connection.fetch(_EXPIRE, utc(now))
    expired = [task_from(row, CODEC) for row in rows]
    await settle(connection, [task.broadcast_of for task in expired if task.broadcast_of], now)
    return expired


async def list_children(connection: Conn, parent_id: UUID) -> list[Task]:
    """A broadcast's children, by agent name."""
    rows = await connection.fetch(
        """SELECT t.* FROM tasks AS t LEFT JOIN agents AS a ON a.id = t.pinned_agent_id
        WHERE t.broadcast_of = $1 ORDER BY a.name, t.id""",
        parent_id,
    )
    return [task_from(row, CODEC) for row in rows]


async def parents_of(connection: Conn, task_ids: Sequence[UUID]) -> list[UUID]:
    """The broadcast parents of those of ``task_ids`` that are broadcast children."""
    rows = await connection.fetch(
        "SELECT DISTINCT broadcast_of FROM tasks"
        " WHERE id = ANY($1::uuid[]) AND broadcast_of IS NOT NULL",
        list(task_ids),
    )
    return [uid(row["broadcast_of"]) for row in rows]


async def settle(connection: Conn, parent_ids: Sequence[UUID], now: datetime) -> None:
    """End each of the waiting ``parent_ids`` whose children have all ended (``settle_parent``),
    in the caller's transaction, which has ended (and so locked) some of their children."""
    if not parent_ids:
        return
    parents = await connection.fetch(
        "SELECT id, broadcast_policy FROM tasks"
        " WHERE id = ANY($1::uuid[]) AND status = 'waiting' AND broadcast_policy IS NOT NULL"
        " ORDER BY id FOR UPDATE",
        sorted(set(parent_ids)),
    )
    stamp = utc(now)
    for parent in parents:
        children = await connection.fetch(
            """SELECT t.status, t.result, t.error,
                CASE WHEN a.deleted_at IS NULL THEN a.name ELSE t.pinned_agent_id::text END AS agent
            FROM tasks AS t LEFT JOIN agents AS a ON a.id = t.pinned_agent_id
            WHERE t.broadcast_of = $1""",
            parent["id"],
        )
        end = settle_parent(
            BroadcastPolicy(parent["broadcast_policy"]),
            [
                ChildEnd(
                    row["agent"],
                    task_status(row["status"]),
                    None if row["result"] is None else CODEC.json(row["result"]),
                    row["error"],
                )
                for row in children
            ],
        )
        if end is None:
            continue
        await connection.execute(
            """UPDATE tasks SET status = $2, result = $3, error = $4, finished_at = $5,
                updated_at = $5
            WHERE id = $1 AND status = 'waiting'""",
            parent["id"],
            end.status.value,
            end.result,
            end.error,
            stamp,
        )


async def lock_children(connection: Conn, parent_id: UUID) -> None:
    """Lock a parent's children in id order before the parent (the module's lock order)."""
    await connection.execute(
        "SELECT 1 FROM tasks WHERE broadcast_of = $1 ORDER BY id FOR UPDATE", parent_id
    )


async def cancel_children(connection: Conn, parent_id: UUID, now: datetime) -> None:
    """A cancelled parent's children: not yet dispatched -> cancelled, held -> cancelling
    (the caller tells their agents to stop: ``TaskQueue.cancel``)."""
    await connection.execute(
        """UPDATE tasks
        SET status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE 'cancelling' END,
            finished_at = CASE WHEN status = 'pending' THEN $2 ELSE finished_at END,
            error = CASE WHEN status = 'pending' THEN $3 ELSE error END,
            updated_at = $2
        WHERE broadcast_of = $1 AND status IN ('pending', 'dispatched', 'running')""",
        parent_id,
        utc(now),
        PARENT_CANCELLED_ERROR,
    )


async def cancel_pinned(connection: Conn, agent_id: UUID, now: datetime) -> None:
    """A deleted agent's pending children are cancelled (``DELETED_AGENT_ERROR``), and their
    parents settled: the agent will never take them. (Its held children were released by
    the delete first; those made pending end here too.)"""
    rows = await connection.fetch(
        """UPDATE tasks SET status = 'cancelled', error = $3, finished_at = $2, updated_at = $2
        WHERE pinned_agent_id = $1 AND status = 'pending'
        RETURNING broadcast_of""",
        agent_id,
        utc(now),
        DELETED_AGENT_ERROR,
    )
    await settle(connection, [uid(row["broadcast_of"]) for row in rows], now)
