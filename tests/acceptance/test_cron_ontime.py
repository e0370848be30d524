"""Acceptance: cron jobs through a real ``hetuflow-server`` process and a real agent, on SQLite
and PostgreSQL.

On time: a per-second job's tasks start on the agent at their tick (the ``cron_record`` handler
writes down when it was called), never before it, and late by well under 500 ms (a correctness
bound, not the benchmark's). Policies end to end: overlap skip and cancel_previous with tasks
longer than the interval, misfire skip and run_once across a disable/enable, run now with
``trigger-cron-job`` and ``next-fires`` through the CLI as a real process.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hetuflow.config import DatabaseConfig

from .cron_support import CronApi, instant, percentile, read_ledger, server_cli
from .processes import FAST_SCHEDULER, api, cluster

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

LOOKAHEAD = timedelta(
    seconds=float(FAST_SCHEDULER["HETUFLOW_SCHEDULER__DISPATCH_LOOKAHEAD_SECONDS"])
)
SAMPLES = 10
P99_BOUND_SECONDS = 0.500


async def test_per_second_job_starts_on_its_tick_never_before(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        await c.agent("a0", task_types="cron_record", slots=4, modules=("cron_handlers",))
        async with api(server) as http:
            await http.wait_agents_online(1)
            cron = CronApi(http)
            job = await cron.create("every-second", "* * * * * *")
            created = instant(job["created_at"])
            # Ticks less than one lookahead after the job was created could not be fired ahead
            # of time; every later one must start on the instant.
            first_measured = created + LOOKAHEAD

            def enough(ticks: list[dict[str, Any]]) -> bool:
                measured = [t for t in ticks if instant(t["tick_at"]) >= first_measured]
                return len(measured) >= SAMPLES

            await cron.wait_ticks(job["id"], enough, timeout_seconds=SAMPLES + 10)
            await cron.set_enabled(job["id"], False)
            tasks = await cron.wait_settled(job["id"])
            ticks = await cron.ticks(job["id"])

        runs = {run.task_id: run for run in read_ledger(c.ledger)}
        by_task = {task["id"]: task for task in tasks}
        lateness: list[float] = []
        for tick in ticks:
            assert tick["outcome"] == "fired", tick
            tick_at = instant(tick["tick_at"])
            task = by_task[tick["task_id"]]
            assert instant(task["cron_tick_at"]) == tick_at
            assert task["status"] == "succeeded", task
            run = runs[tick["task_id"]]
            late = run.start - tick_at.timestamp()
            assert late >= 0, f"task {task['id']} started {-late * 1000:.3f} ms before its tick"
            if tick_at >= first_measured:
                assert tick["reason"] is None, tick  # fired on time, not as a misfire run
                assert instant(task["scheduled_at"]) == tick_at
                lateness.append(late)
        assert len(lateness) >= SAMPLES
        p50, p99 = percentile(lateness, 0.50), percentile(lateness, 0.99)
        print(
            f"lateness over {len(lateness)} ticks: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"
        )
        assert p99 < P99_BOUND_SECONDS, sorted(lateness)


async def test_policies_end_to_end(database: DatabaseConfig, tmp_path: Path) -> None:
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        await c.agent("a0", task_types="cron_record", slots=8, modules=("cron_handlers",))
        async with api(server) as http:
            await http.wait_agents_online(1)
            cron = CronApi(http)
            skip = await cron.create(
                "overlap-skip", "* * * * * *", payload={"seconds": 2.5}, overlap_policy="skip"
            )
            cancel = await cron.create(
                "overlap-cancel",
                "* * * * * *",
                payload={"seconds": 60},
                overlap_policy="cancel_previous",
            )
            # overlap_policy=allow: on a loaded machine a tick can come while the task before
            # it is not yet recorded finished, and an overlap skip is not what this checks.
            missed_skip = await cron.create(
                "misfire-skip", "* * * * * *", misfire_policy="skip", overlap_policy="allow"
            )
            missed_once = await cron.create(
                "misfire-run-once", "* * * * * *", misfire_policy="run_once", overlap_policy="allow"
            )
            manual = await cron.create("manual", "0 0 1 1 *")

            # next-fires through the CLI: exactly the instants the job then settles.
            preview = await server_cli(server, "next-fires", skip["id"], "--count", "3")
            assert preview["cron_expression"] == "* * * * * *"
            fires = [instant(value) for value in preview["fire_times"]]
            assert [b - a for a, b in itertools.pairwise(fires)] == [timedelta(seconds=1)] * 2

            # misfire: let both fire once, disable them across three ticks, enable again.
            for job in (missed_skip, missed_once):
                await cron.wait_ticks(job["id"], lambda ticks: len(ticks) >= 1)
                await cron.set_enabled(job["id"], False)
            # Held on purpose: the test is about ticks missed while disabled.
            await asyncio.sleep(3.5)
            for job in (missed_skip, missed_once):
                await cron.set_enabled(job["id"], True)

            # run now, through the CLI, outside the yearly schedule.
            triggered = await server_cli(server, "trigger-cron-job", manual["id"])
            assert triggered["cron_job_id"] == manual["id"]
            assert triggered["cron_tick_at"] is None
            done = await http.wait_status(triggered["id"], "succeeded")
            assert done["attempts"] == 1
            shown = await cron.get(manual["id"])
            assert shown["last_task_id"] == triggered["id"]
            assert shown["last_outcome"] == "succeeded"
            assert shown["last_fire_at"] is None  # a manual run is not a tick

            def misfire_settled(ticks: list[dict[str, Any]]) -> bool:
                return any((t["reason"] or "").startswith(("missed", "ran once")) for t in ticks)

            skip_ticks = await cron.wait_ticks(missed_skip["id"], misfire_settled)
            once_ticks = await cron.wait_ticks(missed_once["id"], misfire_settled)
            await cron.wait_ticks(skip["id"], lambda ticks: len(ticks) >= 5)
            await cron.wait_ticks(cancel["id"], lambda ticks: len(ticks) >= 4)
            for job in (skip, cancel, missed_skip, missed_once):
                await cron.set_enabled(job["id"], False)
            skip_history = await cron.ticks(skip["id"])
            cancel_history = await cron.ticks(cancel["id"])
            # The last of the cancel job's tasks is still running: cancel it through the API.
            cancel_tasks = await cron.tasks(cancel["id"])
            for task in cancel_tasks:
                if task["finished_at"] is None:
                    response = await http.http.delete(f"/api/tasks/{task['id']}")
                    assert response.status_code == 200, response.text
            skip_tasks = {t["id"]: t for t in await cron.wait_settled(skip["id"])}
            cancel_tasks = await cron.wait_settled(cancel["id"])

        runs = {run.task_id: run for run in read_ledger(c.ledger)}

        # next-fires named the instants the job settled next.
        settled = {instant(t["tick_at"]) for t in skip_history}
        assert set(fires) <= settled, (fires, sorted(settled))

        # overlap=skip: a tick while the 2.5 s task runs is skipped, naming it; no two overlap.
        fired = [t for t in skip_history if t["outcome"] == "fired"]
        skipped = [t for t in skip_history if t["outcome"] == "skipped"]
        assert len(fired) >= 2, skip_history
        assert len(skipped) >= 2, skip_history
        for tick in skipped:
            tick_at = instant(tick["tick_at"]).timestamp()
            [holder] = [
                f for f in fired if f"task {f['task_id']} is still running" in tick["reason"]
            ]
            assert tick["reason"].startswith("overlap_policy=skip: task "), tick
            run = runs[holder["task_id"]]
            assert run.start <= tick_at, "skipped before the task it waited for started"
            assert run.end is not None
            assert run.end >= tick_at - 0.05
        intervals = sorted((runs[t["task_id"]].start, runs[t["task_id"]].end) for t in fired)
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert end is not None
            assert end <= start, intervals
        assert all(skip_tasks[t["task_id"]]["status"] == "succeeded" for t in fired)

        # overlap=cancel_previous: each tick cancels the task before it, then fires.
        assert all(t["outcome"] == "fired" for t in cancel_history), cancel_history
        for before, tick in itertools.pairwise(cancel_history):
            assert tick["reason"].startswith(f"cancelled task {before['task_id']} ("), tick
        assert {t["status"] for t in cancel_tasks} == {"cancelled"}
        assert len(cancel_tasks) == len(cancel_history)

        # misfire skip: the ticks missed while disabled are one skipped record, then it goes on.
        [missed] = [t for t in skip_ticks if t["outcome"] == "skipped"]
        assert missed["reason"].endswith(
            "(no server ran or the job was disabled); misfire_policy=skip"
        ), missed
        assert _count(missed["reason"], r"^missed (\d+) ticks") >= 2, missed
        # misfire run_once: one task for all of them, recorded as fired with how many.
        [late] = [t for t in once_ticks if (t["reason"] or "").startswith("ran once")]
        assert late["outcome"] == "fired"
        assert _count(late["reason"], r"^ran once now for (\d+) ticks") >= 2, late
        assert runs[late["task_id"]].start >= instant(late["tick_at"]).timestamp()


def _count(reason: str, pattern: str) -> int:
    found = re.match(pattern, reason)
    assert found is not None, (pattern, reason)
    return int(found.group(1))
