"""Server CPU per request on the hot routes, and PostgreSQL round trips per request.

Robust on a loaded machine: the number is the server process's own CPU (utime + stime from
``/proc``) over N requests, not wall time. A real ``hetuflow-server start`` on a fresh
database; ``GET /healthz``, ``GET /api/tasks/{id}`` of a pending task and ``POST
/api/tasks`` sent one after the other over one ``http.client`` keep-alive connection.

With ``--agent`` one agent (1 slot) is connected and kept busy by a long ``bench-hold`` task,
so the created and read tasks are pending with ``agents_busy`` (the serial producer's usual
case); without it no agent is connected (``no_agent_for_task_type``).

Several source trees can be compared in one session (``--tree NAME=PATH``, e.g. a ``git
archive`` of the baseline and ``.``): each tree's server runs with ``PYTHONPATH=PATH/src``,
and the trees alternate within each repetition, so a busy moment of the machine falls on all.

``--round-trips`` instead counts the asyncpg calls (every ``execute``/``fetch*``, including
``BEGIN``/``COMMIT`` and the pool's reset on release) per request of an in-process app on
PostgreSQL (this tree's code)::

    python -m benchmarks.cpu_per_request --db sqlite --db postgres --agent --reps 2 \\
        --tree base=/tmp/base --tree branch=.
    python -m benchmarks.cpu_per_request --round-trips
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import (
    Process,
    Server,
    database,
    machine_load,
    start_agent,
    start_server,
)

BODY = json.dumps({"task_type": "bench-noop", "name": "bench-cpu"}).encode()
HEADERS = {"Content-Type": "application/json"}
ROUTES = ("GET /healthz", "GET /api/tasks/{id}", "POST /api/tasks")


def _send(connection: http.client.HTTPConnection, route: str, task_id: str) -> float:
    method, path = route.split(" ", 1)
    path = path.replace("{id}", task_id)
    before = time.perf_counter()
    if method == "POST":
        connection.request(method, path, body=BODY, headers=HEADERS)
    else:
        connection.request(method, path)
    response = connection.getresponse()
    response.read()
    if response.status >= 300:
        raise RuntimeError(f"{route}: HTTP {response.status}")
    return time.perf_counter() - before


def _measure(server: Server, task_id: str, requests: int) -> dict[str, dict[str, float]]:
    """Per route: the server's CPU per request (µs) and the wall-clock p50 (ms)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    results: dict[str, dict[str, float]] = {}
    try:
        for route in ROUTES:
            for _ in range(50):  # warm up: imports, caches, the connection
                _send(connection, route, task_id)
            before = server.process.stat().cpu_seconds
            latencies = [_send(connection, route, task_id) for _ in range(requests)]
            cpu = server.process.stat().cpu_seconds - before
            results[route] = {
                "cpu_us": round(cpu / requests * 1e6, 1),
                "p50_ms": round(statistics.median(latencies) * 1e3, 3),
            }
    finally:
        connection.close()
    return results


async def _busy_agent(server: Server, workdir: Path) -> Process:
    """One agent with its only slot held by a ``bench-hold`` task for the whole run."""
    agent = start_agent(server, "cpu-agent", workdir, workdir / "ledger", slots=1)
    async with server.http() as http:
        hold = {"task_type": "bench-hold", "payload": {"seconds": 3600}}
        task = (await http.post("/api/tasks", json=hold)).json()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (await http.get(f"/api/tasks/{task['id']}")).json()["status"] == "running":
                return agent
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the agent never ran a task:\n{agent.output()}")


async def _one_run(
    kind: str, tree: Path, requests: int, with_agent: bool, workdir: Path
) -> dict[str, Any]:
    env = {"PYTHONPATH": str(tree / "src")}
    async with database(kind, workdir) as db:
        server = await start_server(db, workdir, env)
        agent = await _busy_agent(server, workdir) if with_agent else None
        try:
            async with server.http() as http:
                task = (await http.post("/api/tasks", content=BODY, headers=HEADERS)).json()
                reason = task["pending_reason"]
            measured = await asyncio.to_thread(_measure, server, task["id"], requests)
        finally:
            if agent is not None:
                await agent.stop()
            await server.process.stop()
    return {"pending_reason": reason, "routes": measured}


