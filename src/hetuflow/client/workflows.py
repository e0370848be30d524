"""The SDK's workflow models and request builders (docs/workflows.md), shared by ``Client``
and ``AsyncClient``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Required, TypedDict
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from hetuflow.client.calls import Call, jsonable, parse_one, query
from hetuflow.client.models import Task
from hetuflow.models import TaskStatus


class StepSpec(TypedDict, total=False):
    """One step for ``submit_workflow``: a task spec (``TaskSpec``) with a unique ``name``,
    the steps it ``depends_on``, ``run_if`` (``all_succeeded``, ``all_done``,
    ``any_failed``), and ``map_over`` (a parent whose list result fans the step out, one child
    step per item)."""

    name: Required[str]
    task_type: Required[str]
    depends_on: list[str]
    run_if: str
    map_over: str
    priority: str
    payload: dict[str, Any]
    required_capabilities: list[str]
    scheduled_at: datetime | str
    delay_seconds: float
    timeout_seconds: float
    max_retries: int
    retry_backoff_seconds: float


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class WorkflowStep(_Model):
    name: str
    depends_on: list[str] = []
    run_if: str = "all_succeeded"
    map_over: str | None = None
    map_index: int | None = None
    map_of: str | None = None
    status: TaskStatus
    task: Task


class WorkflowSummary(_Model):
    id: UUID
    name: str
    on_failure: str
    status: str  # running, succeeded, failed, cancelled
    step_counts: dict[TaskStatus, int] = {}
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None = None
    finished_at: datetime | None = None


class Workflow(WorkflowSummary):
    steps: list[WorkflowStep] = []

    def step(self, name: str) -> WorkflowStep:
        """The step named ``name`` (``KeyError`` if there is none)."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)


class WorkflowPage(_Model):
    items: list[WorkflowSummary]
    total: int
    limit: int
    offset: int


WORKFLOW_ENDED = frozenset({"succeeded", "failed", "cancelled"})


class WorkflowCalls:
    @staticmethod
    def submit(
        name: str, steps: Sequence[StepSpec | Mapping[str, Any]], on_failure: str
    ) -> Call[Workflow]:
        body = {"name": name, "steps": [jsonable(dict(s)) for s in steps], "on_failure": on_failure}
        return Call("POST", "/api/workflows", parse_one(Workflow), body=body)

    @staticmethod
    def get(workflow_id: UUID | str) -> Call[Workflow]:
        return Call("GET", f"/api/workflows/{workflow_id}", parse_one(Workflow))

    @staticmethod
    def list(limit: int, offset: int) -> Call[WorkflowPage]:
        params = query(limit=limit, offset=offset)
        return Call("GET", "/api/workflows", parse_one(WorkflowPage), params=params)

    @staticmethod
    def cancel(workflow_id: UUID | str) -> Call[Workflow]:
        return Call("DELETE", f"/api/workflows/{workflow_id}", parse_one(Workflow))

    @staticmethod
    def retry(workflow_id: UUID | str) -> Call[Workflow]:
        return Call("POST", f"/api/workflows/{workflow_id}/retry", parse_one(Workflow))
