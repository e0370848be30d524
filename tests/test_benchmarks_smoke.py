"""A tiny run of the benchmark suite (``python -m benchmarks run --smoke``), so it never rots.

It starts real servers, agents and simulated agents like the full suite does, with tiny sizes.
It checks that every scenario measured something and reported it in the JSON; the size of the
numbers is the full run's business (docs/benchmarks.md), not a test's.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _module(*argv: str) -> str:
    """``python -m <argv>`` from the repository's root, against the tests' PostgreSQL; its
    output (the run must succeed)."""
    env = {
        **os.environ,
        "HETUFLOW_BENCH_DATABASE_URL": os.environ.get(
            "HETUFLOW_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    }
    completed = subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed.stdout


def _suite(tmp_path: Path, *args: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(
        _module("benchmarks", "run", "--smoke", "--json", "-", *args)
    )
    return report


def _number(value: Any) -> float:
    assert isinstance(value, int | float), value
    assert math.isfinite(value), value
    return float(value)


def _latency(summary: dict[str, Any]) -> None:
    assert summary["count"] > 0
    for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
        _number(summary[key])


@pytest.mark.timeout(240)
def test_every_scenario_reports_numbers_on_sqlite(tmp_path: Path) -> None:
    report = _suite(tmp_path, "--db", "sqlite", "--workdir", str(tmp_path))
    assert report["machine"]["nproc"] >= 1
    assert report["versions"]["python"]
    scenarios = report["results"]["sqlite"]["scenarios"]
    assert set(scenarios) == {
        "throughput",
        "latency",
        "cron",
        "agents",
        "recovery",
        "producer",
        "edge",
        "workflows",
    }

    throughput = scenarios["throughput"]
    for mode in ("batch", "single"):
        assert _number(throughput[mode]["tasks_per_second"]) > 0
        assert _number(throughput[mode]["cpu_percent"]["server"]) >= 0
        assert throughput[mode]["bound"]

    latency = scenarios["latency"]
    for phase in ("rate_20", "half"):
        assert latency[phase]["tasks"] > 0
        assert latency[phase]["not_started"] == 0
        _latency(latency[phase]["latency"])

    cron = scenarios["cron"]
    for part in ("one_job", "burst"):
        assert cron[part]["started"] > 0
        _latency(cron[part]["lateness"])
        assert isinstance(cron[part]["early"], int)

    agents = scenarios["agents"]
    assert agents["held"] > 0
    _number(agents["kib_per_agent"])

    recovery = scenarios["recovery"]
    _latency(recovery["clean"]["recovery"])
    _latency(recovery["silent"]["recovery"])
    assert isinstance(recovery["lost"], int)
    assert isinstance(recovery["duplicated"], int)

    producer = scenarios["producer"]
    for mode in ("sync", "async", "threads", "sync_httpx", "async_httpx"):
        _latency(producer[mode]["submit"])
        assert producer[mode]["submit"]["count"] == producer[mode]["tasks"]
        assert _number(producer[mode]["tasks_per_second"]) > 0

    edge = scenarios["edge"]
    for route in ("healthz", "get_task", "create_task", "create_task_durable"):
        _latency(edge[route]["server"])
        _latency(edge[route]["bare_starlette"])
        _number(edge[route]["overhead_ms"])

    workflows = scenarios["workflows"]
    _latency(workflows["chain"]["step_to_step"])
    assert workflows["chain"]["step_to_step"]["count"] == workflows["chain_steps"] - 1
    _latency(workflows["create_100"]["request"])
    assert workflows["fan_out"]["items"] == 50
    assert _number(workflows["fan_out"]["children_per_second"]) > 0
    assert _number(workflows["fan_out"]["total_steps_per_second"]) > 0

    rows = {(v["scenario"], v["measure"]) for v in report["verdicts"]}
    assert ("throughput", "batch submit, end to end") in rows
    assert ("producer", "sync serial, end to end") in rows


@pytest.mark.postgres
@pytest.mark.timeout(240)
def test_throughput_producer_and_scaleout_run_on_a_fresh_postgres_database(
    tmp_path: Path,
) -> None:
    report = _suite(tmp_path, "--db", "postgres", "--only", "throughput,producer,scaleout")
    run = report["results"]["postgres"]
    assert run["database"]["synchronous_commit"] == "on"
    for mode in ("batch", "single"):
        assert _number(run["scenarios"]["throughput"][mode]["tasks_per_second"]) > 0
    for mode in ("sync", "async", "threads"):
        assert _number(run["scenarios"]["producer"][mode]["tasks_per_second"]) > 0

    scaleout = run["scenarios"]["scaleout"]
    for nodes in (1, 2):  # --smoke: one and two server nodes on one database
        numbers = scaleout[f"nodes_{nodes}"]
        assert _number(numbers["tasks_per_second"]) > 0
        assert numbers["pickup"]["not_started"] == 0
        _latency(numbers["pickup"]["latency"])
        costs = numbers["per_task_raw"]
        assert _number(costs["server_cpu_ms"]) > 0
        assert _number(costs["commits"]) > 0  # pg_stat_database of the scenario's database
        assert _number(costs["notifications"]) >= 0
        _number(numbers["waits"]["advisory_lock_waiters_mean"])


@pytest.mark.timeout(120)
def test_cpu_per_request_measures_every_hot_route(tmp_path: Path) -> None:
    """``benchmarks/cpu_per_request.py`` (docs/benchmarks.md, server CPU per request)."""
    out = tmp_path / "cpu.json"
    sizes = ["--requests", "20", "--reps", "1", "--json", str(out)]
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.cpu_per_request", "--db", "sqlite", "--agent", *sizes],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    [row] = json.loads(out.read_text())
    assert row["pending_reason"] == "agents_busy"
    for route in ("GET /healthz", "GET /api/tasks/{id}", "POST /api/tasks"):
        assert row["routes"][route]["p50_ms"] > 0
        assert row["routes"][route]["cpu_us"] >= 0


def _keys(scenario: dict[str, Any]) -> None:
    """The concurrency keys scenario: both runs measured, every keyed attempt in the history,
    no key ever with two attempts running at once."""
    for run in ("unkeyed", "keyed"):
        assert _number(scenario[run]["tasks_per_second"]) > 0
    assert _number(scenario["ratio"]) > 0
    history = scenario["history"]
    assert history["attempts"] >= scenario["keyed"]["tasks"]
    assert history["unfinished_attempts"] == 0
    assert history["run"]["max_per_key"] == 1
    assert history["run"]["overlaps"] == 0
    assert history["hold_attempts"] > 0  # tasks that hold their key for a while
    assert history["hold_run"]["max_per_key"] == 1


@pytest.mark.timeout(120)
def test_concurrency_keys_runs_on_sqlite(tmp_path: Path) -> None:
    report = _suite(
        tmp_path, "--db", "sqlite", "--only", "concurrency_keys", "--workdir", str(tmp_path)
    )
    _keys(report["results"]["sqlite"]["scenarios"]["concurrency_keys"])


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_rate_limit_and_concurrency_keys_run_on_postgres(tmp_path: Path) -> None:
    report = _suite(tmp_path, "--db", "postgres", "--only", "rate_limit,concurrency_keys")
    scenarios = report["results"]["postgres"]["scenarios"]
    _keys(scenarios["concurrency_keys"])
    rate = scenarios["rate_limit"]
    assert rate["nodes"] == 2
    assert sum(rate["by_node"].values()) == rate["tasks"]
    assert rate["max_in_any_window"] <= rate["limit"]  # the limit holds across the nodes
    assert _number(rate["rate_per_second"]) > 0
    assert len(rate["per_window"]) >= 2


@pytest.mark.timeout(240)
def test_the_ab_runner_alternates_two_trees(tmp_path: Path) -> None:
    """``python -m benchmarks.ab`` with this tree as both sides: one line per run, in turn."""
    argv = ["--before", str(ROOT), "--db", "sqlite", "--mode", "sync", "--tasks", "20"]
    output = _module("benchmarks.ab", *argv, "--pairs", "1")
    runs = [json.loads(line) for line in output.splitlines()]
    assert [run["tree"] for run in runs] == ["before", "after"]
    for run in runs:
        assert (run["db"], run["mode"]) == ("sqlite", "sync")
        _number(run["p50_ms"])
        assert _number(run["tasks_per_second"]) > 0


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_the_connection_use_benchmark_reports_each_kind() -> None:
    """``python -m benchmarks.pg_roundtrip`` (docs/benchmarks.md, eighth round)."""
    output = _module("benchmarks.pg_roundtrip", "--count", "20")
    kinds = [line.split(":")[0] for line in output.splitlines()]
    assert kinds == [
        "bare connection",
        "asyncpg pool",
        "PgDatabase.connection",
        "pool acquire + release alone",
    ]
