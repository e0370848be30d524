"""Handlers for the retry acceptance test (``--module retry_handlers``).

``flaky`` fails its first ``payload["fail_times"]`` attempts, and every attempt while the
file ``payload["fail_until"]`` (if given) does not exist; then it returns its attempt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hetuflow.agent import Handlers, TaskContext

handlers = Handlers()


@handlers.handler("flaky")
def flaky(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    if ctx.attempt <= int(payload.get("fail_times", 0)):
        raise RuntimeError(f"attempt {ctx.attempt} fails on purpose")
    gate = payload.get("fail_until")
    if gate and not Path(gate).exists():
        raise RuntimeError("the gate is closed")
    return {"attempt": ctx.attempt}
