"""The SDK's trigger, event and hook models and request builders (docs/triggers.md), shared
by ``Client`` and ``AsyncClient``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from hetuflow.client.calls import Call, jsonable, parse_items, parse_none, parse_one, query
from hetuflow.client.models import Task, TaskSpec
from hetuflow.client.workflows import Workflow


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Trigger(_Model):
    id: UUID
    name: str
    event: str
    filter: dict[str, Any] = {}
    task: dict[str, Any] | None = None
    workflow: dict[str, Any] | None = None
    created_at: datetime


class EventDelivery(_Model):
    """What ``send_event`` (or a hook call) did: ``created`` is False when the event id had
    been delivered before, and ``tasks`` are then that first delivery's."""

    id: str
    key: str
    created: bool
    matched: int
    received_at: datetime
    tasks: list[Task] = []
    workflows: list[Workflow] = []


class Hook(_Model):
    id: UUID
    name: str
    event: str
    path: str
    created_at: datetime
    secret: str | None = None
    """Only in the answer of ``create_hook``."""


class TriggerCalls:
    @staticmethod
    def create(
        name: str,
        event: str,
        task: TaskSpec | Mapping[str, Any] | None,
        workflow: Mapping[str, Any] | None,
        filter: Mapping[str, Any] | None,
    ) -> Call[Trigger]:
        body: dict[str, Any] = {"name": name, "event": event}
        if task is not None:
            body["task"] = jsonable(dict(task))
        if workflow is not None:
            body["workflow"] = jsonable(dict(workflow))
        if filter is not None:
            body["filter"] = jsonable(dict(filter))
        return Call("POST", "/api/triggers", parse_one(Trigger), body=body)

    @staticmethod
    def list_triggers(event: str | None) -> Call[list[Trigger]]:
        return Call("GET", "/api/triggers", parse_items(Trigger), params=query(event=event))

    @staticmethod
    def get(trigger_id: UUID | str) -> Call[Trigger]:
        return Call("GET", f"/api/triggers/{trigger_id}", parse_one(Trigger))

    @staticmethod
    def delete(trigger_id: UUID | str) -> Call[None]:
        return Call("DELETE", f"/api/triggers/{trigger_id}", parse_none)

    @staticmethod
    def send_event(
        key: str, data: Mapping[str, Any] | None, event_id: str | None
    ) -> Call[EventDelivery]:
        body: dict[str, Any] = {"key": key, "data": jsonable(dict(data or {}))}
        if event_id is not None:
            body["id"] = event_id
        return Call("POST", "/api/events", parse_one(EventDelivery), body=body)

    @staticmethod
    def create_hook(name: str, event: str, secret: str | None) -> Call[Hook]:
        body = {"name": name, "event": event}
        if secret is not None:
            body["secret"] = secret
        return Call("POST", "/api/hooks", parse_one(Hook), body=body)

    @staticmethod
    def list_hooks() -> Call[list[Hook]]:
        return Call("GET", "/api/hooks", parse_items(Hook))

    @staticmethod
    def delete_hook(name: str) -> Call[None]:
        return Call("DELETE", f"/api/hooks/{name}", parse_none)
