"""Bulk task commands of ``hetuflow-server``: retry-tasks (the dead letters: --final),
cancel-tasks, and replay-task (run a finished task again, succeeded ones too)."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape

from hetuflow.cli import ids
from hetuflow.cli.common import (
    EXIT_USAGE,
    Cli,
    client_command,
    fail,
    parse_datetime,
    stdout,
    styled,
    table,
)
from hetuflow.cli.ids import short
from hetuflow.cli.options import MultiValueCommand, MultiValueOption
from hetuflow.client import BulkResult
from hetuflow.models import TaskStatus

STATUSES = [status.value for status in TaskStatus]


def register(group: click.Group) -> None:
    for command in (retry_tasks, cancel_tasks, replay_task):
        group.add_command(command)


def _selection(func: Any) -> Any:
    """TASK_IDS, or the filters of list-tasks."""
    options = [
        click.argument("task_ids", nargs=-1),
        click.option(
            "--status",
            cls=MultiValueOption,
            help=f"Only these statuses (space-separated): {', '.join(STATUSES)}.",
        ),
        click.option("--task-type", help="Only this task type."),
        click.option("--agent", "agent_id", help="Only tasks held by this agent (name or id)."),
        click.option("--cron-job", "cron_job_id", help="Only tasks of this cron job (name or id)."),
        click.option("--created-after", help="ISO-8601 date-time."),
        click.option("--created-before", help="ISO-8601 date-time."),
        click.option("--search", "-q", "text", help="Text in the name, payload, result or error."),
        click.option(
            "--final",
            is_flag=True,
            help="Only dead letters: failed, timed out or quarantined, no retry left, not"
            " retried or replayed yet.",
        ),
        click.option("--concurrency-key", help="Only tasks with this concurrency key."),
        click.option("--rate-limit", help="Only tasks that name this rate limit."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _act(
    cli: Cli, action: str, task_ids: tuple[str, ...], status: tuple[str, ...], **f: Any
) -> None:
    unknown = [item for item in status if item not in STATUSES]
    if unknown:
        fail(f"--status {unknown[0]!r} is not one of {', '.join(STATUSES)}", EXIT_USAGE)
    filters = {
        "status": list(status) or None,
        "task_type": f["task_type"],
        "agent_id": None if f["agent_id"] is None else ids.agent_id(cli, f["agent_id"]),
        "cron_job_id": None if f["cron_job_id"] is None else ids.cron_job_id(cli, f["cron_job_id"]),
        "created_after": parse_datetime(f["created_after"], "--created-after"),
        "created_before": parse_datetime(f["created_before"], "--created-before"),
        "q": f["text"],
        "final": f["final"] or None,
        "concurrency_key": f["concurrency_key"],
        "rate_limit": f["rate_limit"],
    }
    chosen = {key: value for key, value in filters.items() if value is not None}
    if task_ids and chosen:
        fail("give TASK_IDS or filters, not both", EXIT_USAGE)
    if not task_ids and not chosen:
        fail("give TASK_IDS or at least one filter (e.g. --final)", EXIT_USAGE)
    method = cli.client.bulk_retry if action == "retry" else cli.client.bulk_cancel
    if task_ids:
        result = method([ids.task_id(cli, task_id) for task_id in task_ids])
    else:
        result = method(**chosen)
    _print(cli, action, result)


def _print(cli: Cli, action: str, result: BulkResult) -> None:
    if cli.as_json:
        cli.emit_json(result)
        return
    rows = [
        [
            short(item.id),
            "ok" if item.ok else "[red]skipped[/red]",
            ""
            if item.task is None
            else (short(item.task.id) if action == "retry" else "")
            + " "
            + styled(item.task.status),
            "" if item.error is None else escape(f"{item.error.code}: {item.error.message}"),
        ]
        for item in result.items
    ]
    done = "retried" if action == "retry" else "cancelled"
    title = f"{result.succeeded} {done}, {result.failed} skipped, of {result.matched} matching"
    console = stdout()
    console.print(
        table(
            ["TASK", "OUTCOME", "NEW TASK" if action == "retry" else "NOW", "WHY"],
            rows,
            title=title,
        )
    )
    if result.truncated:
        console.print("More matched: run the command again for the rest.", highlight=False)


@click.command("retry-tasks", cls=MultiValueCommand)
@_selection
@client_command
def retry_tasks(cli: Cli, task_ids: tuple[str, ...], status: tuple[str, ...], **f: Any) -> None:
    """Retry many tasks at once, each as retry-task would (a new task each): TASK_IDS, or
    every task matching the filters, at most [server] max_batch_tasks per run.

    \b
    Retry every dead letter (safe to repeat: a retried task leaves the list):
    hetuflow-server retry-tasks --final
    """
    _act(cli, "retry", task_ids, status, **f)


@click.command("cancel-tasks", cls=MultiValueCommand)
@_selection
@client_command
def cancel_tasks(cli: Cli, task_ids: tuple[str, ...], status: tuple[str, ...], **f: Any) -> None:
    """Cancel many tasks at once, each as cancel-task would: TASK_IDS, or every unfinished
    task matching the filters, at most [server] max_batch_tasks per run.

    \b
    hetuflow-server cancel-tasks --status pending --concurrency-key customer:42
    """
    _act(cli, "cancel", task_ids, status, **f)


@click.command("replay-task")
@click.argument("task_id")
@client_command
def replay_task(cli: Cli, task_id: str) -> None:
    """Run a finished task (succeeded ones too) again as a new task with the same spec; its
    replay_of names the original. TASK_ID is its id or a unique prefix."""
    task = cli.client.replay_task(ids.task_id(cli, task_id))
    if cli.as_json:
        cli.emit_json(task)
    else:
        stdout().print(f"created task [bold]{task.id}[/bold]: {styled(task.status)}")
