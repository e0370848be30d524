"""SQLite: workflows (create, read, list, cancel) and ``settle``, the release of steps.

``settle`` runs inside the write transaction that made steps terminal (``finish_attempts``,
``cancel_task``): the single writer holds the database from the read of a step's parents to
the write of its new status, so each step is released (or skipped) exactly once.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import orjson

from hetuflow.errors import WorkflowAlreadyFinished, WorkflowNotFound
from hetuflow.models import Page, Task, TaskStatus
from hetuflow.store import _sqlite_maps as maps
from hetuflow.store import _sqlite_tasks as task_sql
from hetuflow.store._claims import Aging
from hetuflow.store._rules import ACTIVE_SQL
from hetuflow.store._sqlite_db import CODEC, id_list, json_rows, micros
from hetuflow.store._sqlite_tasks import create_tasks
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

_DONE = """
SELECT s.task_id, s.workflow_id, s.name, t.status, t.error, w.on_failure, w.cancelled_at
FROM workflow_steps AS s
JOIN tasks AS t ON t.id = s.task_id
JOIN workflows AS w ON w.id = s.workflow_id
WHERE s.task_id IN (SELECT value FROM json_each(?))"""

_WAITING_CHILDREN = """
SELECT e.child_id, e.parent_id
FROM workflow_edges AS e JOIN tasks AS c ON c.id = e.child_id
WHERE e.parent_id IN (SELECT value FROM json_each(?)) AND c.status = 'waiting'"""

_LOSE_PARENTS = """
UPDATE workflow_steps SET parents_left = parents_left - c.n
FROM (SELECT value ->> 0 AS id, value ->> 1 AS n FROM json_each(?)) AS c
WHERE workflow_steps.task_id = c.id
RETURNING task_id, workflow_id, parents_left, run_if, map_count"""

_PARENTS = """
SELECT p.name, t.status, t.error
FROM workflow_edges AS e
JOIN workflow_steps AS p ON p.task_id = e.parent_id
JOIN tasks AS t ON t.id = e.parent_id
WHERE e.child_id = ?"""

_PARENT_RESULTS = """
SELECT json_group_object(p.name, json(t.result))
FROM workflow_edges AS e
JOIN workflow_steps AS p ON p.task_id = e.parent_id
JOIN tasks AS t ON t.id = e.parent_id
WHERE e.child_id = ?"""

_STOPPABLE = """
SELECT s.task_id FROM workflow_steps AS s JOIN tasks AS t ON t.id = s.task_id
WHERE s.workflow_id = ? AND s.run_if = 'all_succeeded' AND t.status = 'waiting'
  AND s.map_count IS NULL"""
"""A mapped step that has fanned out is not stopped: it waits for its children."""

_END = """
UPDATE tasks SET status = c.status, error = c.error, finished_at = ?, updated_at = ?
FROM (SELECT value ->> 0 AS id, value ->> 1 AS status, value ->> 2 AS error
      FROM json_each(?)) AS c
WHERE tasks.id = c.id AND tasks.status = 'waiting'
RETURNING tasks.id"""

_RELEASE = """
UPDATE tasks
SET status = 'pending', parents = ?, scheduled_at = max(scheduled_at, ?),
    claim_key = max(scheduled_at, ?) - priority * ?, updated_at = ?
