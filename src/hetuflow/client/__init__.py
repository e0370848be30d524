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

Both clients build their requests with the same builders (``calls.py``), so they cannot drift
apart. The package, by noun: ``errors``, ``models``, ``calls`` (request builders),
``transport`` (httpx glue, SSE), ``workflows`` and ``triggers`` (their models and calls),
``webhooks`` (delivery models, ``verify_webhook`` for receivers of outgoing webhooks),
``http11`` (the lean keep-alive client of ``submit`` and ``submit_many``), ``sync``
(``Client``), ``async_`` (``AsyncClient``).
"""

from __future__ import annotations

from hetuflow.client.async_ import AsyncClient
from hetuflow.client.bulk import BulkError, BulkItem, BulkResult
from hetuflow.client.errors import ClientError, ServerUnreachable, WaitTimeout
from hetuflow.client.models import (
    Agent,
    Attempt,
    ConcurrencyKey,
    CronJob,
    LogLine,
    RateLimit,
    RateLimitUse,
    Stats,
    Task,
    TaskPage,
    TaskSpec,
)
from hetuflow.client.sync import Client
from hetuflow.client.transport import DEFAULT_SERVER, SERVER_ENV, TOKEN_ENV
from hetuflow.client.triggers import EventDelivery, Hook, Trigger
from hetuflow.client.webhooks import TaskWebhook, WebhookDelivery, verify_webhook
from hetuflow.client.workflows import (
    StepSpec,
    Workflow,
    WorkflowPage,
    WorkflowStep,
    WorkflowSummary,
)

__all__ = [
    "DEFAULT_SERVER",
    "SERVER_ENV",
    "TOKEN_ENV",
    "Agent",
    "AsyncClient",
    "Attempt",
    "BulkError",
    "BulkItem",
    "BulkResult",
    "Client",
    "ClientError",
    "ConcurrencyKey",
    "CronJob",
    "EventDelivery",
    "Hook",
    "LogLine",
    "RateLimit",
    "RateLimitUse",
    "ServerUnreachable",
    "Stats",
    "StepSpec",
    "Task",
    "TaskPage",
    "TaskSpec",
    "TaskWebhook",
    "Trigger",
    "WaitTimeout",
    "WebhookDelivery",
    "Workflow",
    "WorkflowPage",
    "WorkflowStep",
    "WorkflowSummary",
    "verify_webhook",
]
