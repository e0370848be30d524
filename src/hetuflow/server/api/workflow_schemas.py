"""Request and response bodies of the workflow routes (docs/workflows.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import Field

from hetuflow.models import TaskStatus
from hetuflow.server.api.schemas import Name, TaskCreate, TaskOut, _Input, _Output
from hetuflow.workflows import (
    MAX_MAP_ITEMS,
    MAX_WORKFLOW_STEPS,
    NewStep,
    NewWorkflow,
    OnFailure,
    RunIf,
    Workflow,
    WorkflowStatus,
    WorkflowStep,
    WorkflowSummary,
)


class WorkflowStepCreate(TaskCreate):
    """A step: a task spec as for `POST /api/tasks`, named, with the steps it depends on."""

    name: Name = Field(
        description="Unique within the workflow; `depends_on` and `parents` use it.",
        examples=["fetch"],
    )
    depends_on: list[Name] = Field(
        default_factory=list,
        description="Steps that must end first. A step without any starts at once.",
        examples=[["fetch"]],
    )
    run_if: RunIf = Field(
        default=RunIf.ALL_SUCCEEDED,
        description="Once its parents have ended: run if they all succeeded (`all_succeeded`,"
        " the default), whatever their outcome (`all_done`), or only if one did not succeed"
        " (`any_failed`); otherwise the step is `skipped`.",
    )

    map_over: Name | None = Field(
        default=None,
        description="Fan out: a parent (in `depends_on`) whose result is a JSON array of at"
        f" most {MAX_MAP_ITEMS} items. Once it succeeds, one child step per item runs"
        " (named `<name>[<i>]`, its payload this step's with `item` and `map_index` set); this"
        " step then ends with their results, a list in item order. A result that is no array,"
        " or too long, fails this step.",
        examples=["fetch"],
    )

    def to_new_step(self, *, now: datetime, default_backoff_seconds: float) -> NewStep:
        task = self.to_new_task(now=now, default_backoff_seconds=default_backoff_seconds)
        return NewStep(self.name, task, tuple(self.depends_on), self.run_if, self.map_over)


class WorkflowCreate(_Input):
    name: Name = Field(description="Label for people.", examples=["nightly-report"])
    steps: list[WorkflowStepCreate] = Field(
        description=f"The steps, at most {MAX_WORKFLOW_STEPS}; created together in one"
        " transaction, all or none. A cycle, a self-dependency, an unknown or duplicate step"
        " name is a 422 naming the step."
    )
    on_failure: OnFailure = Field(
        default=OnFailure.STOP,
        description="When a step fails for good: `stop` (no new step starts except `run_if`"
        " clean-up steps; running ones finish) or `continue` (branches that do not depend on"
        " it go on). Its descendants are skipped either way.",
    )

    def to_new_workflow(self, *, now: datetime, default_backoff_seconds: float) -> NewWorkflow:
        return NewWorkflow(
            self.name,
            tuple(
                s.to_new_step(now=now, default_backoff_seconds=default_backoff_seconds)
                for s in self.steps
            ),
            self.on_failure,
        )


class WorkflowStepOut(_Output):
    name: str
    depends_on: list[str]
    run_if: RunIf
    map_over: str | None = Field(
        default=None, description="The parent this step fans out over (`map_over`)."
    )
    map_index: int | None = Field(
        default=None, description="A map child: its item's position in the parent's list."
    )
    map_of: str | None = Field(
        default=None, description="A map child: the mapped step it belongs to."
    )
    status: TaskStatus = Field(description="The status of the step's task.")
    task: TaskOut = Field(description="The step's task: timings, attempts, result, error.")

    @classmethod
    def of(cls, step: WorkflowStep) -> WorkflowStepOut:
        return cls(
            name=step.name,
            depends_on=list(step.depends_on),
            run_if=step.run_if,
            map_over=step.map_over,
            map_index=step.map_index,
            map_of=step.map_of,
            status=step.task.status,
            task=TaskOut.of(step.task),
        )


class WorkflowSummaryOut(_Output):
    id: UUID
    name: str
    on_failure: OnFailure
    status: WorkflowStatus = Field(
        description="Derived from the steps: `cancelled` once cancelled, `running` while a step"
        " has not ended, then `failed` if one failed, timed out or was cancelled, else"
        " `succeeded`."
    )
    step_counts: dict[TaskStatus, int] = Field(description="Steps by status.")
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None
    finished_at: datetime | None = Field(description="When the last step ended, once all have.")

    @classmethod
    def of(cls, workflow: WorkflowSummary | Workflow) -> WorkflowSummaryOut:
        return cls(
            id=workflow.id,
            name=workflow.name,
            on_failure=workflow.on_failure,
            status=workflow.status,
            step_counts=dict(workflow.step_counts),
            created_at=workflow.created_at,
            updated_at=workflow.updated_at,
            cancelled_at=workflow.cancelled_at,
            finished_at=workflow.finished_at,
        )


class WorkflowOut(WorkflowSummaryOut):
    steps: list[WorkflowStepOut] = Field(description="In the order they were submitted.")

    @classmethod
    def of_workflow(cls, workflow: Workflow) -> WorkflowOut:
        summary = WorkflowSummaryOut.of(workflow)
        return cls(**summary.model_dump(), steps=[WorkflowStepOut.of(s) for s in workflow.steps])


class WorkflowPage(_Output):
    items: list[WorkflowSummaryOut]
    total: int
    limit: int
    offset: int


def workflow_document(workflow: WorkflowCreate) -> dict[str, Any]:
    """The document as stored for a cron job (``workflow_from_document`` reads it back)."""
    return workflow.model_dump(mode="json", exclude_unset=True)


def workflow_from_document(
    document: dict[str, Any], *, now: datetime, default_backoff_seconds: float
) -> NewWorkflow:
    """A stored workflow document (a cron job's) as the workflow to create ``now``."""
    return WorkflowCreate.model_validate(document).to_new_workflow(
        now=now, default_backoff_seconds=default_backoff_seconds
    )
