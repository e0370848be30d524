"""What both stores share about workflows: rows to domain objects, and the settle rules.

A transaction that ends the last unfinished step of a workflow reports the workflow's status
into its caller's ``Committed`` (``settle``, ``cancel_workflow``), and one that fans a mapped
step out the task type and number of the children it created: the store calls its
``on_workflow_finished`` and ``on_tasks_created`` listeners with them once the transaction
has committed, so each is counted once, by the node whose transaction did it.

``settle`` (in ``_sqlite_workflows`` and ``_pg_workflows``) runs in the transaction that makes
steps terminal. It works through a list of steps that just finished (``Done``): each
one's waiting children lose a parent (``parents_left``), and ``child_decision`` says what a
child becomes; under ``on_failure: stop`` a failed step also skips every waiting
``all_succeeded`` step of its workflow. Steps skipped (or failed) on the way are finished
too, so they go round again, until nothing changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from hetuflow.models import TERMINAL_TASK_STATUSES, TaskStatus
from hetuflow.store._rows import Codec, Row, task_from, task_status
from hetuflow.workflows import (
    FAILED_STEP_STATUSES,
    OnFailure,
    Parent,
    RunIf,
    Workflow,
    WorkflowStatus,
    WorkflowStep,
    WorkflowSummary,
    decide_child,
    skip_reason,
    workflow_status,
)

STEP_COLUMNS = (
    "t.*, s.name AS step_name, s.run_if AS step_run_if, s.map_over AS step_map_over,"
    " s.map_index AS step_map_index"
)
"""A step's task row and its step columns (``s.name`` would shadow the task's name)."""

STEP_ORDER = "s.position, coalesce(s.map_index, -1)"
"""Steps in document order, a mapped step's children right after it, in item order."""


@dataclass(frozen=True, slots=True)
class Done:
    """A step that has just become terminal in this transaction."""

    task_id: Any  # as the store keys it (UUID or text)
    workflow_id: Any
    name: str
    status: TaskStatus
    error: str | None
    on_failure: OnFailure
    stopped: bool  # its workflow is cancelled: nothing left to stop

    @property
    def parent(self) -> Parent:
        return Parent(self.name, self.status, self.error)

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STEP_STATUSES


def done_from(row: Row) -> Done:
    return Done(
        task_id=row["task_id"],
        workflow_id=row["workflow_id"],
        name=row["name"],
        status=task_status(row["status"]),
        error=row["error"],
        on_failure=OnFailure(row["on_failure"]),
        stopped=row["cancelled_at"] is not None,
    )


def child_decision(
    run_if: RunIf,
    parents_left: int,
    finished_now: Sequence[Parent],
    all_parents: Sequence[Parent] | None,
) -> tuple[TaskStatus, str | None]:
    """What a waiting child becomes after ``finished_now`` of its parents finished:
    ``all_parents`` (read only once ``parents_left`` is 0) decide; before that, only an
    ``all_succeeded`` child with a parent that did not succeed is decided (skipped)."""
    if parents_left == 0 and all_parents is not None:
        return decide_child(run_if, all_parents)
    if run_if is RunIf.ALL_SUCCEEDED:
        for parent in finished_now:
            if parent.status is not TaskStatus.SUCCEEDED:
                return TaskStatus.SKIPPED, skip_reason(parent)
    return TaskStatus.WAITING, None


def _sql_list(statuses: Iterable[TaskStatus]) -> str:
    return "(" + ", ".join(f"'{status}'" for status in sorted(statuses)) + ")"


_TERMINAL = _sql_list(TERMINAL_TASK_STATUSES)
_FAILED = _sql_list(FAILED_STEP_STATUSES)

FINISHED_SQL = f"""
SELECT w.id, w.cancelled_at,
    EXISTS (SELECT 1 FROM workflow_steps AS s JOIN tasks AS t ON t.id = s.task_id
            WHERE s.workflow_id = w.id AND t.status NOT IN {_TERMINAL}) AS running,
    EXISTS (SELECT 1 FROM workflow_steps AS s JOIN tasks AS t ON t.id = s.task_id
            WHERE s.workflow_id = w.id AND t.status IN {_FAILED}) AS failed
FROM workflows AS w WHERE w.id IN ({{ids}})"""
"""Per workflow, whether a step has not ended and whether one failed (``{ids}``: the
dialect's list of ids)."""


