"""PostgreSQL: workflows (create, read, list, cancel) and ``settle``, the release of steps.

``settle`` runs inside the transaction that made steps terminal (``finish_attempts``,
``cancel_task``, ``release``). Lock order, the same in every transaction that ends a step
or cancels a workflow: the workflow rows first (``FOR UPDATE``, in id order;
``lock_workflows_of``), then the task rows (in id order). Two nodes finishing two parents of
one child at the same instant settle one after the other, and the second reads the first
one's committed result, so the child is released exactly once; and a cancel racing the
finish of the step it cancels queues behind it instead of deadlocking.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from hetuflow.clock import utc
from hetuflow.errors import WorkflowAlreadyFinished, WorkflowNotFound
from hetuflow.models import Page, Task, TaskStatus
from hetuflow.store import _pg_maps as maps
from hetuflow.store import _pg_tasks as task_sql
from hetuflow.store._claims import Aging
from hetuflow.store._pg_db import CODEC, Conn, uid
from hetuflow.store._pg_tasks import insert_tasks
from hetuflow.store._rules import ACTIVE_SQL
from hetuflow.store._workflow_rows import (
    FINISHED_SQL,
    STEP_COLUMNS,
    STEP_ORDER,
    Committed,
    Done,
    child_decision,
    counts_of,
    done_from,
    finished_status,
    stops,
    summary_from,
    workflow_from,
)
from hetuflow.workflow_retry import retry_plan
from hetuflow.workflows import (
    MAX_PARENT_RESULTS_BYTES,
    NewStep,
    NewWorkflow,
    Parent,
    RunIf,
    Workflow,
    WorkflowStatus,
    WorkflowSummary,
    stop_reason,
)

CANCELLED_WITH_WORKFLOW = "cancelled with its workflow"

_LOCK_WORKFLOWS = """
SELECT id FROM workflows
WHERE id IN (SELECT workflow_id FROM workflow_steps WHERE task_id = ANY($1::uuid[]))
ORDER BY id FOR UPDATE"""

_DONE = """
SELECT s.task_id, s.workflow_id, s.name, t.status, t.error, w.on_failure, w.cancelled_at
FROM workflow_steps AS s
JOIN tasks AS t ON t.id = s.task_id
JOIN workflows AS w ON w.id = s.workflow_id
WHERE s.task_id = ANY($1::uuid[])"""

_WAITING_CHILDREN = """
SELECT e.child_id, e.parent_id
FROM workflow_edges AS e JOIN tasks AS c ON c.id = e.child_id
WHERE e.parent_id = ANY($1::uuid[]) AND c.status = 'waiting'"""

_LOSE_PARENTS = """
UPDATE workflow_steps AS s SET parents_left = s.parents_left - c.n
FROM unnest($1::uuid[], $2::int[]) AS c(id, n)
WHERE s.task_id = c.id
RETURNING s.task_id, s.workflow_id, s.parents_left, s.run_if, s.map_count"""

_PARENTS = """
SELECT e.child_id, p.name, t.status, t.error
FROM workflow_edges AS e
JOIN workflow_steps AS p ON p.task_id = e.parent_id
JOIN tasks AS t ON t.id = e.parent_id
WHERE e.child_id = ANY($1::uuid[])"""

_PARENT_RESULTS = """
SELECT e.child_id, jsonb_object_agg(p.name, t.result) AS parents
FROM workflow_edges AS e
JOIN workflow_steps AS p ON p.task_id = e.parent_id
JOIN tasks AS t ON t.id = e.parent_id
WHERE e.child_id = ANY($1::uuid[])
GROUP BY e.child_id"""

_STOPPABLE = """
SELECT s.task_id, s.workflow_id FROM workflow_steps AS s JOIN tasks AS t ON t.id = s.task_id
WHERE s.workflow_id = ANY($1::uuid[]) AND s.run_if = 'all_succeeded' AND t.status = 'waiting'
  AND s.map_count IS NULL"""
"""A mapped step that has fanned out is not stopped: it waits for its children."""

_END = """
UPDATE tasks AS t SET status = c.status, error = c.error, finished_at = $2, updated_at = $2
FROM json_to_recordset($1::json) AS c(id uuid, status text, error text)
WHERE t.id = c.id AND t.status = 'waiting'
RETURNING t.id"""

_RELEASE = """
UPDATE tasks AS t
SET status = 'pending', parents = c.parents, scheduled_at = greatest(t.scheduled_at, $2),
    claim_key = (extract(epoch FROM greatest(t.scheduled_at, $2)) * 1000000)::bigint
                - t.priority * $3::bigint,
    updated_at = $2
