"""The chaos suite's quick form in the normal test suite (``scripts/chaos --quick`` runs the
same scenario from the command line): 6 real agents under load, 30 random SIGKILLs and
SIGSTOP/SIGCONT pauses per database, PostgreSQL backends terminated at random; the ledger must
balance (see ``ledger.check``)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from hetuflow.config import DatabaseConfig

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
