"""Task commands of ``hetuflow-server``: create-task, dispatch-task, list-tasks, show-task,
cancel-task, retry-task, logs. (Bulk ones and replay-task: ``hetuflow.cli.bulk``.)"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any
from uuid import UUID

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
    parse_datetime,
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
from hetuflow.client import LogLine, Task, WaitTimeout
from hetuflow.models import ConcurrencyStrategy, PendingReason, Priority, TaskStatus

PRIORITIES = click.Choice([priority.value for priority in Priority])
STATUSES = [status.value for status in TaskStatus]


def register(group: click.Group) -> None:
    for command in (
        create_task,
        dispatch_task,
        list_tasks,
        show_task,
        cancel_task,
        retry_task,
        logs,
    ):
        group.add_command(command)


def _task_options(func: Any) -> Any:
    """Options shared by create-task and dispatch-task."""
    options = [
        click.option("--name", help="Label for people (default: the task type)."),
        click.option("--task-type", required=True, help="Handler that runs it, e.g. shell."),
        click.option(
            "--priority", type=PRIORITIES, default="normal", show_default=True, help="Urgency."
        ),
        click.option(
            "--payload",
            default="{}",
            show_default=True,
            help=f"Given to the handler: {JSON_OPTION_HELP}.",
        ),
        click.option("--delay", type=click.FloatRange(min=0), help="Start no sooner than N s."),
        click.option("--scheduled-at", help="Start no sooner than this ISO-8601 time."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds."),
        click.option("--max-retries", type=click.IntRange(min=0), help="Retries after failure."),
        click.option("--idempotency-key", help="Return the existing task for a repeated key."),
        click.option(
            "--concurrency-strategy",
            type=click.Choice([strategy.value for strategy in ConcurrencyStrategy]),
            help="With --concurrency-key, when the key is at its limit: queue (wait, the"
            " default), cancel_newest (this task is created cancelled) or cancel_in_progress"
            " (the oldest tasks with the key are cancelled).",
        ),
        click.option(
            "--all-agents",
            is_flag=True,
            help="Broadcast: run it once on every agent online and matching now (not later "
            "ones); the task made is the parent, ending with the last run, its result "
            "per agent.",
        ),
        click.option(
            "--broadcast-policy",
            type=click.Choice(["all", "any"]),
            help="With --all-agents: succeed when every run succeeded (all, the default) or "
            "when one did (any).",
        ),
        click.option(
            "--webhook-url",
            help="POST its final status to this http(s) URL, signed with the server's"
            " [webhooks] secret, retried with backoff (docs/webhooks.md).",
        ),
        click.option(
            "--start-deadline",
            "start_deadline_seconds",
            type=click.FloatRange(min=0, min_open=True),
            help="With --all-agents: a run its agent has not started this many seconds after"
            " the task's start time ends failed (its agent away or busy); default: it waits.",
        ),
        click.option(
            "--wait", is_flag=True, help="Wait until it finishes; exit 1 unless it succeeded."
        ),
        click.option(
            "--wait-timeout",
            type=click.FloatRange(min=0),
            default=300,
            show_default=True,
            help="Seconds --wait waits; then exit 1 saying why the task still waits.",
        ),
    ]
    func = retry_options(func)  # listed after these
    func = flow_options(func)
    for option in reversed(options):
        func = option(func)
    return func


def _submit(cli: Cli, capabilities: tuple[str, ...], **options: Any) -> None:
    payload = parse_json_object(options["payload"], "--payload")
    scheduled_at = parse_datetime(options["scheduled_at"], "--scheduled-at")
    if scheduled_at is not None and options["delay"] is not None:
        fail("give --delay or --scheduled-at, not both", EXIT_USAGE)
    broadcast = bool(options["all_agents"])
    if options["broadcast_policy"] is not None and not broadcast:
        fail("--broadcast-policy needs --all-agents", EXIT_USAGE)
    if options["start_deadline_seconds"] is not None and not broadcast:
        fail("--start-deadline needs --all-agents", EXIT_USAGE)
    flow = flow_fields(options)
    if options["concurrency_strategy"] is not None and "concurrency_key" not in flow:
        fail("--concurrency-strategy needs --concurrency-key", EXIT_USAGE)
    task = cli.client.submit(
        options["task_type"],
        payload,
        name=options["name"],
        priority=options["priority"],
        required_capabilities=capabilities,
        scheduled_at=scheduled_at,
        delay_seconds=options["delay"],
        timeout_seconds=options["timeout"],
        max_retries=options["max_retries"],
        idempotency_key=options["idempotency_key"],
        **flow,
        concurrency_strategy=options["concurrency_strategy"],
        **retry_fields(options),
        dispatch="all" if broadcast else None,
        broadcast_policy=options["broadcast_policy"],
        webhook_url=options["webhook_url"],
        start_deadline_seconds=options["start_deadline_seconds"],
    )
    if broadcast and not cli.as_json:
        agents = [
            ids.agent_names(cli).get(str(c.pinned_agent_id), str(c.pinned_agent_id))
            for c in cli.client.children(task.id)
        ]
        stdout().print(
            f"broadcast to {len(agents)} agent{'s' if len(agents) != 1 else ''}: "
            + escape(", ".join(agents))
        )
    if options["wait"]:
        try:
            task = cli.client.wait(task.id, timeout_seconds=options["wait_timeout"])
        except WaitTimeout:
            fail(_still_waiting(cli, cli.client.get_task(task.id), options["wait_timeout"]))
    if cli.as_json:
        cli.emit_json(task)
    else:
        verb = "finished" if options["wait"] else "created"
        reason = f" ({task.pending_reason})" if task.pending_reason else ""
        stdout().print(f"{verb} task [bold]{task.id}[/bold]: {styled(task.status)}{reason}")
        if options["wait"] and task.error:
            stdout().print(f"error: {escape(task.error)}")
    if options["wait"] and task.status is not TaskStatus.SUCCEEDED:
        raise SystemExit(1)


@click.command("create-task", cls=MultiValueCommand)
@_task_options
@click.option(
    "--capabilities",
    cls=MultiValueOption,
    help="Capabilities the agent must have (space-separated).",
)
@client_command
def create_task(cli: Cli, capabilities: tuple[str, ...], **options: Any) -> None:
    """Create a task.

    \b
    hetuflow-server create-task --name "test-task" --task-type "data-processing" \\
        --priority high --payload '{"data": "test"}'
    """
    _submit(cli, capabilities, **options)


@click.command("dispatch-task", cls=MultiValueCommand)
@_task_options
@click.option(
    "--capabilities",
    cls=MultiValueOption,
    help="Capabilities the agent must have: --capabilities chrome headless.",
)
@client_command
def dispatch_task(cli: Cli, capabilities: tuple[str, ...], **options: Any) -> None:
    """Create a task that only an agent with every given capability may run.

    \b
    hetuflow-server dispatch-task --task-type "web-scraping" \\
        --payload '{"url": "https://example.com"}' --capabilities chrome headless
    """
    _submit(cli, capabilities, **options)


@click.command("list-tasks", cls=MultiValueCommand)
@click.option(
    "--status",
    cls=MultiValueOption,
    help=f"Only these statuses (space-separated): {', '.join(STATUSES)}.",
)
@click.option("--task-type", help="Only this task type.")
@click.option(
    "--agent", "agent_id", help="Only tasks held (or last held) by this agent (name or id)."
)
@click.option("--cron-job", "cron_job_id", help="Only tasks fired by this cron job (name or id).")
@click.option("--created-after", help="ISO-8601 date-time.")
@click.option("--created-before", help="ISO-8601 date-time.")
@click.option(
    "--search",
    "-q",
    "text",
    help="Text in the name, task type, payload, result or error (any case).",
)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option(
    "--cursor",
    help="Start after this position: the cursor the previous page printed (its `next`).",
)
@click.option(
    "--total/--no-total",
    "include_total",
    default=None,
    help="Count every match (default: on a first page only; a count costs more on big lists).",
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Skip this many more (slow deep in a big list: prefer --cursor).",
)
@click.option(
    "--final",
    is_flag=True,
    help="Only dead letters: failed, timed out or quarantined tasks (no automatic retry"
    " left) that no task retries or replays yet. With --status: narrowed to those.",
)
@click.option(
    "--concurrency-key",
    help="Only tasks with this concurrency key; with --status pending, those waiting on it.",
)
@click.option(
    "--rate-limit",
    help="Only tasks that name this rate limit; with --status pending, those waiting on it.",
)
@client_command
def list_tasks(cli: Cli, status: tuple[str, ...], **options: Any) -> None:
    """List tasks, newest first, one page; the next page is --cursor NEXT (printed below the
    table, or `next` with --json).

    \b
    The dead letters, to inspect or retry (retry-task ID):
    hetuflow-server list-tasks --final
    """
    unknown = [item for item in status if item not in STATUSES]
    if unknown:
        fail(f"--status {unknown[0]!r} is not one of {', '.join(STATUSES)}", EXIT_USAGE)
    agent = options["agent_id"]
    cron_job = options["cron_job_id"]
    page = cli.client.list_tasks(
        status=list(status) or None,
        task_type=options["task_type"],
        agent_id=None if agent is None else ids.agent_id(cli, agent),
        cron_job_id=None if cron_job is None else ids.cron_job_id(cli, cron_job),
        created_after=parse_datetime(options["created_after"], "--created-after"),
        created_before=parse_datetime(options["created_before"], "--created-before"),
        q=options["text"],
        limit=options["limit"],
        offset=options["offset"],
        cursor=options["cursor"],
        include_total=options["include_total"],
        final=options["final"] or None,
        concurrency_key=options["concurrency_key"],
        rate_limit=options["rate_limit"],
    )
    if cli.as_json:
        cli.emit_json(page)
        return
    rows = [
        [
            short(task.id),
            escape(task.name),
            escape(task.task_type),
            task.priority,
            styled(task.status) + (f" ({task.pending_reason})" if task.pending_reason else ""),
            str(task.attempts),
            when(task.created_at),
        ]
        for task in page.items
    ]
    if options["cursor"] is None:
        shown = f"{page.offset + 1}-{page.offset + len(page.items)}" if page.items else "0"
    else:
        shown = f"({len(page.items)} shown)"
    title = f"Tasks {shown}" + ("" if page.total is None else f" of {page.total}")
    console = stdout()
    console.print(
        table(
            ["ID", "NAME", "TYPE", "PRIORITY", "STATUS", "ATTEMPTS", "CREATED"], rows, title=title
        )
    )
    if page.next is not None:
        console.print(f"Next page: --cursor {page.next}", highlight=False, soft_wrap=True)


def _agent(agent_id: UUID | None, names: dict[str, str]) -> str:
    """An agent for people: its name and short id (the short id alone once deleted)."""
    if agent_id is None:
        return "-"
    name = names.get(str(agent_id))
    return f"{escape(name)} ({short(agent_id)})" if name else short(agent_id)


REASONS = {
    PendingReason.SCHEDULED: "it may not start yet (scheduled_at, --delay or a retry backoff)",
    PendingReason.NO_AGENT_FOR_TASK_TYPE: "no connected agent offers task type {task_type!r}",
    PendingReason.NO_AGENT_WITH_CAPABILITIES: (
        "no connected agent for task type {task_type!r} has every capability: {capabilities}"
    ),
    PendingReason.AGENTS_BUSY: "every agent that could run it is busy",
    PendingReason.GLOBAL_LIMIT: ("the server runs [scheduler] max_concurrent_tasks tasks already"),
    PendingReason.CONCURRENCY_LIMIT: (
        "its concurrency key {key!r} has its limit of tasks dispatched or running"
    ),
    PendingReason.AGENT_OFFLINE: "the agent it is pinned to (a broadcast) is not online",
    PendingReason.QUEUED: "it is about to be dispatched",
}


def _still_waiting(cli: Cli, task: Task, waited: float) -> str:
    """Why a task ``--wait`` gave up on is not finished: its pending reason, or its agent."""
    head = f"task {task.id} is still {task.status} after {waited:g} s"
    if task.pending_reason is not None:
        why = REASONS.get(PendingReason(task.pending_reason), "{reason}").format(
            task_type=task.task_type,
            capabilities=" ".join(task.required_capabilities),
            reason=task.pending_reason,
            key=task.concurrency_key,
        )
        return f"{head}: {task.pending_reason} ({why})"
    if task.agent_id is not None:
        return f"{head} on agent {_agent(task.agent_id, ids.agent_names(cli))}"
    return head


def _show(task: Task, names: dict[str, str]) -> list[tuple[str, str]]:
    status = styled(task.status) + (f" ({task.pending_reason})" if task.pending_reason else "")
    pairs = [
        ("id", str(task.id)),
        ("name", escape(task.name)),
        ("task type", escape(task.task_type)),
        ("priority", task.priority),
        ("status", status),
        ("capabilities", escape(" ".join(task.required_capabilities)) or "-"),
        ("payload", escape(_compact(task.payload))),
        ("attempts", f"{task.attempts} (max retries {task.max_retries})"),
        ("retry on", " ".join(task.retry_on) if task.retry_on is not None else "-"),
        ("agent", _agent(task.agent_id, names)),
        ("scheduled at", when(task.scheduled_at)),
        ("created at", when(task.created_at)),
        ("started at", when(task.started_at)),
        ("finished at", when(task.finished_at)),
    ]
    if task.timeout_seconds is not None:
        pairs.append(("timeout", f"{task.timeout_seconds:g} s"))
    if task.result is not None:
        pairs.append(("result", escape(_compact(task.result))))
    if task.error:
        pairs.append(("error", f"[red]{escape(task.error)}[/red]"))
    if task.broadcast_policy is not None:
        pairs.append(("broadcast", f"parent (policy {task.broadcast_policy})"))
    if task.broadcast_of is not None:
        pairs.append(("broadcast", f"child of {task.broadcast_of}"))
        pairs.append(("pinned to", _agent(task.pinned_agent_id, names)))
    if task.pending_reason is not None:
        pairs.append(("waiting", task.pending_reason))
    if task.rate_limited_until is not None:
        pairs.append(("can run from", when(task.rate_limited_until)))
    if task.concurrency_key is not None:
        limit = task.max_concurrent_per_key
        pairs.append(
            (
                "concurrency key",
                escape(task.concurrency_key) + (f" (limit {limit})" if limit else ""),
            )
        )
    if task.rate_limits:
        uses = ", ".join(
            f"{use.name} ({use.units} unit{'s' * (use.units != 1)})" for use in task.rate_limits
        )
        pairs.append(("rate limits", escape(uses)))
    if task.cron_job_id is not None:
        pairs.append(("cron job", str(task.cron_job_id)))
        pairs.append(("cron tick", when(task.cron_tick_at)))
    if task.webhook_url is not None:
        pairs.append(("webhook", escape(task.webhook_url)))
    return pairs


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@click.command("show-task")
@click.argument("task_id")
@client_command
def show_task(cli: Cli, task_id: str) -> None:
    """Show one task (TASK_ID: its id or a unique prefix), with its attempts."""
    task = cli.client.get_task(ids.task_id(cli, task_id))
    if cli.as_json:
        cli.emit_json(task)
        return
    attempts = cli.client.attempts(task.id)
    children = cli.client.children(task.id) if task.broadcast_policy is not None else []
    pinned = task.pinned_agent_id is not None or children
    names = ids.agent_names(cli) if task.agent_id is not None or attempts or pinned else {}
    console = stdout()
    console.print(details(_show(task, names)))
    if task.webhook_url is not None:
        deliveries = cli.client.webhook(task.id).items
        if deliveries:
            rows = [
                [
                    short(delivery.id),
                    styled(delivery.state.value),
                    str(delivery.attempts),
                    "-" if delivery.last_status_code is None else str(delivery.last_status_code),
                    escape(delivery.last_error or ""),
                    when(delivery.next_attempt_at) if delivery.next_attempt_at else "-",
                    when(delivery.delivered_at) if delivery.delivered_at else "-",
                ]
                for delivery in deliveries
            ]
            columns = [
                "DELIVERY",
                "STATE",
                "ATTEMPTS",
                "LAST HTTP",
                "LAST ERROR",
                "NEXT",
                "DELIVERED",
            ]
            console.print(table(columns, rows, title="Webhook"))
    if children:
        rows = [
            [
                _agent(child.pinned_agent_id, names),
                str(child.id),
                styled(child.status)
                + (f" ({child.pending_reason})" if child.pending_reason else ""),
                escape(child.error or ""),
            ]
            for child in children
        ]
        console.print(table(["AGENT", "TASK", "STATUS", "ERROR"], rows, title="Children"))
    if attempts:
        rows = [
            [
                str(attempt.number),
                _agent(attempt.agent_id, names),
                when(attempt.dispatched_at),
                when(attempt.finished_at),
                styled(attempt.outcome) if attempt.outcome else "running",
                escape(attempt.error or ""),
            ]
            for attempt in attempts
        ]
        console.print(
            table(
                ["#", "AGENT", "DISPATCHED", "FINISHED", "OUTCOME", "ERROR"], rows, title="Attempts"
            )
        )


@click.command("cancel-task")
@click.argument("task_id")
@client_command
def cancel_task(cli: Cli, task_id: str) -> None:
    """Cancel a task (TASK_ID: its id or a unique prefix); a running one is stopped on its
    agent."""
    task = cli.client.cancel_task(ids.task_id(cli, task_id))
    if cli.as_json:
        cli.emit_json(task)
    else:
        stdout().print(f"task [bold]{task.id}[/bold]: {styled(task.status)}")


@click.command("retry-task")
@click.argument("task_id")
@client_command
def retry_task(cli: Cli, task_id: str) -> None:
    """Run a failed, timed-out or cancelled task again (as a new task); TASK_ID is its id or a
    unique prefix."""
    task = cli.client.retry_task(ids.task_id(cli, task_id))
    if cli.as_json:
        cli.emit_json(task)
    else:
        stdout().print(f"created task [bold]{task.id}[/bold]: {styled(task.status)}")


@click.command("logs")
@click.argument("task_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the task ends.")
@click.option("--attempt", type=click.IntRange(min=1), help="Only this attempt's lines.")
@click.option(
    "--after-seq",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Lines after this seq.",
)
@client_command
def logs(cli: Cli, task_id: str, follow: bool, attempt: int | None, after_seq: int) -> None:
    """Print a task's log lines (JSON Lines with --json); TASK_ID is its id or a unique
    prefix."""
    task_id = ids.task_id(cli, task_id)
    if follow:
        lines = cli.client.follow_logs(task_id, after_seq=after_seq, attempt=attempt)
    else:
        cli.client.get_task(task_id)
        lines = _all_lines(cli, task_id, after_seq, attempt)
    for line in lines:
        if cli.as_json:
            click.echo(line.model_dump_json())
        else:
            click.echo(line.line, err=line.stream == "stderr")
        if follow:
            sys.stdout.flush()
            sys.stderr.flush()


def _all_lines(cli: Cli, task_id: str, after_seq: int, attempt: int | None) -> Iterator[LogLine]:
    while True:
        page = cli.client.logs(task_id, after_seq=after_seq, attempt=attempt, limit=1000)
        yield from page
        if len(page) < 1000:
            return
        after_seq = page[-1].seq
