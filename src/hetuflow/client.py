"""The Python SDK: ``Client`` (sync) and ``AsyncClient`` over hetuflow's REST API.

::

    from hetuflow import Client

    with Client("http://127.0.0.1:8080") as client:
        task = client.submit("shell", {"command": "echo hi"})
        done = client.wait(task.id, timeout=60)
        print(done.status, done.result)

Responses come back as frozen pydantic models (``Task``, ``Agent``, …) that ignore fields they
do not know, so a newer server does not break an older client. Every failure raises a
``ClientError`` carrying ``status``, ``code``, ``message`` and ``field`` from the server's error
body; ``ServerUnreachable`` when nothing answers at the URL; ``WaitTimeout`` from ``wait``.

Both clients build their requests with the same ``_Call`` builders, so they cannot drift apart.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from types import TracebackType
from typing import Any, Generic, Required, TypedDict, TypeVar
from uuid import UUID

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter

from hetuflow import __version__
from hetuflow.errors import HetuflowError
from hetuflow.models import (
    AgentStatus,
    AttemptOutcome,
    PendingReason,
    Priority,
    TaskStatus,
)

DEFAULT_SERVER = "http://127.0.0.1:8080"
SERVER_ENV = "HETUFLOW_SERVER"
TOKEN_ENV = "HETUFLOW_TOKEN"

__all__ = [
    "DEFAULT_SERVER",
    "Agent",
    "AsyncClient",
    "Attempt",
    "Client",
    "ClientError",
    "CronJob",
    "LogLine",
    "ServerUnreachable",
    "Stats",
    "Task",
    "TaskPage",
    "TaskSpec",
    "WaitTimeout",
]


# --- errors -----------------------------------------------------------------------------------


class ClientError(HetuflowError):
    """The server refused a request, or could not be reached.

    ``status`` is the HTTP status (None when there was no response), ``code`` the server's
    error code (``task_not_found``, ``invalid_input``, …), ``field`` the input at fault.
    """

    code = "client_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message, field=field)
        self.status = status
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        prefix = f"{self.status} {self.code}: " if self.status is not None else ""
        return prefix + self.message


class ServerUnreachable(ClientError):
    code = "server_unreachable"


class WaitTimeout(ClientError, TimeoutError):
    code = "wait_timeout"


# --- response models --------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Task(_Model):
    id: UUID
    name: str
    task_type: str
    priority: Priority
    payload: dict[str, Any]
    required_capabilities: list[str]
    status: TaskStatus
    pending_reason: PendingReason | None = None
    scheduled_at: datetime
    timeout_seconds: float | None = None
    max_retries: int = 0
    retry_backoff_seconds: float | None = None
    idempotency_key: str | None = None
    result: Any = None
    error: str | None = None
    attempts: int = 0
    agent_id: UUID | None = None
    cron_job_id: UUID | None = None
    cron_tick_at: datetime | None = None
    progress: float | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def is_finished(self) -> bool:
        """succeeded, failed, timed_out or cancelled: it will not change any more."""
        return self.status.is_terminal


class TaskPage(_Model):
    items: list[Task]
    total: int
    limit: int
    offset: int


class Attempt(_Model):
    task_id: UUID
    number: int
    agent_id: UUID | None = None
    dispatched_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outcome: AttemptOutcome | None = None
    error: str | None = None


class LogLine(_Model):
    seq: int
    attempt: int
    stream: str
    line: str
    at: datetime


class Agent(_Model):
    id: UUID
    name: str
    status: AgentStatus
    enabled: bool = True
    capabilities: list[str]
    supported_task_types: list[str]
    max_concurrent_tasks: int
    running: int = 0
    last_heartbeat_at: datetime | None = None
    connected_at: datetime | None = None
    node_id: str | None = None
    created_at: datetime | None = None


class Stats(_Model):
    tasks_by_status: dict[TaskStatus, int]
    tasks_total: int
    agents_online: int
    agents_total: int
    cron_jobs_enabled: int


class CronJob(BaseModel):
    """A cron job. The seed's fields are typed; every other field the server sends is kept
    (``job.model_extra``, or ``getattr(job, "overlap_policy")``)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    id: UUID
    name: str
    cron_expression: str
    task_type: str
    payload: dict[str, Any] = {}
    enabled: bool = True
    timezone: str = "UTC"
    next_fire_at: datetime | None = None
    last_fire_at: datetime | None = None


