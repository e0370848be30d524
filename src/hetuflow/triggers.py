"""Triggers, events and hooks (docs/triggers.md): the pure part.

An **event** is something that happened outside (``order.created`` with its data). A
**trigger** binds an event key to a task spec or a workflow document: each event with that key
whose data passes the trigger's filter creates one task (or one workflow) from it, the event
under the payload key ``event`` (of every step, for a workflow).
A **hook** is a named, signed webhook endpoint that turns an outside call into an event.

The filter is an object of dotted paths into the event's data and the values they must equal,
exactly: ``{"status": "paid", "customer.tier": "gold"}`` matches data whose ``status`` is
``"paid"`` and whose ``customer`` object has ``tier`` ``"gold"``. Every entry must hold (AND);
an empty filter matches every event. Equality is JSON equality: ``1`` equals ``1.0``, but
``true`` is not ``1`` and ``"1"`` is not ``1``; objects and arrays compare whole.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from hetuflow.errors import InvalidInput, SignatureInvalid
from hetuflow.models import JSONObject, JSONValue, NewTask, Task
from hetuflow.workflows import NewStep, NewWorkflow, Workflow

EVENT_PAYLOAD_KEY = "event"
"""The payload key under which a triggered task gets its event: ``{"key", "id", "data"}``."""
MAX_EVENT_KEY_LENGTH = 200
MAX_EVENT_ID_LENGTH = 200
MAX_FILTER_ENTRIES = 32
MAX_FILTER_PATH_LENGTH = 200
EVENT_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$"
"""An event key: letters, digits and ``_ . : / -``, starting with a letter or digit."""

SIGNATURE_HEADER = "X-Hetuflow-Signature"
TIMESTAMP_HEADER = "X-Hetuflow-Timestamp"
EVENT_ID_HEADER = "X-Hetuflow-Event-Id"
SIGNATURE_TOLERANCE_SECONDS = 300
"""A signed call whose timestamp is further than this from the server's clock is refused."""
MIN_HOOK_SECRET_LENGTH = 16
MAX_HOOK_SECRET_LENGTH = 256


# --- objects ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewTrigger:
    name: str
    event_key: str
    filter: JSONObject
    """Dotted path -> the value it must equal (see the module's docstring)."""
    task: JSONObject | None = None
    """The task spec, as ``POST /api/tasks`` takes it, checked when the trigger is created."""
    workflow: JSONObject | None = None
    """Instead of ``task``: a workflow document, as ``POST /api/workflows`` takes it."""


@dataclass(frozen=True, slots=True)
class Trigger:
    id: UUID
    name: str
    event_key: str
    filter: JSONObject
    task: JSONObject | None
    workflow: JSONObject | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewHook:
    name: str
    event_key: str
    secret: str


@dataclass(frozen=True, slots=True)
class Hook:
    id: UUID
    name: str
    event_key: str
    secret: str
    """Kept as given (the signature needs it); shown only when the hook is created."""
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewEvent:
    id: str
    key: str
    data: JSONObject


@dataclass(frozen=True, slots=True)
class EventDelivery:
    """What an event created: its tasks, in trigger-name order. ``created`` is False when the
    event id had been delivered before: the tasks are then those of that first delivery
    (still existing ones: the cleanup loop may have deleted old finished tasks). ``matched``
    counts the tasks and workflows it created."""

    event_id: str
    key: str
    received_at: datetime
    created: bool
    matched: int
    tasks: tuple[Task, ...]
    workflows: tuple[Workflow, ...] = ()


TriggeredTask = tuple[str, NewTask]
"""A task an event creates: its trigger's name and the task."""
TriggeredWorkflow = tuple[str, NewWorkflow, Sequence[NewStep]]
"""A workflow an event creates: its trigger's name, the workflow and its steps, checked and
parents first (``check_workflow``)."""


# --- filters ----------------------------------------------------------------------------------


