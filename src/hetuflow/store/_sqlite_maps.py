"""SQLite: fan-out from data (``map_over``, docs/workflows.md).

A mapped step is released like any step, in the transaction that records its last parent's
success (``settle``); instead of going pending it fans out there: one child step per item of
its ``map_over`` parent's result, pending at once, each with an edge to the mapped step,
which stays ``waiting`` and now counts its children as its unfinished parents. The
transaction that ends its last child collects them: the mapped step ends ``succeeded`` with
their results in item order, or ``failed`` naming the first child that did not. The single
writer makes both happen exactly once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import orjson

from hetuflow.models import TaskStatus
from hetuflow.store._claims import Aging
from hetuflow.store._sqlite_db import CODEC, id_list, json_rows, micros
from hetuflow.store._sqlite_tasks import create_tasks, get_task
from hetuflow.store._workflow_rows import Committed
from hetuflow.workflows import (
    MAX_PARENT_RESULTS_BYTES,
    MapChild,
    collect_children,
    map_child_name,
    map_child_spec,
    map_items,
)

Ends = dict[str, tuple[TaskStatus, str | None]]

_MAPPED = """
SELECT s.task_id, s.workflow_id, s.name, s.position, s.map_over, s.map_count, p.task_id AS parent,
       t.task_type
FROM workflow_steps AS s
JOIN tasks AS t ON t.id = s.task_id
JOIN workflow_steps AS p ON p.workflow_id = s.workflow_id AND p.name = s.map_over
WHERE s.task_id IN (SELECT value FROM json_each(?)) AND s.map_over IS NOT NULL"""

_PARENT_RESULTS = """
SELECT p.task_id, p.name, t.result
FROM workflow_edges AS e
JOIN workflow_steps AS p ON p.task_id = e.parent_id
JOIN tasks AS t ON t.id = e.parent_id
WHERE e.child_id = ? AND p.map_index IS NULL"""

_CHILDREN = """
SELECT p.name, t.status, t.result
FROM workflow_edges AS e
JOIN workflow_steps AS p ON p.task_id = e.parent_id
JOIN tasks AS t ON t.id = e.parent_id
WHERE e.child_id = ? AND p.map_index IS NOT NULL
ORDER BY p.map_index"""

_FANNED_OUT = """
UPDATE workflow_steps SET map_count = ?, parents_left = ?
WHERE task_id = ? AND map_count IS NULL"""

_SUCCEED = """
UPDATE tasks SET status = 'succeeded', result = ?, finished_at = ?, updated_at = ?
WHERE id = ? AND status = 'waiting'"""


def mapped_steps(
    connection: sqlite3.Connection, task_ids: Sequence[str]
) -> dict[str, dict[str, object]]:
    """Those of ``task_ids`` that are mapped steps, with their step row."""
    if not task_ids:
        return {}
    rows = connection.execute(_MAPPED, (id_list(task_ids),)).fetchall()
    return {row["task_id"]: dict(row) for row in rows}


def release_mapped(
    connection: sqlite3.Connection,
    mapped: dict[str, dict[str, object]],
    ends: Ends,
    now: datetime,
    aging: Aging,
    committed: Committed | None = None,
) -> tuple[list[str], list[str]]:
    """Fan out the mapped steps not fanned out yet, collect the others (every child has
    ended); a mapped step that cannot fan out goes to ``ends`` as failed, with the reason.
    Returns the children released and the mapped steps that succeeded; the children
    created are counted, by task type, in ``committed.created``."""
    released: list[str] = []
    succeeded: list[str] = []
    for task_id in sorted(mapped):
        row = mapped[task_id]
        if row["map_count"] is None:
            children = _fan_out(connection, row, ends, now, aging, succeeded)
            released.extend(children)
            if children and committed is not None:
                committed.created[str(row["task_type"])] += len(children)
        else:
            _collect(connection, task_id, ends, now, succeeded)
    return released, succeeded


def _fan_out(
    connection: sqlite3.Connection,
    row: dict[str, object],
    ends: Ends,
    now: datetime,
    aging: Aging,
    succeeded: list[str],
) -> list[str]:
    task_id, parent_name = str(row["task_id"]), str(row["map_over"])
    others: dict[str, object] = {}
    items: list[object] | str = []
    for parent in connection.execute(_PARENT_RESULTS, (task_id,)):
        result = None if parent["result"] is None else CODEC.json(parent["result"])
        if parent["name"] == parent_name:
            items = map_items(parent_name, result)
        else:
            others[parent["name"]] = result
    if isinstance(items, str):
        ends[task_id] = (TaskStatus.FAILED, items)
        return []
    stamp = micros(now)
    if not items:  # nothing to map: the mapped step succeeds at once, its result []
        connection.execute(_SUCCEED, ("[]", stamp, stamp, task_id))
        connection.execute(_FANNED_OUT, (0, 0, task_id))
        succeeded.append(task_id)
        return []
    parents: list[str] = []
    for index, item in enumerate(items):
        document = orjson.dumps({**others, parent_name: item}).decode()
        if len(document) > MAX_PARENT_RESULTS_BYTES:
            ends[task_id] = (TaskStatus.FAILED, _too_large(index, len(document.encode())))
            return []
        parents.append(document)
    mapped = get_task(connection, UUID(task_id))
    assert mapped is not None
    created = create_tasks(
        connection, [map_child_spec(mapped, i, item) for i, item in enumerate(items)], now, aging
    )
    children = [str(task.id) for task, _ in created]
    connection.execute(
        "UPDATE tasks SET parents = c.value ->> 1"
        " FROM (SELECT value FROM json_each(?)) AS c WHERE tasks.id = c.value ->> 0",
        (json_rows(list(zip(children, parents, strict=True))),),
    )
    step_name = str(row["name"])
    connection.execute(
        """
        INSERT INTO workflow_steps
            (task_id, workflow_id, name, position, run_if, parents_left, map_index)
        SELECT value ->> 0, ?, value ->> 1, ?, 'all_succeeded', 0, value ->> 2
        FROM json_each(?)""",
        (
            row["workflow_id"],
            row["position"],
            json_rows(
                [(child, map_child_name(step_name, i), i) for i, child in enumerate(children)]
            ),
        ),
    )
    connection.execute(
        "INSERT INTO workflow_edges (parent_id, child_id) SELECT value, ? FROM json_each(?)",
        (task_id, id_list(children)),
    )
    connection.execute(_FANNED_OUT, (len(children), len(children), task_id))
    return children


def _collect(
    connection: sqlite3.Connection, task_id: str, ends: Ends, now: datetime, succeeded: list[str]
) -> None:
    children = [
        MapChild(
            row["name"],
            TaskStatus(row["status"]),
            None if row["result"] is None else CODEC.json(row["result"]),
        )
        for row in connection.execute(_CHILDREN, (task_id,))
    ]
    status, outcome = collect_children(children)
    if isinstance(outcome, str):
        ends[task_id] = (status, outcome)
        return
    stamp = micros(now)
    connection.execute(_SUCCEED, (orjson.dumps(outcome).decode(), stamp, stamp, task_id))
    succeeded.append(task_id)


def _too_large(index: int, size: int) -> str:
    return (
        f"map_over: the parents' results of item {index} total {size} bytes as JSON, over the"
        f" limit of {MAX_PARENT_RESULTS_BYTES} (docs/workflows.md, Limits)"
    )
