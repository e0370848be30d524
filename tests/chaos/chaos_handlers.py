"""Handlers for the chaos suite's agents (loaded with ``--module chaos_handlers``).

``chaos``: writes ``start`` to the ledger (``HETUFLOW_CHAOS_LEDGER``), sleeps
``payload["seconds"]``, writes ``end``, and returns who ran it. Its ``uid`` is
``payload["uid"]``, or the task id for a task made by a cron job (one payload for every
tick). Each ledger line is one ``O_APPEND`` write (atomic for short lines), so lines of
concurrent attempts never mix. The shell form of the same task is built by ``ledger.shell_command``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from hetuflow.agent import Handlers, TaskContext

handlers = Handlers()


def append(path: str, line: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)


def _line(event: str, uid: str, ctx: TaskContext, agent: str) -> str:
    return f"{event} {uid} {ctx.task_id} {ctx.attempt} {agent} {time.time():.6f}\n"


@handlers.handler("chaos")
def chaos(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    agent = os.environ.get("HETUFLOW_ACK_AGENT", "?")
    ledger = os.environ["HETUFLOW_CHAOS_LEDGER"]
    uid = str(payload.get("uid") or ctx.task_id)
    append(ledger, _line("start", uid, ctx, agent))
    time.sleep(float(payload.get("seconds", 0)))
    append(ledger, _line("end", uid, ctx, agent))
    return {"uid": uid, "attempt": ctx.attempt, "agent": agent}