class TaskSpec(TypedDict, total=False):
    """One task for ``submit_many``: the body of ``POST /api/tasks``."""

    task_type: Required[str]
    name: str
    priority: str
    payload: dict[str, Any]
    required_capabilities: list[str]
    scheduled_at: datetime | str
    delay_seconds: float
    timeout_seconds: float
    max_retries: int
    retry_backoff_seconds: float
    idempotency_key: str


# --- request builders (shared by both clients) ------------------------------------------------

T = TypeVar("T")
Params = list[tuple[str, str | int | float | bool | None]]


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    params: Params | None = None
    body: Any = None


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def _parser(kind: type[T]) -> Callable[[Any], T]:
    adapter = TypeAdapter(kind)
    return adapter.validate_python


def _items(kind: type[T]) -> Callable[[Any], list[T]]:
    adapter = TypeAdapter(list[kind])  # type: ignore[valid-type]

    def parse(data: Any) -> list[T]:
        found = data.get("items", []) if isinstance(data, dict) else data
        result: list[T] = adapter.validate_python(found)
        return result

    return parse


def _raw(data: Any) -> Any:
    return data


def _none(_: Any) -> None:
    return None


def _task_body(
    task_type: str,
    payload: Mapping[str, Any] | None,
    name: str | None,
    priority: Priority | str,
    required_capabilities: Sequence[str],
    options: Mapping[str, Any],
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task_type": task_type,
        "priority": priority,
        "payload": dict(payload or {}),
    }
    if name is not None:
        body["name"] = name
    if required_capabilities:
        body["required_capabilities"] = list(required_capabilities)
    body.update({key: value for key, value in options.items() if value is not None})
    return _jsonable(body)  # type: ignore[no-any-return]


def _filters(**filters: Any) -> Params:
    params: Params = []
    for key, value in filters.items():
        if value is None:
            continue
        values = value if isinstance(value, list | tuple | set | frozenset) else [value]
        for item in values:
            item = _jsonable(item)
            params.append((key, str(item).lower() if isinstance(item, bool) else str(item)))
    return params


class _Calls:
    """One builder per API operation: method, path, parameters, body and response parser."""

    @staticmethod
    def submit(body: dict[str, Any]) -> _Call[Task]:
        return _Call("POST", "/api/tasks", _parser(Task), body=body)

    @staticmethod
    def submit_many(tasks: Sequence[TaskSpec | Mapping[str, Any]]) -> _Call[list[Task]]:
        body = {"tasks": [_jsonable(dict(task)) for task in tasks]}
        return _Call("POST", "/api/tasks/batch", _items(Task), body=body)

    @staticmethod
    def get_task(task_id: UUID | str) -> _Call[Task]:
        return _Call("GET", f"/api/tasks/{task_id}", _parser(Task))

    @staticmethod
    def list_tasks(params: Params) -> _Call[TaskPage]:
        return _Call("GET", "/api/tasks", _parser(TaskPage), params=params)

    @staticmethod
    def cancel_task(task_id: UUID | str) -> _Call[Task]:
        return _Call("DELETE", f"/api/tasks/{task_id}", _parser(Task))

    @staticmethod
    def retry_task(task_id: UUID | str) -> _Call[Task]:
        return _Call("POST", f"/api/tasks/{task_id}/retry", _parser(Task))

    @staticmethod
    def attempts(task_id: UUID | str) -> _Call[list[Attempt]]:
        return _Call("GET", f"/api/tasks/{task_id}/attempts", _items(Attempt))

    @staticmethod
    def logs(task_id: UUID | str, params: Params) -> _Call[list[LogLine]]:
        return _Call("GET", f"/api/tasks/{task_id}/logs", _items(LogLine), params=params)

    @staticmethod
    def list_agents(params: Params) -> _Call[list[Agent]]:
        return _Call("GET", "/api/agents", _items(Agent), params=params)

    @staticmethod
    def create_agent(body: dict[str, Any]) -> _Call[Agent]:
        return _Call("POST", "/api/agents", _parser(Agent), body=body)

    @staticmethod
    def get_agent(agent_id: UUID | str) -> _Call[Agent]:
        return _Call("GET", f"/api/agents/{agent_id}", _parser(Agent))

    @staticmethod
    def delete_agent(agent_id: UUID | str) -> _Call[None]:
        return _Call("DELETE", f"/api/agents/{agent_id}", _none)

    @staticmethod
    def stats() -> _Call[Stats]:
        return _Call("GET", "/api/stats", _parser(Stats))

    @staticmethod
    def cron(
        method: str, suffix: str = "", body: Any = None, params: Params | None = None
    ) -> _Call[Any]:
        return _Call(method, "/api/cron-jobs" + suffix, _raw, params=params, body=body)


