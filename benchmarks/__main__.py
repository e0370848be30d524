"""``python -m benchmarks run [--db sqlite|postgres|both] [--quick|--smoke] [--only a,b]
[--json out.json] [--profile DIR] [--workdir DIR]``

Prints progress, then a table of every number next to its target, and writes the full results
as JSON (``--json``; ``-`` for stdout). Exit status 1 when a scenario failed to measure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import raise_fd_limit
from benchmarks.report import machine, markdown, print_table, verdicts, versions
from benchmarks.suite import MODES, ON_DEMAND, SCENARIOS, run_database


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the suite")
    run.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    size = run.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller runs (about 3 min per db)")
    size.add_argument("--smoke", action="store_true", help="tiny runs: checks the suite works")
    run.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated: {','.join(SCENARIOS)} (the default), {','.join(ON_DEMAND)}"
        " (only when named: 1, 2, 3 server nodes on one PostgreSQL)",
    )
    run.add_argument("--json", dest="json_path", help="write results here ('-': stdout)")
    run.add_argument("--profile", type=Path, help="py-spy the server under throughput load")
    run.add_argument("--workdir", type=Path, help="keep logs and databases here")
    merge = commands.add_parser("markdown", help="the table of result files, in Markdown")
    merge.add_argument("files", nargs="+", type=Path, help="--json outputs of earlier runs")
    return parser


async def _run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - {*SCENARIOS, *ON_DEMAND})
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}")
    databases = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report: dict[str, Any] = {
        "suite": {
            "mode": mode,
            "scenarios": only,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "machine": machine(),
        "versions": versions(),
        "results": {},
    }
    started = time.monotonic()
    for db in databases:
        report["results"][db] = await run_database(
            db, only, MODES[mode], workdir, args.profile, log
        )
    report["suite"]["seconds"] = round(time.monotonic() - started, 1)
    report["verdicts"] = verdicts(report["results"])
    return report


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "markdown":
        results: dict[str, Any] = {}
        for path in args.files:
            results.update(json.loads(path.read_text())["results"])
        print(markdown(results))
        return 0
    raise_fd_limit()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = asyncio.run(_run(args, args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="hetuflow-bench-") as scratch:
            report = asyncio.run(_run(args, Path(scratch)))
    text = json.dumps(report, indent=2, default=str)
    if args.json_path == "-":
        print(text)
    else:
        print_table(report["results"])
        if args.json_path:
            Path(args.json_path).write_text(text + "\n")
    failed = any(
        "error" in s for run in report["results"].values() for s in run["scenarios"].values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