FROM json_to_recordset($1::json) AS c(id uuid, parents jsonb)
WHERE t.id = c.id AND t.status = 'waiting'"""


# --- create -----------------------------------------------------------------------------------


async def create_workflow(
    connection: Conn,
    workflow: NewWorkflow,
    steps: Sequence[NewStep],
    now: datetime,
    aging: Aging,
) -> Workflow:
    """Insert the workflow and every step (``steps`` parents first) in this transaction:
    steps without parents pending, the others waiting."""
    stamp = utc(now)
    workflow_id = uuid.uuid4()
    created = await insert_tasks(connection, [step.task for step in steps], stamp, aging)
    ids = {step.name: task.id for step, (task, _) in zip(steps, created, strict=True)}
    position = {step.name: index for index, step in enumerate(workflow.steps)}
    await connection.execute(
        "INSERT INTO workflows (id, name, on_failure, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $4)",
        workflow_id,
        workflow.name,
        workflow.on_failure.value,
        stamp,
    )
    waiting = [ids[step.name] for step in steps if step.depends_on]
    if waiting:
        await connection.execute(
            "UPDATE tasks SET status = 'waiting' WHERE id = ANY($1::uuid[])", waiting
        )
    await connection.execute(
        """
        INSERT INTO workflow_steps
            (task_id, workflow_id, name, position, run_if, parents_left, map_over)
        SELECT c.task_id, $1, c.name, c.position, c.run_if, c.parents_left, c.map_over
        FROM json_to_recordset($2::json) AS c(
            task_id uuid, name text, position int, run_if text, parents_left int, map_over text
        )""",
        workflow_id,
        orjson.dumps(
            [
                {
                    "task_id": ids[step.name],
                    "name": step.name,
                    "position": position[step.name],
                    "run_if": step.run_if.value,
                    "parents_left": len(set(step.depends_on)),
                    "map_over": step.map_over,
                }
                for step in steps
            ]
        ).decode(),
    )
    edges = [
        (ids[parent], ids[step.name]) for step in steps for parent in dict.fromkeys(step.depends_on)
    ]
    if edges:
        await connection.execute(
            "INSERT INTO workflow_edges (parent_id, child_id)"
            " SELECT * FROM unnest($1::uuid[], $2::uuid[])",
            [parent for parent, _ in edges],
            [child for _, child in edges],
        )
    found = await get_workflow(connection, workflow_id)
    assert found is not None
    return found


# --- read -------------------------------------------------------------------------------------


async def get_workflow(connection: Conn, workflow_id: UUID) -> Workflow | None:
    row = await connection.fetchrow("SELECT * FROM workflows WHERE id = $1", workflow_id)
    if row is None:
        return None
    steps = await connection.fetch(
        f"""
        SELECT {STEP_COLUMNS} FROM workflow_steps AS s JOIN tasks AS t ON t.id = s.task_id
        WHERE s.workflow_id = $1 ORDER BY {STEP_ORDER}""",
        workflow_id,
    )
    edges = await connection.fetch(
        """
        SELECT p.name AS parent, c.name AS child FROM workflow_edges AS e
        JOIN workflow_steps AS p ON p.task_id = e.parent_id
        JOIN workflow_steps AS c ON c.task_id = e.child_id
        WHERE c.workflow_id = $1 ORDER BY c.position, p.position, p.map_index""",
        workflow_id,
    )
    return workflow_from(row, steps, [(e["parent"], e["child"]) for e in edges], CODEC)


async def workflow_of_step(connection: Conn, task_id: UUID) -> UUID | None:
    found = await connection.fetchval(
        "SELECT workflow_id FROM workflow_steps WHERE task_id = $1", task_id
    )
    return None if found is None else uid(found)


async def list_workflows(connection: Conn, limit: int, offset: int) -> Page[WorkflowSummary]:
    """Newest first, each with its steps counted by status."""
    total = await connection.fetchval("SELECT count(*) FROM workflows")
    rows = await connection.fetch(
        """
        SELECT w.*,
            (SELECT json_object_agg(status, n)::text FROM (
                SELECT t.status, count(*) AS n FROM workflow_steps AS s
                JOIN tasks AS t ON t.id = s.task_id
                WHERE s.workflow_id = w.id GROUP BY t.status) AS c) AS counts,
            (SELECT max(t.finished_at) FROM workflow_steps AS s
                JOIN tasks AS t ON t.id = s.task_id WHERE s.workflow_id = w.id) AS last_finished
        FROM workflows AS w ORDER BY w.created_at DESC, w.id DESC LIMIT $1 OFFSET $2""",
        limit,
        offset,
    )
    items = [
        summary_from(
            row, counts_of(orjson.loads(row["counts"] or "{}")), row["last_finished"], CODEC
        )
        for row in rows
    ]
    return Page(items, total, limit, offset)


# --- cancel -----------------------------------------------------------------------------------


async def lock_workflows_of(connection: Conn, task_ids: Sequence[UUID]) -> None:
    """Lock the workflows of those of ``task_ids`` that are steps (in id order), before any
    task row: the first lock of every transaction that may end a step. Whatever the step's
    status: a running step may be pending (a retry) or cancelling by the time its row is
    locked. Tasks that are no step lock nothing."""
    await connection.execute(_LOCK_WORKFLOWS, list(task_ids))


async def cancel_task(
    connection: Conn,
    task_id: UUID,
    now: datetime,
    aging: Aging,
    reason: str | None = None,
    committed: Committed | None = None,
) -> Task:
    """``Store.cancel_task``: a step cancelled at once (waiting or pending) settles its
    workflow in the same transaction, its workflow row locked before its task row."""
    await lock_workflows_of(connection, [task_id])
    task = await task_sql.cancel_task(connection, task_id, now, reason)
    if task.status is TaskStatus.CANCELLED:
        await settle(connection, [task.id], now, aging, committed)
    return task


async def cancel_workflow(
    connection: Conn, workflow_id: UUID, now: datetime, committed: Committed | None = None
) -> tuple[Workflow, list[UUID]]:
    """Cancel every waiting and pending step now and mark the workflow cancelled; return it
    and the ids of its active steps (the caller cancels those through the task cancel path,
    which tells their agents to stop)."""
    locked = await connection.fetchval(
        "SELECT id FROM workflows WHERE id = $1 FOR UPDATE", workflow_id
    )
    workflow = None if locked is None else await get_workflow(connection, workflow_id)
    if workflow is None:
        raise WorkflowNotFound(f"workflow {workflow_id} does not exist", field="workflow_id")
    if workflow.cancelled_at is None and all(s.task.status.is_terminal for s in workflow.steps):
        raise WorkflowAlreadyFinished(
            f"workflow {workflow_id} already {workflow.status}", field="workflow_id"
        )
    stamp = utc(now)
    await connection.execute(
        """
        UPDATE tasks SET status = 'cancelled', error = $2, finished_at = $3, updated_at = $3
        WHERE id IN (SELECT task_id FROM workflow_steps WHERE workflow_id = $1)
          AND status IN ('waiting', 'pending')""",
        workflow_id,
        CANCELLED_WITH_WORKFLOW,
        stamp,
    )
    await connection.execute(
        "UPDATE workflows SET cancelled_at = coalesce(cancelled_at, $2), updated_at = $2"
        " WHERE id = $1",
        workflow_id,
        stamp,
    )
    active = await connection.fetch(
        f"""
        SELECT t.id FROM workflow_steps AS s JOIN tasks AS t ON t.id = s.task_id
        WHERE s.workflow_id = $1 AND t.status IN {ACTIVE_SQL} ORDER BY t.id""",
        workflow_id,
    )
    found = await get_workflow(connection, workflow_id)
    assert found is not None
    was_running = any(not step.task.status.is_terminal for step in workflow.steps)
    if committed is not None and was_running and not active:
        committed.finished.append(found.status)  # nothing is left running: it ended here
    return found, [uid(row["id"]) for row in active]


# --- retry ------------------------------------------------------------------------------------

_RESET = """
UPDATE tasks
SET status = 'waiting', result = NULL, error = NULL, progress = NULL,
    parents = CASE WHEN id IN (SELECT task_id FROM workflow_steps WHERE map_index IS NOT NULL)
                   THEN parents END,
    failures = 0, started_at = NULL, finished_at = NULL, scheduled_at = $2, updated_at = $2