WHERE id = ? AND status = 'waiting'"""


# --- create -----------------------------------------------------------------------------------


def create_workflow(
    connection: sqlite3.Connection,
    workflow: NewWorkflow,
    steps: Sequence[NewStep],
    now: datetime,
    aging: Aging,
) -> Workflow:
    """Insert the workflow and every step (``steps`` parents first) in this transaction:
    steps without parents pending, the others waiting."""
    stamp = micros(now)
    workflow_id = str(uuid.uuid4())
    created = create_tasks(connection, [step.task for step in steps], now, aging)
    ids = {step.name: str(task.id) for step, (task, _) in zip(steps, created, strict=True)}
    position = {step.name: index for index, step in enumerate(workflow.steps)}
    connection.execute(
        "INSERT INTO workflows (id, name, on_failure, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (workflow_id, workflow.name, workflow.on_failure.value, stamp, stamp),
    )
    waiting = [ids[step.name] for step in steps if step.depends_on]
    if waiting:
        connection.execute(
            "UPDATE tasks SET status = 'waiting' WHERE id IN (SELECT value FROM json_each(?))",
            (id_list(waiting),),
        )
    connection.execute(
        """
        INSERT INTO workflow_steps
            (task_id, workflow_id, name, position, run_if, parents_left, map_over)
        SELECT value ->> 0, ?, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5
        FROM json_each(?)""",
        (
            workflow_id,
            json_rows(
                [
                    (
                        ids[step.name],
                        step.name,
                        position[step.name],
                        step.run_if.value,
                        len(set(step.depends_on)),
                        step.map_over,
                    )
                    for step in steps
                ]
            ),
        ),
    )
    edges = [
        (ids[parent], ids[step.name]) for step in steps for parent in dict.fromkeys(step.depends_on)
    ]
    if edges:
        connection.execute(
            "INSERT INTO workflow_edges (parent_id, child_id)"
            " SELECT value ->> 0, value ->> 1 FROM json_each(?)",
            (json_rows(edges),),
        )
    found = get_workflow(connection, UUID(workflow_id))
    assert found is not None
    return found


# --- read -------------------------------------------------------------------------------------


def get_workflow(connection: sqlite3.Connection, workflow_id: UUID) -> Workflow | None:
    row = connection.execute("SELECT * FROM workflows WHERE id = ?", (str(workflow_id),)).fetchone()
    if row is None:
        return None
    steps = connection.execute(
        f"""
        SELECT {STEP_COLUMNS} FROM workflow_steps AS s JOIN tasks AS t ON t.id = s.task_id
        WHERE s.workflow_id = ? ORDER BY {STEP_ORDER}""",
        (row["id"],),
    ).fetchall()
    edges = connection.execute(
        """
        SELECT p.name, c.name FROM workflow_edges AS e
        JOIN workflow_steps AS p ON p.task_id = e.parent_id
        JOIN workflow_steps AS c ON c.task_id = e.child_id
        WHERE c.workflow_id = ? ORDER BY c.position, p.position, p.map_index""",
        (row["id"],),
    ).fetchall()
    return workflow_from(row, steps, [(e[0], e[1]) for e in edges], CODEC)


def workflow_of_step(connection: sqlite3.Connection, task_id: UUID) -> UUID | None:
    row = connection.execute(
        "SELECT workflow_id FROM workflow_steps WHERE task_id = ?", (str(task_id),)
    ).fetchone()
    return None if row is None else UUID(row[0])


def list_workflows(
    connection: sqlite3.Connection, limit: int, offset: int
) -> Page[WorkflowSummary]:
    """Newest first, each with its steps counted by status."""
    total = connection.execute("SELECT count(*) FROM workflows").fetchone()[0]
    rows = connection.execute(
        """
        SELECT w.*,
            (SELECT json_group_object(status, n) FROM (
                SELECT t.status, count(*) AS n FROM workflow_steps AS s
                JOIN tasks AS t ON t.id = s.task_id
                WHERE s.workflow_id = w.id GROUP BY t.status)) AS counts,
            (SELECT max(t.finished_at) FROM workflow_steps AS s
                JOIN tasks AS t ON t.id = s.task_id WHERE s.workflow_id = w.id) AS last_finished
        FROM workflows AS w ORDER BY w.created_at DESC, w.id DESC LIMIT ? OFFSET ?""",
        (limit, offset),
    ).fetchall()
    items = [
        summary_from(row, counts_of(orjson.loads(row["counts"])), row["last_finished"], CODEC)
        for row in rows
    ]
    return Page(items, total, limit, offset)


# --- cancel -----------------------------------------------------------------------------------


def cancel_workflow(
    connection: sqlite3.Connection,
    workflow_id: UUID,
    now: datetime,
    committed: Committed | None = None,
) -> tuple[Workflow, list[UUID]]:
    """Cancel every waiting and pending step now and mark the workflow cancelled; return it
    and the ids of its active steps (the caller cancels those through the task cancel path,
    which tells their agents to stop)."""
    workflow = get_workflow(connection, workflow_id)
    if workflow is None:
        raise WorkflowNotFound(f"workflow {workflow_id} does not exist", field="workflow_id")
    if workflow.cancelled_at is None and all(s.task.status.is_terminal for s in workflow.steps):
        raise WorkflowAlreadyFinished(
            f"workflow {workflow_id} already {workflow.status}", field="workflow_id"
        )
    stamp = micros(now)
    key = str(workflow_id)
    connection.execute(
        """
        UPDATE tasks SET status = 'cancelled', error = ?, finished_at = ?, updated_at = ?
        WHERE id IN (SELECT task_id FROM workflow_steps WHERE workflow_id = ?)
          AND status IN ('waiting', 'pending')""",
        (CANCELLED_WITH_WORKFLOW, stamp, stamp, key),
    )
    connection.execute(
        "UPDATE workflows SET cancelled_at = coalesce(cancelled_at, ?), updated_at = ?"
        " WHERE id = ?",
        (stamp, stamp, key),
    )
    active = connection.execute(
        f"""
        SELECT t.id FROM workflow_steps AS s JOIN tasks AS t ON t.id = s.task_id
        WHERE s.workflow_id = ? AND t.status IN {ACTIVE_SQL} ORDER BY t.id""",
        (key,),
    ).fetchall()
    found = get_workflow(connection, workflow_id)
    assert found is not None
    was_running = any(not step.task.status.is_terminal for step in workflow.steps)
    if committed is not None and was_running and not active:
        committed.finished.append(found.status)  # nothing is left running: it ended here
    return found, [UUID(row[0]) for row in active]


def cancel_task(
    connection: sqlite3.Connection,
    task_id: UUID,
    now: datetime,
    aging: Aging,
    reason: str | None = None,
    committed: Committed | None = None,
) -> Task:
    """``Store.cancel_task``: a step cancelled at once (waiting or pending) settles its
    workflow in the same transaction."""
    task = task_sql.cancel_task(connection, task_id, now, reason)
    if task.status is TaskStatus.CANCELLED:
        settle(connection, [str(task.id)], now, aging, committed)
    return task


# --- retry ------------------------------------------------------------------------------------

_RESET = """
UPDATE tasks
SET status = 'waiting', result = NULL, error = NULL, progress = NULL,
    parents = CASE WHEN id IN (SELECT task_id FROM workflow_steps WHERE map_index IS NOT NULL)
                   THEN parents END,
    failures = 0, started_at = NULL, finished_at = NULL, scheduled_at = ?, updated_at = ?
