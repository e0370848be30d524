"""Rate limits end to end, against a real ``hetuflow-server start`` process and an agent
speaking the protocol over a real WebSocket: the CLI commands, and a limit's window that frees
re-waking the dispatcher on its own (its timer; no other event, no polling)."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any

from websockets.sync.client import connect

from .conftest import Running


def _json(server: Running, line: str) -> Any:
    ran = server.run(line)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


def test_rate_limit_commands_and_bad_input(server: Running) -> None:
    made = _json(
        server,
        "./hetuflow-server create-rate-limit --name cli-api --limit 5 --per-seconds 60 --json",
    )
    assert (made["name"], made["limit"], made["per_seconds"]) == ("cli-api", 5, 60)
    listed = server.run("./hetuflow-server list-rate-limits")
    assert "cli-api" in listed.stdout
    assert "5 / 60 s" in listed.stdout
    task = _json(
        server,
        "./hetuflow-server create-task --task-type cli-rl --rate-limit cli-api:2 --json",
    )
    assert task["rate_limits"] == [{"name": "cli-api", "units": 2}]
    unknown = server.run("./hetuflow-server create-task --task-type cli-rl --rate-limit nope")
    assert unknown.returncode == 1
    assert "rate limit" in unknown.stderr
    assert unknown.stderr.count("\n") == 1
    syntax = server.run("./hetuflow-server create-task --task-type cli-rl --rate-limit x:0")
    assert syntax.returncode == 2
    assert syntax.stderr == "error: --rate-limit 'x:0' is not NAME or NAME:UNITS (UNITS ≥ 1)\n"
    taken = server.run(
        "./hetuflow-server create-rate-limit --name cli-api --limit 1 --per-seconds 1"
    )
    assert taken.returncode == 1
    deleted = server.run("./hetuflow-server delete-rate-limit cli-api")
    assert (deleted.returncode, deleted.stdout.strip()) == (0, "deleted rate limit cli-api")


def test_the_dispatcher_wakes_when_the_window_frees(server: Running) -> None:
    name = f"rl-{uuid.uuid4().hex[:6]}"
    task_type = f"limited-{name}"
    window = 1.5
    _json(
        server,
        f"./hetuflow-server create-rate-limit --name {name} --limit 1"
        f" --per-seconds {window} --json",
    )
    for _ in range(3):
        _json(
            server,
            f"./hetuflow-server create-task --task-type {task_type} --rate-limit {name} --json",
        )
    ws_url = server.url.replace("http://", "ws://") + "/ws"
    arrivals: list[float] = []
    with connect(ws_url, open_timeout=5) as ws:
        hello = {
            "type": "AgentCapabilities",
            "name": f"agent-{name}",
            "capabilities": {
                "capabilities": [],
                "max_concurrent_tasks": 10,  # room for all three: only the limit holds them
                "supported_task_types": [task_type],
            },
        }
        ws.send(json.dumps(hello))
        assert json.loads(ws.recv(timeout=5))["type"] == "AgentRegistered"
        # A stall fails here (and in the gaps below), not by the server closing a silent
        # agent: Pings are answered, so a slow machine alone keeps the connection.
        give_up = time.monotonic() + 3 * window + 10
        while len(arrivals) < 3:
            left = give_up - time.monotonic()
            assert left > 0, f"only {len(arrivals)} of 3 tasks dispatched"
            frame = json.loads(ws.recv(timeout=left))
            if frame["type"] == "Ping":
                ws.send(json.dumps({"type": "Pong"}))
            if frame["type"] != "TaskDispatch":
                continue
            for dispatched in frame["tasks"]:
                arrivals.append(time.monotonic())
                done = {
                    "type": "TaskResult",
                    "task_id": dispatched["task_id"],
                    "attempt": dispatched["attempt"],
                    "outcome": "succeeded",
                }
                ws.send(json.dumps(done))
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    for gap in gaps:
        assert window - 0.2 <= gap <= window + 1.0, gaps  # never sooner; promptly after


def test_cron_jobs_and_tasks_take_every_flow_field(server: Running) -> None:
    """create-cron-job and create-task cover the rate limits and the concurrency key of
    their API bodies; a bad name or a limit alone is refused and creates nothing."""
    name = f"cron-rl-{uuid.uuid4().hex[:6]}"
    _json(
        server,
        f"./hetuflow-server create-rate-limit --name {name} --limit 5 --per-seconds 60 --json",
    )
    job = _json(
        server,
        f"./hetuflow-server create-cron-job --name {name} --cron-expression @daily"
        f" --task-type sync --rate-limit {name}:2 --concurrency-key crm"
        " --max-concurrent-per-key 3 --json",
    )
    assert job["rate_limits"] == [{"name": name, "units": 2}]
    assert (job["concurrency_key"], job["max_concurrent_per_key"]) == ("crm", 3)
    run = _json(server, f"./hetuflow-server trigger-cron-job {job['id']} --json")
    assert run["rate_limits"] == [{"name": name, "units": 2}]
    assert run["concurrency_key"] == "crm"
    unknown = server.run(
        "./hetuflow-server create-cron-job --name bad-rl --cron-expression @daily"
        " --task-type sync --rate-limit nope"
    )
    assert unknown.returncode == 1
    assert "names rate limit 'nope', which does not exist" in unknown.stderr
    jobs = _json(server, "./hetuflow-server list-cron-jobs --json")
    assert "bad-rl" not in [j["name"] for j in jobs]
    alone = server.run(
        "./hetuflow-server create-cron-job --name bad-key --cron-expression @daily"
        " --task-type sync --max-concurrent-per-key 2"
    )
    assert alone.returncode == 2
    assert "--max-concurrent-per-key needs --concurrency-key" in alone.stderr

    task = _json(
        server,
        "./hetuflow-server create-task --task-type cli-flow --concurrency-key customer:42"
        " --max-concurrent-per-key 2 --concurrency-strategy cancel_newest --json",
    )
    assert (task["concurrency_key"], task["max_concurrent_per_key"]) == ("customer:42", 2)
    strategy = server.run(
        "./hetuflow-server create-task --task-type cli-flow --concurrency-strategy cancel_newest"
    )
    assert strategy.returncode == 2
    assert "--concurrency-strategy needs --concurrency-key" in strategy.stderr


def test_create_cron_job_shows_its_key_and_limits(server: Running) -> None:
    name = f"show-rl-{uuid.uuid4().hex[:6]}"
    _json(
        server,
        f"./hetuflow-server create-rate-limit --name {name} --limit 5 --per-seconds 9 --json",
    )
    shown = server.run(
        f"./hetuflow-server create-cron-job --name {name} --cron-expression @hourly"
        f" --task-type sync --rate-limit {name}:3 --concurrency-key crm-2"
    )
    assert shown.returncode == 0, shown.stderr
    assert f"{name}:3" in shown.stdout
    assert "crm-2" in shown.stdout