def check_filter(filter: JSONObject) -> None:
    """``InvalidInput`` (field ``filter``) unless every key is a dotted path of non-empty
    names and there are at most ``MAX_FILTER_ENTRIES`` entries."""
    if len(filter) > MAX_FILTER_ENTRIES:
        raise InvalidInput(
            f"a filter has at most {MAX_FILTER_ENTRIES} entries, got {len(filter)}",
            field="filter",
        )
    for path in filter:
        if not path or len(path) > MAX_FILTER_PATH_LENGTH or "" in path.split("."):
            raise InvalidInput(
                f"filter key {path!r} must be a dotted path of non-empty names"
                f" (e.g. 'customer.tier'), at most {MAX_FILTER_PATH_LENGTH} characters",
                field=f"filter.{path}",
            )


def matches(filter: JSONObject, data: JSONObject) -> bool:
    """Whether ``data`` has, at every path of ``filter``, a value equal to the filter's."""
    for path, wanted in filter.items():
        found: Any = data
        for name in path.split("."):
            if not isinstance(found, dict) or name not in found:
                return False
            found = found[name]
        if not same_json(found, wanted):
            return False
    return True


def same_json(left: JSONValue, right: JSONValue) -> bool:
    """JSON equality: numbers by value, but a boolean is never a number."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same_json(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(
            same_json(a, b) for a, b in zip(left, right, strict=True)
        )
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    return type(left) is type(right) and left == right


def check_event_key(key: str, *, field: str = "key") -> None:
    if not key or len(key) > MAX_EVENT_KEY_LENGTH or re.match(EVENT_KEY_PATTERN, key) is None:
        raise InvalidInput(
            f"an event key is 1 to {MAX_EVENT_KEY_LENGTH} letters, digits and '_.:/-',"
            f" starting with a letter or digit; got {key!r}",
            field=field,
        )


def event_task(template: NewTask, event: NewEvent) -> NewTask:
    """The task a trigger creates for ``event``: its spec, the event under ``event``."""
    payload: JSONObject = {
        **template.payload,
        EVENT_PAYLOAD_KEY: {"key": event.key, "id": event.id, "data": event.data},
    }
    return replace(template, payload=payload)


def event_workflow(template: NewWorkflow, event: NewEvent) -> NewWorkflow:
    """The workflow a trigger creates for ``event``: every step gets the event as
    ``event_task`` gives it to a task."""
    steps = tuple(replace(step, task=event_task(step.task, event)) for step in template.steps)
    return replace(template, steps=steps)


# --- hook signatures --------------------------------------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Hetuflow-Signature`` value of a call: ``sha256=`` and the hex HMAC-SHA256,
    keyed with the hook's secret, of ``<timestamp>.`` followed by the raw body."""
    message = timestamp.encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str, *, timestamp: str | None, presented: str | None, body: bytes, now: datetime
) -> None:
    """``SignatureInvalid`` unless ``presented`` is the signature of ``body`` at
    ``timestamp`` (compared in constant time) and ``timestamp`` (Unix seconds) is within
    ``SIGNATURE_TOLERANCE_SECONDS`` of ``now``."""
    if presented is None or timestamp is None:
        raise SignatureInvalid(
            f"a hook call must carry {SIGNATURE_HEADER} and {TIMESTAMP_HEADER} headers"
        )
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise SignatureInvalid(f"{TIMESTAMP_HEADER} must be Unix seconds") from None
    if abs(now.timestamp() - sent_at) > SIGNATURE_TOLERANCE_SECONDS:
        raise SignatureInvalid(
            f"{TIMESTAMP_HEADER} is more than {SIGNATURE_TOLERANCE_SECONDS} s from the"
            " server's clock (a replayed or delayed call)"
        )
    expected = signature(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), presented.strip().encode()):
        raise SignatureInvalid("the signature does not match the body and the hook's secret")


def body_event_id(hook_name: str, body: bytes) -> str:
    """The event id of a hook call without ``X-Hetuflow-Event-Id``: the hook's name and the
    SHA-256 of the body, so the same body sent twice to one hook is one event."""
    return f"hook:{hook_name}:{hashlib.sha256(body).hexdigest()}"
