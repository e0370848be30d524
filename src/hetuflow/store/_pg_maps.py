"""PostgreSQL: fan-out from data (``map_over``, docs/workflows.md).

A mapped step is released like any step, in the transaction that records its last parent's
success (``settle``, its workflow row locked); instead of going pending it fans out there:
one child step per item of its ``map_over`` parent's result, pending at once, each with an
edge to the mapped step, which stays ``waiting`` and now counts its children as its
unfinished parents. The transaction that ends its last child collects them: the mapped step
ends ``succeeded`` with their results in item order, or ``failed`` naming the first child
that did not. Children finishing at once on several nodes lower the mapped step's
``parents_left`` one after the other (the workflow row lock, then the conditional update), so
exactly one of them collects; a fan-out is guarded by ``map_count IS NULL``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from hetuflow.models import TaskStatus
from hetuflow.store._claims import Aging
from hetuflow.store._pg_db import Conn, uid
from hetuflow.store._pg_tasks import get_task, insert_tasks
from hetuflow.store._workflow_rows import Committed
from hetuflow.workflows import (
    MAX_PARENT_RESULTS_BYTES,
    MapChild,
    collect_children,
    map_child_name,
    map_child_spec,
    map_items,
)

Ends = dict[Any, tuple[TaskStatus, str | None]]

_MAPPED = """
SELECT s.task_id, s.workflow_id, s.name, s.position, s.map_over, s.map_count, t.task_type
FROM workflow_steps AS s JOIN tasks AS t ON t.id = s.task_id
WHERE s.task_id = ANY($1::uuid[]) AND s.map_over IS NOT NULL"""

_PARENT_RESULTS = """
SELECT p.name, t.result
FROM workflow_edges AS e
JOIN workflow_steps AS p ON p.task_id = e.parent_id
JOIN tasks AS t ON t.id = e.parent_id
WHERE e.child_id = $1 AND p.map_index IS NULL"""

_CHILDREN = """
SELECT p.name, t.status, t.result
FROM workflow_edges AS e
JOIN workflow_steps AS p ON p.task_id = e.parent_id
JOIN tasks AS t ON t.id = e.parent_id
WHERE e.child_id = $1 AND p.map_index IS NOT NULL
ORDER BY p.map_index"""

_FANNED_OUT = """
UPDATE workflow_steps SET map_count = $2, parents_left = $2
WHERE task_id = $1 AND map_count IS NULL
RETURNING task_id"""

_SUCCEED = """
UPDATE tasks SET status = 'succeeded', result = $2, finished_at = $3, updated_at = $3
WHERE id = $1 AND status = 'waiting'"""


async def mapped_steps(connection: Conn, task_ids: Sequence[Any]) -> dict[UUID, asyncpg.Record]:
    """Those of ``task_ids`` that are mapped steps, with their step row."""
    if not task_ids:
        return {}
    rows = await connection.fetch(_MAPPED, [uid(task_id) for task_id in task_ids])
    return {uid(row["task_id"]): row for row in rows}


async def release_mapped(
    connection: Conn,
    mapped: dict[UUID, asyncpg.Record],
    ends: Ends,
    now: datetime,
    aging: Aging,
    committed: Committed | None = None,
) -> tuple[list[UUID], list[UUID]]:
    """Fan out the mapped steps not fanned out yet, collect the others (every child has
    ended); a mapped step that cannot fan out goes to ``ends`` as failed, with the reason.
    Returns the children released and the mapped steps that succeeded; the children
    created are counted, by task type, in ``committed.created``."""
    released: list[UUID] = []
    succeeded: list[UUID] = []
    for task_id in sorted(mapped):
        row = mapped[task_id]
        if row["map_count"] is None:
            children = await _fan_out(connection, task_id, row, ends, now, aging, succeeded)
            released.extend(children)
            if children and committed is not None:
                committed.created[row["task_type"]] += len(children)
        else:
            await _collect(connection, task_id, ends, now, succeeded)
    return released, succeeded


async def _fan_out(
    connection: Conn,
    task_id: UUID,
    row: asyncpg.Record,
    ends: Ends,
    now: datetime,
    aging: Aging,
    succeeded: list[UUID],
) -> list[UUID]:
    parent_name: str = row["map_over"]
    others: dict[str, object] = {}
    items: list[object] | str = []
    for parent in await connection.fetch(_PARENT_RESULTS, task_id):
        if parent["name"] == parent_name:
            items = map_items(parent_name, parent["result"])
        else:
            others[parent["name"]] = parent["result"]
    if isinstance(items, str):
        ends[task_id] = (TaskStatus.FAILED, items)
        return []
    if not items:  # nothing to map: the mapped step succeeds at once, its result []
        if await connection.fetchval(_FANNED_OUT, task_id, 0) is not None:
            await connection.execute(_SUCCEED, task_id, [], now)
            succeeded.append(task_id)
        return []
    parents: list[str] = []
    for index, item in enumerate(items):
        document = orjson.dumps({**others, parent_name: item})
        if len(document) > MAX_PARENT_RESULTS_BYTES:
            ends[task_id] = (TaskStatus.FAILED, _too_large(index, len(document)))
            return []
        parents.append(document.decode())
    if await connection.fetchval(_FANNED_OUT, task_id, len(items)) is None:
        return []  # fanned out already (never, under the workflow row lock)
    mapped = await get_task(connection, task_id)
    assert mapped is not None
    created = await insert_tasks(
        connection, [map_child_spec(mapped, i, item) for i, item in enumerate(items)], now, aging
    )
    children = [task.id for task, _ in created]
    await connection.execute(
        "UPDATE tasks AS t SET parents = c.parents::jsonb"
        " FROM unnest($1::uuid[], $2::text[]) AS c(id, parents) WHERE t.id = c.id",
        children,
        parents,
    )
    step_name: str = row["name"]
    await connection.execute(
        """
        INSERT INTO workflow_steps
            (task_id, workflow_id, name, position, run_if, parents_left, map_index)
        SELECT c.id, $2, c.name, $3, 'all_succeeded', 0, c.index
        FROM unnest($1::uuid[], $4::text[], $5::int[]) AS c(id, name, index)""",
        children,
        row["workflow_id"],
        row["position"],
        [map_child_name(step_name, i) for i in range(len(children))],
        list(range(len(children))),
    )
    await connection.execute(
        "INSERT INTO workflow_edges (parent_id, child_id) SELECT unnest($1::uuid[]), $2",
        children,
        task_id,
    )
    return children


async def _collect(
    connection: Conn, task_id: UUID, ends: Ends, now: datetime, succeeded: list[UUID]
) -> None:
    children = [
        MapChild(row["name"], TaskStatus(row["status"]), row["result"])
        for row in await connection.fetch(_CHILDREN, task_id)
    ]
    status, outcome = collect_children(children)
    if isinstance(outcome, str):
        ends[task_id] = (status, outcome)
        return
    await connection.execute(_SUCCEED, task_id, outcome, now)
    succeeded.append(task_id)


def _too_large(index: int, size: int) -> str:
    return (
        f"map_over: the parents' results of item {index} total {size} bytes as JSON, over the"
        f" limit of {MAX_PARENT_RESULTS_BYTES} (docs/workflows.md, Limits)"
    )