WHERE id = ANY($1::uuid[])"""

_RESET_STEPS = """
UPDATE workflow_steps AS s SET parents_left = c.n
FROM unnest($1::uuid[], $2::int[]) AS c(id, n)
WHERE s.task_id = c.id"""

_START_ROOTS = """
UPDATE tasks
SET status = 'pending',
    claim_key = (extract(epoch FROM scheduled_at) * 1000000)::bigint - priority * $2::bigint
WHERE id = ANY($1::uuid[]) AND status = 'waiting'"""


async def retry_workflow(
    connection: Conn,
    workflow_id: UUID,
    now: datetime,
    aging: Aging,
    committed: Committed | None = None,
) -> tuple[Workflow, int]:
    """``Store.retry_workflow``: the workflow row locked first, then, in this transaction,
    the steps that did not succeed and every descendant of theirs start over
    (``retry_plan``); return the workflow and how many steps are pending again."""
    locked = await connection.fetchval(
        "SELECT id FROM workflows WHERE id = $1 FOR UPDATE", workflow_id
    )
    workflow = None if locked is None else await get_workflow(connection, workflow_id)
    if workflow is None:
        raise WorkflowNotFound(f"workflow {workflow_id} does not exist", field="workflow_id")
    plan = retry_plan(workflow)
    stamp = utc(now)
    ids = {step.name: step.task.id for step in workflow.steps}
    await connection.execute(
        "UPDATE workflows SET cancelled_at = NULL, updated_at = $2 WHERE id = $1",
        workflow_id,
        stamp,
    )
    reset = sorted(ids[name] for name in plan.reset)
    await connection.execute(_RESET, reset, stamp)
    names = list(plan.parents_left)
    await connection.execute(
        _RESET_STEPS, [ids[n] for n in names], [plan.parents_left[n] for n in names]
    )
    roots = [ids[name] for name in plan.roots]
    if roots:
        await connection.execute(_START_ROOTS, roots, aging.step_micros)
    ends: dict[Any, tuple[TaskStatus, str | None]] = {
        ids[name]: (TaskStatus.SKIPPED, reason) for name, reason in plan.skips.items()
    }
    released = len(roots)
    more, succeeded = await _release(
        connection, [ids[n] for n in plan.releases], ends, stamp, aging, committed
    )
    released += len(more)
    ended = await _end(connection, ends, stamp) + succeeded
    released += len(await settle(connection, ended, stamp, aging, committed))
    found = await get_workflow(connection, workflow_id)
    assert found is not None
    return found, released


# --- cleanup ----------------------------------------------------------------------------------

_FINISHED_WORKFLOWS = f"""
SELECT w.id FROM workflows AS w
WHERE w.created_at < $1 AND NOT EXISTS (
    SELECT 1 FROM workflow_steps AS s JOIN tasks AS t ON t.id = s.task_id
    WHERE s.workflow_id = w.id
      AND (t.finished_at IS NULL OR t.finished_at >= $1
           OR t.status NOT IN {task_sql.TERMINAL_SQL}))