def _agent_body(
    name: str,
    capabilities: Sequence[str],
    supported_task_types: Sequence[str],
    max_concurrent_tasks: int,
    enabled: bool,
) -> dict[str, Any]:
    return {
        "name": name,
        "capabilities": list(capabilities),
        "supported_task_types": list(supported_task_types),
        "max_concurrent_tasks": max_concurrent_tasks,
        "status": "active" if enabled else "disabled",
    }


def _task_filters(
    status: TaskStatus | str | Sequence[TaskStatus | str] | None,
    task_type: str | None,
    agent_id: UUID | str | None,
    cron_job_id: UUID | str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    q: str | None,
    limit: int,
    offset: int,
) -> Params:
    return _filters(
        status=[status] if isinstance(status, str) else status,
        task_type=task_type,
        agent_id=agent_id,
        cron_job_id=cron_job_id,
        created_after=created_after,
        created_before=created_before,
        q=q,
        limit=limit,
        offset=offset,
    )


def _job(data: Any) -> CronJob:
    return CronJob.model_validate(data)


def _jobs(data: Any) -> list[CronJob]:
    found = data.get("items", []) if isinstance(data, dict) else data
    return [CronJob.model_validate(item) for item in found]


# --- transport --------------------------------------------------------------------------------


def _base(server: str | None, token: str | None, timeout: float) -> dict[str, Any]:
    url = (server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER).rstrip("/")
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    headers = {"User-Agent": f"hetuflow-client/{__version__}", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return {"base_url": url, "headers": headers, "timeout": timeout}


def _error_from(response: httpx.Response) -> ClientError:
    status = response.status_code
    try:
        detail = response.json().get("error")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, dict) and isinstance(detail.get("message"), str):
        field = detail.get("field")
        return ClientError(
            detail["message"],
            status=status,
            code=str(detail.get("code", "error")),
            field=field if isinstance(field, str) else None,
        )
    text = response.text.strip()[:200] or response.reason_phrase
    return ClientError(f"HTTP {status}: {text}", status=status, code=f"http_{status}")


def _transport_error(base_url: str, error: httpx.TransportError) -> ClientError:
    reason = str(error) or type(error).__name__
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return ServerUnreachable(f"server not reachable at {base_url} ({reason})")
    return ClientError(f"request to {base_url} failed: {reason}", code="transport_error")


def _decode(call: _Call[T], response: httpx.Response) -> T:
    if response.status_code >= 400:
        raise _error_from(response)
    if response.status_code == 204 or not response.content:
        return call.parse(None)
    try:
        data = response.json()
    except ValueError:
        raise ClientError(
            f"the server sent a response that is not JSON (HTTP {response.status_code})",
            status=response.status_code,
            code="bad_response",
        ) from None
    return call.parse(data)


def _sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    event, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


class _SseParser:
    """Incremental SSE parser for the async client."""

    def __init__(self) -> None:
        self.event = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        if not line:
            found = (self.event, "\n".join(self.data)) if self.data else None
            self.event, self.data = "message", []
            return found
        if line.startswith("event:"):
            self.event = line[6:].strip()
        elif line.startswith("data:"):
            self.data.append(line[5:].removeprefix(" "))
        return None


_FOLLOW_TIMEOUT = httpx.Timeout(10.0, read=None)
_FOLLOW_RETRIES = 3
_STREAM_LOST = "the log stream of task {} kept closing before the task finished"


# --- the sync client --------------------------------------------------------------------------


