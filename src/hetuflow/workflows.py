"""Workflows: steps (tasks) that depend on steps, as pure domain objects and rules.

A workflow is submitted as one document (``NewWorkflow``): named steps, each a task spec plus
the names of the steps it depends on. ``check_workflow`` refuses what could never run (no
steps, too many, a duplicate or unknown name, a self-dependency, a cycle) naming the step;
the stores then create every step in one transaction, ``waiting`` while a parent has not
finished. ``decide_child`` and ``workflow_status`` are the rules both stores and the API
share: what a waiting step becomes once its parents are done, and what the workflow's status
is, derived from its steps. See docs/workflows.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from hetuflow.errors import WorkflowInvalid
from hetuflow.models import NewTask, Task, TaskStatus

MAX_WORKFLOW_STEPS = 1000
"""Steps per workflow (one create transaction inserts them all)."""

MAX_PARENT_RESULTS_BYTES = 1024 * 1024
"""The parents' results a step is handed (``parents``, as compact JSON) may total this much;
a step whose parents returned more fails when it would be released, with an error saying so
(its ``on_failure`` policy then applies). Results travel in the dispatch frame."""


class OnFailure(StrEnum):
    """What the rest of a workflow does when a step fails for good."""

    STOP = "stop"  # no new step starts (except run_if clean-up steps); running ones finish
    CONTINUE = "continue"  # branches that do not depend on the failed step go on


class RunIf(StrEnum):
    """When a step runs, once every parent has finished."""

    ALL_SUCCEEDED = "all_succeeded"  # every parent succeeded (the default)
    ALL_DONE = "all_done"  # whatever the parents' outcomes
    ANY_FAILED = "any_failed"  # some parent did not succeed (a clean-up or alert step)


class WorkflowStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FAILED_STEP_STATUSES = frozenset(
    {TaskStatus.FAILED, TaskStatus.TIMED_OUT, TaskStatus.CANCELLED, TaskStatus.QUARANTINED}
)
"""A step that ended in one of these failed for good (retries exhausted, or cancelled)."""


@dataclass(frozen=True, slots=True)
class NewStep:
    name: str
    task: NewTask
    depends_on: tuple[str, ...] = ()
    run_if: RunIf = RunIf.ALL_SUCCEEDED


@dataclass(frozen=True, slots=True)
class NewWorkflow:
    name: str
    steps: tuple[NewStep, ...]
    on_failure: OnFailure = OnFailure.STOP


@dataclass(frozen=True, slots=True)
class WorkflowStep:
    name: str
    depends_on: tuple[str, ...]
    run_if: RunIf
    task: Task


@dataclass(frozen=True, slots=True)
class Workflow:
    id: UUID
    name: str
    on_failure: OnFailure
    status: WorkflowStatus
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None
    finished_at: datetime | None
    steps: tuple[WorkflowStep, ...] = ()
    step_counts: Mapping[TaskStatus, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkflowSummary:
    """A workflow in a list: its status and how many steps are in each status."""

    id: UUID
    name: str
    on_failure: OnFailure
    status: WorkflowStatus
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None
    finished_at: datetime | None
    step_counts: Mapping[TaskStatus, int]


def check_workflow(workflow: NewWorkflow) -> list[NewStep]:
    """The steps in an order where every parent comes before its children; raise
    ``WorkflowInvalid`` naming the step for a document that could never run."""
    steps = workflow.steps
    if not steps:
        raise WorkflowInvalid("a workflow needs at least one step", field="steps")
    if len(steps) > MAX_WORKFLOW_STEPS:
        raise WorkflowInvalid(
            f"a workflow has at most {MAX_WORKFLOW_STEPS} steps, got {len(steps)}",
            field="steps",
        )
    by_name: dict[str, NewStep] = {}
    for step in steps:
        if step.name in by_name:
            raise WorkflowInvalid(
                f"two steps are named {step.name!r}", field=f"steps.{step.name}.name"
            )
        by_name[step.name] = step
    for step in steps:
        for parent in step.depends_on:
            if parent == step.name:
                raise WorkflowInvalid(
                    f"step {step.name!r} depends on itself", field=f"steps.{step.name}.depends_on"
                )
            if parent not in by_name:
                raise WorkflowInvalid(
                    f"step {step.name!r} depends on {parent!r}, which is no step of this workflow",
                    field=f"steps.{step.name}.depends_on",
                )
        if step.task.idempotency_key is not None:
            raise WorkflowInvalid(
                f"step {step.name!r}: steps take no idempotency key",
                field=f"steps.{step.name}.idempotency_key",
            )
    return _topological(steps, by_name)


def _topological(steps: Sequence[NewStep], by_name: Mapping[str, NewStep]) -> list[NewStep]:
    """Kahn's algorithm in document order; what is left over lies on a cycle."""
    left = {step.name: len(set(step.depends_on)) for step in steps}
    children: dict[str, list[str]] = {step.name: [] for step in steps}
    for step in steps:
        for parent in dict.fromkeys(step.depends_on):
            children[parent].append(step.name)
    ready = [step.name for step in steps if left[step.name] == 0]
    ordered: list[NewStep] = []
    while ready:
        name = ready.pop(0)
        ordered.append(by_name[name])
        for child in children[name]:
            left[child] -= 1
            if left[child] == 0:
                ready.append(child)
    if len(ordered) < len(steps):
        stuck = [step.name for step in steps if left[step.name] > 0]
        cycle = _a_cycle(stuck, by_name)
        raise WorkflowInvalid(
            f"step {cycle[0]!r} depends on itself through a cycle: {' -> '.join(cycle)}"
            " (each depends on the next)",
            field=f"steps.{cycle[0]}.depends_on",
        )
    return ordered


