"""Handlers of the benchmark agents, loaded with ``hetuflow-agent start --module
benchmarks.handlers``.

- ``bench-noop``: does nothing (throughput).
- ``bench-stamp``: appends ``<task_id> <attempt> <time.time()> <agent> <pid>`` to the ledger
  file named by ``HETUFLOW_BENCH_LEDGER`` the moment it starts (latency, cron). One
  ``O_APPEND`` write of a short line: atomic across the agent processes sharing the file.
- ``bench-hold``: stamps like ``bench-stamp``, then sleeps ``payload["seconds"]`` (recovery: a
  task that is running when its agent is killed).
- ``bench-chain``: stamps like ``bench-stamp`` and returns ``time.time()`` at its end (the
  workflows scenario: a child's start minus its parent's end).
- ``bench-list``: returns a list of ``payload["count"]`` items, each ``time.time()`` at its end
  (the root of the workflows scenario's fan-out: the mapped step's children run ``bench-noop``
  once per item, and the fan-in's start minus an item is the fan-out's duration).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from hetuflow.agent import Handlers, TaskContext

LEDGER_ENV = "HETUFLOW_BENCH_LEDGER"
AGENT_ENV = "HETUFLOW_BENCH_AGENT"

handlers = Handlers()
_ledger: list[int] = []


def _stamp(ctx: TaskContext) -> None:
    started = time.time()
    if not _ledger:
        _ledger.append(os.open(os.environ[LEDGER_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT))
    agent = os.environ.get(AGENT_ENV, "?")
    line = f"{ctx.task_id} {ctx.attempt} {started:.6f} {agent} {os.getpid()}\n"
    os.write(_ledger[0], line.encode())


@handlers.handler("bench-noop")
async def noop(payload: dict[str, Any]) -> None:
    return None


@handlers.handler("bench-stamp")
async def stamp(payload: dict[str, Any], ctx: TaskContext) -> None:
    _stamp(ctx)


@handlers.handler("bench-hold")
async def hold(payload: dict[str, Any], ctx: TaskContext) -> None:
    _stamp(ctx)
    await asyncio.sleep(float(payload.get("seconds", 1.0)))


@handlers.handler("bench-chain")
async def chain(payload: dict[str, Any], ctx: TaskContext) -> float:
    _stamp(ctx)
    return time.time()


@handlers.handler("bench-list")
async def items(payload: dict[str, Any]) -> list[float]:
    return [time.time()] * int(payload["count"])
