"""Helpers for the cron acceptance tests: cron jobs through the REST API of a real server,
the ``cron_handlers`` ledger, and the ``hetuflow-server`` CLI as a real process."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .processes import BIN, Api, ServerProcess


def instant(value: str) -> datetime:
    """An ISO-8601 timestamp of the API (``Z`` or an offset) as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Run:
    """One attempt as the ``cron_record`` handler saw it (unix times)."""

    task_id: str
    attempt: int
    agent: str
    start: float
    end: float | None


def read_ledger(path: Path) -> list[Run]:
    """Every ``start`` line of the ledger with its ``end``, if one was written."""
    starts: list[tuple[str, int, str, float]] = []
    ends: dict[tuple[str, int], float] = {}
    text = path.read_text() if path.exists() else ""
    for line in text.splitlines():
        event, task_id, attempt, agent, at = line.split()
        if event == "start":
            starts.append((task_id, int(attempt), agent, float(at)))
        else:
            ends[(task_id, int(attempt))] = float(at)
    return [Run(t, a, agent, s, ends.get((t, a))) for t, a, agent, s in starts]


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` 0.99 for p99) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class CronApi:
    """The cron job routes of one server."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.http = api.http

    async def create(self, name: str, expression: str, **fields: Any) -> dict[str, Any]:
        body = {"name": name, "cron_expression": expression, "task_type": "cron_record"}
        response = await self.http.post("/api/cron-jobs", json={**body, **fields})
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        return job

    async def get(self, job_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/api/cron-jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    async def set_enabled(self, job_id: str, enabled: bool) -> dict[str, Any]:
        verb = "enable" if enabled else "disable"
        response = await self.http.post(f"/api/cron-jobs/{job_id}/{verb}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    async def ticks(self, job_id: str) -> list[dict[str, Any]]:
        """Every settled tick of the job, earliest first."""
        response = await self.http.get(f"/api/cron-jobs/{job_id}/ticks", params={"limit": 1000})
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        assert len(items) < 1000, "more ticks than one page: widen the query"
        return sorted(items, key=lambda tick: instant(tick["tick_at"]))

    async def tasks(self, job_id: str) -> list[dict[str, Any]]:
        """Every task the job created (ticks and manual runs)."""
        response = await self.http.get("/api/tasks", params={"cron_job_id": job_id, "limit": 1000})
        assert response.status_code == 200, response.text
        body = response.json()
        items: list[dict[str, Any]] = body["items"]
        assert body.get("total", len(items)) == len(items), "more tasks than one page"
        return items

    async def wait_ticks(
        self,
        job_id: str,
        predicate: Callable[[list[dict[str, Any]]], bool],
        timeout_seconds: float = 20.0,
    ) -> list[dict[str, Any]]:
        """Poll the job's ticks until ``predicate`` holds for them (or time out)."""
        async with asyncio.timeout(timeout_seconds):
            while True:
                ticks = await self.ticks(job_id)
                if predicate(ticks):
                    return ticks
                await asyncio.sleep(0.1)

    async def wait_settled(
        self, job_id: str, timeout_seconds: float = 20.0
    ) -> list[dict[str, Any]]:
        """Poll until every task of the job is finished; return them."""
        async with asyncio.timeout(timeout_seconds):
            while True:
                tasks = await self.tasks(job_id)
                if all(task["finished_at"] is not None for task in tasks):
                    return tasks
                await asyncio.sleep(0.1)


async def server_cli(server: ServerProcess, *args: str) -> Any:
    """Run ``hetuflow-server <args> --server URL --json`` as a process; its parsed output."""
    process = await asyncio.create_subprocess_exec(
        str(BIN / "hetuflow-server"),
        *args,
        "--server",
        server.http_url,
        "--json",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode == 0, (args, out.decode(), err.decode())
    return json.loads(out)
