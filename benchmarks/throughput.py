"""(a) Throughput: no-op tasks completed per second, end to end.

Tasks are submitted over the REST API, in batches (``POST /api/tasks/batch``) or one per
request (``POST /api/tasks``), while the agents run them; a task counts once the store says it
``succeeded`` (``GET /api/stats``, polled). Throughput is tasks / (last completion seen - first
submit); ``steady`` is the rate between 10 % and 90 % of completions (no ramp-up, no tail).

CPU use of the server, the agents and this generator is read from /proc during the run: the
agents get enough slots and processes that they idle part of the time, so the server bounds the
number (see ``bound`` in the result).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import BIN, CpuMeter, RawHttp, ScenarioFailed, machine_load, stats
from benchmarks.profile import summarise
from benchmarks.suite import Cluster, Context

POLL_SECONDS = 0.1
SATURATED_PERCENT = 85.0
NOOP = {"task_type": "bench-noop", "name": "bench"}


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _submit_batches(http: httpx.AsyncClient, total: int, size: int, in_flight: int) -> None:
    limit = asyncio.Semaphore(in_flight)
    body = {"tasks": [NOOP] * size}

    async def post(count: int) -> None:
        try:
            payload = body if count == size else {"tasks": [NOOP] * count}
            response = await http.post("/api/tasks/batch", json=payload)
            if response.status_code != 201:
                raise ScenarioFailed(f"batch create: {response.status_code} {response.text[:200]}")
        finally:
            limit.release()

    async with asyncio.TaskGroup() as group:
        sent = 0
        while sent < total:
            count = min(size, total - sent)
            await limit.acquire()
            group.create_task(post(count))
            sent += count


async def _submit_singles(http: httpx.AsyncClient, total: int, in_flight: int) -> None:
    """``in_flight`` keep-alive connections, each sending one ``POST /api/tasks`` after the
    other, through ``RawHttp`` (httpx bounded the number, not the server)."""
    remaining = [total]
    raw = RawHttp(http.base_url)
    body = json.dumps(NOOP).encode()

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            status, answer = await raw.post("/api/tasks", body)
            if status != 201:
                raise ScenarioFailed(f"create: {status} {answer[:200]!r}")

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(in_flight):
                group.create_task(worker())
    finally:
        raw.close()


async def _wait_done(
    http: httpx.AsyncClient, target: int, timeout_seconds: float
) -> list[tuple[float, int]]:
    """Poll the store until ``target`` tasks succeeded; the (time, succeeded) samples."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout_seconds
    while True:
        numbers = await stats(http)
        by_status = numbers["tasks_by_status"]
        samples.append((time.monotonic(), by_status["succeeded"]))
        if by_status["succeeded"] >= target:
            return samples
        if by_status["failed"] or by_status["timed_out"]:
            raise ScenarioFailed(f"tasks did not succeed: {by_status}")
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"{by_status['succeeded']} of {target} done after timeout")
        await asyncio.sleep(POLL_SECONDS)


def _steady_rate(samples: list[tuple[float, int]], base: int, total: int) -> float | None:
    low, high = base + total * 0.1, base + total * 0.9
    t_low = next((t for t, n in samples if n >= low), None)
    t_high = next((t for t, n in samples if n >= high), None)
    if t_low is None or t_high is None or t_high <= t_low:
        return None
    done_low = next(n for t, n in samples if t == t_low)
    done_high = next(n for t, n in samples if t == t_high)
    return (done_high - done_low) / (t_high - t_low)