def _a_cycle(stuck: Sequence[str], by_name: Mapping[str, NewStep]) -> list[str]:
    """One cycle among ``stuck`` (steps that are on, or behind, a cycle), closed: each step
    depends on the next."""
    blocked = set(stuck)
    path: list[str] = []
    seen: dict[str, int] = {}
    name = stuck[0]
    while name not in seen:
        seen[name] = len(path)
        path.append(name)
        name = next(parent for parent in by_name[name].depends_on if parent in blocked)
    cycle = path[seen[name] :]
    return [*cycle, cycle[0]]  # each step depends on the next


@dataclass(frozen=True, slots=True)
class Parent:
    """What a child's decision needs to know about one of its parents."""

    name: str
    status: TaskStatus
    error: str | None


def skip_reason(parent: Parent) -> str:
    """Why a step is skipped because of ``parent``: the failed step is named, also through
    a chain of skipped steps."""
    if parent.status is TaskStatus.SKIPPED and parent.error:
        return parent.error
    return f"skipped: step {parent.name!r} {parent.status}"


def stop_reason(failed: Parent) -> str:
    return f"skipped: the workflow stopped because step {failed.name!r} {failed.status}"


def decide_child(run_if: RunIf, parents: Sequence[Parent]) -> tuple[TaskStatus, str | None]:
    """What a waiting step becomes now: ``waiting`` (a parent is not finished and the outcome
    is not yet known), ``pending`` (release it) or ``skipped`` with the reason.

    ``all_succeeded`` is decided as soon as one parent did not succeed (skipped); the others
    wait for every parent. A skipped parent counts as done and as not succeeded."""
    unfinished = any(not parent.status.is_terminal for parent in parents)
    not_ok = [parent for parent in parents if parent.status.is_terminal and not _ok(parent)]
    if run_if is RunIf.ALL_SUCCEEDED:
        if not_ok:
            return TaskStatus.SKIPPED, skip_reason(not_ok[0])
        return (TaskStatus.WAITING, None) if unfinished else (TaskStatus.PENDING, None)
    if unfinished:
        return TaskStatus.WAITING, None
    if run_if is RunIf.ALL_DONE or not_ok:
        return TaskStatus.PENDING, None
    return TaskStatus.SKIPPED, "skipped: run_if any_failed, and every parent succeeded"


def _ok(parent: Parent) -> bool:
    return parent.status is TaskStatus.SUCCEEDED


def workflow_status(
    counts: Mapping[TaskStatus, int], cancelled_at: datetime | None
) -> WorkflowStatus:
    """``cancelled`` once cancelled; else ``running`` while a step is unfinished; then
    ``failed`` if a step failed, timed out or was cancelled, else ``succeeded``."""
    if cancelled_at is not None:
        return WorkflowStatus.CANCELLED
    if any(count and not status.is_terminal for status, count in counts.items()):
        return WorkflowStatus.RUNNING
    if any(counts.get(status, 0) for status in FAILED_STEP_STATUSES):
        return WorkflowStatus.FAILED
    return WorkflowStatus.SUCCEEDED
