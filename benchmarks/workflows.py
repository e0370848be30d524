"""(h) Workflows: step-to-step latency along a chain, and creating a 100-step workflow.

Chain: one workflow of ``wf_chain_steps`` no-op steps, each depending on the one before
(``bench-chain``). Each handler stamps its start in the ledger and returns ``time.time()`` at
its end; the latency of a link is the child's start minus its parent's end (handler end of
the parent -> handler start of the child: the result's report, its write with the child's
release in one transaction, the dispatch, the frame to the agent). Both clocks are this
machine's.

Creation: ``POST /api/workflows`` of a 100-step chain of a task type no agent runs (nothing is
dispatched meanwhile), ``wf_create_repeats`` times, one after the other; the time is the
request's round trip as the client sees it. While the chain runs, the scenario reads only the
ledger (the last step's start), not the workflow, so as not to load the server it measures.

Fan-out: one workflow of a root step (``bench-list``) returning ``wf_map_items`` items, a
step mapped over it (``map_over``, one ``bench-noop`` child per item) and a fan-in step
(``bench-chain``, which stamps its start). Every item is the root handler's end time, so the
fan-out's duration is the fan-in's start minus an item: the root's report, the fan-out insert
in the root's result transaction, every child's dispatch, run and result, the collect in the
last child's result transaction, and the fan-in's dispatch. Its rate is the children per
second of that span; ``total`` runs from the submit call's start to the fan-in handler's end
(its result), so it adds the submit, the root's dispatch and run, and the fan-in's run. Two
agents with ``MAP_SLOTS`` slots each run the children.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from benchmarks.harness import CpuMeter, ScenarioFailed, machine_load, summary_ms
from benchmarks.suite import Context

CREATE_STEPS = 100
MAP_AGENTS = 2
MAP_SLOTS = 500


def chain(steps: int, task_type: str) -> dict[str, Any]:
    return {
        "name": f"bench-chain-{steps}",
        "steps": [
            {"name": f"s{i}", "task_type": task_type, "depends_on": [f"s{i - 1}"] if i else []}
            for i in range(steps)
        ],
    }


async def _submit(http: httpx.AsyncClient, document: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/api/workflows", json=document)
    if response.status_code != 201:
        raise ScenarioFailed(f"submit workflow: {response.status_code} {response.text[:200]}")
    created: dict[str, Any] = response.json()
    return created


async def _ended(
    http: httpx.AsyncClient, workflow_id: str, within_seconds: float
) -> dict[str, Any]:
    deadline = time.monotonic() + within_seconds
    while True:
        response = await http.get(f"/api/workflows/{workflow_id}")
        response.raise_for_status()
        shown: dict[str, Any] = response.json()
        if shown["status"] != "running":
            return shown
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"workflow {workflow_id} still running after {within_seconds:g} s")
        await asyncio.sleep(0.2)


def fan_out(items: int) -> dict[str, Any]:
    return {
        "name": f"bench-map-{items}",
        "steps": [
            {"name": "root", "task_type": "bench-list", "payload": {"count": items}},
            {"name": "each", "task_type": "bench-noop", "depends_on": ["root"], "map_over": "root"},
            {"name": "fan_in", "task_type": "bench-chain", "depends_on": ["each"]},
        ],
    }


async def run_fan_out(context: Context) -> dict[str, Any]:
    """The fan-out of ``wf_map_items`` no-op children and its fan-in, on its own cluster."""
    items = context.sizes.wf_map_items
    async with context.cluster("workflows-map", agents=MAP_AGENTS, slots=MAP_SLOTS) as c:
        await _ended(c.http, (await _submit(c.http, fan_out(5)))["id"], 60)  # warm-up
        meter = CpuMeter({"server": c.server.process, **{a.name: a for a in c.agents}})
        load = machine_load()
        meter.start()
        started, submitted_at = time.monotonic(), time.time()
        created = await _submit(c.http, fan_out(items))
        fan_in = created["steps"][-1]["task"]["id"]
        deadline = started + 60 + items / 50
        while fan_in not in c.ledger.first_starts():
            if time.monotonic() > deadline:
                raise ScenarioFailed(f"the fan-in did not start within {deadline - started:g} s")
            await asyncio.sleep(0.05)
        done = await _ended(c.http, created["id"], 60)
        cpu = meter.stop()
        if done["status"] != "succeeded":
            raise ScenarioFailed(f"the fan-out ended {done['status']}")
        root = done["steps"][0]["task"]["result"]
        children = [s for s in done["steps"] if s.get("map_of") == "each"]
        if len(children) != items or not isinstance(root, list) or len(root) != items:
            raise ScenarioFailed(f"{len(children)} children for {items} items")
        span = c.ledger.first_starts()[fan_in].at - float(root[0])
        total = float(done["steps"][-1]["task"]["result"]) - submitted_at
        steps = items + 2  # the root, the children, the fan-in (the mapped step never runs)
        result = {
            "items": items,
            "agents": MAP_AGENTS,
            "slots_per_agent": MAP_SLOTS,
            "root_end_to_fan_in_start_seconds": round(span, 3),
            "children_per_second": round(items / span, 1),
            "total_seconds": round(total, 3),  # submit call -> the fan-in handler's end
            "total_steps_per_second": round(steps / total, 1),
            "cpu_percent": cpu,
            "load_average_1m_before": round(load, 2),
        }
        context.log(
            f"  fan-out {items}: {result['children_per_second']} children/s,"
            f" total {result['total_seconds']} s"
        )
        return result


async def run(context: Context) -> dict[str, Any]:
    sizes = context.sizes
    steps = sizes.wf_chain_steps
    result: dict[str, Any] = {"chain_steps": steps}
    async with context.cluster("workflows", agents=1, slots=10) as c:
        await _ended(c.http, (await _submit(c.http, chain(5, "bench-chain")))["id"], 60)  # warm
        started = time.monotonic()
        created = await _submit(c.http, chain(steps, "bench-chain"))
        # The ledger (a file) says when the last step started: polling the 1,000-step
        # workflow meanwhile would load the server being measured.
        last = created["steps"][-1]["task"]["id"]
        deadline = started + 30 + steps * 0.5
        while last not in c.ledger.first_starts():
            if time.monotonic() > deadline:
                raise ScenarioFailed(f"the chain's last step did not start within {steps} links")
            await asyncio.sleep(0.05)
        done = await _ended(c.http, created["id"], 30)
        wall = time.monotonic() - started
        if done["status"] != "succeeded":
            raise ScenarioFailed(f"the chain ended {done['status']}")
        starts = c.ledger.first_starts()
        links = []
        for parent, child in zip(done["steps"], done["steps"][1:], strict=False):
            start = starts.get(child["task"]["id"])
            ended = parent["task"]["result"]
            if start is not None and isinstance(ended, int | float):
                links.append(start.at - float(ended))
        if len(links) != steps - 1:
            raise ScenarioFailed(f"{len(links)} of {steps - 1} links measured")
        result["chain"] = {
            "step_to_step": summary_ms(links),
            "wall_seconds": round(wall, 3),
            "steps_per_second": round(steps / wall, 1),
        }
        context.log(f"  chain p50 {result['chain']['step_to_step'].get('p50_ms')} ms")

        document = chain(CREATE_STEPS, "bench-not-run")
        await _submit(c.http, document)  # warm-up
        timings = []
        for _ in range(sizes.wf_create_repeats):
            before = time.perf_counter()
            await _submit(c.http, document)
            timings.append(time.perf_counter() - before)
        result["create_100"] = {"steps": CREATE_STEPS, "request": summary_ms(timings)}
        context.log(f"  create 100 steps p50 {result['create_100']['request'].get('p50_ms')} ms")
    result["fan_out"] = await run_fan_out(context)
    return result