async def measure(cluster: Cluster, mode: str, total: int) -> dict[str, Any]:
    """Submit ``total`` no-op tasks (``mode`` batch or single) and time their completion."""
    sizes = cluster.context.sizes
    http = cluster.http
    base = (await stats(http))["tasks_by_status"]["succeeded"]
    meter = CpuMeter(
        {"server": cluster.server.process, **{a.name: a for a in cluster.agents if a.alive()}}
    )
    load = machine_load()
    meter.start()
    cpu_self = _self_cpu()
    started = time.monotonic()
    waiter = asyncio.create_task(_wait_done(http, base + total, timeout_seconds=600))
    try:
        if mode == "batch":
            await _submit_batches(http, total, sizes.tp_batch_size, sizes.tp_batch_in_flight)
        else:
            await _submit_singles(http, total, sizes.tp_single_in_flight)
        submitted = time.monotonic()
        samples = await waiter
    finally:
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError, ScenarioFailed):
            await waiter
    finished = samples[-1][0]
    cpu = meter.stop()
    elapsed = finished - started
    generator = 100 * (_self_cpu() - cpu_self) / elapsed
    steady = _steady_rate(samples, base, total)
    shared = {k: cpu.pop(k) for k in ("postgres", "machine") if k in cpu}
    agents_cpu = {k: v for k, v in cpu.items() if k != "server"}
    return {
        "tasks": total,
        "tasks_per_second": round(total / elapsed, 1),
        "steady_tasks_per_second": round(steady, 1) if steady else None,
        "submit_tasks_per_second": round(total / (submitted - started), 1),
        "seconds": round(elapsed, 3),
        "cpu_percent": {
            "server": cpu.get("server"),
            **agents_cpu,
            "generator": round(generator),
            **{k: v for k, v in shared.items() if k == "postgres"},
        },
        "machine_busy_percent": shared.get("machine"),
        "load_average_1m_before": round(load, 2),
        "bound": _bound(cpu.get("server", 0.0), agents_cpu, generator),
    }


def _bound(server: float, agents: dict[str, float], generator: float) -> str:
    busiest = max(agents.values(), default=0.0)
    if max(server, busiest, generator) < SATURATED_PERCENT:
        return (
            f"no process saturates a core (server {server:.0f}%, busiest agent {busiest:.0f}%, "
            f"generator {generator:.0f}%): waits bound it (serial commits, or a busy machine)"
        )
    if server >= max(busiest, generator):
        return (
            f"server ({server:.0f}% of a core; busiest agent {busiest:.0f}%, "
            f"generator {generator:.0f}%)"
        )
    if generator >= busiest:
        return f"generator ({generator:.0f}%; server {server:.0f}%)"
    return f"agents (busiest {busiest:.0f}%; server {server:.0f}%)"


async def _warm_up(cluster: Cluster) -> None:
    await measure(cluster, "batch", 200)


def _popen(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def profiled(cluster: Cluster, mode: str, total: int, out: Path) -> dict[str, Any]:
    """``measure`` with py-spy sampling the server (nonblocking, 200 Hz) into ``out``."""
    spy = BIN / "py-spy"
    if not spy.exists():
        return {"skipped": "py-spy is not installed in the virtualenv (pip install py-spy)"}
    raw = out.with_suffix(".txt")
    argv = [str(spy), "record", "--pid", str(cluster.server.process.pid), "--format", "raw"]
    argv += ["--rate", "200", "--nonblocking", "--output", str(raw)]
    recorder = _popen(argv)
    try:
        await asyncio.sleep(1.0)  # py-spy attaches
        numbers = await measure(cluster, mode, total)
    finally:
        recorder.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(recorder.wait, 30)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait()
    if not raw.exists():
        error = (recorder.stderr.read() if recorder.stderr else b"").decode()[-500:]
        return {"skipped": f"py-spy wrote no profile: {error}"}
    return {"run": numbers, "collapsed_stacks": str(raw), **summarise(raw, out)}


async def run(context: Context) -> dict[str, Any]:
    sizes = context.sizes
    result: dict[str, Any] = {
        "agents": sizes.tp_agents,
        "slots_per_agent": sizes.tp_slots,
        "batch_size": sizes.tp_batch_size,
        "batch_requests_in_flight": sizes.tp_batch_in_flight,
        "single_requests_in_flight": sizes.tp_single_in_flight,
    }
    runs: list[tuple[str, str, int, int]] = [
        ("batch", "batch", sizes.tp_batch_tasks, 1),
        ("single", "single", sizes.tp_single_tasks, 1),
    ]
    if context.db_kind == "postgres":
        # Several server processes are how PostgreSQL deployments scale on one machine.
        runs.append(("batch_workers", "batch", sizes.tp_batch_tasks, os.cpu_count() or 1))
    for name, mode, total, workers in runs:
        env = {"HETUFLOW_SERVER__WORKERS": str(workers)}
        async with context.cluster(
            f"throughput-{name}", agents=sizes.tp_agents, slots=sizes.tp_slots, env=env
        ) as cluster:
            await _warm_up(cluster)
            result[name] = {**await measure(cluster, mode, total), "server_workers": workers}
            context.log(f"  {name}: {result[name]['tasks_per_second']} tasks/s")
            if context.profile_dir is not None and workers == 1:
                out = context.profile_dir / f"{context.db_kind}-{mode}"
                result[f"{name}_profile"] = await profiled(cluster, mode, total, out)
    return result
