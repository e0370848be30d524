"""Request builders shared by ``Client`` and ``AsyncClient``: one ``Call`` (method, path,
parameters, body and response parser) per API operation, so the two clients cannot drift."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Generic, TypeVar
from urllib.parse import quote
from uuid import UUID

from pydantic import TypeAdapter

from hetuflow.client.models import (
    Agent,
    Attempt,
    ConcurrencyKey,
    CronJob,
    LogLine,
    Stats,
    Task,
    TaskPage,
    TaskSpec,
)
from hetuflow.client.webhooks import TaskWebhook
from hetuflow.models import Priority, TaskStatus

T = TypeVar("T")
Params = list[tuple[str, str | int | float | bool | None]]


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    params: Params | None = None
    body: Any = None


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


def _new_adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


_adapter: Callable[[Any], TypeAdapter[Any]] = functools.cache(_new_adapter)
"""One adapter per type for the process: building one generates its whole validation schema
(about 0.6 ms for ``Task``, which every ``submit`` paid before adapters were kept)."""


def parse_one(kind: type[T]) -> Callable[[Any], T]:
    validate: Callable[[Any], T] = _adapter(kind).validate_python
    return validate


def parse_items(kind: type[T]) -> Callable[[Any], list[T]]:
    adapter = _adapter(list[kind])  # type: ignore[valid-type]

    def parse(data: Any) -> list[T]:
        found = data.get("items", []) if isinstance(data, dict) else data
        result: list[T] = adapter.validate_python(found)
        return result

    return parse


def parse_raw(data: Any) -> Any:
    return data


def parse_none(_: Any) -> None:
    return None


def task_body(
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
    return jsonable(body)  # type: ignore[no-any-return]


def query(**filters: Any) -> Params:
    params: Params = []
    for key, value in filters.items():
        if value is None:
            continue
        values = value if isinstance(value, list | tuple | set | frozenset) else [value]
        for item in values:
            item = jsonable(item)
            params.append((key, str(item).lower() if isinstance(item, bool) else str(item)))
    return params


class Calls:
    """One builder per API operation: method, path, parameters, body and response parser."""

    @staticmethod
    def submit(body: dict[str, Any]) -> Call[Task]:
        return Call("POST", "/api/tasks", parse_one(Task), body=body)

    @staticmethod
    def submit_many(tasks: Sequence[TaskSpec | Mapping[str, Any]]) -> Call[list[Task]]:
        body = {"tasks": [jsonable(dict(task)) for task in tasks]}
        return Call("POST", "/api/tasks/batch", parse_items(Task), body=body)

    @staticmethod
    def get_task(task_id: UUID | str) -> Call[Task]:
        return Call("GET", f"/api/tasks/{task_id}", parse_one(Task))

    @staticmethod
    def list_tasks(params: Params) -> Call[TaskPage]:
        return Call("GET", "/api/tasks", parse_one(TaskPage), params=params)

    @staticmethod
    def cancel_task(task_id: UUID | str) -> Call[Task]:
        return Call("DELETE", f"/api/tasks/{task_id}", parse_one(Task))

    @staticmethod
    def retry_task(task_id: UUID | str) -> Call[Task]:
        return Call("POST", f"/api/tasks/{task_id}/retry", parse_one(Task))

    @staticmethod
    def children(task_id: UUID | str) -> Call[list[Task]]:
        return Call("GET", f"/api/tasks/{task_id}/children", parse_items(Task))

    @staticmethod
    def webhook(task_id: UUID | str) -> Call[TaskWebhook]:
        return Call("GET", f"/api/tasks/{task_id}/webhook", parse_one(TaskWebhook))

    @staticmethod
    def attempts(task_id: UUID | str) -> Call[list[Attempt]]:
        return Call("GET", f"/api/tasks/{task_id}/attempts", parse_items(Attempt))

    @staticmethod
    def logs(task_id: UUID | str, params: Params) -> Call[list[LogLine]]:
        return Call("GET", f"/api/tasks/{task_id}/logs", parse_items(LogLine), params=params)

    @staticmethod
    def list_agents(params: Params) -> Call[list[Agent]]:
        return Call("GET", "/api/agents", parse_items(Agent), params=params)

    @staticmethod
    def create_agent(body: dict[str, Any]) -> Call[Agent]:
        return Call("POST", "/api/agents", parse_one(Agent), body=body)

    @staticmethod
    def get_agent(agent_id: UUID | str) -> Call[Agent]:
        return Call("GET", f"/api/agents/{agent_id}", parse_one(Agent))

    @staticmethod
    def delete_agent(agent_id: UUID | str) -> Call[None]:
        return Call("DELETE", f"/api/agents/{agent_id}", parse_none)

    @staticmethod
    def set_agent_enabled(agent_id: UUID | str, enabled: bool) -> Call[Agent]:
        action = "enable" if enabled else "disable"
        return Call("POST", f"/api/agents/{agent_id}/{action}", parse_one(Agent))

    @staticmethod
    def stats() -> Call[Stats]:
        return Call("GET", "/api/stats", parse_one(Stats))

    @staticmethod
    def list_concurrency_keys(params: Params) -> Call[list[ConcurrencyKey]]:
        return Call("GET", "/api/concurrency-keys", parse_keys, params=params)

    @staticmethod
    def rate_limit(method: str, name: str = "", body: Any = None) -> Call[Any]:
        path = "/api/rate-limits" + (f"/{quote(name, safe='')}" if name else "")
        return Call(method, path, parse_raw, body=body)

    @staticmethod
    def cron(
        method: str, suffix: str = "", body: Any = None, params: Params | None = None
    ) -> Call[Any]:
        return Call(method, "/api/cron-jobs" + suffix, parse_raw, params=params, body=body)


def agent_body(
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


def task_query(
    status: TaskStatus | str | Sequence[TaskStatus | str] | None,
    task_type: str | None,
    agent_id: UUID | str | None,
    cron_job_id: UUID | str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    q: str | None,
    limit: int,
    offset: int,
    cursor: str | None = None,
    include_total: bool | None = None,
    id_prefix: str | None = None,
    final: bool | None = None,
    concurrency_key: str | None = None,
    rate_limit: str | None = None,
) -> Params:
    return query(
        status=[status] if isinstance(status, str) else status,
        task_type=task_type,
        agent_id=agent_id,
        cron_job_id=cron_job_id,
        created_after=created_after,
        created_before=created_before,
        q=q,
        limit=limit,
        offset=offset or None,
        cursor=cursor,
        include_total=include_total,
        id_prefix=id_prefix,
        final=final,
        concurrency_key=concurrency_key,
        rate_limit=rate_limit,
    )


def parse_keys(data: Any) -> list[ConcurrencyKey]:
    return [ConcurrencyKey.model_validate(item) for item in data["items"]]


def parse_job(data: Any) -> CronJob:
    return CronJob.model_validate(data)


def parse_jobs(data: Any) -> list[CronJob]:
    found = data.get("items", []) if isinstance(data, dict) else data
    return [CronJob.model_validate(item) for item in found]
