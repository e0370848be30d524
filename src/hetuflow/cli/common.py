"""What every ``hetuflow-server`` client command shares: its options, its output, its errors.

A client command takes ``--server`` (``$HETUFLOW_SERVER``), ``--token`` (``$HETUFLOW_TOKEN``)
and ``--json``; prints Rich tables for people or JSON for scripts; and on failure prints one
line ``error: …`` to stderr and exits non-zero:

- 1: the server refused the request (not found, conflict, invalid input, …);
- 2: bad command-line input (invalid ``--payload`` JSON, bad option value, bad config);
- 3: the server could not be reached.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from hetuflow.client import (
    DEFAULT_SERVER,
    SERVER_ENV,
    TOKEN_ENV,
    Client,
    ClientError,
    ServerUnreachable,
)

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "show_default": True}
"""Both commands and every subcommand: ``-h`` as well as ``--help``; help shows defaults."""

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

F = TypeVar("F", bound=Callable[..., Any])


def stdout() -> Console:
    """Rich output as wide as the terminal (or ``$COLUMNS``); when piped without
    ``$COLUMNS``, wide enough that tables never squeeze."""
    columns = os.environ.get("COLUMNS", "")
    wide = None if sys.stdout.isatty() or columns.isdigit() else 240
    return Console(highlight=False, width=wide)


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(code)


@contextmanager
def client_errors(server: str) -> Iterator[None]:
    """Turn client errors into a one-line message and an exit status."""
    try:
        yield
    except ServerUnreachable as error:
        fail(
            f"{error.message}; is `hetuflow-server start` running there?"
            f" (set --server or ${SERVER_ENV})",
            EXIT_UNREACHABLE,
        )
    except ClientError as error:
        if error.status is None:
            fail(error.message, EXIT_UNREACHABLE)
        fail(error.message)  # the server's message names the field already


@dataclass(frozen=True, slots=True)
class Cli:
    """Handed to every client command: the client and how to print."""

    client: Client
    as_json: bool

    def emit_json(self, value: Any) -> None:
        click.echo(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False))


def to_jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: to_jsonable(item) for key, item in value.items()}
    return value


def client_command(func: F) -> F:
    """Add ``--server``, ``--token`` and ``--json`` and pass a ``Cli`` as ``cli``."""

    @click.option(
        "--server",
        envvar=SERVER_ENV,
        default=DEFAULT_SERVER,
        show_default=True,
        help=f"URL of the hetuflow server (env {SERVER_ENV}).",
    )
    @click.option("--token", envvar=TOKEN_ENV, default=None, help=f"API token (env {TOKEN_ENV}).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
    @functools.wraps(func)
    def wrapper(*args: Any, server: str, token: str | None, as_json: bool, **kwargs: Any) -> Any:
        with client_errors(server), Client(server, token=token) as client:
            return func(*args, cli=Cli(client, as_json), **kwargs)

    return wrapper  # type: ignore[return-value]


JSON_OPTION_HELP = "a JSON object, @FILE to read it from a file, or - for standard input"


def read_option_text(value: str, option: str) -> tuple[str, str]:
    """An option's text and where it came from: ``@path`` reads the file, ``-`` standard
    input, anything else is the text itself."""
    if value == "-":
        return sys.stdin.read(), f"{option} - (standard input)"
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
        try:
            return path.read_text(encoding="utf-8"), f"{option} {value}"
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            fail(f"{option} {value}: cannot read {path}: {reason}", EXIT_USAGE)
    return value, option


def parse_json_object(value: str, option: str) -> dict[str, Any]:
    """``--payload '{"data": "test"}'`` (or ``@file.json``, or ``-`` for stdin) -> dict; a
    readable error for anything else."""
    value, option = read_option_text(value, option)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        fail(
            f"{option} is not valid JSON: {error.msg} (line {error.lineno} column {error.colno})",
            EXIT_USAGE,
        )
    if not isinstance(parsed, dict):
        fail(f'{option} must be a JSON object like \'{{"key": "value"}}\'', EXIT_USAGE)
    return parsed


def parse_datetime(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option} must be an ISO-8601 date-time like 2025-01-31T12:00:00Z", EXIT_USAGE)
    if parsed.tzinfo is None:
        fail(f"{option} needs a UTC offset, e.g. 2025-01-31T12:00:00Z or +08:00", EXIT_USAGE)
    return parsed


def when(value: datetime | None) -> str:
    """A timestamp for tables: UTC, to the second."""
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%SZ")


STATUS_STYLES = {
    "waiting": "dim yellow",
    "pending": "yellow",
    "dispatched": "cyan",
    "running": "blue",
    "cancelling": "magenta",
    "succeeded": "green",
    "failed": "red",
    "timed_out": "red",
    "quarantined": "bold red",
    "delivered": "green",
    "given_up": "red",
    "cancelled": "dim",
    "skipped": "dim",
    "online": "green",
    "offline": "dim",
    "draining": "yellow",
}


def styled(status: str) -> str:
    style = STATUS_STYLES.get(status)
    return f"[{style}]{status}[/{style}]" if style else status


UNWRAPPED = frozenset({"ID", "CREATED", "DISPATCHED", "FINISHED", "LAST HEARTBEAT", "TICK"})
"""Columns kept on one line when a narrow terminal makes a table wrap: short ids, times."""


def table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], *, title: str | None = None
) -> Table:
    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold", no_wrap=column in UNWRAPPED, min_width=len(column))
    for row in rows:
        grid.add_row(*row)
    return grid


def details(pairs: Sequence[tuple[str, str]], *, title: str | None = None) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.title = title
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in pairs:
        grid.add_row(key, value)
    return grid
