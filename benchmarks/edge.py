"""(g) Edge: what one request costs on the server beyond the framework.

``GET /healthz``, ``GET /api/tasks/{id}`` and ``POST /api/tasks`` sent one after the other over
one keep-alive connection (Python's ``http.client``: no client library in the number), to the
server and to a bare Starlette app on uvicorn (``benchmarks/bare.py``) started in the same run.
The two are measured in alternating rounds, so a busy moment of the machine falls on both.
``overhead_ms`` is the server's p50 minus the bare app's.
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

from benchmarks.harness import ScenarioFailed, free_port, spawn, summary_ms
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


async def _bare_server(context: Context) -> tuple[Any, int]:
    port = free_port()
    process = spawn(
        "edge-bare", [sys.executable, "-m", "benchmarks.bare", str(port)], context.workdir
    )
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


async def run(context: Context) -> dict[str, Any]:
    count = context.sizes.edge_requests
    result: dict[str, Any] = {"requests": count, "round": ROUND}
    bare, bare_port = await _bare_server(context)
    try:
        async with context.cluster("edge") as cluster:
            created = await cluster.http.post("/api/tasks", json={"task_type": "bench-noop"})
            task_id = created.json()["id"]
            port = cluster.server.port
            for name, method, path in (
                ("healthz", "GET", "/healthz"),
                ("get_task", "GET", f"/api/tasks/{task_id}"),
                ("create_task", "POST", "/api/tasks"),
            ):
                ours: list[float] = []
                theirs: list[float] = []
                await asyncio.to_thread(_requests, port, method, path, 20)  # warm-up
                await asyncio.to_thread(_requests, bare_port, method, path, 20)
                done = 0
                while done < count:
                    size = min(ROUND, count - done)
                    ours += await asyncio.to_thread(_requests, port, method, path, size)
                    theirs += await asyncio.to_thread(_requests, bare_port, method, path, size)
                    done += size
                server, baseline = summary_ms(ours), summary_ms(theirs)
                result[name] = {
                    "server": server,
                    "bare_starlette": baseline,
                    "overhead_ms": round(server["p50_ms"] - baseline["p50_ms"], 3),
                }
                context.log(f"  {name}: p50 {server['p50_ms']} ms (bare {baseline['p50_ms']} ms)")
    finally:
        await bare.stop()
    return result