async def cpu_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    trees = [(name, Path(path)) for name, path in (t.split("=", 1) for t in args.tree)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="hetuflow-cpu-") as tmp:
        workdir = Path(tmp)
        for rep in range(1, args.reps + 1):
            for kind in args.db:
                for name, tree in trees if rep % 2 else trees[::-1]:
                    load = machine_load()
                    run = await _one_run(kind, tree, args.requests, args.agent, workdir)
                    row = {"rep": rep, "db": kind, "tree": name, "load": load, **run}
                    rows.append(row)
                    print(_line(row), flush=True)
    return rows


def _line(row: dict[str, Any]) -> str:
    cells = [f"{row['rep']}", row["db"], row["tree"], f"load {row['load']:.1f}"]
    cells.append(str(row["pending_reason"]))
    for route in ROUTES:
        measured = row["routes"][route]
        cells.append(f"{route}: {measured['cpu_us']:.0f} µs, {measured['p50_ms']:.3f} ms")
    return " | ".join(cells)


# --- round trips (in process, PostgreSQL) ------------------------------------------------------


@contextlib.contextmanager
def _counting() -> Any:
    """Count every asyncpg statement sent, by method name."""
    from asyncpg.connection import Connection

    counts: Counter[str] = Counter()
    originals: dict[str, Callable[..., Any]] = {}
    for method in ("execute", "executemany", "fetch", "fetchrow", "fetchval"):
        original = getattr(Connection, method)
        originals[method] = original

        def counted(self: Any, *a: Any, _m: str = method, _o: Any = original, **k: Any) -> Any:
            counts[_m] += 1
            return _o(self, *a, **k)

        setattr(Connection, method, counted)
    try:
        yield counts
    finally:
        for method, original in originals.items():
            setattr(Connection, method, original)


@contextlib.asynccontextmanager
async def _app_client(url: str) -> AsyncIterator[httpx.AsyncClient]:
    from hetuflow.config import Config, DatabaseConfig
    from hetuflow.server.app import create_app
    from hetuflow.store.migrate import migrate_up

    config = Config(database=DatabaseConfig(url=url))
    await migrate_up(config.database)
    app = create_app(config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            yield http


async def round_trips(requests: int) -> dict[str, dict[str, float]]:
    """asyncpg calls per request, by method, over ``requests`` requests per route."""
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="hetuflow-rt-") as tmp:
        async with database("postgres", Path(tmp)) as db, _app_client(db.url) as http:
            task = (await http.post("/api/tasks", content=BODY, headers=HEADERS)).json()
            await asyncio.sleep(0.5)  # the lifespan's first loop rounds
            for route in ROUTES:
                method, path = route.split(" ", 1)
                path = path.replace("{id}", task["id"])
                with _counting() as counts:
                    for _ in range(requests):
                        body = BODY if method == "POST" else None
                        answer = await http.request(method, path, content=body, headers=HEADERS)
                        answer.raise_for_status()
                per = {m: round(c / requests, 2) for m, c in sorted(counts.items())}
                results[route] = {"total": round(sum(counts.values()) / requests, 2), **per}
                print(f"{route}: {results[route]}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", action="append", choices=("sqlite", "postgres"))
    parser.add_argument("--requests", type=int, default=2000, help="per route and run")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--agent", action="store_true", help="one connected agent, kept busy")
    parser.add_argument(
        "--tree", action="append", help="NAME=PATH of a source tree to run (repeatable)"
    )
    parser.add_argument("--round-trips", action="store_true")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    args.db = args.db or ["sqlite", "postgres"]
    trees = (tree.split("=", 1) for tree in args.tree or [f"this={os.getcwd()}"])
    args.tree = [f"{name}={Path(path).resolve()}" for name, path in trees]
    if args.round_trips:
        result: Any = asyncio.run(round_trips(min(args.requests, 300)))
    else:
        result = asyncio.run(cpu_runs(args))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
