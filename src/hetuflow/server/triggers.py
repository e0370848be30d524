"""TriggerService: triggers, hooks and the delivery of events (docs/triggers.md).

Built per request from the node's ``TaskQueue`` (store, notifier, clock, dispatcher, payload
limit, metrics). Delivering an event reads the triggers bound to its key, keeps those whose
filter the data passes, builds one task (or workflow) per trigger from its stored spec
(``Specs``: the REST layer's own parsers, so a trigger's task is exactly what
``POST /api/tasks`` would make, its workflow what ``POST /api/workflows`` would), and hands
them to ``Store.record_event``, which records the event and creates them in one transaction,
once per event id.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Protocol
from uuid import UUID

import orjson

from hetuflow.errors import (
    HookNotFound,
    InvalidInput,
    NoTrigger,
    PayloadTooLarge,
    RateLimitUnknown,
    TriggerNotFound,
    WorkflowInvalid,
)
from hetuflow.models import JSONObject, NewTask
from hetuflow.server.tasks import TaskQueue
from hetuflow.server.webhooks import check_webhook_target
from hetuflow.store.base import TASKS_READY
from hetuflow.triggers import (
    EVENT_ID_HEADER,
    MAX_EVENT_ID_LENGTH,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    EventDelivery,
    Hook,
    NewEvent,
    NewHook,
    NewTrigger,
    Trigger,
    TriggeredTask,
    TriggeredWorkflow,
    body_event_id,
    check_event_key,
    check_filter,
    event_task,
    event_workflow,
    matches,
    verify_signature,
)
from hetuflow.workflows import NewWorkflow, check_workflow

log = logging.getLogger("hetuflow.triggers")

HOOK_SECRET_PREFIX = "whsec_"


class Specs(Protocol):
    """Builds a trigger's task or workflow from its stored spec; ``ValueError`` if the spec
    is invalid."""

    def task(self, spec: JSONObject, /, *, now: datetime) -> NewTask: ...

    def workflow(self, spec: JSONObject, /, *, now: datetime) -> NewWorkflow: ...


class TriggerService:
    def __init__(self, queue: TaskQueue, specs: Specs) -> None:
        self._queue = queue
        self._specs = specs

    # --- triggers ---------------------------------------------------------------------------

    async def create_trigger(self, trigger: NewTrigger) -> Trigger:
        """``InvalidInput`` for a bad event key or filter, for neither or both of a task and
        a workflow; ``WorkflowInvalid`` for a workflow that could never run;
        ``TriggerNameTaken``."""
        check_event_key(trigger.event_key, field="event")
        check_filter(trigger.filter)
        if (trigger.task is None) == (trigger.workflow is None):
            raise InvalidInput("give a trigger a task or a workflow (one of them)", field="task")
        now = self._queue.clock.now()
        tasks: list[tuple[str, NewTask]] = []
        try:
            if trigger.task is not None:
                tasks.append(("task", self._specs.task(trigger.task, now=now)))
            if trigger.workflow is not None:
                workflow = self._specs.workflow(trigger.workflow, now=now)
                check_workflow(workflow)
                tasks += [(f"workflow.steps.{step.name}", step.task) for step in workflow.steps]
        except ValueError as error:  # the routes parse specs first: a caller that did not
            field = "task" if trigger.task is not None else "workflow"
            raise InvalidInput(f"the trigger's {field}: {error}", field=field) from error
        await self._check_targets(tasks)
        return await self._queue.store.create_trigger(trigger, now=now)

    async def _check_targets(self, tasks: list[tuple[str, NewTask]]) -> None:
        """Refuse now what every event of the key would be refused for later: a
        ``webhook_url`` this server cannot deliver to (``InvalidInput``), a rate limit that
        does not exist or allows fewer units than asked (``RateLimitUnknown``). A check, not
        a lock: a limit deleted after the trigger was made is taken out of its templates by the
        delete (``Store.delete_rate_limit``)."""
        webhooks = self._queue.webhooks
        if webhooks is not None:
            for field, task in tasks:
                check_webhook_target(task.webhook_url, webhooks, field=f"{field}.webhook_url")
        if not any(task.rate_limits for _, task in tasks):
            return
        allowed = {limit.name: limit.limit for limit in await self._queue.store.list_rate_limits()}
        for field, task in tasks:
            for use in task.rate_limits:
                limit = allowed.get(use.name)
                if limit is None:
                    raise RateLimitUnknown(
                        f"the trigger's {field.replace('.steps.', ' step ')} names rate limit"
                        f" {use.name!r}, which does not exist (POST /api/rate-limits creates one)",
                        field=f"{field}.rate_limits",
                    )
                if use.units > limit:
                    raise RateLimitUnknown(
                        f"the trigger's {field.replace('.steps.', ' step ')} asks {use.units}"
                        f" units of rate limit {use.name!r}, which allows {limit} per window",
                        field=f"{field}.rate_limits",
                    )

    async def list_triggers(self, event_key: str | None = None) -> list[Trigger]:
        return await self._queue.store.list_triggers(event_key=event_key)

    async def get_trigger(self, trigger_id: UUID) -> Trigger:
        found = await self._queue.store.get_trigger(trigger_id)
        if found is None:
            raise TriggerNotFound(f"trigger {trigger_id} does not exist", field="trigger_id")
        return found

    # --- events -----------------------------------------------------------------------------

    async def deliver(self, event: NewEvent) -> EventDelivery:
        """Create one task (or workflow) per trigger of ``event.key`` whose filter
        ``event.data`` passes, and record the event, in one transaction; exactly once per
        event id (a replay returns the first delivery, ``created`` False). ``NoTrigger`` when
        no trigger is bound to the key at all (and the id was never delivered);
        ``EventIdReused``; ``PayloadTooLarge``."""
        queue = self._queue
        check_event_key(event.key)
        triggers = await queue.store.list_triggers(event_key=event.key)
        if not triggers:
            previous = await queue.store.get_event(event.id)
            if previous is not None and previous.key == event.key:
                return previous
            raise NoTrigger(
                f"no trigger is bound to event key {event.key!r}: create one first"
                " (POST /api/triggers, hetuflow-server create-trigger)",
                field="key",
            )
        now = queue.clock.now()
        tasks: list[TriggeredTask] = []
        workflows: list[TriggeredWorkflow] = []
        for trigger in triggers:
            if not matches(trigger.filter, event.data):
                continue
            with self._spec_of(trigger):
                if trigger.task is not None:
                    tasks.append(
                        (trigger.name, event_task(self._specs.task(trigger.task, now=now), event))
                    )
                elif trigger.workflow is not None:
                    template = self._specs.workflow(trigger.workflow, now=now)
                    workflow = event_workflow(template, event)
                    workflows.append((trigger.name, workflow, check_workflow(workflow)))
        self._check_payloads(
            [*tasks, *((name, step.task) for name, w, _ in workflows for step in w.steps)]
        )
        delivery = await queue.store.record_event(event, tasks, workflows=workflows, now=now)
        if delivery.created and (delivery.tasks or delivery.workflows):
            created = [
                *delivery.tasks,
                *(step.task for workflow in delivery.workflows for step in workflow.steps),
            ]
            if queue.metrics is not None:
                for task_type, count in Counter(t.task_type for t in created).items():
                    queue.metrics.task_submitted(task_type, count)
            if queue.dispatcher is not None:
                queue.dispatcher.wake()
            try:
                await queue.notifier.publish(TASKS_READY)
            except Exception:
                log.warning("could not publish %s", TASKS_READY, exc_info=True)
        return delivery

    @contextmanager
    def _spec_of(self, trigger: Trigger) -> Iterator[None]:
        try:
            yield
        except (ValueError, WorkflowInvalid) as error:  # stored by a version that no longer
            # parses it: name the trigger
            raise InvalidInput(
                f"trigger {trigger.name!r} has a spec this server refuses: {error}",
                field="key",
            ) from error

    def _check_payloads(self, tasks: list[TriggeredTask]) -> None:
        limit = self._queue.max_payload_bytes
        if limit is None:
            return
        for name, task in tasks:
            size = len(orjson.dumps(task.payload))
            if size > limit:
                raise PayloadTooLarge(
                    f"trigger {name!r}: the task's payload with the event is {size} bytes as"
                    f" JSON; the limit is {limit} bytes ([server] max_payload_bytes)",
                    field="data",
                )

    # --- hooks ------------------------------------------------------------------------------

    async def create_hook(self, name: str, event_key: str, secret: str | None) -> Hook:
        """A hook with ``secret``, or a generated one (``whsec_…``); ``HookNameTaken``."""
        check_event_key(event_key, field="event")
        if secret is None:
            secret = HOOK_SECRET_PREFIX + secrets.token_urlsafe(32)
        hook = NewHook(name=name, event_key=event_key, secret=secret)
        return await self._queue.store.create_hook(hook, now=self._queue.clock.now())

    async def get_hook(self, name: str) -> Hook:
        hook = await self._queue.store.get_hook(name)
        if hook is None:
            raise HookNotFound(f"no hook is named {name!r}", field="name")
        return hook

    async def call_hook(
        self,
        name: str,
        headers: Mapping[str, str],
        body: bytes,
        parse_body: Callable[[bytes], JSONObject],
    ) -> EventDelivery:
        """A signed call to hook ``name``, as an event of the hook's key: ``HookNotFound``;
        ``SignatureInvalid`` (nothing created) unless ``X-Hetuflow-Signature`` signs the raw
        body at ``X-Hetuflow-Timestamp``; then ``parse_body`` (``InvalidInput`` unless the
        body is a storable JSON object); then as ``deliver``. The event id is
        ``X-Hetuflow-Event-Id``, else ``hook:<name>:<sha256 of the body>``."""
        hook = await self.get_hook(name)
        verify_signature(
            hook.secret,
            timestamp=headers.get(TIMESTAMP_HEADER.lower()),
            presented=headers.get(SIGNATURE_HEADER.lower()),
            body=body,
            now=self._queue.clock.now(),
        )
        data = parse_body(body)
        event_id = headers.get(EVENT_ID_HEADER.lower()) or body_event_id(name, body)
        if len(event_id) > MAX_EVENT_ID_LENGTH:
            raise InvalidInput(
                f"{EVENT_ID_HEADER} is at most {MAX_EVENT_ID_LENGTH} characters",
                field=EVENT_ID_HEADER,
            )
        return await self.deliver(NewEvent(id=event_id, key=hook.event_key, data=data))
