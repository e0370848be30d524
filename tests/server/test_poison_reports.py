"""A report the database refuses (a poison item) is isolated: the rest of its batch is
written, the refused one is recorded or dropped with a clear error, and the writer goes on.

The refusal is real: a test store (the real SqliteStore or PostgresStore underneath) turns
the text ``POISON`` in a result's error or a log line into a lone surrogate, which neither
database accepts (the frame decoder refuses lone surrogates, so an agent cannot send one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import datetime

import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.models import AttemptResult, FinishOutcome, LogBudget, LogLine, TaskStatus
from hetuflow.store.base import Store
from hetuflow.store.postgres import PostgresStore
from hetuflow.store.sqlite import SqliteStore

from .harness import Server, agent, fast_config, serve

MARKER = "POISON"
UNSTORABLE = "\ud800"


def _poison_result(result: AttemptResult) -> AttemptResult:
    if result.error is None or MARKER not in result.error:
        return result
    return replace(result, error=result.error.replace(MARKER, UNSTORABLE))


def _poison_line(line: LogLine) -> LogLine:
    return replace(line, line=line.line.replace(MARKER, UNSTORABLE))


class PoisonSqliteStore(SqliteStore):
    async def finish_attempts(
        self, results: Sequence[AttemptResult], *, now: datetime
    ) -> list[FinishOutcome]:
        return await super().finish_attempts([_poison_result(r) for r in results], now=now)

    async def append_logs(
        self, lines: Sequence[LogLine], *, budget: LogBudget | None = None
    ) -> None:
        await super().append_logs([_poison_line(line) for line in lines], budget=budget)


class PoisonPostgresStore(PostgresStore):
    async def finish_attempts(
        self, results: Sequence[AttemptResult], *, now: datetime
    ) -> list[FinishOutcome]:
        return await super().finish_attempts([_poison_result(r) for r in results], now=now)

    async def append_logs(
        self, lines: Sequence[LogLine], *, budget: LogBudget | None = None
    ) -> None:
        await super().append_logs([_poison_line(line) for line in lines], budget=budget)


def poison_store(database: DatabaseConfig) -> Store:
    if database.kind == "sqlite":
        return PoisonSqliteStore(database)
    return PoisonPostgresStore(database)


@pytest.fixture
async def server(database: DatabaseConfig) -> AsyncIterator[Server]:
    async with serve(fast_config(database), store=poison_store(database)) as running:
        yield running


async def test_a_refused_result_fails_its_attempt_and_holds_up_nothing(server: Server) -> None:
    async with agent(server, "echo", slots=1) as hostile, agent(server, "calm", slots=1) as calm:
        bad_id = await server.create_task(task_type="echo", max_retries=0)
        good_id = await server.create_task(task_type="calm")
        [bad] = await hostile.dispatched(1)
        [good] = await calm.dispatched(1)
        await hostile.result(bad, outcome="failed", error=f"boom {MARKER}")
        await calm.result(good, result={"ok": True})

        done = await server.wait_status(good_id, TaskStatus.SUCCEEDED)
        assert done.result == {"ok": True}
        failed = await server.wait_status(bad_id, TaskStatus.FAILED)
        assert failed.error is not None
        assert failed.error.startswith("the database refused this attempt's result")
        error = await hostile.expect("Error")
        assert error["code"] == "report_refused"
        assert error["task_id"] == bad["task_id"]
        assert "recorded the attempt as failed" in error["message"]

        # The writer goes on: later reports of both agents are written.
        again_id = await server.create_task(task_type="echo")
        [again] = await hostile.dispatched(1)
        await hostile.result(again, result={"second": True})
        assert (await server.wait_status(again_id, TaskStatus.SUCCEEDED)).result == {"second": True}


async def test_a_refused_log_line_is_dropped_alone(server: Server) -> None:
    store = server.context.store
    async with agent(server, "echo", slots=1) as hostile, agent(server, "calm", slots=1) as calm:
        bad_id = await server.create_task(task_type="echo")
        good_id = await server.create_task(task_type="calm")
        [bad] = await hostile.dispatched(1)
        [good] = await calm.dispatched(1)
        bad_ref = {"task_id": bad["task_id"], "attempt": bad["attempt"]}
        good_ref = {"task_id": good["task_id"], "attempt": good["attempt"]}
        lines = ["before", f"the {MARKER} line", "after"]
        await hostile.send({"type": "TaskLogs", "lines": [{**bad_ref, "line": x} for x in lines]})
        await calm.send({"type": "TaskLogs", "lines": [{**good_ref, "line": "calm"}]})
        await hostile.result(bad)
        await calm.result(good)

        await server.wait_status(good_id, TaskStatus.SUCCEEDED)
        await server.wait_status(bad_id, TaskStatus.SUCCEEDED)
        assert [line.line for line in await store.list_logs(bad_id)] == ["before", "after"]
        assert [line.line for line in await store.list_logs(good_id)] == ["calm"]
