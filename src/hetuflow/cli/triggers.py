"""Trigger, event and hook commands of ``hetuflow-server``: create-trigger, list-triggers,
delete-trigger, send-event, create-hook, list-hooks, delete-hook (docs/triggers.md).

Each is a client of the REST API through ``hetuflow.client.Client``; ``--json`` prints what
the server answered, for scripts.
"""

from __future__ import annotations

import json
from typing import Any

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
from hetuflow.cli.ids import short
from hetuflow.cli.options import MultiValueCommand, MultiValueOption
from hetuflow.client import EventDelivery, Trigger

PRIORITIES = ["low", "normal", "high", "critical"]


def register(group: click.Group) -> None:
    for command in (
        create_trigger,
        list_triggers,
        delete_trigger,
        send_event,
        create_hook,
        list_hooks,
        delete_hook,
    ):
        group.add_command(command)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)


def _creates(trigger: Trigger) -> tuple[str, str]:
    if trigger.workflow is not None:
        return "workflow", escape(_compact(trigger.workflow))
    return "task", escape(_compact(trigger.task))


def _creates_short(trigger: Trigger) -> str:
    if trigger.workflow is not None:
        return f"workflow {escape(str(trigger.workflow.get('name', '')))}"
    return escape(str((trigger.task or {}).get("task_type", "-")))


def _print_trigger(cli: Cli, trigger: Trigger) -> None:
    if cli.as_json:
        cli.emit_json(trigger)
        return
    stdout().print(
        details(
            [
                ("id", str(trigger.id)),
                ("event", escape(trigger.event)),
                ("filter", escape(_compact(trigger.filter)) if trigger.filter else "(every event)"),
                _creates(trigger),
            ],
            title=f"created trigger [bold]{escape(trigger.name)}[/bold]",
        )
    )


@click.command("create-trigger", cls=MultiValueCommand)
@click.option("--name", required=True, help="Unique name of the trigger.")
@click.option("--event", required=True, help="The event key it is bound to: order.created.")
@click.option(
    "--filter",
    "filter_",
    help='Dotted path -> the value it must equal: \'{"status": "paid", "customer.tier": '
    f'"gold"}}\' ({JSON_OPTION_HELP}); default: every event of the key.',
)
@click.option("--task-type", help="Task type of the task it creates.")
@click.option("--payload", help=f"The task's payload ({JSON_OPTION_HELP}); the event is added.")
@click.option("--priority", type=click.Choice(PRIORITIES))
@click.option("--capabilities", cls=MultiValueOption, help="Required capabilities: db ssd.")
@click.option("--timeout-seconds", type=click.FloatRange(min=0, min_open=True))
@click.option("--max-retries", type=click.IntRange(min=0))
@click.option(
    "--task",
    "task_spec",
    help=f"The whole task spec, as POST /api/tasks takes it ({JSON_OPTION_HELP}), instead "
    "of --task-type and the other task options.",
)
@click.option(
    "--workflow",
    "workflow_spec",
    help='Start a workflow instead of a task: its document {"name", "steps", "on_failure"}, '
    f"as POST /api/workflows takes it ({JSON_OPTION_HELP}).",
)
@client_command
def create_trigger(
    cli: Cli,
    name: str,
    event: str,
    filter_: str | None,
    task_type: str | None,
    payload: str | None,
    priority: str | None,
    capabilities: tuple[str, ...],
    timeout_seconds: float | None,
    max_retries: int | None,
    task_spec: str | None,
    workflow_spec: str | None,
) -> None:
    """Create a task (or a workflow) for every event of a key whose data passes a filter.

    The task's payload (every step's, for a workflow) gets the event under the key "event":
    {"key", "id", "data"}.

    \b
    hetuflow-server create-trigger --name invoice --event order.created \\
        --filter '{"status": "paid"}' --task-type invoice --payload '{"copies": 2}'
    hetuflow-server create-trigger --name ship --event order.paid --workflow @ship.json
    """
    fields: dict[str, Any] = {
        "payload": None if payload is None else parse_json_object(payload, "--payload"),
        "priority": priority,
        "required_capabilities": list(capabilities) or None,
        "timeout_seconds": timeout_seconds,
        "max_retries": max_retries,
    }
    given = {key: value for key, value in fields.items() if value is not None}
    ways = (task_type is not None or bool(given)) + (task_spec is not None)
    ways += workflow_spec is not None
    if ways != 1:
        fail(
            "give one of --task-type (with the task options), --task or --workflow",
            EXIT_USAGE,
        )
    task: dict[str, Any] | None = None
    workflow: dict[str, Any] | None = None
    if workflow_spec is not None:
        workflow = parse_json_object(workflow_spec, "--workflow")
    elif task_spec is not None:
        task = parse_json_object(task_spec, "--task")
    elif task_type is None:
        fail("the task options need --task-type", EXIT_USAGE)
    else:
        task = {"task_type": task_type, **given}
    filter = None if filter_ is None else parse_json_object(filter_, "--filter")
    trigger = cli.client.create_trigger(name, event, task, workflow=workflow, filter=filter)
    _print_trigger(cli, trigger)