class Client:
    """Synchronous client. ``server`` defaults to ``$HETUFLOW_SERVER`` or
    http://127.0.0.1:8080; ``token`` to ``$HETUFLOW_TOKEN``."""

    def __init__(
        self,
        server: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        options = _base(server, token, timeout)
        self.server: str = options["base_url"]
        self._http = httpx.Client(transport=transport, **options)

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
        self._http.close()

    def _send(self, call: _Call[T]) -> T:
        try:
            response = self._http.request(
                call.method, call.path, params=call.params, json=call.body
            )
        except httpx.TransportError as error:
            raise _transport_error(self.server, error) from None
        return _decode(call, response)

    def request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        """Any API call; returns the decoded JSON (None for an empty body)."""
        body = _jsonable(json) if json is not None else None
        return self._send(_Call(method, path, _raw, params=_filters(**(params or {})), body=body))

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
        idempotency_key: str | None = None,
    ) -> Task:
        """Create one task and return it (the existing one if ``idempotency_key`` matched)."""
        options = {
            "scheduled_at": scheduled_at,
            "delay_seconds": delay_seconds,
            "timeout_seconds": timeout_seconds,
            "max_retries": max_retries,
            "retry_backoff_seconds": retry_backoff_seconds,
            "idempotency_key": idempotency_key,
        }
        body = _task_body(task_type, payload, name, priority, required_capabilities, options)
        return self._send(_Calls.submit(body))

    def submit_many(self, tasks: Sequence[TaskSpec | Mapping[str, Any]]) -> list[Task]:
        """Create many tasks in one transaction (all or none), in order."""
        return self._send(_Calls.submit_many(tasks))

    def get_task(self, task_id: UUID | str) -> Task:
        return self._send(_Calls.get_task(task_id))

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
    ) -> TaskPage:
        """Newest first; ``TaskPage.total`` counts every match."""
        params = _task_filters(
            status,
            task_type,
            agent_id,
            cron_job_id,
            created_after,
            created_before,
            q,
            limit,
            offset,
        )
        return self._send(_Calls.list_tasks(params))

    def cancel_task(self, task_id: UUID | str) -> Task:
        return self._send(_Calls.cancel_task(task_id))

    def retry_task(self, task_id: UUID | str) -> Task:
        """A new task with the same spec as a failed, timed-out or cancelled one."""
        return self._send(_Calls.retry_task(task_id))

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

    def attempts(self, task_id: UUID | str) -> list[Attempt]:
        return self._send(_Calls.attempts(task_id))

    def logs(
        self,
        task_id: UUID | str,
        *,
        after_seq: int = 0,
        attempt: int | None = None,
        limit: int = 1000,
    ) -> list[LogLine]:
        params = _filters(after_seq=after_seq, attempt=attempt, limit=limit)
        return self._send(_Calls.logs(task_id, params))

    def follow_logs(
        self, task_id: UUID | str, *, after_seq: int = 0, attempt: int | None = None
    ) -> Iterator[LogLine]:
        """Yield the task's log lines, then new ones as they come, until the task finishes.
        A dropped stream is resumed from the last line (up to ``_FOLLOW_RETRIES`` times)."""
        path = f"/api/tasks/{task_id}/logs/stream"
        last, retries = after_seq, 0
        while True:
            params = _filters(after_seq=last, attempt=attempt)
            try:
                with self._http.stream(
                    "GET", path, params=params, timeout=_FOLLOW_TIMEOUT
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise _error_from(response)
                    for event, data in _sse_events(response.iter_lines()):
                        if event == "log":
                            line = LogLine.model_validate_json(data)
                            last, retries = line.seq, 0
                            yield line
                        elif event == "end":
                            return
            except httpx.ConnectError as error:
                raise _transport_error(self.server, error) from None
            except httpx.TransportError:
                pass
            retries += 1
            if retries > _FOLLOW_RETRIES:
                raise ClientError(_STREAM_LOST.format(task_id), code="stream_interrupted")

    # agents

    def list_agents(self, *, online: bool | None = None) -> list[Agent]:
        return self._send(_Calls.list_agents(_filters(online=online)))

    def create_agent(
        self,
        name: str,
        capabilities: Sequence[str] = (),
        *,
        supported_task_types: Sequence[str] = (),
        max_concurrent_tasks: int = 1,
        enabled: bool = True,
    ) -> Agent:
        body = _agent_body(name, capabilities, supported_task_types, max_concurrent_tasks, enabled)
        return self._send(_Calls.create_agent(body))

    def get_agent(self, agent_id: UUID | str) -> Agent:
        return self._send(_Calls.get_agent(agent_id))

    def delete_agent(self, agent_id: UUID | str) -> None:
        self._send(_Calls.delete_agent(agent_id))

    def stats(self) -> Stats:
        return self._send(_Calls.stats())

    # cron jobs

    def create_cron_job(
        self,
        name: str,
        cron_expression: str,
        task_type: str,
        payload: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> CronJob:
        """Fields beyond the seed's (timezone, priority, policies, …) go in ``fields``."""
        body = _jsonable(
            {
                "name": name,
                "cron_expression": cron_expression,
                "task_type": task_type,
                "payload": dict(payload or {}),
                **fields,
            }
        )
        return _job(self._send(_Calls.cron("POST", body=body)))

    def list_cron_jobs(self) -> list[CronJob]:
        return _jobs(self._send(_Calls.cron("GET")))

    def get_cron_job(self, cron_job_id: UUID | str) -> CronJob:
        return _job(self._send(_Calls.cron("GET", f"/{cron_job_id}")))

    def update_cron_job(self, cron_job_id: UUID | str, **changes: Any) -> CronJob:
        call = _Calls.cron("PATCH", f"/{cron_job_id}", body=_jsonable(changes))
        return _job(self._send(call))

    def delete_cron_job(self, cron_job_id: UUID | str) -> None:
        self._send(_Calls.cron("DELETE", f"/{cron_job_id}"))

    def enable_cron_job(self, cron_job_id: UUID | str) -> CronJob:
        return _job(self._send(_Calls.cron("POST", f"/{cron_job_id}/enable")))

    def disable_cron_job(self, cron_job_id: UUID | str) -> CronJob:
        return _job(self._send(_Calls.cron("POST", f"/{cron_job_id}/disable")))

    def trigger_cron_job(self, cron_job_id: UUID | str) -> Any:
        """Run the job now; returns the server's answer (the task it created)."""
        return self._send(_Calls.cron("POST", f"/{cron_job_id}/trigger"))

    def cron_job_next_fires(self, cron_job_id: UUID | str, *, count: int = 5) -> Any:
        params = _filters(count=count)
        return self._send(_Calls.cron("GET", f"/{cron_job_id}/next-fires", params=params))

    def preview_cron(
        self, cron_expression: str, *, timezone: str = "UTC", count: int = 5, **fields: Any
    ) -> Any:
        """Next fire times of an expression, without creating a job."""
        body = {"cron_expression": cron_expression, "timezone": timezone, "count": count}
        return self._send(_Calls.cron("POST", "/preview", body=_jsonable({**body, **fields})))

    def cron_job_ticks(self, cron_job_id: UUID | str, *, limit: int = 50) -> Any:
        params = _filters(limit=limit)
        return self._send(_Calls.cron("GET", f"/{cron_job_id}/ticks", params=params))


# --- the async client -------------------------------------------------------------------------


class AsyncClient:
    """The same operations as ``Client``, as coroutines (``async with AsyncClient() as c``)."""

    def __init__(
        self,
        server: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        options = _base(server, token, timeout)
        self.server: str = options["base_url"]
        self._http = httpx.AsyncClient(transport=transport, **options)

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
        await self._http.aclose()

    async def _send(self, call: _Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method, call.path, params=call.params, json=call.body
            )
        except httpx.TransportError as error:
            raise _transport_error(self.server, error) from None
        return _decode(call, response)

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        body = _jsonable(json) if json is not None else None
        return await self._send(
            _Call(method, path, _raw, params=_filters(**(params or {})), body=body)
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
        idempotency_key: str | None = None,
    ) -> Task:
        options = {
            "scheduled_at": scheduled_at,
            "delay_seconds": delay_seconds,
            "timeout_seconds": timeout_seconds,
            "max_retries": max_retries,
            "retry_backoff_seconds": retry_backoff_seconds,
            "idempotency_key": idempotency_key,
        }
        body = _task_body(task_type, payload, name, priority, required_capabilities, options)
        return await self._send(_Calls.submit(body))

    async def submit_many(self, tasks: Sequence[TaskSpec | Mapping[str, Any]]) -> list[Task]:
        return await self._send(_Calls.submit_many(tasks))

    async def get_task(self, task_id: UUID | str) -> Task:
        return await self._send(_Calls.get_task(task_id))

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
    ) -> TaskPage:
        params = _task_filters(
            status,
            task_type,
            agent_id,
            cron_job_id,
            created_after,
            created_before,
            q,
            limit,
            offset,
        )
        return await self._send(_Calls.list_tasks(params))

    async def cancel_task(self, task_id: UUID | str) -> Task:
        return await self._send(_Calls.cancel_task(task_id))

    async def retry_task(self, task_id: UUID | str) -> Task:
        return await self._send(_Calls.retry_task(task_id))

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

    async def attempts(self, task_id: UUID | str) -> list[Attempt]:
        return await self._send(_Calls.attempts(task_id))

    async def logs(
        self,
        task_id: UUID | str,
        *,
        after_seq: int = 0,
        attempt: int | None = None,
        limit: int = 1000,
    ) -> list[LogLine]:
        params = _filters(after_seq=after_seq, attempt=attempt, limit=limit)
        return await self._send(_Calls.logs(task_id, params))

    async def follow_logs(
        self, task_id: UUID | str, *, after_seq: int = 0, attempt: int | None = None
    ) -> AsyncIterator[LogLine]:
        path = f"/api/tasks/{task_id}/logs/stream"
        last, retries = after_seq, 0
        while True:
            params = _filters(after_seq=last, attempt=attempt)
            parser = _SseParser()
            try:
                async with self._http.stream(
                    "GET", path, params=params, timeout=_FOLLOW_TIMEOUT
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise _error_from(response)
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
                raise _transport_error(self.server, error) from None
            except httpx.TransportError:
                pass
            retries += 1
            if retries > _FOLLOW_RETRIES:
                raise ClientError(_STREAM_LOST.format(task_id), code="stream_interrupted")

    # agents

    async def list_agents(self, *, online: bool | None = None) -> list[Agent]:
        return await self._send(_Calls.list_agents(_filters(online=online)))

    async def create_agent(
        self,
        name: str,
        capabilities: Sequence[str] = (),
        *,
        supported_task_types: Sequence[str] = (),
        max_concurrent_tasks: int = 1,
        enabled: bool = True,
    ) -> Agent:
        body = _agent_body(name, capabilities, supported_task_types, max_concurrent_tasks, enabled)
        return await self._send(_Calls.create_agent(body))

    async def get_agent(self, agent_id: UUID | str) -> Agent:
        return await self._send(_Calls.get_agent(agent_id))

    async def delete_agent(self, agent_id: UUID | str) -> None:
        await self._send(_Calls.delete_agent(agent_id))

    async def stats(self) -> Stats:
        return await self._send(_Calls.stats())

    # cron jobs

    async def create_cron_job(
        self,
        name: str,
        cron_expression: str,
        task_type: str,
        payload: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> CronJob:
        body = _jsonable(
            {
                "name": name,
                "cron_expression": cron_expression,
                "task_type": task_type,
                "payload": dict(payload or {}),
                **fields,
            }
        )
        return _job(await self._send(_Calls.cron("POST", body=body)))

    async def list_cron_jobs(self) -> list[CronJob]:
        return _jobs(await self._send(_Calls.cron("GET")))

    async def get_cron_job(self, cron_job_id: UUID | str) -> CronJob:
        return _job(await self._send(_Calls.cron("GET", f"/{cron_job_id}")))

    async def update_cron_job(self, cron_job_id: UUID | str, **changes: Any) -> CronJob:
        call = _Calls.cron("PATCH", f"/{cron_job_id}", body=_jsonable(changes))
        return _job(await self._send(call))

    async def delete_cron_job(self, cron_job_id: UUID | str) -> None:
        await self._send(_Calls.cron("DELETE", f"/{cron_job_id}"))

    async def enable_cron_job(self, cron_job_id: UUID | str) -> CronJob:
        return _job(await self._send(_Calls.cron("POST", f"/{cron_job_id}/enable")))

    async def disable_cron_job(self, cron_job_id: UUID | str) -> CronJob:
        return _job(await self._send(_Calls.cron("POST", f"/{cron_job_id}/disable")))

    async def trigger_cron_job(self, cron_job_id: UUID | str) -> Any:
        return await self._send(_Calls.cron("POST", f"/{cron_job_id}/trigger"))

    async def cron_job_next_fires(self, cron_job_id: UUID | str, *, count: int = 5) -> Any:
        params = _filters(count=count)
        return await self._send(_Calls.cron("GET", f"/{cron_job_id}/next-fires", params=params))

    async def preview_cron(
        self, cron_expression: str, *, timezone: str = "UTC", count: int = 5, **fields: Any
    ) -> Any:
        body = {"cron_expression": cron_expression, "timezone": timezone, "count": count}
        return await self._send(_Calls.cron("POST", "/preview", body=_jsonable({**body, **fields})))

    async def cron_job_ticks(self, cron_job_id: UUID | str, *, limit: int = 50) -> Any:
        params = _filters(limit=limit)
        return await self._send(_Calls.cron("GET", f"/{cron_job_id}/ticks", params=params))
