"""The machine, the versions, and the readable table (each number next to its target)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

PACKAGES = (
    "hetuflow",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "websockets",
    "pydantic",
    "orjson",
    "asyncpg",
    "aiosqlite",
    "httpx",
)


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, Any]:
    found: dict[str, Any] = {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def _get(result: dict[str, Any], path: str) -> Any:
    value: Any = result
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


@dataclass(frozen=True)
class Row:
    scenario: str
    label: str
    path: str
    unit: str
    target: str
    check: Callable[[float, str], bool | None] | None = None
    """Whether a value meets the target on a database; None: no target there."""


def _at_most(sqlite: float, postgres: float | None = None) -> Callable[[float, str], bool]:
    return lambda value, db: value <= (sqlite if db == "sqlite" or postgres is None else postgres)


def _at_least_db(sqlite: float | None, postgres: float) -> Callable[[float, str], bool | None]:
    def check(value: float, db: str) -> bool | None:
        limit = sqlite if db == "sqlite" else postgres
        return None if limit is None else value >= limit

    return check


def _at_least(limit: float) -> Callable[[float, str], bool]:
    return lambda value, _db: value >= limit


def _scaleout_rows(label: str, key: str) -> tuple[Row, ...]:
    """The rows of one cluster size of the scaleout scenario (``label``: "2 nodes")."""
    return (
        Row("scaleout", f"{label}: batch, end to end", f"{key}.tasks_per_second", "tasks/s", ""),
        Row("scaleout", f"{label}: pickup p50", f"{key}.pickup.latency.p50_ms", "ms", ""),
        Row("scaleout", f"{label}: pickup p99", f"{key}.pickup.latency.p99_ms", "ms", ""),
        Row("scaleout", f"{label}: server CPU per task", f"{key}.per_task.server_cpu_ms", "ms", ""),
        Row(
            "scaleout",
            f"{label}: PostgreSQL CPU per task",
            f"{key}.per_task.postgres_backends_cpu_ms",
            "ms",
            "",
        ),
        Row("scaleout", f"{label}: commits per task", f"{key}.per_task.commits", "", ""),
        Row("scaleout", f"{label}: NOTIFYs per task", f"{key}.per_task.notifications", "", ""),
        Row(
            "scaleout",
            f"{label}: advisory-lock waiters",
            f"{key}.waits.advisory_lock_waiters_mean",
            "backends",
            "",
        ),
        Row("scaleout", f"{label}: machine busy", f"{key}.machine_busy_percent", "% all cores", ""),
    )


ROWS = (
    Row("throughput", "batch submit, end to end", "batch.tasks_per_second", "tasks/s",
        ">= 10,000", _at_least(10_000)),
    Row("throughput", "batch, steady 10-90 %", "batch.steady_tasks_per_second", "tasks/s", ""),
    Row("throughput", "batch, server CPU", "batch.cpu_percent.server", "% core", ""),
    Row("throughput", "batch, PostgreSQL CPU", "batch.cpu_percent.postgres", "% core", ""),
    Row("throughput", "batch, machine busy", "batch.machine_busy_percent", "% all cores", ""),
    Row("throughput", "batch, server workers = cores", "batch_workers.tasks_per_second",
        "tasks/s", ">= 10,000", _at_least(10_000)),
    Row("throughput", "batch, workers: machine busy", "batch_workers.machine_busy_percent",
        "% all cores", ""),
    Row("throughput", "one per request, end to end", "single.tasks_per_second", "tasks/s",
        ">= 10,000", _at_least(10_000)),
    Row("throughput", "one per request, server CPU", "single.cpu_percent.server", "% core", ""),
    Row("latency", "10/s p50", "rate_10.latency.p50_ms", "ms", ""),
    Row("latency", "10/s p99", "rate_10.latency.p99_ms", "ms", ""),
    Row("latency", "100/s p50", "rate_100.latency.p50_ms", "ms", "<= 1.5 (SQLite)",
        _at_most(1.5, 1e9)),
    Row("latency", "100/s p99", "rate_100.latency.p99_ms", "ms", "<= 2 SQLite / 4 PG",
        _at_most(2, 4)),
    Row("latency", "100/s max", "rate_100.latency.max_ms", "ms", ""),
    Row("latency", "100/s p50, from the submit call's start",
        "rate_100.from_submit_call_start.p50_ms", "ms", ""),
    Row("latency", "100/s p99, from the submit call's start",
        "rate_100.from_submit_call_start.p99_ms", "ms", ""),
    Row("latency", "half throughput: rate", "half.rate_per_second", "/s", ""),
    Row("latency", "half throughput p50", "half.latency.p50_ms", "ms", ""),
    Row("latency", "half throughput p99", "half.latency.p99_ms", "ms", "<= 25", _at_most(25)),
    Row("latency", "half p99, from the submit call's start",
        "half.from_submit_call_start.p99_ms", "ms", ""),
    Row("cron", "1 job every second p50", "one_job.lateness.p50_ms", "ms", "<= 1", _at_most(1)),
    Row("cron", "1 job every second p99", "one_job.lateness.p99_ms", "ms", "<= 3", _at_most(3)),
    Row("cron", "1 job: early starts", "one_job.early", "", "0", _at_most(0)),
    Row("cron", "burst: jobs started", "burst.started", "", ""),
    Row("cron", "burst p50", "burst.lateness.p50_ms", "ms", ""),
    Row("cron", "burst p99", "burst.lateness.p99_ms", "ms", "<= 250", _at_most(250)),
    Row("cron", "burst: early starts", "burst.early", "", "0", _at_most(0)),
    Row("agents", "agents held (online)", "held", "", ">= 10,000", _at_least(10_000)),
    Row("agents", "most online at once", "most_online", "", ""),
    Row("agents", "server RSS per agent", "kib_per_agent", "KiB", "<= 30 KB",
        _at_most(30 * 1000 / 1024)),
    Row("agents", "server CPU, idle agents", "hold_cpu_percent", "% core", ""),
    Row("recovery", "clean kill p50", "clean.recovery.p50_ms", "ms", ""),
    Row("recovery", "clean kill p99", "clean.recovery.p99_ms", "ms", "<= 2000", _at_most(2000)),
    Row("recovery", "silent (SIGSTOP) p99", "silent.recovery.p99_ms", "ms", "<= 15000",
        _at_most(15000)),
    Row("recovery", "lost", "lost", "", "0", _at_most(0)),
    Row("recovery", "duplicated", "duplicated", "", "0", _at_most(0)),
    Row("producer", "sync Client.submit p50", "sync.submit.p50_ms", "ms",
        "<= 0.5 SQLite / 1.5 PG", _at_most(0.5, 1.5)),
    Row("producer", "sync Client.submit p99", "sync.submit.p99_ms", "ms", "<= 2 (SQLite)",
        _at_most(2, 1e9)),
    Row("producer", "sync serial, end to end", "sync.tasks_per_second", "tasks/s",
        ">= 2,000 SQLite / 700 PG", _at_least_db(2000, 700)),
    Row("producer", "AsyncClient.submit p50", "async.submit.p50_ms", "ms",
        "<= 0.5 SQLite / 1.5 PG", _at_most(0.5, 1.5)),
    Row("producer", "async serial, end to end", "async.tasks_per_second", "tasks/s",
        ">= 2,000 SQLite / 700 PG", _at_least_db(2000, 700)),
    Row("producer", "8 threads, one Client, end to end", "threads.tasks_per_second",
        "tasks/s", ">= 5,000 (PG)", _at_least_db(None, 5000)),
    Row("producer", "8 threads: submit p50", "threads.submit.p50_ms", "ms", ""),
    Row("producer", "sync over httpx: submit p50", "sync_httpx.submit.p50_ms", "ms", ""),
    Row("producer", "sync over httpx, end to end", "sync_httpx.tasks_per_second", "tasks/s", ""),
    Row("producer", "async over httpx: submit p50", "async_httpx.submit.p50_ms", "ms", ""),
    Row("producer", "async over httpx, end to end", "async_httpx.tasks_per_second", "tasks/s",
        ""),
    Row("edge", "GET /healthz p50", "healthz.server.p50_ms", "ms", ""),
    Row("edge", "GET /healthz over bare Starlette", "healthz.overhead_ms", "ms", "<= 0.2",
        _at_most(0.2)),
    Row("edge", "GET /api/tasks/{id} p50", "get_task.server.p50_ms", "ms", ""),
    Row("edge", "GET /api/tasks/{id} over bare Starlette", "get_task.overhead_ms", "ms",
        "<= 0.2", _at_most(0.2)),
    Row("edge", "POST /api/tasks p50 (http.client)", "create_task.server.p50_ms", "ms", ""),
    Row("edge", "POST /api/tasks over bare Starlette", "create_task.overhead_ms", "ms", ""),
    Row("edge", "floor: bare Starlette + one durable insert, p50",
        "create_task_durable.bare_starlette.p50_ms", "ms", ""),
    Row("edge", "POST /api/tasks over that floor", "create_task_durable.overhead_ms", "ms", ""),
    Row("workflows", "chain step to step p50", "chain.step_to_step.p50_ms", "ms", "<= 2",
        _at_most(2)),
    Row("workflows", "chain step to step p99", "chain.step_to_step.p99_ms", "ms", "<= 10",
        _at_most(10)),
    Row("workflows", "chain steps per second", "chain.steps_per_second", "steps/s", ""),
    Row("workflows", "create 100 steps p50", "create_100.request.p50_ms", "ms", "<= 20",
        _at_most(20)),
    Row("workflows", "create 100 steps p99", "create_100.request.p99_ms", "ms", ""),
    Row("workflows", "fan-out: items", "fan_out.items", "", ""),
    Row("workflows", "fan-out, root end to fan-in start", "fan_out.children_per_second",
        "steps/s", ">= 5,000", _at_least(5000)),
    Row("workflows", "fan-out, submit to end", "fan_out.total_steps_per_second", "steps/s", ""),
    Row("workflows", "fan-out, server CPU", "fan_out.cpu_percent.server", "% core", ""),
    *(
        row
        for nodes in (1, 2, 3)
        for row in _scaleout_rows(f"{nodes} node{'s' if nodes > 1 else ''}", f"nodes_{nodes}")
    ),
    Row("scaleout", "durable commit round trip p50", "durable_commit.p50_ms", "ms", ""),
    Row("scaleout", "3 nodes, no global limit: batch", "nodes_3_no_global_limit.tasks_per_second",
        "tasks/s", ""),
    Row("scaleout", "3 nodes, no global limit: PostgreSQL CPU per task",
        "nodes_3_no_global_limit.per_task.postgres_backends_cpu_ms", "ms", ""),
    Row("scaleout", "3 nodes, no global limit: commits per task",
        "nodes_3_no_global_limit.per_task.commits", "", ""),
    Row("scaleout", "3 nodes, no global limit: pickup p99",
        "nodes_3_no_global_limit.pickup.latency.p99_ms", "ms", ""),
    Row("concurrency_keys", "unkeyed batch, end to end", "unkeyed.tasks_per_second", "tasks/s",
        ""),
    Row("concurrency_keys", "1,000 keys limited to 1, end to end", "keyed.tasks_per_second",
        "tasks/s", ""),
    Row("concurrency_keys", "keyed / unkeyed", "ratio", "", ">= 0.5", _at_least(0.5)),
    Row("concurrency_keys", "most attempts of a key running at once", "history.run.max_per_key",
        "", "1", _at_most(1)),
    Row("concurrency_keys", "keyed: machine busy", "keyed.machine_busy_percent", "% all cores",
        ""),
    Row("rate_limit", "dispatched rate (2 nodes)", "rate_per_second", "/s", ""),
    Row("rate_limit", "dispatched rate - limit", "rate_error_percent", "%", "within ±2",
        lambda value, _db: abs(value) <= 2),
    Row("rate_limit", "most in any window - limit", "window_excess", "", "<= 0", _at_most(0)),
)  # fmt: skip


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:,.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per row and database: the value, the target, and whether it is met."""
    out = []
    for row in ROWS:
        for db, run in results.items():
            scenario = run["scenarios"].get(row.scenario)
            if scenario is None:
                continue
            value = _get(scenario, row.path)
            met = None
            if row.check is not None and isinstance(value, int | float):
                met = row.check(float(value), db)
            out.append(
                {
                    "database": db,
                    "scenario": row.scenario,
                    "measure": row.label,
                    "value": value,
                    "unit": row.unit,
                    "target": row.target,
                    "met": met,
                }
            )
    return out


