"""(g) Edge: what one request costs on the server beyond the framework.

``GET /healthz``, ``GET /api/tasks/{id}`` and ``POST /api/tasks`` sent one after the other over
one keep-alive connection (Python's ``http.client``: no client library in the number), to the
server and to a bare Starlette app on uvicorn (``benchmarks/bare.py``) started in the same run.
The two are measured in alternating rounds, so a busy moment of the machine falls on both.
``overhead_ms`` is the server's p50 minus the bare app's.

``create_task_durable`` sets the server's ``POST /api/tasks`` beside the bare app's ``POST
/durable/tasks``, which also writes the task as one row, durably, to a fresh database of the
run's kind before it answers: the floor of a durable create on this machine (the framework
and one durable commit). A serial producer's submit cannot be faster than that floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import sys
import time
from typing import Any

import httpx

from benchmarks.harness import ScenarioFailed, database, free_port, spawn, summary_ms
from benchmarks.suite import Context

ROUND = 100
BODY = json.dumps({"task_type": "bench-noop", "name": "bench-edge"}).encode()
HEADERS = {"Content-Type": "application/json"}


def _requests(port: int, method: str, path: str, count: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies = []
    try:
        for _ in range(count):
            before = time.perf_counter()
            if method == "POST":
                connection.request(method, path, body=BODY, headers=HEADERS)
            else:
                connection.request(method, path)
            response = connection.getresponse()
            response.read()
            latencies.append(time.perf_counter() - before)
            if response.status >= 300:
                raise ScenarioFailed(f"{method} {path}: HTTP {response.status}")
    finally:
        connection.close()
    return latencies


async def _bare_server(context: Context, database_url: str | None = None) -> tuple[Any, int]:
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.bare", str(port)]
    name = "edge-bare" if database_url is None else "edge-bare-durable"
    process = spawn(name, argv if database_url is None else [*argv, database_url], context.workdir)
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        while True:
            if not process.alive():
                raise ScenarioFailed(f"bare app exited:\n{process.output()}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/healthz")).status_code == 200:
                    return process, port
            if time.monotonic() > deadline:
                await process.stop()
                raise ScenarioFailed("bare app not ready in 30 s")
            await asyncio.sleep(0.05)


async def _compare(
    context: Context, port: int, bare_port: int, method: str, path: str, bare_path: str
) -> dict[str, Any]:
    """The server's route and the bare app's, in alternating rounds."""
    count = context.sizes.edge_requests
    ours: list[float] = []
    theirs: list[float] = []
    await asyncio.to_thread(_requests, port, method, path, 20)  # warm-up
    await asyncio.to_thread(_requests, bare_port, method, bare_path, 20)
    done = 0
    while done < count:
        size = min(ROUND, count - done)
        ours += await asyncio.to_thread(_requests, port, method, path, size)
        theirs += await asyncio.to_thread(_requests, bare_port, method, bare_path, size)
        done += size
    server, baseline = summary_ms(ours), summary_ms(theirs)
    return {
        "server": server,
        "bare_starlette": baseline,
        "overhead_ms": round(server["p50_ms"] - baseline["p50_ms"], 3),
    }


async def run(context: Context) -> dict[str, Any]:
    result: dict[str, Any] = {"requests": context.sizes.edge_requests, "round": ROUND}
    async with contextlib.AsyncExitStack() as stack:
        bare, bare_port = await _bare_server(context)
        stack.push_async_callback(bare.stop)
        floor_db = await stack.enter_async_context(database(context.db_kind, context.workdir))
        durable, durable_port = await _bare_server(context, floor_db.url)
        stack.push_async_callback(durable.stop)
        cluster = await stack.enter_async_context(context.cluster("edge"))
        created = await cluster.http.post("/api/tasks", json={"task_type": "bench-noop"})
        task_id = created.json()["id"]
        port = cluster.server.port
        for name, method, path, their_port, their_path in (
            ("healthz", "GET", "/healthz", bare_port, "/healthz"),
            ("get_task", "GET", f"/api/tasks/{task_id}", bare_port, f"/api/tasks/{task_id}"),
            ("create_task", "POST", "/api/tasks", bare_port, "/api/tasks"),
            ("create_task_durable", "POST", "/api/tasks", durable_port, "/durable/tasks"),
        ):
            result[name] = await _compare(context, port, their_port, method, path, their_path)
            server, baseline = result[name]["server"], result[name]["bare_starlette"]
            context.log(f"  {name}: p50 {server['p50_ms']} ms (bare {baseline['p50_ms']} ms)")
    return result
