"""The retry options of create-task, dispatch-task and create-cron-job (docs/cli.md): the
backoff, its cap and jitter, and the failure kinds retried (docs/guarantees.md#retries)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from hetuflow.cli.common import EXIT_USAGE, fail
from hetuflow.cli.options import MultiValueOption
from hetuflow.models import FailureKind

KINDS = [kind.value for kind in FailureKind]


def retry_options(func: Any) -> Any:
    """Add --retry-backoff, --retry-backoff-max, --retry-jitter and --retry-on (use with
    ``MultiValueCommand``)."""
    options = [
        click.option(
            "--retry-backoff",
            "retry_backoff_seconds",
            type=click.FloatRange(min=0),
            help="Seconds before the first retry, doubled for each next one"
            " (default [scheduler] retry_interval_seconds).",
        ),
        click.option(
            "--retry-backoff-max",
            "retry_backoff_max_seconds",
            type=click.FloatRange(min=0),
            help="No retry waits longer than this many seconds (default 3600).",
        ),
        click.option(
            "--retry-jitter",
            type=click.FloatRange(0, 1),
            help="Random fraction of each backoff, 0..1 (1: anywhere from 0 to the delay).",
        ),
        click.option(
            "--retry-on",
            cls=MultiValueOption,
            help=f"Failure kinds retried (space-separated; default all): {', '.join(KINDS)}."
            " Another kind ends the task at once.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def retry_fields(options: Mapping[str, Any]) -> dict[str, Any]:
    """The API fields of the retry options given (left out: the server's defaults)."""
    unknown = [kind for kind in options["retry_on"] if kind not in KINDS]
    if unknown:
        fail(f"--retry-on {unknown[0]!r} is not one of {', '.join(KINDS)}", EXIT_USAGE)
    fields = {
        key: options[key]
        for key in ("retry_backoff_seconds", "retry_backoff_max_seconds", "retry_jitter")
        if options[key] is not None
    }
    if options["retry_on"]:
        fields["retry_on"] = list(dict.fromkeys(options["retry_on"]))
    return fields