ORDER BY w.created_at LIMIT $2
FOR UPDATE OF w SKIP LOCKED"""
"""Workflows whose every step has ended before ``$1``; a workflow being settled or
cancelled (its row locked) is left for the next round."""


async def delete_finished(connection: Conn, finished_before: datetime, limit: int) -> int:
    """``Store.delete_finished_tasks``: up to ``limit`` standalone terminal tasks finished
    before the instant, then, while the batch has room, whole workflows whose every step
    ended before it (the workflow row, locked first, and every step's task, attempts and
    logs); returns how many tasks went. A running or recent workflow keeps every step."""
    before = utc(finished_before)
    deleted = await task_sql.delete_finished_tasks(connection, before, limit)
    room = limit - deleted
    if room <= 0:
        return deleted
    rows = await connection.fetch(_FINISHED_WORKFLOWS, before, room)
    if not rows:
        return deleted
    workflows = [row["id"] for row in rows]
    status = await connection.execute(
        "DELETE FROM tasks WHERE id IN (SELECT task_id FROM workflow_steps"
        " WHERE workflow_id = ANY($1::uuid[]))",
        workflows,
    )
    await connection.execute("DELETE FROM workflows WHERE id = ANY($1::uuid[])", workflows)
    return deleted + int(status.rsplit(" ", 1)[-1])


# --- settle -----------------------------------------------------------------------------------


async def settle(
    connection: Conn,
    task_ids: Sequence[UUID],
    now: datetime,
    aging: Aging,
    committed: Committed | None = None,
) -> list[UUID]:
    """Steps ``task_ids`` just became terminal (in this transaction, their workflow rows
    locked, then their task rows):
    release, skip or fail what depends on them, and under ``on_failure: stop`` skip what is
    left of their workflows; repeat for every step that ends on the way. Returns the steps
    that became pending; the status of each workflow that thereby ended goes to
    ``committed.finished``, the children of a fan-out to ``committed.created``. Ids that are
    no workflow step are ignored."""
    if not task_ids:
        return []
    await lock_workflows_of(connection, task_ids)  # held already by every caller: a no-op
    released: list[UUID] = []
    collecting: set[UUID] = set()
    done = await _read_done(connection, task_ids)
    workflows = {uid(item.workflow_id) for item in done}
    while done:
        ended, more = await _settle_round(connection, done, utc(now), aging, committed, collecting)
        released.extend(more)
        done = await _read_done(connection, ended)
    # A step it released is running: its workflow has not ended (spares a chain a scan); so
    # has one with a mapped step still collecting (spares each child's end a scan).
    unsure = [] if released and len(workflows) == 1 else sorted(workflows - collecting)
    if committed is not None and unsure:
        committed.finished.extend(await _finished(connection, unsure))
    return released


async def _finished(connection: Conn, workflow_ids: Sequence[UUID]) -> list[WorkflowStatus]:
    """The statuses of those of the workflows whose every step has ended."""
    rows = await connection.fetch(
        FINISHED_SQL.format(ids="SELECT unnest($1::uuid[])"), list(workflow_ids)
    )
    return [status for row in rows if (status := finished_status(row)) is not None]


async def _read_done(connection: Conn, task_ids: Sequence[UUID]) -> list[Done]:
    if not task_ids:
        return []
    return [done_from(row) for row in await connection.fetch(_DONE, list(task_ids))]


async def _settle_round(
    connection: Conn,
    done: Sequence[Done],
    now: datetime,
    aging: Aging,
    committed: Committed | None,
    collecting: set[UUID],
) -> tuple[list[UUID], list[UUID]]:
    """One round: decide the waiting children of ``done``, apply ``stop``, write it all;
    return the steps that ended on the way (the next round's) and those released. The
    workflows of mapped steps that still wait for children go to ``collecting``."""
    ends, releases = await _decide_children(connection, done, collecting)
    stopping = stops(done)
    if stopping:
        for row in await connection.fetch(_STOPPABLE, list(stopping)):
            failed = stopping[row["workflow_id"]].parent
            ends.setdefault(row["task_id"], (TaskStatus.SKIPPED, stop_reason(failed)))
    released, succeeded = await _release(
        connection, [c for c in releases if c not in ends], ends, now, aging, committed
    )
    return await _end(connection, ends, now) + succeeded, released


async def _end(
    connection: Conn, ends: dict[Any, tuple[TaskStatus, str | None]], now: datetime
) -> list[UUID]:
    """End the waiting steps of ``ends`` (skipped or failed); return those that ended."""
    if not ends:
        return []
    changes = [
        {"id": uid(task_id), "status": status.value, "error": reason}
        for task_id, (status, reason) in ends.items()
    ]
    rows = await connection.fetch(_END, orjson.dumps(changes).decode(), now)
    return [uid(row["id"]) for row in rows]


async def _decide_children(
    connection: Conn, done: Sequence[Done], collecting: set[UUID]
) -> tuple[dict[Any, tuple[TaskStatus, str | None]], list[Any]]:
    """The waiting children of ``done`` lose those parents; return the ones to end (with
    status and reason) and the ones to release."""
    by_id = {item.task_id: item for item in done}
    finished_parents: dict[Any, list[Parent]] = defaultdict(list)
    for row in await connection.fetch(_WAITING_CHILDREN, list(by_id)):
        finished_parents[row["child_id"]].append(by_id[row["parent_id"]].parent)
    ends: dict[Any, tuple[TaskStatus, str | None]] = {}
    releases: list[Any] = []
    if not finished_parents:
        return ends, releases
    children = sorted(finished_parents)
    rows = await connection.fetch(
        _LOSE_PARENTS, children, [len(finished_parents[c]) for c in children]
    )
    complete = [row["task_id"] for row in rows if row["parents_left"] == 0]
    everyone: dict[Any, list[Parent]] = defaultdict(list)
    if complete:
        for parent in await connection.fetch(_PARENTS, complete):
            everyone[parent["child_id"]].append(
                Parent(parent["name"], TaskStatus(parent["status"]), parent["error"])
            )
    for row in sorted(rows, key=lambda r: r["task_id"]):
        child, left = row["task_id"], row["parents_left"]
        if row["map_count"] is not None:  # a mapped step waits for all its children
            if left == 0:
                releases.append(child)
            else:  # ``left`` of them have not ended: the workflow is running
                collecting.add(uid(row["workflow_id"]))
            continue
        status, reason = child_decision(
            RunIf(row["run_if"]),
            left,
            finished_parents[child],
            everyone[child] if left == 0 else None,
        )
        if status is TaskStatus.PENDING:
            releases.append(child)
        elif status is TaskStatus.SKIPPED:
            ends[child] = (status, reason)
    return ends, releases


async def _release(
    connection: Conn,
    releases: Sequence[Any],
    ends: dict[Any, tuple[TaskStatus, str | None]],
    now: datetime,
    aging: Aging,
    committed: Committed | None,
) -> tuple[list[UUID], list[UUID]]:
    """Make ``releases`` pending with their parents' results; one whose results are over
    the limit goes to ``ends`` as failed instead. A mapped step fans out (its children
    counted in ``committed.created``), or, once its children have ended, collects them
    (``_pg_maps``). Returns the steps released (map children included) and the mapped steps
    that succeeded."""
    if not releases:
        return [], []
    mapped = await maps.mapped_steps(connection, releases)
    released, succeeded = await maps.release_mapped(connection, mapped, ends, now, aging, committed)
    plain = [task_id for task_id in releases if uid(task_id) not in mapped]
    documents: list[dict[str, Any]] = []
    for row in await connection.fetch(_PARENT_RESULTS, plain) if plain else []:
        size = len(orjson.dumps(row["parents"]))
        if size > MAX_PARENT_RESULTS_BYTES:
            ends[row["child_id"]] = (TaskStatus.FAILED, _too_large(size))
        else:
            documents.append({"id": uid(row["child_id"]), "parents": row["parents"]})
    if documents:
        await connection.execute(_RELEASE, orjson.dumps(documents).decode(), now, aging.step_micros)
    return released + [document["id"] for document in documents], succeeded


def _too_large(size: int) -> str:
    return (
        f"its parents' results total {size} bytes as JSON, over the limit of"
        f" {MAX_PARENT_RESULTS_BYTES} (docs/workflows.md, Limits)"
    )
