"""The hot routes in process: raw ASGI messages to the app, no HTTP server, no client library.

What the app itself costs per request, against the bare Starlette app of the ``edge``
scenario (``benchmarks/bare.py``) called the same way, and where a create's time goes (wall
time per stage, timed around the create's steps)::

    python -m benchmarks.in_process --db sqlite            # p50 per route, ours and bare
    python -m benchmarks.in_process --db postgres --stages # and a create's stages
    python -m benchmarks.in_process --profile GET          # cProfile of 2,000 task reads

No agent is connected: a task read or created is pending ``no_agent_for_task_type``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import pstats
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message

from benchmarks import bare
from benchmarks.harness import database

BODY = json.dumps({"task_type": "bench-noop", "name": "bench-in-process"}).encode()


def _scope(method: str, path: str, body: bytes) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"in-process")]
    if body:
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(app: ASGIApp, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request: (status, body)."""
    sent: list[Message] = []
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never leaves
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await app(_scope(method, path, body), receive, send)
    return int(sent[0]["status"]), b"".join(m.get("body", b"") for m in sent[1:])


async def _p50_us(app: ASGIApp, method: str, path: str, body: bytes, count: int) -> float:
    times = []
    for _ in range(count):
        before = time.perf_counter()
        await call(app, method, path, body)
        times.append(time.perf_counter() - before)
    return statistics.median(times) * 1e6


@contextlib.asynccontextmanager
async def _app(kind: str, workdir: Path) -> AsyncIterator[Any]:
    from hetuflow.config import Config, DatabaseConfig
    from hetuflow.server.app import create_app
    from hetuflow.store.migrate import migrate_up

    async with database(kind, workdir) as db:
        config = Config(database=DatabaseConfig(url=db.url))
        await migrate_up(config.database)
        app = create_app(config)
        async with app.router.lifespan_context(app):
            yield app


def _timed(owner: Any, name: str, label: str, into: dict[str, list[float]]) -> None:
    original: Callable[..., Awaitable[Any]] = getattr(owner, name)

    async def timed(*args: Any, **kwargs: Any) -> Any:
        before = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            into[label].append(time.perf_counter() - before)

    setattr(owner, name, timed)


async def stages(app: Any, count: int) -> dict[str, float]:
    """Wall p50 (µs) of a create's steps, timed around them (this process only)."""
    from hetuflow.server.tasks import TaskQueue

    queue: TaskQueue = app.state.task_queue
    times: dict[str, list[float]] = defaultdict(list)
    for owner, name, label in (
        (queue, "create", "TaskQueue.create (group commit)"),
        (queue, "_store_tasks", "_store_tasks (+ metrics, wake-up)"),
        (queue, "explain_created", "explain_created"),
        (queue.store, "create_tasks", "Store.create_tasks (hop + transaction)"),
    ):
        _timed(owner, name, label, times)
    for _ in range(100):
        await call(app, "POST", "/api/tasks", BODY)
    times.clear()
    for _ in range(count):
        before = time.perf_counter()
        await call(app, "POST", "/api/tasks", BODY)
        times["the whole request"].append(time.perf_counter() - before)
    return {label: round(statistics.median(values) * 1e6, 1) for label, values in times.items()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hetuflow-in-process-") as tmp:
        async with _app(args.db, Path(tmp)) as app:
            _, created = await call(app, "POST", "/api/tasks", BODY)
            task = json.loads(created)
            result["pending_reason"] = task["pending_reason"]
            routes = (
                ("GET /healthz", "GET", "/healthz", b""),
                ("GET /api/tasks/{id}", "GET", f"/api/tasks/{task['id']}", b""),
                ("POST /api/tasks", "POST", "/api/tasks", BODY),
            )
            for name, method, path, body in routes:
                await _p50_us(app, method, path, body, 200)  # warm-up
                await _p50_us(bare.app, method, path, body, 200)
                if args.profile == method:
                    profile = cProfile.Profile()
                    profile.enable()
                    await _p50_us(app, method, path, body, 2000)
                    profile.disable()
                    pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
                ours = min([await _p50_us(app, method, path, body, args.requests) for _ in "abc"])
                theirs = min(
                    [await _p50_us(bare.app, method, path, body, args.requests) for _ in "abc"]
                )
                result[name] = {"ours_us": round(ours, 1), "bare_us": round(theirs, 1)}
                print(f"{name}: {ours:.0f} µs (bare Starlette {theirs:.0f} µs)", flush=True)
            if args.stages:
                result["create_stages_us"] = await stages(app, args.requests * 3)
                for label, p50 in result["create_stages_us"].items():
                    print(f"  {label}: {p50:.0f} µs", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--requests", type=int, default=500, help="per route and repetition")
    parser.add_argument("--stages", action="store_true", help="time a create's steps")
    parser.add_argument("--profile", choices=("GET", "POST"), help="cProfile the task route")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
