"""Handlers for the cron acceptance tests' agents (loaded with ``--module cron_handlers``).

``cron_record``: appends ``start <task_id> <attempt> <agent> <unix time>`` to the file named by
``HETUFLOW_ACK_LEDGER`` the moment it is called, holds for ``payload["seconds"]`` (default 0)
and appends a matching ``end`` line when it returns or is cancelled. Each line is one
``O_APPEND`` write (atomic for short lines), so several agents can share the file.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from hetuflow.agent import Handlers, TaskContext

handlers = Handlers()


def _append(event: str, ctx: TaskContext, at: float) -> None:
    agent = os.environ.get("HETUFLOW_ACK_AGENT", "?")
    line = f"{event} {ctx.task_id} {ctx.attempt} {agent} {at:.6f}\n".encode()
    descriptor = os.open(os.environ["HETUFLOW_ACK_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


@handlers.handler("cron_record")
async def cron_record(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    started = time.time()  # first thing: this is the start the tests measure
    _append("start", ctx, started)
    try:
        await asyncio.sleep(float(payload.get("seconds", 0)))
    finally:
        _append("end", ctx, time.time())
    return {"started": started}
