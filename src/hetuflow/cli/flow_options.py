"""The flow-control options of create-task, dispatch-task and create-cron-job (docs/cli.md):
a concurrency key and its limit, and the rate limits spent (docs/guarantees.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from hetuflow.cli.common import EXIT_USAGE, fail
from hetuflow.cli.options import MultiValueOption


def flow_options(func: Any) -> Any:
    """Add --concurrency-key, --max-concurrent-per-key and --rate-limit (use with
    ``MultiValueCommand``)."""
    options = [
        click.option(
            "--concurrency-key",
            help="At most --max-concurrent-per-key tasks with this key run at once, across all"
            " nodes (e.g. customer:42).",
        ),
        click.option(
            "--max-concurrent-per-key",
            type=click.IntRange(min=1),
            help="The key's limit (default: the [concurrency] limit of the task type, else 1).",
        ),
        click.option(
            "--rate-limit",
            "rate_limits",
            cls=MultiValueOption,
            help="Rate limits it spends from when dispatched, NAME or NAME:UNITS"
            " (space-separated; create-rate-limit makes one).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def flow_fields(options: Mapping[str, Any]) -> dict[str, Any]:
    """The API fields of the flow options given (left out: the server's defaults)."""
    if options["max_concurrent_per_key"] is not None and options["concurrency_key"] is None:
        fail("--max-concurrent-per-key needs --concurrency-key", EXIT_USAGE)
    fields: dict[str, Any] = {
        key: options[key]
        for key in ("concurrency_key", "max_concurrent_per_key")
        if options[key] is not None
    }
    if options["rate_limits"]:
        fields["rate_limits"] = rate_limits(options["rate_limits"])
    return fields


def rate_limits(given: tuple[str, ...]) -> list[dict[str, Any]]:
    """``--rate-limit NAME[:UNITS] …`` as the API's ``rate_limits``."""
    uses = []
    for item in given:
        name, _, units = item.rpartition(":") if ":" in item else (item, "", "1")
        if not name or not units.isdigit() or int(units) < 1:
            fail(f"--rate-limit {item!r} is not NAME or NAME:UNITS (UNITS ≥ 1)", EXIT_USAGE)
        uses.append({"name": name, "units": int(units)})
    return uses
