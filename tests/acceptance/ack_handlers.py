"""Handlers for the acceptance tests' agents (loaded with ``--module ack_handlers``).

``record``: appends ``<task_id>:<attempt>:<agent name>`` to the file named by
``HETUFLOW_ACK_LEDGER`` (one ``O_APPEND`` write, atomic for short lines), so a test can prove
no attempt ran twice.
"""

from __future__ import annotations

import os
from typing import Any

from hetuflow.agent import Handlers, TaskContext

handlers = Handlers()


@handlers.handler("record")
def record(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    agent = os.environ.get("HETUFLOW_ACK_AGENT", "?")
    line = f"{ctx.task_id}:{ctx.attempt}:{agent}\n".encode()
    descriptor = os.open(os.environ["HETUFLOW_ACK_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)
    return {"n": payload.get("n")}
