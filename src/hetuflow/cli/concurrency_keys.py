"""Concurrency key commands of ``hetuflow-server``: list-concurrency-keys (docs/cli.md); tasks
carry a key with ``create-task --concurrency-key``."""

from __future__ import annotations

import click
from rich.markup import escape

from hetuflow.cli.common import Cli, client_command, stdout, table


def register(group: click.Group) -> None:
    group.add_command(list_concurrency_keys)


@click.command("list-concurrency-keys")
@click.option("--prefix", help="Only keys that start with this text (e.g. customer:).")
@click.option("--key", help="Only this key.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@client_command
def list_concurrency_keys(cli: Cli, prefix: str | None, key: str | None, limit: int) -> None:
    """List the concurrency keys in use (with unfinished tasks), busiest first: active tasks
    of the limit, and the due tasks the limit holds back (WAITING).

    \b
    The tasks waiting on one key:
    hetuflow-server list-tasks --concurrency-key customer:42 --status pending
    """
    keys = cli.client.list_concurrency_keys(prefix=prefix, key=key, limit=limit)
    if cli.as_json:
        cli.emit_json(keys)
        return
    rows = [
        [
            escape(item.key),
            f"{item.active} / {item.limit}",
            str(item.waiting),
            str(item.pending),
            "at limit" if item.at_limit else "",
        ]
        for item in keys
    ]
    stdout().print(
        table(
            ["KEY", "ACTIVE", "WAITING", "PENDING", ""],
            rows,
            title=f"{len(keys)} concurrency key{'s' if len(keys) != 1 else ''} in use",
        )
    )
