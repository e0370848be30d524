"""Acceptance: the worked example of docs/workflows.md on a real server process and a real
agent process, submitted and shown with the real CLI. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from hetuflow.config import DatabaseConfig

from .processes import BIN, api, cluster

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "workflow.json"
MAPPED = EXAMPLE.with_name("workflow-map.json")
TYPES = "wf_fetch wf_transform wf_aggregate wf_notify"


async def cli(server_url: str, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "hetuflow-server"),
        *args,
        "--server",
        server_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_the_worked_example_runs_with_results_flowing_downstream(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        await c.agent("worker", task_types=TYPES, slots=4, modules=("workflow_handlers",))
        async with api(server) as http:
            await http.wait_agents_online(1)
            code, out = await cli(
                server.http_url, "create-workflow", "--file", str(EXAMPLE), "--wait", "--json"
            )
            assert code == 0, out
            workflow: dict[str, Any] = json.loads(out)
            assert workflow["status"] == "succeeded"
            steps = {step["name"]: step for step in workflow["steps"]}
            assert steps["fetch"]["task"]["result"] == {"items": [1, 2, 3, 4, 5, 6, 7, 8, 9]}
            # 1+16+49, 4+25+64, 9+36+81
            assert [
                steps[f"transform-{i}"]["task"]["result"]["sum_of_squares"] for i in range(3)
            ] == [
                66,
                93,
                126,
            ]
            assert steps["aggregate"]["task"]["result"] == {
                "total": 285,
                "parts": ["transform-0", "transform-1", "transform-2"],
            }
            assert steps["notify"]["task"]["result"] == "total is 285"
            assert steps["clean-up"]["status"] == "skipped"  # run_if any_failed, none failed
            # every step ran once, and no child started before its parents had ended
            for name, step in steps.items():
                task = step["task"]
                assert task["attempts"] == (0 if name == "clean-up" else 1), name
                for parent in step["depends_on"]:
                    if task["started_at"] is not None:
                        assert steps[parent]["task"]["finished_at"] <= task["started_at"]

            code, tree = await cli(server.http_url, "show-workflow", workflow["id"])
            assert code == 0, tree
            assert "squares-report" in tree
            assert "aggregate" in tree
            assert "succeeded" in tree
            code, listed = await cli(server.http_url, "list-workflows")
            assert code == 0
            assert workflow["id"][:8] in listed  # short ids, as every CLI table
            code, again = await cli(server.http_url, "show-workflow", workflow["id"][:8])
            assert code == 0, again
            assert workflow["id"] in again


async def test_a_step_mapped_over_a_list_runs_once_per_item_and_the_fan_in_sees_all(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        await c.agent(
            "worker", task_types="wf_list wf_square wf_sum", slots=4, modules=("workflow_handlers",)
        )
        async with api(server) as http:
            await http.wait_agents_online(1)
            code, out = await cli(
                server.http_url, "create-workflow", "--file", str(MAPPED), "--wait", "--json"
            )
            assert code == 0, out
            workflow: dict[str, Any] = json.loads(out)
            assert workflow["status"] == "succeeded", out
            steps = {step["name"]: step for step in workflow["steps"]}
            assert list(steps) == [
                "fetch",
                "square",
                *(f"square[{i}]" for i in range(5)),
                "total",
            ]
            assert steps["square"]["task"]["result"] == [1, 4, 9, 16, 25]
            assert steps["total"]["task"]["result"] == {"squares": [1, 4, 9, 16, 25], "total": 55}
            for i in range(5):
                child = steps[f"square[{i}]"]
                assert (child["map_of"], child["map_index"]) == ("square", i)
                assert child["task"]["attempts"] == 1
                assert child["task"]["started_at"] >= steps["fetch"]["task"]["finished_at"]
            code, tree = await cli(server.http_url, "show-workflow", workflow["id"])
            assert code == 0, tree
            assert "(map_over fetch)" in tree
            assert "square[4]" in tree


async def test_a_failed_step_skips_its_descendants_and_clean_up_runs(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    document = json.loads(EXAMPLE.read_text())
    document["steps"][2]["payload"]["fail"] = True  # transform-1
    document["steps"][2]["max_retries"] = 0
    document["steps"][-1]["depends_on"] = ["transform-1", "notify"]
    document["steps"][-1]["run_if"] = "any_failed"
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        await c.agent("worker", task_types=TYPES, slots=4, modules=("workflow_handlers",))
        async with api(server) as http:
            await http.wait_agents_online(1)
            response = await http.http.post("/api/workflows", json=document)
            assert response.status_code == 201, response.text
            workflow_id = response.json()["id"]
            async with asyncio.timeout(60):
                while True:
                    shown = (await http.http.get(f"/api/workflows/{workflow_id}")).json()
                    if all(
                        s["status"] in ("succeeded", "failed", "skipped") for s in shown["steps"]
                    ):
                        break
                    await asyncio.sleep(0.05)
            steps = {step["name"]: step for step in shown["steps"]}
            assert shown["status"] == "failed"
            assert steps["transform-1"]["status"] == "failed"
            assert steps["aggregate"]["status"] == "skipped"
            assert steps["aggregate"]["task"]["error"] == "skipped: step 'transform-1' failed"
            # stop (the default) skips every other waiting step, naming the failed one too
            assert steps["notify"]["task"]["error"] == (
                "skipped: the workflow stopped because step 'transform-1' failed"
            )
            assert steps["clean-up"]["status"] == "succeeded"
            assert steps["clean-up"]["task"]["result"] == "something failed upstream"


async def _ended(http: Any, workflow_id: str) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            shown: dict[str, Any] = (await http.http.get(f"/api/workflows/{workflow_id}")).json()
            if shown["status"] != "running":
                return shown
            await asyncio.sleep(0.05)


async def test_retry_workflow_reruns_the_failed_step_and_what_depends_on_it(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    """A transform fails (no retries), the workflow stops; ``retry-workflow`` re-runs that
    transform, aggregate and notify, and keeps fetch and the other transforms."""
    document = json.loads(EXAMPLE.read_text())
    document["steps"][2]["payload"]["fail_first_attempt"] = True  # transform-1
    document["steps"][2]["max_retries"] = 0
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        await c.agent("worker", task_types=TYPES, slots=4, modules=("workflow_handlers",))
        async with api(server) as http:
            await http.wait_agents_online(1)
            response = await http.http.post("/api/workflows", json=document)
            assert response.status_code == 201, response.text
            workflow_id = response.json()["id"]
            failed = await _ended(http, workflow_id)
            assert failed["status"] == "failed"
            before = {step["name"]: step["task"] for step in failed["steps"]}
            assert before["transform-1"]["status"] == "failed"
            code, out = await cli(server.http_url, "retry-task", before["transform-1"]["id"])
            assert code != 0
            assert f"retry the workflow (POST /api/workflows/{workflow_id}/retry" in out
            code, out = await cli(server.http_url, "retry-workflow", workflow_id)
            assert code == 0, out
            assert "retrying workflow" in out
            done = await _ended(http, workflow_id)
            assert done["status"] == "succeeded", done
            after = {step["name"]: step["task"] for step in done["steps"]}
            assert after["notify"]["result"] == "total is 285"
            assert after["transform-1"]["attempts"] == 2
            for kept in ("fetch", "transform-0", "transform-2"):
                assert after[kept]["attempts"] == 1, kept
                assert after[kept]["finished_at"] == before[kept]["finished_at"], kept
            assert after["aggregate"]["attempts"] == 1  # skipped before, ran once now
            assert after["clean-up"]["status"] == "skipped"
