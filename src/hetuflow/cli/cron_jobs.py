"""Cron job commands of ``hetuflow-server``: create-cron-job, list-cron-jobs, enable-cron-job,
disable-cron-job, trigger-cron-job, delete-cron-job, next-fires, cron-job-ticks.

Each is a client of the REST API (``/api/cron-jobs``) through ``hetuflow.client.Client``;
``--json`` prints what the server answered, for scripts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
from rich.markup import escape

from hetuflow.cli import ids
from hetuflow.cli.common import (
    EXIT_USAGE,
    JSON_OPTION_HELP,
    Cli,
    client_command,
    details,
    fail,
    parse_json_object,
    stdout,
    styled,
    table,
    when,
)
from hetuflow.cli.flow_options import flow_fields, flow_options
from hetuflow.cli.ids import short
from hetuflow.cli.options import MultiValueCommand, MultiValueOption
from hetuflow.cli.retry_options import retry_fields, retry_options
from hetuflow.cli.workflows import read_document
from hetuflow.client import CronJob

PRIORITIES = ["low", "normal", "high", "critical"]
MISFIRE_POLICIES = ["skip", "run_once", "catch_up"]
OVERLAP_POLICIES = ["allow", "skip", "queue", "cancel_previous"]
CONCURRENCY_STRATEGIES = ["queue", "cancel_newest", "cancel_in_progress"]
TICK_STYLES = {"fired": "[green]fired[/green]", "skipped": "[yellow]skipped[/yellow]"}


def register(group: click.Group) -> None:
    for command in (
        create_cron_job,
        list_cron_jobs,
        enable_cron_job,
        disable_cron_job,
        trigger_cron_job,
        delete_cron_job,
        next_fires,
        cron_job_ticks,
    ):
        group.add_command(command)


def _extra(job: CronJob, key: str) -> Any:
    return (job.model_extra or {}).get(key)


def _local(value: datetime | str | None, timezone: str) -> str:
    """A UTC timestamp, and the same instant in the job's time zone when that is not UTC."""
    if value is None:
        return "-"
    instant = (
        datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    )
    text = when(instant)
    if timezone != "UTC":
        try:
            local = instant.astimezone(ZoneInfo(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            return text
        text += f" ({local.strftime('%Y-%m-%d %H:%M:%S %Z')})"
    return text


def _what(job: CronJob) -> tuple[str, str]:
    """What each tick makes: a task type, or a workflow (by its name)."""
    if job.workflow is not None:
        return "workflow", str(job.workflow.get("name", "-"))
    return "task type", job.task_type or "-"


def _flow(job: CronJob) -> list[tuple[str, str]]:
    """The key and rate limits its tasks get, when it has them."""
    rows = []
    if job.concurrency_key is not None:
        limit = job.max_concurrent_per_key
        rows.append(
            ("concurrency key", escape(job.concurrency_key) + (f" (≤ {limit})" if limit else ""))
        )
        if job.concurrency_strategy != "queue":
            rows.append(("concurrency strategy", escape(job.concurrency_strategy)))
    if job.rate_limits:
        uses = ", ".join(f"{use.name}:{use.units}" for use in job.rate_limits)
        rows.append(("rate limits", escape(uses)))
    return rows


def _print_job(cli: Cli, job: CronJob, verb: str) -> None:
    if cli.as_json:
        cli.emit_json(job)
        return
    state = "enabled" if job.enabled else "[red]disabled[/red]"
    pairs = [
        ("id", str(job.id)),
        ("schedule", f"{escape(job.cron_expression)} ({escape(job.timezone)})"),
        (_what(job)[0], escape(_what(job)[1])),
        ("state", state),
        ("next fire", _local(job.next_fire_at, job.timezone)),
        ("misfire", str(_extra(job, "misfire_policy") or "-")),
        ("overlap", str(_extra(job, "overlap_policy") or "-")),
    ]
    if job.webhook_url is not None:
        pairs.append(("webhook", escape(job.webhook_url)))
    stdout().print(
        details(
            [*pairs, *_flow(job)],
            title=f"{verb} cron job [bold]{escape(job.name)}[/bold]",
        )
    )


@click.command("create-cron-job", cls=MultiValueCommand)
@click.option("--name", required=True, help="Unique name of the cron job.")
@click.option(
    "--cron-expression",
    required=True,
    help='5 fields ("0 2 * * *"), 6 with leading seconds, or @hourly/@daily/@weekly/...',
)
@click.option("--task-type", help="Task type of the tasks it creates (or --workflow-file).")
@click.option(
    "--workflow-file",
    help="Instead of --task-type: a workflow document (JSON, as create-workflow --file;"
    " '-' for standard input); each tick starts one such workflow.",
)
@click.option(
    "--payload", default="{}", show_default=True, help=f"For every task: {JSON_OPTION_HELP}."
)
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone.")
@click.option("--priority", type=click.Choice(PRIORITIES), default="normal", show_default=True)
@click.option("--capabilities", cls=MultiValueOption, help="Required capabilities: db ssd.")
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@click.option(
    "--misfire-policy",
    type=click.Choice(MISFIRE_POLICIES),
    default="run_once",
    show_default=True,
    help="Ticks missed while no server ran or the job was disabled.",
)
@click.option(
    "--catch-up-limit",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Most missed ticks run with --misfire-policy catch_up.",
)
@click.option(
    "--overlap-policy",
    type=click.Choice(OVERLAP_POLICIES),
    default="allow",
    show_default=True,
    help="A tick while the previous task is still pending or running.",
)
@click.option(
    "--start-deadline-seconds",
    type=click.FloatRange(min=0, min_open=True),
    help="Skip a tick whose task could only start later than this.",
)
@click.option("--timeout-seconds", type=click.FloatRange(min=0, min_open=True))
@click.option("--max-retries", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--webhook-url",
    help="Every task it creates POSTs its final status to this http(s) URL (docs/webhooks.md).",
)
@retry_options
@flow_options
@click.option(
    "--concurrency-strategy",
    type=click.Choice(CONCURRENCY_STRATEGIES),
    help="With --concurrency-key, when the key is at its limit as a task is created: queue"
    " (wait, the default), cancel_newest (the new task is created cancelled) or"
    " cancel_in_progress (the oldest tasks with the key are cancelled).",
)
@client_command
def create_cron_job(
    cli: Cli,
    name: str,
    cron_expression: str,
    task_type: str | None,
    workflow_file: str | None,
    payload: str,
    timezone: str,
    priority: str,
    capabilities: tuple[str, ...],
    disabled: bool,
    misfire_policy: str,
    catch_up_limit: int,
    overlap_policy: str,
    start_deadline_seconds: float | None,
    timeout_seconds: float | None,
    max_retries: int,
    webhook_url: str | None,
    concurrency_strategy: str | None,
    **options: Any,
) -> None:
    """Create a cron job (as POST /api/cron-jobs); the server checks the expression and
    the rate limits' names."""
    fields: dict[str, Any] = {
        "enabled": not disabled,
        "timezone": timezone,
        "priority": priority,
        "required_capabilities": list(capabilities),
        "misfire_policy": misfire_policy,
        "catch_up_limit": catch_up_limit,
        "overlap_policy": overlap_policy,
        "max_retries": max_retries,
        **retry_fields(options),
        **flow_fields(options),
    }
    if start_deadline_seconds is not None:
        fields["start_deadline_seconds"] = start_deadline_seconds
    if timeout_seconds is not None:
        fields["timeout_seconds"] = timeout_seconds
    if webhook_url is not None:
        fields["webhook_url"] = webhook_url
    if concurrency_strategy is not None:
        if "concurrency_key" not in fields:
            fail("--concurrency-strategy needs --concurrency-key", EXIT_USAGE)
        fields["concurrency_strategy"] = concurrency_strategy
    if (task_type is None) == (workflow_file is None):
        fail("give --task-type or --workflow-file (exactly one)", EXIT_USAGE)
    if workflow_file is not None:
        fields["workflow"] = read_document(workflow_file, "--workflow-file")
    job = cli.client.create_cron_job(
        name, cron_expression, task_type, parse_json_object(payload, "--payload"), **fields
    )
    _print_job(cli, job, "created")


@click.command("list-cron-jobs")
@client_command
def list_cron_jobs(cli: Cli) -> None:
    """List cron jobs: schedule, next and last fire, the last task's outcome."""
    jobs = cli.client.list_cron_jobs()
    if cli.as_json:
        cli.emit_json(jobs)
        return
    rows = [
        [
            escape(job.name),
            short(job.id),
            f"{escape(job.cron_expression)}\n[dim]{escape(job.timezone)}[/dim]",
            escape(_what(job)[1]),
            "yes" if job.enabled else "[red]no[/red]",
            _local(job.next_fire_at, job.timezone) if job.enabled else "-",
            when(job.last_fire_at),
            styled(str(_extra(job, "last_outcome") or "-")),
        ]
        for job in jobs
    ]
    stdout().print(
        table(
            ["NAME", "ID", "SCHEDULE", "TASK TYPE", "ENABLED", "NEXT FIRE", "LAST FIRE", "LAST"],
            rows,
            title=f"{len(jobs)} cron job{'s' if len(jobs) != 1 else ''}",
        )
    )


@click.command("enable-cron-job")
@click.argument("cron_job_id")
@client_command
def enable_cron_job(cli: Cli, cron_job_id: str) -> None:
    """Enable a cron job; ticks missed while disabled follow its misfire policy."""
    cron_job_id = ids.cron_job_id(cli, cron_job_id)
    _print_job(cli, cli.client.enable_cron_job(cron_job_id), "enabled")


@click.command("disable-cron-job")
@click.argument("cron_job_id")
@client_command
def disable_cron_job(cli: Cli, cron_job_id: str) -> None:
    """Disable a cron job: it fires no more until enabled."""
    cron_job_id = ids.cron_job_id(cli, cron_job_id)
    _print_job(cli, cli.client.disable_cron_job(cron_job_id), "disabled")


@click.command("trigger-cron-job")
@click.argument("cron_job_id")
@client_command
def trigger_cron_job(cli: Cli, cron_job_id: str) -> None:
    """Run a cron job now: create one task from it, outside its schedule."""
    cron_job_id = ids.cron_job_id(cli, cron_job_id)
    task = cli.client.trigger_cron_job(cron_job_id)
    if cli.as_json:
        cli.emit_json(task)
    else:
        stdout().print(
            f"created task [bold]{escape(str(task['name']))}[/bold] {task['id']}"
            f" ({styled(str(task['status']))})"
        )


@click.command("delete-cron-job")
@click.argument("cron_job_id")
@client_command
def delete_cron_job(cli: Cli, cron_job_id: str) -> None:
    """Delete a cron job and its tick history; tasks it created are kept."""
    cron_job_id = ids.cron_job_id(cli, cron_job_id)
    cli.client.delete_cron_job(cron_job_id)
    if cli.as_json:
        cli.emit_json({"deleted": cron_job_id})
    else:
        stdout().print(f"deleted cron job {escape(cron_job_id)}")


@click.command("next-fires")
@click.argument("cron_job_id", required=False)
@click.option("--expression", help="Preview an expression instead of a saved cron job.")
@click.option("--timezone", help="Time zone of --expression (default UTC).")
@click.option("--count", type=click.IntRange(1, 100), default=5, show_default=True)
@client_command
def next_fires(
    cli: Cli, cron_job_id: str | None, expression: str | None, timezone: str | None, count: int
) -> None:
    """Next fire times of a cron job (ID) or of an expression (--expression, --timezone)."""
    if (cron_job_id is None) == (expression is None):
        fail("give a cron job ID or --expression, not both", EXIT_USAGE)
    if cron_job_id is not None:
        if timezone is not None:
            fail("--timezone goes with --expression; a cron job has its own", EXIT_USAGE)
        answer = cli.client.cron_job_next_fires(ids.cron_job_id(cli, cron_job_id), count=count)
    else:
        assert expression is not None
        answer = cli.client.preview_cron(expression, timezone=timezone or "UTC", count=count)
    if cli.as_json:
        cli.emit_json(answer)
        return
    zone = str(answer["timezone"])
    rows = [[str(index), _local(fire, zone)] for index, fire in enumerate(answer["fire_times"], 1)]
    title = f"next fires of {escape(str(answer['cron_expression']))} ({escape(zone)})"
    stdout().print(
        table(["#", "FIRES AT (UTC)" + ("" if zone == "UTC" else " (LOCAL)")], rows, title=title)
    )


@click.command("cron-job-ticks")
@click.argument("cron_job_id")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@client_command
def cron_job_ticks(cli: Cli, cron_job_id: str, limit: int) -> None:
    """Recent ticks of a cron job, newest first: fired (with its task) or skipped (and why)."""
    cron_job_id = ids.cron_job_id(cli, cron_job_id)
    answer = cli.client.cron_job_ticks(cron_job_id, limit=limit)
    if cli.as_json:
        cli.emit_json(answer)
        return
    rows = [
        [
            _local(tick["tick_at"], "UTC"),
            TICK_STYLES.get(tick["outcome"], tick["outcome"]),
            short(tick["task_id"]),
            escape(str(tick["reason"] or "")),
        ]
        for tick in answer["items"]
    ]
    stdout().print(table(["TICK", "OUTCOME", "TASK", "REASON"], rows, title="ticks"))
