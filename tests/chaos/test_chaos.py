"""The chaos suite's quick form in the normal test suite (``scripts/chaos --quick`` runs the
same scenario from the command line): 6 real agents under load, 30 random SIGKILLs and
SIGSTOP/SIGCONT pauses per database, PostgreSQL backends terminated at random; the ledger must
balance (see ``ledger.check``); and the network scenario's quick form (``network.py``, skipped
where ``ip netns`` is not permitted)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from hetuflow.config import DatabaseConfig

from . import network
from .run import QUICK, run_scenario

pytestmark = [pytest.mark.chaos, pytest.mark.acceptance, pytest.mark.timeout(240)]


async def test_random_agent_kills_and_pauses_lose_nothing(
    database: DatabaseConfig, pg_admin_url: str, tmp_path: Path
) -> None:
    scenario = replace(QUICK, terminate_backends=database.kind == "postgres")
    report, figures = await run_scenario(scenario, database, tmp_path, pg_admin_url)
    print(json.dumps({**figures, **report.summary()}, indent=2))  # shown with -s or on failure
    assert report.violations == []
    assert report.submitted >= 50
    assert report.faults.get("kill", 0) > 0
    assert report.faults.get("pause", 0) > 0
    assert sum(report.faults.values()) >= QUICK.faults * 0.8
    if database.kind == "postgres":
        assert figures["backends_terminated"] > 0


async def test_network_cuts_and_a_slow_link_lose_nothing(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    """3 agents in a network namespace of their own, 3 on the host; their link cut twice for
    5 s (blackhole routes, then link down) and slowed for 10 s: their attempts re-dispatched
    after the silence window, their late results refused, the ledger balanced."""
    if reason := network.unavailable():
        pytest.skip(reason)
    report, figures = await network.run_network(network.QUICK, database, tmp_path)
    print(json.dumps({**figures, **report.summary()}, indent=2))  # shown with -s or on failure
    assert report.violations == []
    assert network.demonstrated(report, figures) == []
    assert report.faults == {"cut": 6, "degraded": 3}
