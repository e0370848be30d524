"""Workflows: steps (tasks) that depend on steps, as pure domain objects and rules.

A workflow is submitted as one document (``NewWorkflow``): named steps, each a task spec plus
the names of the steps it depends on. ``check_workflow`` refuses what could never run (no
steps, too many, a duplicate or unknown name, a self-dependency, a cycle) naming the step;
the stores then create every step in one transaction, ``waiting`` while a parent has not
finished. ``decide_child`` and ``workflow_status`` are the rules both stores and the API
share: what a waiting step becomes once its parents are done, and what the workflow's status
is, derived from its steps. A step that ``map_over``s a parent fans out: once that parent
succeeds with a JSON array, one child step per item runs (``map_items``, ``map_child_spec``),
and the mapped step ends with their results in item order (``collect_children``). See
docs/workflows.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from hetuflow.errors import WorkflowInvalid
from hetuflow.models import JSONObject, NewTask, Task, TaskStatus, spec_of

MAX_WORKFLOW_STEPS = 1000
"""Steps per workflow (one create transaction inserts them all)."""

MAX_PARENT_RESULTS_BYTES = 1024 * 1024
"""The parents' results a step is handed (``parents``, as compact JSON) may total this much;
a step whose parents returned more fails when it would be released, with an error saying so
(its ``on_failure`` policy then applies). Results travel in the dispatch frame."""

MAX_MAP_ITEMS = 10_000
"""The items a ``map_over`` parent may return: one child step each. A longer list (or a
result that is no JSON array) fails the mapped step, naming its parent."""

MAP_ITEM_KEY = "item"
"""The key of a map child's payload that holds its item (the mapped step's payload is copied)."""

MAP_INDEX_KEY = "map_index"
"""The key of a map child's payload that holds its item's position in the list, from 0."""


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
    map_over: str | None = None
    """A parent (in ``depends_on``) whose result, a JSON array, fans this step out."""


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
    map_over: str | None = None
    """The parent whose result this step is mapped over (it runs as one child per item)."""
    map_index: int | None = None
    """A map child: the position of its item in the parent's list."""
    map_of: str | None = None
    """A map child: the mapped step it belongs to (named ``<map_of>[<map_index>]``)."""


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
        _check_map_over(step, by_name)
        if step.task.idempotency_key is not None:
            raise WorkflowInvalid(
                f"step {step.name!r}: steps take no idempotency key",
                field=f"steps.{step.name}.idempotency_key",
            )
    return _topological(steps, by_name)


_CHILD_NAME = re.compile(r"^(.*)\[[0-9]+\]$")


def _check_map_over(step: NewStep, by_name: Mapping[str, NewStep]) -> None:
    field_name = f"steps.{step.name}.map_over"
    child_of = _CHILD_NAME.match(step.name)
    if child_of and child_of.group(1) in by_name and by_name[child_of.group(1)].map_over:
        raise WorkflowInvalid(
            f"step {step.name!r} has the name of a child of mapped step {child_of.group(1)!r}",
            field=f"steps.{step.name}.name",
        )
    if step.map_over is None:
        return
    if step.map_over not in step.depends_on:
        raise WorkflowInvalid(
            f"step {step.name!r} maps over {step.map_over!r}, which is not in its depends_on",
            field=field_name,
        )
    if step.run_if is not RunIf.ALL_SUCCEEDED:
        raise WorkflowInvalid(
            f"step {step.name!r} maps over {step.map_over!r}: a mapped step runs only if all"
            f" its parents succeeded (run_if all_succeeded), not {step.run_if}",
            field=f"steps.{step.name}.run_if",
        )


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


# --- fan-out (map_over) -----------------------------------------------------------------------


def map_child_name(step: str, index: int) -> str:
    """The name of the child step that runs item ``index`` of mapped step ``step``."""
    return f"{step}[{index}]"


def map_items(parent: str, result: object) -> list[object] | str:
    """The items of ``parent``'s result, or why it cannot be mapped over (not a JSON array,
    or more than ``MAX_MAP_ITEMS`` items)."""
    if not isinstance(result, list):
        kind = "null" if result is None else type(result).__name__
        kind = {
            "dict": "an object",
            "str": "a string",
            "int": "a number",
            "float": "a number",
            "bool": "a boolean",
        }.get(kind, kind)
        return f"map_over: step {parent!r} returned {kind}, not a JSON array"
    if len(result) > MAX_MAP_ITEMS:
        return (
            f"map_over: step {parent!r} returned {len(result)} items, over the limit of"
            f" {MAX_MAP_ITEMS} (docs/workflows.md, Limits)"
        )
    return result


def map_child_spec(mapped: Task, index: int, item: object) -> NewTask:
    """The task of the child that runs item ``index``: the mapped step's spec, its payload
    with ``item`` and ``map_index`` set."""
    payload: JSONObject = {**mapped.payload, MAP_ITEM_KEY: item, MAP_INDEX_KEY: index}
    return replace(spec_of(mapped), name=map_child_name(mapped.name, index), payload=payload)


@dataclass(frozen=True, slots=True)
class MapChild:
    """A map child as its mapped step collects it."""

    name: str
    status: TaskStatus
    result: object


def collect_children(children: Sequence[MapChild]) -> tuple[TaskStatus, list[object] | str]:
    """What a mapped step becomes once every child has ended: ``succeeded`` with their
    results in item order, or ``failed`` with a reason naming the first child that did not
    succeed."""
    failed = [child for child in children if child.status is not TaskStatus.SUCCEEDED]
    if not failed:
        return TaskStatus.SUCCEEDED, [child.result for child in children]
    first = failed[0]
    return TaskStatus.FAILED, (
        f"{len(failed)} of {len(children)} items did not succeed: step {first.name!r}"
        f" {first.status}"
    )
