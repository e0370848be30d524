"""PostgreSQL: triggers, hooks and the delivery of events (docs/triggers.md).

An event's primary key decides its one delivery: ``INSERT ... ON CONFLICT (id) DO NOTHING``;
a concurrent delivery of the same id (on any node) waits for the first one's commit, inserts
nothing and reads what the first one created.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from hetuflow.clock import utc
from hetuflow.errors import (
    EventIdReused,
    HookNameTaken,
    HookNotFound,
    TriggerNameTaken,
    TriggerNotFound,
)
from hetuflow.models import Task
from hetuflow.store._claims import Aging
from hetuflow.store._pg_db import CODEC, Conn, uid
from hetuflow.store._pg_tasks import insert_tasks
from hetuflow.store._pg_workflows import create_workflow, get_workflow
from hetuflow.store._rows import task_from
from hetuflow.store._trigger_rows import hook_from, trigger_from
from hetuflow.triggers import (
    EventDelivery,
    Hook,
    NewEvent,
    NewHook,
    NewTrigger,
    Trigger,
    TriggeredTask,
    TriggeredWorkflow,
)


async def create_trigger(connection: Conn, new: NewTrigger, now: datetime) -> Trigger:
    try:
        row = await connection.fetchrow(
            "INSERT INTO triggers (id, name, event_key, filter, task, workflow, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
            uuid.uuid4(),
            new.name,
            new.event_key,
            new.filter,
            new.task,
            new.workflow,
            utc(now),
        )
    except asyncpg.UniqueViolationError as error:
        raise TriggerNameTaken(f"a trigger named {new.name!r} exists", field="name") from error
    assert row is not None
    return trigger_from(row, CODEC)


async def get_trigger(connection: Conn, trigger_id: UUID) -> Trigger | None:
    row = await connection.fetchrow("SELECT * FROM triggers WHERE id = $1", trigger_id)
    return None if row is None else trigger_from(row, CODEC)


async def list_triggers(connection: Conn, event_key: str | None) -> list[Trigger]:
    if event_key is None:
        rows = await connection.fetch("SELECT * FROM triggers ORDER BY name")
    else:
        rows = await connection.fetch(
            "SELECT * FROM triggers WHERE event_key = $1 ORDER BY name", event_key
        )
    return [trigger_from(row, CODEC) for row in rows]


async def delete_trigger(connection: Conn, trigger_id: UUID) -> None:
    status = await connection.execute("DELETE FROM triggers WHERE id = $1", trigger_id)
    if status == "DELETE 0":
        raise TriggerNotFound(f"trigger {trigger_id} does not exist", field="trigger_id")


async def create_hook(connection: Conn, new: NewHook, now: datetime) -> Hook:
    try:
        row = await connection.fetchrow(
            "INSERT INTO hooks (id, name, event_key, secret, created_at)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING *",
            uuid.uuid4(),
            new.name,
            new.event_key,
            new.secret,
            utc(now),
        )
    except asyncpg.UniqueViolationError as error:
        raise HookNameTaken(f"a hook named {new.name!r} exists", field="name") from error
    assert row is not None
    return hook_from(row, CODEC)


async def get_hook(connection: Conn, name: str) -> Hook | None:
    row = await connection.fetchrow("SELECT * FROM hooks WHERE name = $1", name)
    return None if row is None else hook_from(row, CODEC)


async def list_hooks(connection: Conn) -> list[Hook]:
    return [
        hook_from(row, CODEC) for row in await connection.fetch("SELECT * FROM hooks ORDER BY name")
    ]


async def delete_hook(connection: Conn, name: str) -> None:
    status = await connection.execute("DELETE FROM hooks WHERE name = $1", name)
    if status == "DELETE 0":
        raise HookNotFound(f"no hook is named {name!r}", field="name")


async def record_event(
    connection: Conn,
    event: NewEvent,
    tasks: Sequence[TriggeredTask],
    workflows: Sequence[TriggeredWorkflow],
    now: datetime,
    aging: Aging,
) -> EventDelivery:
    matched = len(tasks) + len(workflows)
    won = await connection.fetchval(
        "INSERT INTO events (id, key, data, matched, received_at) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        event.id,
        event.key,
        event.data,
        matched,
        utc(now),
    )
    if won is None:
        previous = await get_event(connection, event.id)
        assert previous is not None  # the conflicting row, committed; events are never deleted
        if previous.key != event.key:
            raise EventIdReused(
                f"event id {event.id!r} was delivered with key {previous.key!r}",
                field="id",
            )
        return previous
    created = (
        await insert_tasks(connection, [task for _, task in tasks], now, aging) if tasks else []
    )
    if created:
        await connection.executemany(
            "INSERT INTO event_tasks (event_id, position, task_id, trigger_name)"
            " VALUES ($1, $2, $3, $4)",
            [
                (event.id, position, task.id, trigger_name)
                for position, ((trigger_name, _), (task, _)) in enumerate(
                    zip(tasks, created, strict=True)
                )
            ],
        )
    started = [
        await create_workflow(connection, workflow, steps, now, aging)
        for _, workflow, steps in workflows
    ]
    if started:
        await connection.executemany(
            "INSERT INTO event_workflows (event_id, position, workflow_id, trigger_name)"
            " VALUES ($1, $2, $3, $4)",
            [
                (event.id, position, workflow.id, trigger_name)
                for position, ((trigger_name, _, _), workflow) in enumerate(
                    zip(workflows, started, strict=True)
                )
            ],
        )
    return EventDelivery(
        event_id=event.id,
        key=event.key,
        received_at=utc(now),
        created=True,
        matched=matched,
        tasks=tuple(task for task, _ in created),
        workflows=tuple(started),
    )


async def get_event(connection: Conn, event_id: str) -> EventDelivery | None:
    """The first delivery of ``event_id`` (``created`` False), with its still existing tasks."""
    row = await connection.fetchrow(
        "SELECT key, matched, received_at FROM events WHERE id = $1", event_id
    )
    if row is None:
        return None
    rows = await connection.fetch(
        "SELECT t.* FROM event_tasks e JOIN tasks t ON t.id = e.task_id"
        " WHERE e.event_id = $1 ORDER BY e.position",
        event_id,
    )
    tasks: tuple[Task, ...] = tuple(task_from(task, CODEC) for task in rows)
    workflow_ids = await connection.fetch(
        "SELECT workflow_id FROM event_workflows WHERE event_id = $1 ORDER BY position", event_id
    )
    workflows = [
        await get_workflow(connection, uid(found["workflow_id"])) for found in workflow_ids
    ]
    return EventDelivery(
        event_id=event_id,
        key=row["key"],
        received_at=utc(row["received_at"]),
        created=False,
        matched=row["matched"],
        tasks=tasks,
        workflows=tuple(workflow for workflow in workflows if workflow is not None),
    )