def table(results: dict[str, Any]) -> Table:
    databases = list(results)
    view = Table(title="hetuflow benchmarks", show_lines=False)
    view.add_column("scenario")
    view.add_column("measure")
    for db in databases:
        view.add_column(db, justify="right")
    view.add_column("unit")
    view.add_column("target")
    for row in ROWS:
        cells = []
        shown = False
        for db in databases:
            scenario = results[db]["scenarios"].get(row.scenario)
            if scenario is None:
                cells.append("")
                continue
            shown = True
            if "error" in scenario:
                cells.append("[red]failed[/red]")
                continue
            value = _get(scenario, row.path)
            text = _format(value)
            ok = row.check(float(value), db) if row.check and _numeric(value) else None
            if ok is not None:
                text = f"[green]{text} ✓[/green]" if ok else f"[red]{text} ✗[/red]"
            cells.append(text)
        if shown:
            view.add_row(row.scenario, row.label, *cells, row.unit, row.target)
    return view


def markdown(results: dict[str, Any]) -> str:
    """The same table in Markdown (for docs/benchmarks.md)."""
    databases = list(results)
    lines = [
        "| scenario | measure | " + " | ".join(databases) + " | unit | target |",
        "|---|---|" + "---:|" * len(databases) + "---|---|",
    ]
    for row in ROWS:
        cells = []
        for db in databases:
            scenario = results[db]["scenarios"].get(row.scenario)
            if scenario is None or "error" in scenario:
                cells.append("failed" if scenario else "")
                continue
            value = _get(scenario, row.path)
            text = _format(value)
            ok = row.check(float(value), db) if row.check and _numeric(value) else None
            if ok is not None:
                text += " ✓" if ok else " **✗**"
            cells.append(text)
        lines.append(
            f"| {row.scenario} | {row.label} | " + " | ".join(cells) + f" | {row.unit} | "
            f"{row.target} |"
        )
    return "\n".join(lines)


def print_table(results: dict[str, Any]) -> None:
    console = Console(width=max(Console().width, 110))
    console.print(table(results))
    for db, run in results.items():
        for name, scenario in run["scenarios"].items():
            if "error" in scenario:
                console.print(f"[red]{db} {name} failed:[/red] {scenario['error']}")
