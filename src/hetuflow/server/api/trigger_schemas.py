"""Request and response bodies of triggers, events and hooks (docs/triggers.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import orjson
from pydantic import AfterValidator, Field, StringConstraints, field_validator

from hetuflow.errors import InvalidInput
from hetuflow.models import ConcurrencyStrategy, JSONObject, NewTask
from hetuflow.server.api.schemas import (
    Label,
    Payload,
    TaskCreate,
    TaskOut,
    _Input,
    _Output,
    storable_json,
    storable_text,
)
from hetuflow.server.api.workflow_schemas import WorkflowCreate, WorkflowOut
from hetuflow.triggers import (
    EVENT_KEY_PATTERN,
    EVENT_PAYLOAD_KEY,
    MAX_EVENT_ID_LENGTH,
    MAX_EVENT_KEY_LENGTH,
    MAX_HOOK_SECRET_LENGTH,
    MIN_HOOK_SECRET_LENGTH,
    EventDelivery,
    Hook,
    NewTrigger,
    Trigger,
)
from hetuflow.workflows import NewWorkflow

EventKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_EVENT_KEY_LENGTH, pattern=EVENT_KEY_PATTERN),
]
EventId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_EVENT_ID_LENGTH),
    AfterValidator(storable_text),
]
HOOK_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
HookName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=HOOK_NAME_PATTERN)
]


@dataclass(frozen=True, slots=True)
class TriggerSpecs:
    """A trigger's stored task spec as the task ``POST /api/tasks`` would create, its
    workflow document as the workflow ``POST /api/workflows`` would (``Specs``)."""

    default_backoff_seconds: float

    def task(self, spec: JSONObject, /, *, now: datetime) -> NewTask:
        parsed = TaskCreate.model_validate(spec)
        return parsed.to_new_task(now=now, default_backoff_seconds=self.default_backoff_seconds)

    def workflow(self, spec: JSONObject, /, *, now: datetime) -> NewWorkflow:
        parsed = WorkflowCreate.model_validate(spec)
        return parsed.to_new_workflow(now=now, default_backoff_seconds=self.default_backoff_seconds)


def hook_body(body: bytes) -> JSONObject:
    """A hook call's body: a JSON object the stores can keep, else ``InvalidInput``."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise InvalidInput("a hook call's body must be a JSON object", field="body")
    try:
        storable_json(data)
    except ValueError as error:
        raise InvalidInput(f"the body: {error}", field="body") from None
    return data


# --- triggers ---------------------------------------------------------------------------------


class TriggerCreate(_Input):
    """A task to create for every event of a key whose data passes the filter."""

    name: Label = Field(description="Unique name of the trigger.", examples=["invoice-on-order"])
    event: EventKey = Field(
        description="The event key it is bound to: letters, digits and `_.:/-`.",
        examples=["order.created"],
    )
    filter: Payload = Field(
        default_factory=dict,
        description="Dotted path into the event's data -> the value it must equal (JSON "
        "equality; every entry must hold; at most 32). `{}` (default): every event of the key.",
        examples=[{"status": "paid", "customer.tier": "gold"}],
    )
    task: TaskCreate | None = Field(
        default=None,
        description="The task to create, as `POST /api/tasks` takes it (no `idempotency_key`: "
        "the event id makes it once; `concurrency_strategy` `queue` only; no broadcast). The "
        "task's `webhook_url` and `rate_limits` are checked when the trigger is made (422). "
        "The event comes "
        f"under the payload key `{EVENT_PAYLOAD_KEY}`: `{{key, id, data}}`. Give `task` or "
        "`workflow`.",
    )
    workflow: WorkflowCreate | None = Field(
        default=None,
        description="Instead of `task`: the workflow to create, as `POST /api/workflows` takes "
        f"it; every step's payload gets the event under `{EVENT_PAYLOAD_KEY}`.",
    )

    @field_validator("workflow")
    @classmethod
    def _workflow_fits_a_trigger(cls, workflow: WorkflowCreate | None) -> WorkflowCreate | None:
        for step in [] if workflow is None else workflow.steps:
            if EVENT_PAYLOAD_KEY in step.payload:
                raise ValueError(
                    f"step {step.name!r}: a trigger's step payload must not use the key"
                    f" {EVENT_PAYLOAD_KEY!r}: the event goes there"
                )
        return workflow

    @field_validator("task")
    @classmethod
    def _task_fits_a_trigger(cls, task: TaskCreate | None) -> TaskCreate | None:
        if task is None:
            return None
        if task.idempotency_key is not None:
            raise ValueError(
                "a trigger's task takes no idempotency_key: each event id creates it once"
            )
        if task.is_broadcast:
            raise ValueError(
                "a trigger's task cannot be a broadcast (dispatch 'all'): an event creates one task"
            )
        if task.concurrency_strategy is not ConcurrencyStrategy.QUEUE:
            raise ValueError("a trigger's task may only use concurrency_strategy 'queue'")
        if EVENT_PAYLOAD_KEY in task.payload:
            raise ValueError(
                f"a trigger's task payload must not use the key {EVENT_PAYLOAD_KEY!r}:"
                " the event goes there"
            )
        return task

    def to_new_trigger(self) -> NewTrigger:
        task = None if self.task is None else self.task.model_dump(mode="json", exclude_unset=True)
        workflow = (
            None
            if self.workflow is None
            else self.workflow.model_dump(mode="json", exclude_unset=True)
        )
        return NewTrigger(
            name=self.name, event_key=self.event, filter=self.filter, task=task, workflow=workflow
        )


