"""Rate limit commands of ``hetuflow-server``: create-rate-limit, list-rate-limits,
delete-rate-limit (docs/cli.md); tasks name limits with ``create-task --rate-limit``."""

from __future__ import annotations

import click
from rich.markup import escape

from hetuflow.cli.common import Cli, client_command, stdout, table, when


def register(group: click.Group) -> None:
    for command in (create_rate_limit, list_rate_limits, delete_rate_limit):
        group.add_command(command)


@click.command("create-rate-limit")
@click.option("--name", required=True, help="Unique name; tasks name it (--rate-limit NAME).")
@click.option("--limit", type=click.IntRange(min=1), required=True, help="Units per window.")
@click.option(
    "--per-seconds",
    type=click.FloatRange(min=0, min_open=True),
    required=True,
    help="The window's length in seconds.",
)
@client_command
def create_rate_limit(cli: Cli, name: str, limit: int, per_seconds: float) -> None:
    """Create a rate limit: at most LIMIT units dispatched in any window of PER-SECONDS,
    across all nodes.

    \b
    hetuflow-server create-rate-limit --name crm-api --limit 100 --per-seconds 60
    """
    made = cli.client.create_rate_limit(name, limit, per_seconds)
    if cli.as_json:
        cli.emit_json(made)
    else:
        stdout().print(
            f"created rate limit [bold]{escape(made.name)}[/bold]:"
            f" {made.limit} per {made.per_seconds:g} s"
        )


@click.command("list-rate-limits")
@client_command
def list_rate_limits(cli: Cli) -> None:
    """List rate limits with the units used in the current window, when the next frees, and
    the due tasks each holds back (WAITING: list-tasks --rate-limit NAME --status pending)."""
    limits = cli.client.list_rate_limits()
    if cli.as_json:
        cli.emit_json(limits)
        return
    rows = [
        [
            escape(limit.name),
            f"{limit.limit} / {limit.per_seconds:g} s",
            str(limit.used),
            str(limit.waiting),
            when(limit.next_free_at) if limit.next_free_at else "-",
        ]
        for limit in limits
    ]
    stdout().print(
        table(
            ["NAME", "LIMIT", "USED", "WAITING", "NEXT FREE"],
            rows,
            title=f"{len(limits)} rate limit{'s' if len(limits) != 1 else ''}",
        )
    )


@click.command("delete-rate-limit")
@click.argument("name")
@client_command
def delete_rate_limit(cli: Cli, name: str) -> None:
    """Delete a rate limit; the tasks that named it are no longer held back by it."""
    cli.client.delete_rate_limit(name)
    if cli.as_json:
        cli.emit_json({"deleted": name})
    else:
        stdout().print(f"deleted rate limit {escape(name)}")
