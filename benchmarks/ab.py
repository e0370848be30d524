"""A/B of one producer mode: a tree before a change and this tree, run alternately.

``python -m benchmarks.ab --before /tmp/base --db postgres --mode sync --tasks 2000 --pairs 4``

``--before`` is another checkout of the repository (e.g. ``git archive <commit> | tar -x -C
/tmp/base``). Each run is a process of its own with ``PYTHONPATH=<tree>/src:<tree>`` (that
tree's ``hetuflow`` and ``benchmarks``), which the server and agent it starts inherit, on a
fresh cluster (one agent with 8 slots unless ``--slots`` says otherwise, fresh database), 300
warm-up submits, then
``producer.measure``. Runs alternate, before first, so a machine whose speed drifts over
minutes weighs on both sides alike. One JSON line per run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import producer
from benchmarks.suite import MODES, Context

HERE = Path(__file__).resolve().parent.parent
WARMUP = 300


async def _one(db: str, mode: str, tasks: int, slots: int) -> dict[str, Any]:
    context = Context(db, MODES["quick"], Path(tempfile.mkdtemp(prefix="hetuflow-ab-")))
    async with context.cluster("ab", agents=1, slots=slots) as cluster:
        await producer.measure(cluster, "sync", WARMUP)
        result = await producer.measure(cluster, mode, tasks)
    return {
        "db": db,
        "mode": mode,
        "p50_ms": result["submit"]["p50_ms"],
        "p99_ms": result["submit"]["p99_ms"],
        "tasks_per_second": result["tasks_per_second"],
        "cpu_percent": result["cpu_percent"],
    }


def _run_in(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}:{tree}"}
    # This file, with the tree's ``benchmarks`` and ``hetuflow`` (the tree before may not
    # have this file): the script's own directory comes first on sys.path, not its parent.
    argv = [sys.executable, str(Path(__file__).resolve()), "--one", "--db", args.db]
    argv += ["--mode", args.mode, "--tasks", str(args.tasks), "--slots", str(args.slots)]
    done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__)
    parser.add_argument("--before", type=Path, help="the other tree (a checkout)")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--mode", choices=["sync", "async", "threads"], default="sync")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument(
        "--slots", type=int, default=producer.SLOTS, help="the agent's slots (1: mostly busy)"
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(_one(args.db, args.mode, args.tasks, args.slots))))
        return
    if args.before is None:
        parser.error("--before is required")
    for _ in range(args.pairs):
        for label, tree in (("before", args.before.resolve()), ("after", HERE)):
            print(json.dumps({"tree": label, **_run_in(tree, args)}), flush=True)


if __name__ == "__main__":
    main()