WHERE id IN (SELECT value FROM json_each(?))"""

_RESET_STEPS = """
UPDATE workflow_steps SET parents_left = c.n
FROM (SELECT value ->> 0 AS id, value ->> 1 AS n FROM json_each(?)) AS c
WHERE workflow_steps.task_id = c.id"""

_START_ROOTS = """
UPDATE tasks SET status = 'pending', claim_key = scheduled_at - priority * ?
WHERE id IN (SELECT value FROM json_each(?)) AND status = 'waiting'"""


def retry_workflow(
    connection: sqlite3.Connection,
    workflow_id: UUID,
    now: datetime,
    aging: Aging,
    committed: Committed | None = None,
) -> tuple[Workflow, int]:
    """``Store.retry_workflow``: in this transaction, the steps that did not succeed and
    every descendant of theirs start over (``retry_plan``); return the workflow and how many
    steps are pending again."""
    workflow = get_workflow(connection, workflow_id)
    if workflow is None:
        raise WorkflowNotFound(f"workflow {workflow_id} does not exist", field="workflow_id")
    plan = retry_plan(workflow)
    stamp = micros(now)
    ids = {step.name: str(step.task.id) for step in workflow.steps}
    reset = [ids[name] for name in plan.reset]
    connection.execute(
        "UPDATE workflows SET cancelled_at = NULL, updated_at = ? WHERE id = ?",
        (stamp, str(workflow_id)),
    )
    connection.execute(_RESET, (stamp, stamp, id_list(reset)))
    connection.execute(
        _RESET_STEPS, (json_rows([(ids[name], n) for name, n in plan.parents_left.items()]),)
    )
    roots = [ids[name] for name in plan.roots]
    if roots:
        connection.execute(_START_ROOTS, (aging.step_micros, id_list(roots)))
    ends: dict[str, tuple[TaskStatus, str | None]] = {
        ids[name]: (TaskStatus.SKIPPED, reason) for name, reason in plan.skips.items()
    }
    released = len(roots)
    more, succeeded = _release(
        connection, [ids[n] for n in plan.releases], ends, now, aging, committed
    )
    released += len(more)
    ended = _end(connection, ends, stamp) + succeeded
    released += len(settle(connection, ended, now, aging, committed))
    found = get_workflow(connection, workflow_id)
    assert found is not None
    return found, released


# --- cleanup ----------------------------------------------------------------------------------

_FINISHED_WORKFLOWS = f"""
SELECT w.id FROM workflows AS w
WHERE w.created_at < :before AND NOT EXISTS (
    SELECT 1 FROM workflow_steps AS s JOIN tasks AS t ON t.id = s.task_id
    WHERE s.workflow_id = w.id
      AND (t.finished_at IS NULL OR t.finished_at >= :before
           OR t.status NOT IN {task_sql.TERMINAL_SQL}))