class TriggerOut(_Output):
    id: UUID
    name: str
    event: str
    filter: dict[str, Any]
    task: dict[str, Any] | None = Field(description="The task spec, as given (or null).")
    workflow: dict[str, Any] | None = Field(
        description="The workflow document, as given (or null)."
    )
    created_at: datetime

    @classmethod
    def of(cls, trigger: Trigger) -> TriggerOut:
        return cls(
            id=trigger.id,
            name=trigger.name,
            event=trigger.event_key,
            filter=trigger.filter,
            task=trigger.task,
            workflow=trigger.workflow,
            created_at=trigger.created_at,
        )


class TriggerList(_Output):
    items: list[TriggerOut]


# --- events -----------------------------------------------------------------------------------


class EventCreate(_Input):
    key: EventKey = Field(description="The event key.", examples=["order.created"])
    data: Payload = Field(
        default_factory=dict,
        description="JSON object: what triggers filter on, and what their tasks get.",
        examples=[{"order_id": 42, "status": "paid"}],
    )
    id: EventId | None = Field(
        default=None,
        description="The event's id: a second delivery with the same id creates nothing "
        "(and answers with the first one's tasks). Default: a new UUID (no deduplication).",
        examples=["order-42-created"],
    )


class EventOut(_Output):
    id: str
    key: str
    created: bool = Field(description="False when the id had been delivered before.")
    matched: int = Field(
        description="How many triggers' filters the data passed: tasks plus workflows created."
    )
    received_at: datetime = Field(description="When the first delivery was recorded.")
    tasks: list[TaskOut] = Field(
        description="The tasks the (first) delivery created, in trigger-name order (those "
        "still existing: old finished tasks are deleted by the cleanup loop)."
    )
    workflows: list[WorkflowOut] = Field(
        default_factory=list,
        description="The workflows the (first) delivery created, in trigger-name order.",
    )

    @classmethod
    def of(cls, delivery: EventDelivery) -> EventOut:
        return cls(
            id=delivery.event_id,
            key=delivery.key,
            created=delivery.created,
            matched=delivery.matched,
            received_at=delivery.received_at,
            tasks=[TaskOut.of(task) for task in delivery.tasks],
            workflows=[WorkflowOut.of_workflow(w) for w in delivery.workflows],
        )


# --- hooks ------------------------------------------------------------------------------------


class HookCreate(_Input):
    name: HookName = Field(
        description="Unique name; the hook is called at `POST /api/hooks/{name}`.",
        examples=["stripe"],
    )
    event: EventKey = Field(
        description="The event key its calls become.", examples=["payment.succeeded"]
    )
    secret: (
        Annotated[
            str,
            StringConstraints(min_length=MIN_HOOK_SECRET_LENGTH, max_length=MAX_HOOK_SECRET_LENGTH),
            AfterValidator(storable_text),
        ]
        | None
    ) = Field(
        default=None,
        description="The HMAC-SHA256 key the caller signs with; default: generated "
        "(`whsec_…`). Shown in this answer only.",
    )


class HookOut(_Output):
    id: UUID
    name: str
    event: str
    path: str = Field(description="Where the hook is called (POST).")
    created_at: datetime

    @classmethod
    def of(cls, hook: Hook) -> HookOut:
        return cls(
            id=hook.id,
            name=hook.name,
            event=hook.event_key,
            path=f"/api/hooks/{hook.name}",
            created_at=hook.created_at,
        )


class HookCreated(HookOut):
    secret: str = Field(description="The signing secret: shown once, store it now.")

    @classmethod
    def created(cls, hook: Hook) -> HookCreated:
        out = HookOut.of(hook)
        return cls(**out.model_dump(), secret=hook.secret)


class HookList(_Output):
    items: list[HookOut]