@click.command("list-triggers")
@click.option("--event", help="Only the triggers of this event key.")
@client_command
def list_triggers(cli: Cli, event: str | None) -> None:
    """List triggers by name: event key, filter, task type (or workflow) they create."""
    triggers = cli.client.list_triggers(event=event)
    if cli.as_json:
        cli.emit_json(triggers)
        return
    rows = [
        [
            escape(t.name),
            short(t.id),
            escape(t.event),
            escape(_compact(t.filter)) if t.filter else "[dim]every event[/dim]",
            _creates_short(t),
            when(t.created_at),
        ]
        for t in triggers
    ]
    stdout().print(
        table(
            ["NAME", "ID", "EVENT", "FILTER", "CREATES", "CREATED"],
            rows,
            title=f"{len(triggers)} trigger{'s' if len(triggers) != 1 else ''}",
        )
    )


@click.command("delete-trigger")
@click.argument("trigger")
@client_command
def delete_trigger(cli: Cli, trigger: str) -> None:
    """Delete a trigger (by name, id or id prefix); tasks it created are kept."""
    trigger_id = ids.trigger_id(cli, trigger)
    cli.client.delete_trigger(trigger_id)
    if cli.as_json:
        cli.emit_json({"deleted": trigger_id})
    else:
        stdout().print(f"deleted trigger {escape(trigger)}")


def _print_delivery(cli: Cli, delivery: EventDelivery) -> None:
    if cli.as_json:
        cli.emit_json(delivery)
        return
    verb = "delivered" if delivery.created else "already delivered (nothing new)"
    stdout().print(
        f"event [bold]{escape(delivery.key)}[/bold] {escape(delivery.id)} {verb}:"
        f" {delivery.matched} trigger{'s' if delivery.matched != 1 else ''} matched"
    )
    for task in delivery.tasks:
        stdout().print(
            f"  task [bold]{escape(task.name)}[/bold] {task.id} ({styled(str(task.status))})"
        )
    for workflow in delivery.workflows:
        stdout().print(
            f"  workflow [bold]{escape(workflow.name)}[/bold] {workflow.id}"
            f" ({len(workflow.steps)} steps)"
        )


@click.command("send-event")
@click.argument("key")
@click.option(
    "--data", default="{}", show_default=True, help=f"The event's data: {JSON_OPTION_HELP}."
)
@click.option(
    "--id",
    "event_id",
    help="The event's id: sending the same id again creates nothing (default: a new id).",
)
@client_command
def send_event(cli: Cli, key: str, data: str, event_id: str | None) -> None:
    """Send an event: a task (or workflow) per trigger of KEY the data passes, once per id.

    \b
    hetuflow-server send-event order.created --data '{"order": 42}' --id order-42
    """
    delivery = cli.client.send_event(key, parse_json_object(data, "--data"), event_id=event_id)
    _print_delivery(cli, delivery)


@click.command("create-hook")
@click.option("--name", required=True, help="Unique name: the hook is POST /api/hooks/NAME.")
@click.option("--event", required=True, help="The event key its calls become.")
@click.option("--secret", help="The signing secret (16-256 characters); default: generated.")
@client_command
def create_hook(cli: Cli, name: str, event: str, secret: str | None) -> None:
    """Create a signed webhook endpoint; prints its secret, shown this once.

    Callers sign each call: X-Hetuflow-Timestamp (Unix seconds) and X-Hetuflow-Signature:
    sha256=HEX(HMAC-SHA256(secret, "<timestamp>.<raw body>")). See docs/triggers.md.
    """
    hook = cli.client.create_hook(name, event, secret=secret)
    if cli.as_json:
        cli.emit_json(hook)
        return
    stdout().print(
        details(
            [
                ("id", str(hook.id)),
                ("event", escape(hook.event)),
                ("call", f"POST {escape(hook.path)}"),
                ("secret", escape(hook.secret or "")),
            ],
            title=f"created hook [bold]{escape(hook.name)}[/bold]",
        )
    )
    stdout().print("[yellow]store the secret now: it is not shown again[/yellow]")


@click.command("list-hooks")
@client_command
def list_hooks(cli: Cli) -> None:
    """List hooks (never their secrets)."""
    hooks = cli.client.list_hooks()
    if cli.as_json:
        cli.emit_json(hooks)
        return
    rows = [[escape(h.name), escape(h.event), escape(h.path), when(h.created_at)] for h in hooks]
    stdout().print(
        table(
            ["NAME", "EVENT", "CALL (POST)", "CREATED"],
            rows,
            title=f"{len(hooks)} hook{'s' if len(hooks) != 1 else ''}",
        )
    )


@click.command("delete-hook")
@click.argument("name")
@client_command
def delete_hook(cli: Cli, name: str) -> None:
    """Delete a hook: its calls are refused (404) from now on."""
    cli.client.delete_hook(name)
    if cli.as_json:
        cli.emit_json({"deleted": name})
    else:
        stdout().print(f"deleted hook {escape(name)}")