ORDER BY w.created_at LIMIT :limit"""
"""Workflows whose every step has ended before ``before`` (none waiting, pending or active,
none finished since)."""


def delete_finished(connection: sqlite3.Connection, finished_before: datetime, limit: int) -> int:
    """``Store.delete_finished_tasks``: up to ``limit`` standalone terminal tasks finished
    before the instant, then, while the batch has room, whole workflows whose every step
    ended before it (the workflow row and every step's task, attempts and logs); returns how
    many tasks went. A running or recent workflow keeps every step."""
    deleted = task_sql.delete_finished_tasks(connection, finished_before, limit)
    room = limit - deleted
    if room <= 0:
        return deleted
    workflows = [
        row[0]
        for row in connection.execute(
            _FINISHED_WORKFLOWS, {"before": micros(finished_before), "limit": room}
        )
    ]
    if not workflows:
        return deleted
    listed = id_list(workflows)
    steps = connection.execute(
        "DELETE FROM tasks WHERE id IN (SELECT task_id FROM workflow_steps"
        " WHERE workflow_id IN (SELECT value FROM json_each(?)))",
        (listed,),
    ).rowcount
    connection.execute(
        "DELETE FROM workflows WHERE id IN (SELECT value FROM json_each(?))", (listed,)
    )
    return deleted + steps


# --- settle -----------------------------------------------------------------------------------


def settle(
    connection: sqlite3.Connection,
    task_ids: Sequence[str],
    now: datetime,
    aging: Aging,
    committed: Committed | None = None,
) -> list[str]:
    """Steps ``task_ids`` just became terminal (in this transaction): release, skip or fail
    what depends on them, and under ``on_failure: stop`` skip what is left of their
    workflows; repeat for every step that ends on the way. Returns the steps that became
    pending; the status of each workflow that thereby ended goes to ``committed.finished``,
    the children of a fan-out to ``committed.created``. Ids that are no workflow step are
    ignored."""
    released: list[str] = []
    collecting: set[str] = set()
    done = _read_done(connection, task_ids)
    workflows = {item.workflow_id for item in done}
    while done:
        ended, more = _settle_round(connection, done, now, aging, committed, collecting)
        released.extend(more)
        done = _read_done(connection, ended)
    # A step it released is running: its workflow has not ended (spares a chain a scan); so
    # has one with a mapped step still collecting (spares each child's end a scan).
    unsure = [] if released and len(workflows) == 1 else sorted(workflows - collecting)
    if committed is not None and unsure:
        committed.finished.extend(_finished(connection, unsure))
    return released


def _finished(connection: sqlite3.Connection, workflow_ids: Sequence[str]) -> list[WorkflowStatus]:
    """The statuses of those of the workflows whose every step has ended."""
    query = FINISHED_SQL.format(ids="SELECT value FROM json_each(?)")
    rows = connection.execute(query, (id_list(workflow_ids),))
    return [status for row in rows if (status := finished_status(row)) is not None]


def _read_done(connection: sqlite3.Connection, task_ids: Sequence[str]) -> list[Done]:
    if not task_ids:
        return []
    return [done_from(row) for row in connection.execute(_DONE, (id_list(task_ids),))]


def _settle_round(
    connection: sqlite3.Connection,
    done: Sequence[Done],
    now: datetime,
    aging: Aging,
    committed: Committed | None,
    collecting: set[str],
) -> tuple[list[str], list[str]]:
    """One round: decide the waiting children of ``done``, apply ``stop``, write it all;
    return the steps that ended on the way (the next round's) and those released. The
    workflows of mapped steps that still wait for children go to ``collecting``."""
    by_id = {item.task_id: item for item in done}
    finished_parents: dict[str, list[Parent]] = defaultdict(list)
    for child, parent in connection.execute(_WAITING_CHILDREN, (id_list(list(by_id)),)):
        finished_parents[child].append(by_id[parent].parent)
    ends: dict[str, tuple[TaskStatus, str | None]] = {}
    releases: list[str] = []
    if finished_parents:
        rows = connection.execute(
            _LOSE_PARENTS,
            (json_rows([(child, len(p)) for child, p in finished_parents.items()]),),
        ).fetchall()
        for row in sorted(rows, key=lambda r: r["task_id"]):
            child, left = row["task_id"], row["parents_left"]
            if row["map_count"] is not None:  # a mapped step waits for all its children
                if left == 0:
                    releases.append(child)
                else:  # ``left`` of them have not ended: the workflow is running
                    collecting.add(row["workflow_id"])
                continue
            everyone = _parents(connection, child) if left == 0 else None
            status, reason = child_decision(
                RunIf(row["run_if"]), left, finished_parents[child], everyone
            )
            if status is TaskStatus.PENDING:
                releases.append(child)
            elif status is TaskStatus.SKIPPED:
                ends[child] = (status, reason)
    for workflow_id, failed in stops(done).items():
        for (step,) in connection.execute(_STOPPABLE, (workflow_id,)):
            ends.setdefault(step, (TaskStatus.SKIPPED, stop_reason(failed.parent)))
    stamp = micros(now)
    released, succeeded = _release(
        connection, [c for c in releases if c not in ends], ends, now, aging, committed
    )
    return _end(connection, ends, stamp) + succeeded, released


def _release(
    connection: sqlite3.Connection,
    releases: Sequence[str],
    ends: dict[str, tuple[TaskStatus, str | None]],
    now: datetime,
    aging: Aging,
    committed: Committed | None,
) -> tuple[list[str], list[str]]:
    """Make the waiting ``releases`` pending with their parents' results; one whose results
    are over the limit goes to ``ends`` as failed instead. A mapped step fans out (its
    children counted in ``committed.created``), or, once its children have ended, collects
    them (``_sqlite_maps``). Returns the steps released
    (map children included) and the mapped steps that succeeded."""
    stamp = micros(now)
    mapped = maps.mapped_steps(connection, releases)
    released, succeeded = maps.release_mapped(connection, mapped, ends, now, aging, committed)
    for child in releases:
        if child in mapped:
            continue
        [document] = connection.execute(_PARENT_RESULTS, (child,)).fetchone()
        size = len(document.encode())
        if size > MAX_PARENT_RESULTS_BYTES:
            ends[child] = (TaskStatus.FAILED, _too_large(size))
            continue
        connection.execute(_RELEASE, (document, stamp, stamp, aging.step_micros, stamp, child))
        released.append(child)
    return released, succeeded


def _end(
    connection: sqlite3.Connection, ends: dict[str, tuple[TaskStatus, str | None]], stamp: int
) -> list[str]:
    """End the waiting steps of ``ends`` (skipped or failed); return those that ended."""
    if not ends:
        return []
    changes = [(task_id, status.value, reason) for task_id, (status, reason) in ends.items()]
    return [row[0] for row in connection.execute(_END, (stamp, stamp, json_rows(changes)))]


def _parents(connection: sqlite3.Connection, child: str) -> list[Parent]:
    return [
        Parent(row["name"], TaskStatus(row["status"]), row["error"])
        for row in connection.execute(_PARENTS, (child,))
    ]


def _too_large(size: int) -> str:
    return (
        f"its parents' results total {size} bytes as JSON, over the limit of"
        f" {MAX_PARENT_RESULTS_BYTES} (docs/workflows.md, Limits)"
    )
