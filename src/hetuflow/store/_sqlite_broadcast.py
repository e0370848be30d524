"""SQLite: broadcasts (create, settle, cancel; see ``_broadcast``).

The single writer holds the database for a whole transaction: a settle reads every child as
the transactions before it left them, so the last child to end settles its parent, once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from uuid import UUID

from hetuflow.errors import NoAgentForBroadcast
from hetuflow.models import BatchItem, BroadcastPolicy, NewBroadcast, NewTask, Task, TaskStatus
from hetuflow.store import _sqlite_workflows as workflow_sql
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
from hetuflow.store._rows import task_from, task_status
from hetuflow.store._sqlite_db import CODEC, id_list, json_rows, micros
from hetuflow.store._sqlite_tasks import create_tasks
from hetuflow.store._workflow_rows import Committed

_MATCHING_AGENTS = """
SELECT id, name FROM agents AS a
WHERE status = 'online' AND enabled AND deleted_at IS NULL
  AND EXISTS (SELECT 1 FROM json_each(a.supported_task_types) WHERE value = ?)
  AND NOT EXISTS (
      SELECT 1 FROM json_each(?) AS need
      WHERE need.value NOT IN (SELECT value FROM json_each(a.capabilities)))
ORDER BY name"""


def create_broadcast(
    connection: sqlite3.Connection, broadcast: NewBroadcast, now: datetime, aging: Aging
) -> tuple[Task, list[Task]]:
    """The parent (waiting) and one pending child per matching agent, pinned to it;
    ``NoAgentForBroadcast`` (nothing written) when no agent matches."""
    task = broadcast.task
    agents = connection.execute(
        _MATCHING_AGENTS, (task.task_type, id_list(sorted(set(task.required_capabilities))))
    ).fetchall()
    if not agents:
        raise no_agent(task)
    child = replace(task, webhook_url=None)  # only the parent reports its end
    created = create_tasks(connection, [task, *[child] * len(agents)], now, aging)
    parent, children = created[0][0], [made for made, _ in created[1:]]
    deadline = start_deadline(broadcast, now)
    connection.execute(
        "UPDATE tasks SET status = 'waiting', broadcast_policy = ?, start_deadline_at = ?"
        " WHERE id = ?",
        (broadcast.policy.value, CODEC.put_time(deadline), str(parent.id)),
    )
    connection.execute(
        """UPDATE tasks SET pinned_agent_id = c.value ->> 1, broadcast_of = ?,
            start_deadline_at = ?
        FROM json_each(?) AS c WHERE tasks.id = c.value ->> 0""",
        (
            str(parent.id),
            CODEC.put_time(deadline),
            json_rows(
                [(str(child.id), row["id"]) for child, row in zip(children, agents, strict=True)]
            ),
        ),
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
            pinned_agent_id=UUID(row["id"]),
            broadcast_of=parent.id,
            start_deadline_at=deadline,
        )
        for child, row in zip(children, agents, strict=True)
    ]
    return parent, children


def create_batch(
    connection: sqlite3.Connection,
    items: Sequence[NewTask | NewBroadcast],
    now: datetime,
    aging: Aging,
) -> list[BatchItem]:
    """``Store.create_batch``: the plain tasks, then each broadcast, in one transaction;
    a broadcast no agent matches raises ``NoAgentForBroadcast`` naming its item (the
    caller's transaction rolls back: nothing is created)."""
    plain, broadcasts = split_batch(items)
    made = create_tasks(connection, plain, now, aging) if plain else []
    parents: dict[int, tuple[Task, list[Task]]] = {}
    for index, broadcast in broadcasts:
        try:
            parents[index] = create_broadcast(connection, broadcast, now, aging)
        except NoAgentForBroadcast as error:
            raise in_batch(error, index) from error
    return join_batch(items, made, parents)


_EXPIRE = f"""
UPDATE tasks INDEXED BY tasks_start_deadline
SET status = 'failed', finished_at = :now, updated_at = :now,
    error = '{NOT_STARTED_ERROR}: agent ' || coalesce(
        (SELECT CASE WHEN a.deleted_at IS NOT NULL THEN tasks.pinned_agent_id ELSE a.name END
            || ' was ' || CASE
                WHEN a.deleted_at IS NOT NULL THEN 'deleted'
                WHEN NOT a.enabled THEN 'disabled'
                WHEN a.status = 'online' THEN 'online (busy, or the task held back)'
                ELSE a.status END
         FROM agents AS a WHERE a.id = tasks.pinned_agent_id),
        tasks.pinned_agent_id)
WHERE status = 'pending' AND start_deadline_at <= :now
RETURNING *"""
"""Read through the partial index ``tasks_start_deadline`` (INDEXED BY: left alone, SQLite
reads every pending task through ``tasks_status_created``): only a broadcast's children are
pending with a start deadline (its parent waits)."""


def any_expired(connection: sqlite3.Connection, now: datetime) -> bool:
    """Whether a pending child is past its start deadline (a read: most passes find none and
    take no write lock)."""
    return (
        connection.execute(
            "SELECT 1 FROM tasks INDEXED BY tasks_start_deadline"
            " WHERE status = 'pending' AND start_deadline_at <= ? LIMIT 1",
            (micros(now),),
        ).fetchone()
        is not None
    )


def expire_children(connection: sqlite3.Connection, now: datetime) -> list[Task]:
    """``Store.expire_broadcast_children``: the pending children past their start deadline
    fail (their error naming the agent and how it was), and their parents settle."""
    rows = connection.execute(_EXPIRE, {"now": micros(now)}).fetchall()
    expired = [task_from(row, CODEC) for row in rows]
    settle(connection, [str(task.broadcast_of) for task in expired if task.broadcast_of], now)
    return expired


def list_children(connection: sqlite3.Connection, parent_id: UUID) -> list[Task]:
    """A broadcast's children, by agent name."""
    rows = connection.execute(
        """SELECT t.* FROM tasks AS t LEFT JOIN agents AS a ON a.id = t.pinned_agent_id
        WHERE t.broadcast_of = ? ORDER BY a.name, t.id""",
        (str(parent_id),),
    ).fetchall()
    return [task_from(row, CODEC) for row in rows]


def parents_of(connection: sqlite3.Connection, task_ids: Sequence[UUID | str]) -> list[str]:
    """The broadcast parents of those of ``task_ids`` that are broadcast children."""
    rows = connection.execute(
        "SELECT DISTINCT broadcast_of FROM tasks"
        " WHERE id IN (SELECT value FROM json_each(?)) AND broadcast_of IS NOT NULL",
        (id_list(task_ids),),
    ).fetchall()
    return [row["broadcast_of"] for row in rows]


def settle(connection: sqlite3.Connection, parent_ids: Sequence[str], now: datetime) -> None:
    """End each of the waiting ``parent_ids`` whose children have all ended
    (``settle_parent``), in the caller's transaction."""
    stamp = micros(now)
    for parent_id in sorted(set(parent_ids)):
        parent = connection.execute(
            "SELECT broadcast_policy FROM tasks"
            " WHERE id = ? AND status = 'waiting' AND broadcast_policy IS NOT NULL",
            (parent_id,),
        ).fetchone()
        if parent is None:
            continue
        children = connection.execute(
            """SELECT t.status, t.result, t.error,
                CASE WHEN a.deleted_at IS NULL THEN a.name ELSE t.pinned_agent_id END AS agent
            FROM tasks AS t LEFT JOIN agents AS a ON a.id = t.pinned_agent_id
            WHERE t.broadcast_of = ?""",
            (parent_id,),
        ).fetchall()
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
        connection.execute(
            """UPDATE tasks SET status = ?, result = ?, error = ?, finished_at = ?,
                updated_at = ?
            WHERE id = ? AND status = 'waiting'""",
            (
                end.status.value,
                CODEC.put_json(end.result),
                end.error,
                stamp,
                stamp,
                parent_id,
            ),
        )


def settle_of(connection: sqlite3.Connection, ended: Sequence[UUID | str], now: datetime) -> None:
    """``settle`` the parents of the tasks of ``ended`` that are broadcast children."""
    if ended:
        settle(connection, parents_of(connection, ended), now)


def cancel_task(
    connection: sqlite3.Connection,
    task_id: UUID,
    now: datetime,
    aging: Aging,
    reason: str | None = None,
    committed: Committed | None = None,
) -> Task:
    """``Store.cancel_task`` (``_sqlite_workflows.cancel_task``), and for a broadcast: a
    cancelled parent cancels its children (not yet dispatched -> cancelled, held ->
    cancelling), a cancelled child may end its parent."""
    task = workflow_sql.cancel_task(connection, task_id, now, aging, reason, committed)
    if task.broadcast_policy is not None:
        stamp = micros(now)
        connection.execute(
            """UPDATE tasks
            SET status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE 'cancelling' END,
                finished_at = CASE WHEN status = 'pending' THEN ? ELSE finished_at END,
                error = CASE WHEN status = 'pending' THEN ? ELSE error END,
                updated_at = ?
            WHERE broadcast_of = ? AND status IN ('pending', 'dispatched', 'running')""",
            (stamp, PARENT_CANCELLED_ERROR, stamp, str(task.id)),
        )
    elif task.broadcast_of is not None and task.status is TaskStatus.CANCELLED:
        settle(connection, [str(task.broadcast_of)], now)
    return task


def cancel_pinned(connection: sqlite3.Connection, agent_id: UUID, now: datetime) -> None:
    """A deleted agent's pending children are cancelled (``DELETED_AGENT_ERROR``), and their
    parents settled: the agent will never take them."""
    stamp = micros(now)
    rows = connection.execute(
        """UPDATE tasks SET status = 'cancelled', error = ?, finished_at = ?, updated_at = ?
        WHERE pinned_agent_id = ? AND status = 'pending'
        RETURNING broadcast_of""",
        (DELETED_AGENT_ERROR, stamp, stamp, str(agent_id)),
    ).fetchall()
    settle(connection, [row["broadcast_of"] for row in rows], now)
