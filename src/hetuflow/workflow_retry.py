"""What retrying a workflow does (docs/workflows.md, Retry): pure rules over the workflow as
read, applied by each store in one transaction.

The steps that did not succeed (failed, timed out, cancelled, skipped) and every descendant of
theirs start over; what succeeded outside them is kept, and its results are handed down again.
A reset step whose parents are all kept is decided at once (``decide_child``: released, or
skipped again, as a ``run_if: any_failed`` step under parents that all succeeded); the others
wait for their parents as on the first run.

A mapped step (``map_over``) that has fanned out counts its children among its parents: a
child that did not succeed starts over (with its item), and the mapped step collects again
once the children that start over have ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hetuflow.errors import WorkflowNotRetryable
from hetuflow.models import TaskStatus
from hetuflow.workflows import Parent, Workflow, decide_child


@dataclass(frozen=True, slots=True)
class RetryPlan:
    reset: tuple[str, ...]
    """The steps that start over, in document order."""
    parents_left: dict[str, int]
    """Per reset step, how many of its parents start over too."""
    roots: tuple[str, ...] = ()
    """Reset steps without parents: pending at once."""
    releases: tuple[str, ...] = ()
    """Reset steps whose parents are all kept and that run: pending, with their results."""
    skips: dict[str, str] = field(default_factory=dict)
    """Reset steps whose parents are all kept and that do not run, with the reason."""


def retry_plan(workflow: Workflow) -> RetryPlan:
    """``WorkflowNotRetryable`` while a step has not ended, or when every step succeeded
    (nothing to retry); else what to reset and how each reset step starts."""
    if any(not step.task.status.is_terminal for step in workflow.steps):
        raise WorkflowNotRetryable(
            f"workflow {workflow.id} is still running: cancel it or wait for it to end",
            field="workflow_id",
        )
    parents_of = _parents_of(workflow)
    reset = _to_reset(workflow, parents_of)
    if not any(s.task.status is not TaskStatus.SKIPPED for s in workflow.steps if s.name in reset):
        raise WorkflowNotRetryable(
            f"workflow {workflow.id} has no failed, timed-out or cancelled step to retry",
            field="workflow_id",
        )
    ordered = tuple(s.name for s in workflow.steps if s.name in reset)
    by_name = {s.name: s for s in workflow.steps}
    _refuse_fanning_out_again(workflow, ordered, parents_of, reset)
    parents_left = {name: sum(parent in reset for parent in parents_of[name]) for name in ordered}
    roots: list[str] = []
    releases: list[str] = []
    skips: dict[str, str] = {}
    for name in ordered:
        step = by_name[name]
        if not parents_of[name]:
            roots.append(name)  # a map child too: it keeps its item and its parents' results
        elif parents_left[name] == 0:
            kept = [
                Parent(p, by_name[p].task.status, by_name[p].task.error) for p in parents_of[name]
            ]
            status, reason = decide_child(step.run_if, kept)
            if status is TaskStatus.PENDING:
                releases.append(name)
            else:
                skips[name] = reason or "skipped"
    return RetryPlan(ordered, parents_left, tuple(roots), tuple(releases), skips)


def _parents_of(workflow: Workflow) -> dict[str, list[str]]:
    """Each step's parents; a mapped step that fanned out counts its children too."""
    parents_of = {s.name: list(s.depends_on) for s in workflow.steps}
    for step in workflow.steps:
        if step.map_of is not None:
            parents_of[step.map_of].append(step.name)
    return parents_of


def _to_reset(workflow: Workflow, parents_of: dict[str, list[str]]) -> set[str]:
    """The steps that did not succeed and every descendant of theirs."""
    children: dict[str, list[str]] = {}
    for name, parents in parents_of.items():
        for parent in parents:
            children.setdefault(parent, []).append(name)
    again = [s.name for s in workflow.steps if s.task.status is not TaskStatus.SUCCEEDED]
    reset: set[str] = set()
    while again:
        name = again.pop()
        if name not in reset:
            reset.add(name)
            again.extend(children.get(name, ()))
    return reset


def _refuse_fanning_out_again(
    workflow: Workflow,
    ordered: tuple[str, ...],
    parents_of: dict[str, list[str]],
    reset: set[str],
) -> None:
    """A mapped step that fanned out keeps its children: a retry that would compute the
    list it mapped over again (a parent of it starts over) is refused."""
    for step in workflow.steps:
        if step.name not in ordered or len(parents_of[step.name]) == len(step.depends_on):
            continue
        if any(parent in reset for parent in step.depends_on):
            raise WorkflowNotRetryable(
                f"workflow {workflow.id}: step {step.name!r} was mapped over a result of step"
                f" {step.map_over!r} that a retry would compute again; submit the workflow"
                " anew",
                field="workflow_id",
            )
