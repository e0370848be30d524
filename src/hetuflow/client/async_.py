"""``AsyncClient``: the same operations as ``Client``, as coroutines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
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
from hetuflow.client.coalesce import AsyncSubmitCoalescer
from hetuflow.client.errors import ClientError, WaitTimeout
from hetuflow.client.http11 import AsyncPool, WireError, endpoint, json_body
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
    SseParser,
    client_options,
    decode,
    decode_reply,
    error_from,
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


class AsyncClient:
    """The same operations as ``Client``, as coroutines (``async with AsyncClient() as c``).
    ``submit`` calls awaited at once by several tasks ride one batch request
    (``coalesce=False`` turns that off; docs/sdk.md)."""

    def __init__(
        self,
        server: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        coalesce: bool = True,
    ) -> None:
        options = client_options(server, token, timeout)
        self.server: str = options["base_url"]
        self._http = httpx.AsyncClient(transport=transport, **options)
        target = endpoint(self.server, options["headers"]) if transport is None else None
        self._lean = AsyncPool(target, timeout) if target is not None else None
        """submit and submit_many: a lean keep-alive client where it can serve the URL."""
        self._coalescer = (
            AsyncSubmitCoalescer(self._create, self._create_many) if coalesce else None
        )
        """Concurrent ``submit`` calls ride one batch request (``client.coalesce``)."""

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._coalescer is not None:
            await self._coalescer.aclose()
        if self._lean is not None:
            self._lean.close()
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method, call.path, params=call.params, json=call.body
            )
        except httpx.TransportError as error:
            raise transport_error(self.server, error) from None
        return decode(call, response)

    async def _submit(self, call: Call[T]) -> T:
        """``_send`` for the create calls, through ``http11`` when it serves the URL."""
        if self._lean is None:
            return await self._send(call)
        body = json_body(call.body)
        try:
            reply = await self._lean.request(call.method, call.path, body)
        except WireError as error:
            raise wire_error(self.server, error) from None
        return decode_reply(call, reply)

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        body = jsonable(json) if json is not None else None
        return await self._send(
            Call(method, path, parse_raw, params=query(**(params or {})), body=body)
        )

    # tasks

    async def submit(
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
            return await self._create(body)
        return await self._coalescer.submit(body)

    async def _create(self, body: dict[str, Any]) -> Task:
        return await self._submit(Calls.submit(body))

    async def _create_many(self, bodies: Sequence[dict[str, Any]]) -> list[Task]:
        return await self._submit(Calls.submit_many(bodies))

    async def submit_many(self, tasks: Sequence[TaskSpec | Mapping[str, Any]]) -> list[Task]:
        return await self._submit(Calls.submit_many(tasks))

    async def get_task(self, task_id: UUID | str) -> Task:
        return await self._send(Calls.get_task(task_id))

    async def list_tasks(
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
        return await self._send(Calls.list_tasks(params))

    async def iter_tasks(
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
    ) -> AsyncIterator[Task]:
        """Every matching task, newest first, page by page (following ``next``; no count):
        each task that exists when the walk starts comes once, tasks created meanwhile not.
        The filters are ``list_tasks``'s."""
        cursor: str | None = None
        while True:
            page = await self.list_tasks(
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
            for task in page.items:
                yield task
            if page.next is None:
                return
            cursor = page.next

    async def cancel_task(self, task_id: UUID | str) -> Task:
        return await self._send(Calls.cancel_task(task_id))

    async def children(self, task_id: UUID | str) -> list[Task]:
        """A broadcast's children, one per agent, by agent name."""
        return await self._send(Calls.children(task_id))

    async def retry_task(self, task_id: UUID | str) -> Task:
        return await self._send(Calls.retry_task(task_id))

    async def bulk_cancel(
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
        return await self._send(BulkCalls.act("cancel", body))

    async def bulk_retry(
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
        return await self._send(BulkCalls.act("retry", body))

    async def replay_task(self, task_id: UUID | str) -> Task:
        """Run a finished task (succeeded ones too) again as a new task with the same spec;
        its ``replay_of`` names the original."""
        return await self._send(BulkCalls.replay(task_id))

    async def wait(
        self,
        task_id: UUID | str,
        *,
        timeout_seconds: float | None = 300.0,
        poll_interval_seconds: float = 0.5,
    ) -> Task:
        loop = asyncio.get_running_loop()
        deadline = None if timeout_seconds is None else loop.time() + timeout_seconds
        while True:
            task = await self.get_task(task_id)
            if task.is_finished:
                return task
            if deadline is not None and loop.time() >= deadline:
                raise WaitTimeout(f"task {task_id} still {task.status} after {timeout_seconds} s")
            pause = poll_interval_seconds
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - loop.time()))
            await asyncio.sleep(pause)

    async def webhook(self, task_id: UUID | str) -> TaskWebhook:
        """How the task's final status is being delivered to its ``webhook_url``: one
        ``WebhookDelivery`` per time it ended (state, attempts, last HTTP status or error,
        next attempt)."""
        return await self._send(Calls.webhook(task_id))

    async def attempts(self, task_id: UUID | str) -> list[Attempt]:
        return await self._send(Calls.attempts(task_id))

    async def logs(
        self,
        task_id: UUID | str,
        *,
        after_seq: int = 0,
        attempt: int | None = None,
        limit: int = 1000,
    ) -> list[LogLine]:
        params = query(after_seq=after_seq, attempt=attempt, limit=limit)
        return await self._send(Calls.logs(task_id, params))

    async def follow_logs(
        self, task_id: UUID | str, *, after_seq: int = 0, attempt: int | None = None
    ) -> AsyncIterator[LogLine]:
        path = f"/api/tasks/{task_id}/logs/stream"
        last, retries = after_seq, 0
        while True:
            params = query(after_seq=last, attempt=attempt)
            parser = SseParser()
            try:
                async with self._http.stream(
                    "GET", path, params=params, timeout=FOLLOW_TIMEOUT
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise error_from(response)
                    async for text in response.aiter_lines():
                        found = parser.feed(text)
                        if found is None:
                            continue
                        event, data = found
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

    async def list_agents(self, *, online: bool | None = None) -> list[Agent]:
        return await self._send(Calls.list_agents(query(online=online)))

    async def create_agent(
        self,
        name: str,
        capabilities: Sequence[str] = (),
        *,
        supported_task_types: Sequence[str] = (),
        max_concurrent_tasks: int = 1,
        enabled: bool = True,
    ) -> Agent:
        body = agent_body(name, capabilities, supported_task_types, max_concurrent_tasks, enabled)
        return await self._send(Calls.create_agent(body))

    async def get_agent(self, agent_id: UUID | str) -> Agent:
        return await self._send(Calls.get_agent(agent_id))

    async def delete_agent(self, agent_id: UUID | str) -> None:
        await self._send(Calls.delete_agent(agent_id))

    async def disable_agent(self, agent_id: UUID | str) -> Agent:
        """The agent is given no task (connected or not) until ``enable_agent``."""
        return await self._send(Calls.set_agent_enabled(agent_id, False))

    async def enable_agent(self, agent_id: UUID | str) -> Agent:
        return await self._send(Calls.set_agent_enabled(agent_id, True))

    async def stats(self) -> Stats:
        return await self._send(Calls.stats())

    # cron jobs

    async def create_cron_job(
        self,
        name: str,
        cron_expression: str,
        task_type: str | None,
        payload: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> CronJob:
        body = jsonable(
            {
                "name": name,
                "cron_expression": cron_expression,
                **({} if task_type is None else {"task_type": task_type}),
                "payload": dict(payload or {}),
                **fields,
            }
        )
        return parse_job(await self._send(Calls.cron("POST", body=body)))

    async def list_cron_jobs(self) -> list[CronJob]:
        return parse_jobs(await self._send(Calls.cron("GET")))

    async def get_cron_job(self, cron_job_id: UUID | str) -> CronJob:
        return parse_job(await self._send(Calls.cron("GET", f"/{cron_job_id}")))

    async def update_cron_job(self, cron_job_id: UUID | str, **changes: Any) -> CronJob:
        call = Calls.cron("PATCH", f"/{cron_job_id}", body=jsonable(changes))
        return parse_job(await self._send(call))

    # rate limits

    async def create_rate_limit(self, name: str, limit: int, per_seconds: float) -> RateLimit:
        """At most ``limit`` units dispatched in any window of ``per_seconds``, across all
        nodes; tasks name it in ``submit(rate_limits=[{"name": name, "units": 1}])``."""
        body = {"name": name, "limit": limit, "per_seconds": per_seconds}
        return RateLimit.model_validate(await self._send(Calls.rate_limit("POST", body=body)))

    async def list_rate_limits(self) -> list[RateLimit]:
        data = await self._send(Calls.rate_limit("GET"))
        return [RateLimit.model_validate(item) for item in data["items"]]

    async def get_rate_limit(self, name: str) -> RateLimit:
        return RateLimit.model_validate(await self._send(Calls.rate_limit("GET", name)))

    async def list_concurrency_keys(
        self, *, prefix: str | None = None, key: str | None = None, limit: int = 50
    ) -> list[ConcurrencyKey]:
        """The concurrency keys with unfinished tasks, busiest first (most active, then most
        waiting): those starting with ``prefix``, or only ``key``; at most ``limit``."""
        params = query(prefix=prefix, key=key, limit=limit)
        return await self._send(Calls.list_concurrency_keys(params))

    async def delete_rate_limit(self, name: str) -> None:
        await self._send(Calls.rate_limit("DELETE", name))

    async def delete_cron_job(self, cron_job_id: UUID | str) -> None:
        await self._send(Calls.cron("DELETE", f"/{cron_job_id}"))

    async def enable_cron_job(self, cron_job_id: UUID | str) -> CronJob:
        return parse_job(await self._send(Calls.cron("POST", f"/{cron_job_id}/enable")))

    async def disable_cron_job(self, cron_job_id: UUID | str) -> CronJob:
        return parse_job(await self._send(Calls.cron("POST", f"/{cron_job_id}/disable")))

    async def trigger_cron_job(self, cron_job_id: UUID | str) -> Any:
        return await self._send(Calls.cron("POST", f"/{cron_job_id}/trigger"))

    async def cron_job_next_fires(self, cron_job_id: UUID | str, *, count: int = 5) -> Any:
        params = query(count=count)
        return await self._send(Calls.cron("GET", f"/{cron_job_id}/next-fires", params=params))

    async def preview_cron(
        self, cron_expression: str, *, timezone: str = "UTC", count: int = 5, **fields: Any
    ) -> Any:
        body = {"cron_expression": cron_expression, "timezone": timezone, "count": count}
        return await self._send(Calls.cron("POST", "/preview", body=jsonable({**body, **fields})))

    async def cron_job_ticks(self, cron_job_id: UUID | str, *, limit: int = 50) -> Any:
        params = query(limit=limit)
        return await self._send(Calls.cron("GET", f"/{cron_job_id}/ticks", params=params))

    # --- workflows (docs/workflows.md) ------------------------------------------------------

    async def submit_workflow(
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
        return await self._send(WorkflowCalls.submit(name, steps, on_failure))

    async def get_workflow(self, workflow_id: UUID | str) -> Workflow:
        return await self._send(WorkflowCalls.get(workflow_id))

    async def list_workflows(self, *, limit: int = 50, offset: int = 0) -> WorkflowPage:
        return await self._send(WorkflowCalls.list(limit, offset))

    async def cancel_workflow(self, workflow_id: UUID | str) -> Workflow:
        """Cancel every waiting and running step (running ones are told to stop)."""
        return await self._send(WorkflowCalls.cancel(workflow_id))

    async def retry_workflow(self, workflow_id: UUID | str) -> Workflow:
        """Re-run the failed, timed-out, cancelled and skipped steps and what depends on
        them, keeping what succeeded; ``ClientError`` (409) while it runs or when every step
        succeeded."""
        return await self._send(WorkflowCalls.retry(workflow_id))

    async def wait_workflow(
        self, workflow_id: UUID | str, *, timeout_seconds: float = 60.0, poll_interval: float = 0.2
    ) -> Workflow:
        """Poll until the workflow has ended (succeeded, failed, or cancelled with every step
        ended); ``WaitTimeout`` after ``timeout_seconds``."""
        deadline = asyncio.get_running_loop().time() + timeout_seconds
        while True:
            workflow = await self.get_workflow(workflow_id)
            ended = all(step.status.is_terminal for step in workflow.steps)
            if workflow.status in WORKFLOW_ENDED and ended:
                return workflow
            if asyncio.get_running_loop().time() >= deadline:
                raise WaitTimeout(f"workflow {workflow_id} still {workflow.status}")
            await asyncio.sleep(poll_interval)

    # --- triggers, events and hooks (docs/triggers.md) ----------------------------------------

    async def create_trigger(
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
        return await self._send(TriggerCalls.create(name, event, task, workflow, filter))

    async def list_triggers(self, *, event: str | None = None) -> list[Trigger]:
        return await self._send(TriggerCalls.list_triggers(event))

    async def get_trigger(self, trigger_id: UUID | str) -> Trigger:
        return await self._send(TriggerCalls.get(trigger_id))

    async def delete_trigger(self, trigger_id: UUID | str) -> None:
        """Delete a trigger; the tasks it created are kept."""
        await self._send(TriggerCalls.delete(trigger_id))

    async def send_event(
        self, key: str, data: Mapping[str, Any] | None = None, *, event_id: str | None = None
    ) -> EventDelivery:
        """Send an event: one task (or workflow) per matching trigger, in one transaction, once per
        ``event_id`` (a second send of the id creates nothing and returns the first one's
        tasks, ``created`` False). ``ClientError`` 422 ``no_trigger`` when no trigger is
        bound to ``key``."""
        return await self._send(TriggerCalls.send_event(key, data, event_id))

    async def create_hook(self, name: str, event: str, *, secret: str | None = None) -> Hook:
        """A signed webhook endpoint, ``POST /api/hooks/{name}``; the answer's ``secret``
        (generated unless given) is shown this once."""
        return await self._send(TriggerCalls.create_hook(name, event, secret))

    async def list_hooks(self) -> list[Hook]:
        return await self._send(TriggerCalls.list_hooks())

    async def delete_hook(self, name: str) -> None:
        await self._send(TriggerCalls.delete_hook(name))
