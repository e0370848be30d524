"""Handlers for the task-context acceptance test (``--module context_handlers``).

``ctx_echo`` returns what its ``TaskContext`` says about the task (attempt, retries,
schedule, cron run, workflow step, broadcast parent), as JSON; it fails its first attempt when
``payload["fail_first"]`` is set, so a retry shows its own attempt number."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hetuflow.agent import Handlers, TaskContext

handlers = Handlers()


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@handlers.handler("ctx_echo")
def echo(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    if payload.get("fail_first") and ctx.attempt == 1:
        raise RuntimeError("first attempt fails on purpose")
    return {
        "attempt": ctx.attempt,
        "max_retries": ctx.max_retries,
        "scheduled_at": _iso(ctx.scheduled_at),
        "cron_job_id": ctx.cron_job_id,
        "cron_tick_at": _iso(ctx.cron_tick_at),
        "workflow_id": ctx.workflow_id,
        "step": ctx.step,
        "broadcast_of": ctx.broadcast_of,
    }