def finished_status(row: Row) -> WorkflowStatus | None:
    """The status a workflow ended with, from a ``FINISHED_SQL`` row; None while running."""
    if row["running"]:
        return None
    if row["cancelled_at"] is not None:
        return WorkflowStatus.CANCELLED
    return WorkflowStatus.FAILED if row["failed"] else WorkflowStatus.SUCCEEDED


def ignore_finished(status: WorkflowStatus) -> None:
    """The listener of a store nobody listens to (``Store.on_workflow_finished``)."""


def ignore_created(task_type: str, count: int) -> None:
    """The listener of a store nobody listens to (``Store.on_tasks_created``)."""


@dataclass
class Committed:
    """What a transaction tells its store's listeners once it has committed: the statuses of
    the workflows it ended (``finished``) and, by task type, the tasks it created of its own
    accord (``created``: the children of a fan-out, ``map_over``)."""

    finished: list[WorkflowStatus] = field(default_factory=list)
    created: Counter[str] = field(default_factory=Counter)


def stops(done: Iterable[Done]) -> dict[Any, Done]:
    """Per workflow to stop (``on_failure: stop``), the first step that failed for good."""
    stopping: dict[Any, Done] = {}
    for item in done:
        if item.failed and item.on_failure is OnFailure.STOP and not item.stopped:
            stopping.setdefault(item.workflow_id, item)
    return stopping


def counts_of(statuses: Mapping[str, int]) -> dict[TaskStatus, int]:
    return {task_status(status): count for status, count in statuses.items()}


def workflow_from(
    row: Row,
    step_rows: Sequence[Row],
    edges: Sequence[tuple[str, str]],
    codec: Codec,
) -> Workflow:
    map_children = {row["step_name"] for row in step_rows if row["step_map_index"] is not None}
    parents: dict[str, list[str]] = {}
    map_of: dict[str, str] = {}
    for parent, child in edges:
        if parent in map_children:  # a map child's edge to its mapped step
            map_of[parent] = child
        else:
            parents.setdefault(child, []).append(parent)
    steps = tuple(
        WorkflowStep(
            name=step["step_name"],
            depends_on=tuple(parents.get(step["step_name"], ())),
            run_if=RunIf(step["step_run_if"]),
            task=task_from(step, codec),
            map_over=step["step_map_over"],
            map_index=step["step_map_index"],
            map_of=map_of.get(step["step_name"]),
        )
        for step in step_rows
    )
    counts: dict[TaskStatus, int] = {}
    for step in steps:
        counts[step.task.status] = counts.get(step.task.status, 0) + 1
    cancelled_at = codec.time(row["cancelled_at"])
    status = workflow_status(counts, cancelled_at)
    finished = [s.task.finished_at for s in steps if s.task.finished_at is not None]
    done = all(s.task.status.is_terminal for s in steps)
    return Workflow(
        id=_uuid(codec, row["id"]),
        name=row["name"],
        on_failure=OnFailure(row["on_failure"]),
        status=status,
        created_at=_time(codec, row["created_at"]),
        updated_at=_time(codec, row["updated_at"]),
        cancelled_at=cancelled_at,
        finished_at=max(finished) if done and finished else None,
        steps=steps,
        step_counts=counts,
    )


def summary_from(
    row: Row, counts: Mapping[TaskStatus, int], last_finished: Any, codec: Codec
) -> WorkflowSummary:
    cancelled_at = codec.time(row["cancelled_at"])
    status = workflow_status(counts, cancelled_at)
    done = all(s.is_terminal for s, n in counts.items() if n)
    return WorkflowSummary(
        id=_uuid(codec, row["id"]),
        name=row["name"],
        on_failure=OnFailure(row["on_failure"]),
        status=status,
        created_at=_time(codec, row["created_at"]),
        updated_at=_time(codec, row["updated_at"]),
        cancelled_at=cancelled_at,
        finished_at=codec.time(last_finished) if done else None,
        step_counts=dict(counts),
    )


def _uuid(codec: Codec, value: Any) -> UUID:
    decoded = codec.uuid(value)
    if decoded is None:
        raise ValueError("a required uuid column is NULL")
    return decoded


def _time(codec: Codec, value: Any) -> datetime:
    decoded = codec.time(value)
    if decoded is None:
        raise ValueError("a required time column is NULL")
    return decoded
