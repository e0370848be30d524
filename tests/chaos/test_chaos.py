"""The chaos suite's quick forms in the normal test suite (``scripts/chaos --quick``,
``scripts/chaos --scenario nodes --quick`` and ``scripts/chaos --scenario network`` run the same
scenarios from the command line): 6 real agents under load, 30 random SIGKILLs and
SIGSTOP/SIGCONT pauses per database, PostgreSQL backends terminated at random; three server
nodes, one SIGKILLed at random every few seconds; and agents behind a link that is cut and
slowed (``network.py``, skipped where ``ip netns`` is not permitted). The ledger must balance
(see ``ledger.check``)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from hetuflow.config import DatabaseConfig

from . import network
from .nodes import QUICK_NODES, run_nodes
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


@pytest.mark.postgres
async def test_random_node_kills_lose_nothing_and_agents_move_on(
    pg_database: DatabaseConfig, tmp_path: Path
) -> None:
    """``scripts/chaos --scenario nodes --quick``: 3 nodes on one PostgreSQL, 4 agents given
    all three URLs, per-second cron jobs, a random node SIGKILLed about every 5 s and
    restarted; the ledger balances, every agent is back within 30 s, no tick twice or lost."""
    report, nodes, figures = await run_nodes(QUICK_NODES, pg_database, tmp_path)
    print(json.dumps({**figures, **report.summary(), **nodes.summary()}, indent=2))
    assert report.violations == []
    assert nodes.violations == []
    assert len(nodes.kills) >= 3
    assert nodes.reconnects  # the kills hit agents, and they came back
    assert report.submitted >= 50
    assert figures["cron_tasks"] >= QUICK_NODES.cron_jobs * 20


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
