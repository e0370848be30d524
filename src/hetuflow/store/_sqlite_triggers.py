"""SQLite: triggers, hooks and the delivery of events (docs/triggers.md).

An event's primary key decides its one delivery: ``INSERT ... ON CONFLICT (id) DO NOTHING``;
the single writer makes a replay wait for the first delivery's commit.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from hetuflow.errors import (
    EventIdReused,
    HookNameTaken,
    HookNotFound,
    TriggerNameTaken,
    TriggerNotFound,
)
from hetuflow.models import Task
from hetuflow.store._claims import Aging
from hetuflow.store._rows import task_from
from hetuflow.store._sqlite_db import CODEC, micros
from hetuflow.store._sqlite_tasks import create_tasks
from hetuflow.store._sqlite_workflows import create_workflow, get_workflow
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


def create_trigger(connection: sqlite3.Connection, new: NewTrigger, now: datetime) -> Trigger:
    try:
        row = connection.execute(
            "INSERT INTO triggers (id, name, event_key, filter, task, workflow, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
            (
                str(uuid.uuid4()),
                new.name,
                new.event_key,
                CODEC.put_json(new.filter),
                None if new.task is None else CODEC.put_json(new.task),
                None if new.workflow is None else CODEC.put_json(new.workflow),
                micros(now),
            ),
        ).fetchone()
    except sqlite3.IntegrityError as error:
        raise TriggerNameTaken(f"a trigger named {new.name!r} exists", field="name") from error
    return trigger_from(row, CODEC)


def get_trigger(connection: sqlite3.Connection, trigger_id: UUID) -> Trigger | None:
    row = connection.execute("SELECT * FROM triggers WHERE id = ?", (str(trigger_id),)).fetchone()
    return None if row is None else trigger_from(row, CODEC)


def list_triggers(connection: sqlite3.Connection, event_key: str | None) -> list[Trigger]:
    if event_key is None:
        rows = connection.execute("SELECT * FROM triggers ORDER BY name")
    else:
        rows = connection.execute(
            "SELECT * FROM triggers WHERE event_key = ? ORDER BY name", (event_key,)
        )
    return [trigger_from(row, CODEC) for row in rows]


def delete_trigger(connection: sqlite3.Connection, trigger_id: UUID) -> None:
    cursor = connection.execute("DELETE FROM triggers WHERE id = ?", (str(trigger_id),))
    if cursor.rowcount == 0:
        raise TriggerNotFound(f"trigger {trigger_id} does not exist", field="trigger_id")


def create_hook(connection: sqlite3.Connection, new: NewHook, now: datetime) -> Hook:
    try:
        row = connection.execute(
            "INSERT INTO hooks (id, name, event_key, secret, created_at)"
            " VALUES (?, ?, ?, ?, ?) RETURNING *",
            (str(uuid.uuid4()), new.name, new.event_key, new.secret, micros(now)),
        ).fetchone()
    except sqlite3.IntegrityError as error:
        raise HookNameTaken(f"a hook named {new.name!r} exists", field="name") from error
    return hook_from(row, CODEC)


def get_hook(connection: sqlite3.Connection, name: str) -> Hook | None:
    row = connection.execute("SELECT * FROM hooks WHERE name = ?", (name,)).fetchone()
    return None if row is None else hook_from(row, CODEC)


def list_hooks(connection: sqlite3.Connection) -> list[Hook]:
    return [
        hook_from(row, CODEC) for row in connection.execute("SELECT * FROM hooks ORDER BY name")
    ]


def delete_hook(connection: sqlite3.Connection, name: str) -> None:
    cursor = connection.execute("DELETE FROM hooks WHERE name = ?", (name,))
    if cursor.rowcount == 0:
        raise HookNotFound(f"no hook is named {name!r}", field="name")


def record_event(
    connection: sqlite3.Connection,
    event: NewEvent,
    tasks: Sequence[TriggeredTask],
    workflows: Sequence[TriggeredWorkflow],
    now: datetime,
    aging: Aging,
) -> EventDelivery:
    matched = len(tasks) + len(workflows)
    won = connection.execute(
        "INSERT INTO events (id, key, data, matched, received_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        (event.id, event.key, CODEC.put_json(event.data), matched, micros(now)),
    ).fetchone()
    if won is None:
        previous = get_event(connection, event.id)
        assert previous is not None  # the conflicting row; events are never deleted
        if previous.key != event.key:
            raise EventIdReused(
                f"event id {event.id!r} was delivered with key {previous.key!r}",
                field="id",
            )
        return previous
    created = create_tasks(connection, [task for _, task in tasks], now, aging) if tasks else []
    connection.executemany(  # nothing when no trigger's filter matched
        "INSERT INTO event_tasks (event_id, position, task_id, trigger_name) VALUES (?, ?, ?, ?)",
        [
            (event.id, position, str(task.id), trigger_name)
            for position, ((trigger_name, _), (task, _)) in enumerate(
                zip(tasks, created, strict=True)
            )
        ],
    )
    started = [
        create_workflow(connection, workflow, steps, now, aging) for _, workflow, steps in workflows
    ]
    connection.executemany(
        "INSERT INTO event_workflows (event_id, position, workflow_id, trigger_name)"
        " VALUES (?, ?, ?, ?)",
        [
            (event.id, position, str(workflow.id), trigger_name)
            for position, ((trigger_name, _, _), workflow) in enumerate(
                zip(workflows, started, strict=True)
            )
        ],
    )
    return EventDelivery(
        event_id=event.id,
        key=event.key,
        received_at=now,
        created=True,
        matched=matched,
        tasks=tuple(task for task, _ in created),
        workflows=tuple(started),
    )


def get_event(connection: sqlite3.Connection, event_id: str) -> EventDelivery | None:
    """The first delivery of ``event_id`` (``created`` False), with its still existing tasks."""
    row = connection.execute(
        "SELECT key, matched, received_at FROM events WHERE id = ?", (event_id,)
    ).fetchone()
    if row is None:
        return None
    rows = connection.execute(
        "SELECT t.* FROM event_tasks e JOIN tasks t ON t.id = e.task_id"
        " WHERE e.event_id = ? ORDER BY e.position",
        (event_id,),
    )
    tasks: tuple[Task, ...] = tuple(task_from(task, CODEC) for task in rows)
    workflow_ids = connection.execute(
        "SELECT workflow_id FROM event_workflows WHERE event_id = ? ORDER BY position",
        (event_id,),
    ).fetchall()
    workflows = [get_workflow(connection, UUID(found["workflow_id"])) for found in workflow_ids]
    received_at = CODEC.time(row["received_at"])
    assert received_at is not None
    return EventDelivery(
        event_id=event_id,
        key=row["key"],
        received_at=received_at,
        created=False,
        matched=row["matched"],
        tasks=tasks,
        workflows=tuple(workflow for workflow in workflows if workflow is not None),
    )
