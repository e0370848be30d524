"""``Client``: the synchronous SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal
from uuid import UUID

import httpx

from hetuflow.client.bulk import BulkCalls, BulkResult, bulk_body
from hetuflow.client.calls import (
    Call,
    Calls,
    T,
    agent_body,
    jsonable,
    parse_job,
    parse_jobs,
    parse_raw,
    query,
    task_body,
    task_query,
)
from hetuflow.client.coalesce import SubmitCoalescer
from hetuflow.client.errors import ClientError, WaitTimeout
from hetuflow.client.http11 import SyncPool, WireError, endpoint, json_body
from hetuflow.client.models import (
    Agent,
    Attempt,
    ConcurrencyKey,
    CronJob,
    LogLine,
    RateLimit,
    Stats,
    Task,
    TaskPage,
    TaskSpec,
)
from hetuflow.client.transport import (
    FOLLOW_RETRIES,
    FOLLOW_TIMEOUT,
    STREAM_LOST,
    client_options,
    decode,
    decode_reply,
    error_from,
    sse_events,
    transport_error,
    wire_error,
)
from hetuflow.client.triggers import EventDelivery, Hook, Trigger, TriggerCalls
from hetuflow.client.webhooks import TaskWebhook
from hetuflow.client.workflows import (
    WORKFLOW_ENDED,
    StepSpec,
    Workflow,
    WorkflowCalls,
    WorkflowPage,
)
from hetuflow.models import BroadcastPolicy, Priority, TaskStatus


class Client:
    """Synchronous client. ``server`` defaults to ``$HETUFLOW_SERVER`` or
    http://127.0.0.1:8080; ``token`` to ``$HETUFLOW_TOKEN``. Safe to share between threads;
    ``submit`` calls made at once from several threads ride one batch request
    (``coalesce=False`` turns that off; docs/sdk.md)."""

    def __init__(
        self,
        server: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        coalesce: bool = True,
    ) -> None:
        options = client_options(server, token, timeout)
        self.server: str = options["base_url"]
        self._http = httpx.Client(transport=transport, **options)
        target = endpoint(self.server, options["headers"]) if transport is None else None
        self._lean = SyncPool(target, timeout) if target is not None else None
        """submit and submit_many: a lean keep-alive client where it can serve the URL."""
        self._coalescer = SubmitCoalescer(self._create, self._create_many) if coalesce else None
        """Concurrent ``submit`` calls ride one batch request (``client.coalesce``)."""

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._lean is not None:
            self._lean.close()
        self._http.close()

    def _send(self, call: Call[T]) -> T:
        try:
            response = self._http.request(
                call.method, call.path, params=call.params, json=call.body
            )
        except httpx.TransportError as error:
            raise transport_error(self.server, error) from None
        return decode(call, response)

    def _submit(self, call: Call[T]) -> T:
        """``_send`` for the create calls, through ``http11`` when it serves the URL."""
        if self._lean is None:
            return self._send(call)
        body = json_body(call.body)
        try:
            reply = self._lean.request(call.method, call.path, body)
        except WireError as error:
            raise wire_error(self.server, error) from None
        return decode_reply(call, reply)

    def request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        """Any API call; returns the decoded JSON (None for an empty body)."""
        body = jsonable(json) if json is not None else None
        return self._send(Call(method, path, parse_raw, params=query(**(params or {})), body=body))

    # tasks

    def submit(
        self,
        task_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        priority: Priority | str = Priority.NORMAL,
        required_capabilities: Sequence[str] = (),
        scheduled_at: datetime | None = None,
        delay_seconds: float | None = None,
        timeout_seconds: float | None = None,
        max_retries: int | None = None,
        retry_backoff_seconds: float | None = None,
        retry_backoff_max_seconds: float | None = None,
        retry_jitter: float | None = None,
        retry_on: Sequence[str] | None = None,
        rate_limits: Sequence[Mapping[str, Any]] | None = None,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        max_concurrent_per_key: int | None = None,
        concurrency_strategy: str | None = None,
        dispatch: Literal["one", "all"] | None = None,
        broadcast_policy: BroadcastPolicy | str | None = None,
        webhook_url: str | None = None,
        start_deadline_seconds: float | None = None,
    ) -> Task:
        """Create one task and return it (the existing one if ``idempotency_key`` matched).
        The retry options are those of ``POST /api/tasks`` (docs/guarantees.md#retries):
        ``retry_on`` lists the failure kinds retried (``failed``, ``timed_out``,
        ``agent_lost``), ``retry_jitter`` the random fraction (0..1) of each backoff.

        ``dispatch="all"``: a broadcast, run once on every agent that matches now; the task
        returned is its parent (``children`` lists the one per agent), which ends with the
        last of them, its ``result`` ``{agent name: result}`` (``broadcast_policy``: ``all``,
        the default, or ``any``). ``Conflict`` (``no_agent_for_broadcast``) when no agent
        matches. ``start_deadline_seconds`` (a broadcast only): a child its agent has not
        started that long after the task's start time ends ``failed``.

        ``concurrency_key``: at most ``max_concurrent_per_key`` tasks with the key run at
        once, across all nodes; ``concurrency_strategy`` (``queue``, ``cancel_newest``,
        ``cancel_in_progress``) says what happens when the key is at its limit.

        ``webhook_url``: POST the task's final status there, signed (docs/webhooks.md;
        ``verify_webhook`` checks it on the receiving side)."""
        options = {
            "scheduled_at": scheduled_at,
            "delay_seconds": delay_seconds,
            "timeout_seconds": timeout_seconds,
            "max_retries": max_retries,
            "retry_backoff_seconds": retry_backoff_seconds,
            "retry_backoff_max_seconds": retry_backoff_max_seconds,
            "retry_jitter": retry_jitter,
            "retry_on": None if retry_on is None else list(retry_on),
            "rate_limits": None if rate_limits is None else [dict(use) for use in rate_limits],
            "idempotency_key": idempotency_key,
            "concurrency_key": concurrency_key,
            "max_concurrent_per_key": max_concurrent_per_key,
            "concurrency_strategy": concurrency_strategy,
            "dispatch": dispatch,
            "broadcast_policy": broadcast_policy,
            "webhook_url": webhook_url,
            "start_deadline_seconds": start_deadline_seconds,
        }
        body = task_body(task_type, payload, name, priority, required_capabilities, options)
        if (
            self._coalescer is None or dispatch == "all"
        ):  # a broadcast alone: its answer is the parent
            return self._create(body)
        return self._coalescer.submit(body)

    def _create(self, body: dict[str, Any]) -> Task:
        return self._submit(Calls.submit(body))

    def _create_many(self, bodies: Sequence[dict[str, Any]]) -> list[Task]:
        return self._submit(Calls.submit_many(bodies))

    def submit_many(self, tasks: Sequence[TaskSpec | Mapping[str, Any]]) -> list[Task]:
        """Create many tasks in one transaction (all or none), in order. A spec with
        ``"dispatch": "all"`` is a broadcast: its item is the parent (``children`` lists the
        one per agent); one with no matching agent fails the whole batch (``Conflict``
        ``no_agent_for_broadcast`` naming ``tasks[i]``), nothing created."""
        return self._submit(Calls.submit_many(tasks))

    def get_task(self, task_id: UUID | str) -> Task:
        return self._send(Calls.get_task(task_id))

    def list_tasks(
        self,
        *,
        status: TaskStatus | str | Sequence[TaskStatus | str] | None = None,
        task_type: str | None = None,
        agent_id: UUID | str | None = None,
        cron_job_id: UUID | str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        q: str | None = None,
        limit: int = 50,
        offset: int = 0,
        cursor: str | None = None,
        include_total: bool | None = None,
        id_prefix: str | None = None,
        final: bool | None = None,
        concurrency_key: str | None = None,
        rate_limit: str | None = None,
    ) -> TaskPage:
        """One page, newest first. Pass ``TaskPage.next`` as ``cursor`` for the next page
        (None on the last). ``TaskPage.total`` counts every match when ``include_total``
        (default: on a first page only). ``final=True``: only dead letters (failed, timed out
        or quarantined, not yet retried or replayed; docs/api.md). ``q`` is text anywhere in
        the name, task type, payload, result or error (any case): ``list_tasks(q="acme")``.
        ``concurrency_key`` / ``rate_limit``: only the tasks with that key or naming that
        limit; with ``status="pending"``, those waiting on it."""
        params = task_query(
            status,
            task_type,
            agent_id,
            cron_job_id,
            created_after,
            created_before,
            q,
            limit,
            offset,
            cursor,
            include_total,
            id_prefix,
            final,
            concurrency_key,
            rate_limit,
        )
        return self._send(Calls.list_tasks(params))

    def iter_tasks(
        self,
        *,
        status: TaskStatus | str | Sequence[TaskStatus | str] | None = None,
        task_type: str | None = None,
        agent_id: UUID | str | None = None,
        cron_job_id: UUID | str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        q: str | None = None,
        page_size: int = 500,
        final: bool | None = None,
        concurrency_key: str | None = None,
        rate_limit: str | None = None,
    ) -> Iterator[Task]:
        """Every matching task, newest first, page by page (following ``next``; no count):
        each task that exists when the walk starts comes once, tasks created meanwhile not.
        The filters are ``list_tasks``'s."""
        cursor: str | None = None
        while True:
            page = self.list_tasks(
                status=status,
                task_type=task_type,
                agent_id=agent_id,
                cron_job_id=cron_job_id,
                created_after=created_after,
                created_before=created_before,
                q=q,
                limit=page_size,
                cursor=cursor,
                include_total=False,
                final=final,
                concurrency_key=concurrency_key,
                rate_limit=rate_limit,
            )
            yield from page.items
            if page.next is None:
                return
            cursor = page.next

    def cancel_task(self, task_id: UUID | str) -> Task:
        return self._send(Calls.cancel_task(task_id))

    def children(self, task_id: UUID | str) -> list[Task]:
        """A broadcast's children, one per agent, by agent name."""
        return self._send(Calls.children(task_id))

    def retry_task(self, task_id: UUID | str) -> Task:
        """A new task with the same spec as a failed, timed-out, cancelled or quarantined
        one; its ``replay_of`` names the original."""
        return self._send(Calls.retry_task(task_id))

    def bulk_cancel(
        self,
        ids: Sequence[UUID | str] | None = None,
        *,
        status: TaskStatus | str | Sequence[TaskStatus | str] | None = None,
        task_type: str | None = None,
        agent_id: UUID | str | None = None,
        cron_job_id: UUID | str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        q: str | None = None,
        final: bool | None = None,
        concurrency_key: str | None = None,
        rate_limit: str | None = None,
    ) -> BulkResult:
        """Cancel many tasks, each as ``cancel_task`` would: ``ids``, or every unfinished
        task matching the filters (those of ``list_tasks``). One outcome per task
        (``BulkResult.items``); at most ``[server] max_batch_tasks`` per call
        (``truncated``: call again for the rest)."""
        body = bulk_body(
            ids,
            status=status,
            task_type=task_type,
            agent_id=agent_id,
            cron_job_id=cron_job_id,
            created_after=created_after,
            created_before=created_before,
            q=q,
            final=final,
            concurrency_key=concurrency_key,
            rate_limit=rate_limit,
        )
        return self._send(BulkCalls.act("cancel", body))

    def bulk_retry(
        self,
        ids: Sequence[UUID | str] | None = None,
        *,
        status: TaskStatus | str | Sequence[TaskStatus | str] | None = None,
        task_type: str | None = None,
        agent_id: UUID | str | None = None,
        cron_job_id: UUID | str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        q: str | None = None,
        final: bool | None = None,
        concurrency_key: str | None = None,
        rate_limit: str | None = None,
    ) -> BulkResult:
        """Retry many tasks, each as ``retry_task`` would: ``ids``, or every task matching
        the filters (those of ``list_tasks``; ``final=True``: the dead letters, each of which
        leaves that list once retried). One outcome per task (``BulkResult.items``, the new
        task in ``task``); at most ``[server] max_batch_tasks`` per call (``truncated``: call
        again for the rest)."""
        body = bulk_body(
            ids,
            status=status,
            task_type=task_type,
            agent_id=agent_id,
            cron_job_id=cron_job_id,
            created_after=created_after,
            created_before=created_before,
            q=q,
            final=final,
            concurrency_key=concurrency_key,
            rate_limit=rate_limit,
        )
        return self._send(BulkCalls.act("retry", body))

    def replay_task(self, task_id: UUID | str) -> Task:
        """Run a finished task (succeeded ones too) again as a new task with the same spec;
        its ``replay_of`` names the original."""
        return self._send(BulkCalls.replay(task_id))

    def wait(
        self,
        task_id: UUID | str,
        *,
        timeout_seconds: float | None = 300.0,
        poll_interval_seconds: float = 0.5,
    ) -> Task:
        """Poll until the task is finished and return it; ``WaitTimeout`` after the timeout."""
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        while True:
            task = self.get_task(task_id)
            if task.is_finished:
                return task
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"task {task_id} still {task.status} after {timeout_seconds} s")
            pause = poll_interval_seconds
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            time.sleep(pause)

    def webhook(self, task_id: UUID | str) -> TaskWebhook:
        """How the task's final status is being delivered to its ``webhook_url``: one
        ``WebhookDelivery`` per time it ended (state, attempts, last HTTP status or error,
        next attempt)."""
        return self._send(Calls.webhook(task_id))

    def attempts(self, task_id: UUID | str) -> list[Attempt]:
        return self._send(Calls.attempts(task_id))

    def logs(
        self,
        task_id: UUID | str,
        *,
        after_seq: int = 0,
        attempt: int | None = None,
        limit: int = 1000,
    ) -> list[LogLine]:
        params = query(after_seq=after_seq, attempt=attempt, limit=limit)
        return self._send(Calls.logs(task_id, params))

    def follow_logs(
        self, task_id: UUID | str, *, after_seq: int = 0, attempt: int | None = None
    ) -> Iterator[LogLine]:
        """Yield the task's log lines, then new ones as they come, until the task finishes.
        A dropped stream is resumed from the last line (up to ``FOLLOW_RETRIES`` times)."""
        path = f"/api/tasks/{task_id}/logs/stream"
        last, retries = after_seq, 0
        while True:
            params = query(after_seq=last, attempt=attempt)
            try:
                with self._http.stream(
                    "GET", path, params=params, timeout=FOLLOW_TIMEOUT
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise error_from(response)
                    for event, data in sse_events(response.iter_lines()):
                        if event == "log":
                            line = LogLine.model_validate_json(data)
                            last, retries = line.seq, 0
                            yield line
                        elif event == "end":
                            return
            except httpx.ConnectError as error:
                raise transport_error(self.server, error) from None
            except httpx.TransportError:
                pass
            retries += 1
            if retries > FOLLOW_RETRIES:
                raise ClientError(STREAM_LOST.format(task_id), code="stream_interrupted")

    # agents

    def list_agents(self, *, online: bool | None = None) -> list[Agent]:
        return self._send(Calls.list_agents(query(online=online)))

    def create_agent(
        self,
        name: str,
        capabilities: Sequence[str] = (),
        *,
        supported_task_types: Sequence[str] = (),
        max_concurrent_tasks: int = 1,
        enabled: bool = True,
    ) -> Agent:
        body = agent_body(name, capabilities, supported_task_types, max_concurrent_tasks, enabled)
        return self._send(Calls.create_agent(body))

    def get_agent(self, agent_id: UUID | str) -> Agent:
        return self._send(Calls.get_agent(agent_id))

    def delete_agent(self, agent_id: UUID | str) -> None:
        self._send(Calls.delete_agent(agent_id))

    def disable_agent(self, agent_id: UUID | str) -> Agent:
        """The agent is given no task (connected or not) until ``enable_agent``."""
        return self._send(Calls.set_agent_enabled(agent_id, False))

    def enable_agent(self, agent_id: UUID | str) -> Agent:
        return self._send(Calls.set_agent_enabled(agent_id, True))

    def stats(self) -> Stats:
        return self._send(Calls.stats())

    # cron jobs

    def create_cron_job(
        self,
        name: str,
        cron_expression: str,
        task_type: str | None,
        payload: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> CronJob:
        """Fields beyond the seed's (timezone, priority, policies, ``concurrency_key``,
        ``concurrency_strategy``, …) go in ``fields``. A job that starts a workflow at each
        tick: ``task_type=None, workflow={...}`` (the document ``submit_workflow`` sends:
        ``name``, ``steps``, ``on_failure``)."""
        body = jsonable(
            {
                "name": name,
                "cron_expression": cron_expression,
                **({} if task_type is None else {"task_type": task_type}),
                "payload": dict(payload or {}),
                **fields,
            }
        )
        return parse_job(self._send(Calls.cron("POST", body=body)))

    def list_cron_jobs(self) -> list[CronJob]:
        return parse_jobs(self._send(Calls.cron("GET")))

    def get_cron_job(self, cron_job_id: UUID | str) -> CronJob:
        return parse_job(self._send(Calls.cron("GET", f"/{cron_job_id}")))

    def update_cron_job(self, cron_job_id: UUID | str, **changes: Any) -> CronJob:
        call = Calls.cron("PATCH", f"/{cron_job_id}", body=jsonable(changes))
        return parse_job(self._send(call))

    # rate limits

    def create_rate_limit(self, name: str, limit: int, per_seconds: float) -> RateLimit:
        """At most ``limit`` units dispatched in any window of ``per_seconds``, across all
        nodes; tasks name it in ``submit(rate_limits=[{"name": name, "units": 1}])``."""
        body = {"name": name, "limit": limit, "per_seconds": per_seconds}
        return RateLimit.model_validate(self._send(Calls.rate_limit("POST", body=body)))

    def list_rate_limits(self) -> list[RateLimit]:
        data = self._send(Calls.rate_limit("GET"))
        return [RateLimit.model_validate(item) for item in data["items"]]

    def get_rate_limit(self, name: str) -> RateLimit:
        return RateLimit.model_validate(self._send(Calls.rate_limit("GET", name)))

    def list_concurrency_keys(
        self, *, prefix: str | None = None, key: str | None = None, limit: int = 50
    ) -> list[ConcurrencyKey]:
        """The concurrency keys with unfinished tasks, busiest first (most active, then most
        waiting): those starting with ``prefix``, or only ``key``; at most ``limit``."""
        params = query(prefix=prefix, key=key, limit=limit)
        return self._send(Calls.list_concurrency_keys(params))

    def delete_rate_limit(self, name: str) -> None:
        self._send(Calls.rate_limit("DELETE", name))

    def delete_cron_job(self, cron_job_id: UUID | str) -> None:
        self._send(Calls.cron("DELETE", f"/{cron_job_id}"))

    def enable_cron_job(self, cron_job_id: UUID | str) -> CronJob:
        return parse_job(self._send(Calls.cron("POST", f"/{cron_job_id}/enable")))

    def disable_cron_job(self, cron_job_id: UUID | str) -> CronJob:
        return parse_job(self._send(Calls.cron("POST", f"/{cron_job_id}/disable")))

    def trigger_cron_job(self, cron_job_id: UUID | str) -> Any:
        """Run the job now; returns the server's answer (the task it created)."""
        return self._send(Calls.cron("POST", f"/{cron_job_id}/trigger"))

    def cron_job_next_fires(self, cron_job_id: UUID | str, *, count: int = 5) -> Any:
        params = query(count=count)
        return self._send(Calls.cron("GET", f"/{cron_job_id}/next-fires", params=params))

    def preview_cron(
        self, cron_expression: str, *, timezone: str = "UTC", count: int = 5, **fields: Any
    ) -> Any:
        """Next fire times of an expression, without creating a job."""
        body = {"cron_expression": cron_expression, "timezone": timezone, "count": count}
        return self._send(Calls.cron("POST", "/preview", body=jsonable({**body, **fields})))

    def cron_job_ticks(self, cron_job_id: UUID | str, *, limit: int = 50) -> Any:
        params = query(limit=limit)
        return self._send(Calls.cron("GET", f"/{cron_job_id}/ticks", params=params))

    # --- workflows (docs/workflows.md) ------------------------------------------------------

    def submit_workflow(
        self,
        name: str,
        steps: Sequence[StepSpec | Mapping[str, Any]],
        *,
        on_failure: str = "stop",
    ) -> Workflow:
        """Submit a workflow: every step is created at once (one transaction); steps without
        ``depends_on`` start now, the others when their parents have ended. A handler sees
        its parents' results in ``ctx.parents``. A cycle, an unknown or duplicate step name
        raises ``ClientError`` (422) naming the step."""
        return self._send(WorkflowCalls.submit(name, steps, on_failure))

    def get_workflow(self, workflow_id: UUID | str) -> Workflow:
        return self._send(WorkflowCalls.get(workflow_id))

    def list_workflows(self, *, limit: int = 50, offset: int = 0) -> WorkflowPage:
        return self._send(WorkflowCalls.list(limit, offset))

    def cancel_workflow(self, workflow_id: UUID | str) -> Workflow:
        """Cancel every waiting and running step (running ones are told to stop)."""
        return self._send(WorkflowCalls.cancel(workflow_id))

    def retry_workflow(self, workflow_id: UUID | str) -> Workflow:
        """Re-run the failed, timed-out, cancelled and skipped steps and what depends on
        them, keeping what succeeded; ``ClientError`` (409) while it runs or when every step
        succeeded."""
        return self._send(WorkflowCalls.retry(workflow_id))

    def wait_workflow(
        self, workflow_id: UUID | str, *, timeout_seconds: float = 60.0, poll_interval: float = 0.2
    ) -> Workflow:
        """Poll until the workflow has ended (succeeded, failed, or cancelled with every step
        ended); ``WaitTimeout`` after ``timeout_seconds``."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            workflow = self.get_workflow(workflow_id)
            ended = all(step.status.is_terminal for step in workflow.steps)
            if workflow.status in WORKFLOW_ENDED and ended:
                return workflow
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"workflow {workflow_id} still {workflow.status}")
            time.sleep(poll_interval)

    # --- triggers, events and hooks (docs/triggers.md) ----------------------------------------

    def create_trigger(
        self,
        name: str,
        event: str,
        task: TaskSpec | Mapping[str, Any] | None = None,
        *,
        workflow: Mapping[str, Any] | None = None,
        filter: Mapping[str, Any] | None = None,
    ) -> Trigger:
        """Create ``task`` (a spec as for ``submit``: ``{"task_type": ..., "payload": ...}``),
        or ``workflow`` (a document ``{"name", "steps", "on_failure"}``), for every event of
        key ``event`` whose data passes ``filter`` (dotted path -> the value it must equal).
        ``ClientError`` 409 for a taken name, 422 for a bad spec."""
        return self._send(TriggerCalls.create(name, event, task, workflow, filter))

    def list_triggers(self, *, event: str | None = None) -> list[Trigger]:
        return self._send(TriggerCalls.list_triggers(event))

    def get_trigger(self, trigger_id: UUID | str) -> Trigger:
        return self._send(TriggerCalls.get(trigger_id))

    def delete_trigger(self, trigger_id: UUID | str) -> None:
        """Delete a trigger; the tasks it created are kept."""
        self._send(TriggerCalls.delete(trigger_id))

    def send_event(
        self, key: str, data: Mapping[str, Any] | None = None, *, event_id: str | None = None
    ) -> EventDelivery:
        """Send an event: one task (or workflow) per matching trigger, in one transaction, once per
        ``event_id`` (a second send of the id creates nothing and returns the first one's
        tasks, ``created`` False). ``ClientError`` 422 ``no_trigger`` when no trigger is
        bound to ``key``."""
        return self._send(TriggerCalls.send_event(key, data, event_id))

    def create_hook(self, name: str, event: str, *, secret: str | None = None) -> Hook:
        """A signed webhook endpoint, ``POST /api/hooks/{name}``; the answer's ``secret``
        (generated unless given) is shown this once."""
        return self._send(TriggerCalls.create_hook(name, event, secret))

    def list_hooks(self) -> list[Hook]:
        return self._send(TriggerCalls.list_hooks())

    def delete_hook(self, name: str) -> None:
        self._send(TriggerCalls.delete_hook(name))
