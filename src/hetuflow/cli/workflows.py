"""Workflow commands of ``hetuflow-server``: create-workflow, list-workflows, show-workflow,
cancel-workflow, retry-workflow (docs/workflows.md)."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.markup import escape
from rich.tree import Tree

from hetuflow.cli import ids
from hetuflow.cli.common import (
    EXIT_USAGE,
    Cli,
    client_command,
    details,
    fail,
    stdout,
    styled,
    table,
    when,
)
from hetuflow.cli.ids import short
from hetuflow.client import WaitTimeout, Workflow, WorkflowStep


def register(group: click.Group) -> None:
    for command in (
        create_workflow,
        list_workflows,
        show_workflow,
        cancel_workflow,
        retry_workflow,
    ):
        group.add_command(command)


def read_document(source: str, option: str = "--file") -> dict[str, Any]:
    """A workflow document from a JSON file (``-``: standard input); exit 2 if it is none."""
    try:
        with click.open_file(source, encoding="utf-8") as handle:
            document = json.load(handle)
    except OSError as error:
        fail(f"{option}: cannot read {source}: {error.strerror or error}", EXIT_USAGE)
    except json.JSONDecodeError as error:
        fail(f"{option}: {source} is not JSON: {error}", EXIT_USAGE)
    if not isinstance(document, dict) or not isinstance(document.get("steps"), list):
        fail(f'{option}: expected a JSON object {{"name": ..., "steps": [...]}}', EXIT_USAGE)
    return document


@click.command("create-workflow")
@click.option(
    "--file",
    "source",
    required=True,
    help='The workflow as JSON ("-": standard input): {"name", "on_failure", "steps": [...]},'
    " each step a task spec with a name, depends_on, run_if and map_over (fan out over a"
    " parent's list result: one child step per item).",
)
@click.option("--wait", is_flag=True, help="Wait until it ends; exit 1 unless it succeeded.")
@click.option("--wait-timeout", type=click.FloatRange(min=0), default=300, show_default=True)
@client_command
def create_workflow(cli: Cli, source: str, wait: bool, wait_timeout: float) -> None:
    """Submit a workflow: steps that depend on steps.

    \b
    hetuflow-server create-workflow --file wf.json
    """
    document = read_document(source)
    workflow = cli.client.submit_workflow(
        str(document.get("name", "")),
        document["steps"],
        on_failure=str(document.get("on_failure", "stop")),
    )
    if wait:
        try:
            workflow = cli.client.wait_workflow(workflow.id, timeout_seconds=wait_timeout)
        except WaitTimeout as error:
            fail(error.message)
    if cli.as_json:
        cli.emit_json(workflow)
    else:
        verb = "finished" if wait else "created"
        stdout().print(
            f"{verb} workflow [bold]{workflow.id}[/bold] ({len(workflow.steps)} steps):"
            f" {styled(workflow.status)}"
        )
        if wait:
            stdout().print(_tree(workflow))
    if wait and workflow.status != "succeeded":
        raise SystemExit(1)


@click.command("list-workflows")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@client_command
def list_workflows(cli: Cli, limit: int, offset: int) -> None:
    """List workflows, newest first, with their steps counted by status."""
    page = cli.client.list_workflows(limit=limit, offset=offset)
    if cli.as_json:
        cli.emit_json(page)
        return
    rows = [
        [
            short(w.id),
            escape(w.name),
            styled(w.status),
            ", ".join(f"{n} {styled(status)}" for status, n in sorted(w.step_counts.items())),
            when(w.created_at),
            when(w.finished_at),
        ]
        for w in page.items
    ]
    shown = f"{page.offset + 1}-{page.offset + len(page.items)}" if page.items else "0"
    stdout().print(
        table(
            ["ID", "NAME", "STATUS", "STEPS", "CREATED", "FINISHED"],
            rows,
            title=f"Workflows {shown} of {page.total}",
        )
    )


@click.command("show-workflow")
@click.argument("workflow_id")
@client_command
def show_workflow(cli: Cli, workflow_id: str) -> None:
    """Show a workflow (WORKFLOW_ID: its id, a unique id prefix or its name): its status and
    its steps as a tree (a step under each parent)."""
    workflow = cli.client.get_workflow(ids.workflow_id(cli, workflow_id))
    if cli.as_json:
        cli.emit_json(workflow)
        return
    console = stdout()
    console.print(
        details(
            [
                ("id", str(workflow.id)),
                ("name", escape(workflow.name)),
                ("status", styled(workflow.status)),
                ("on failure", workflow.on_failure),
                ("created at", when(workflow.created_at)),
                ("finished at", when(workflow.finished_at)),
            ]
        )
    )
    console.print(_tree(workflow))


@click.command("cancel-workflow")
@click.argument("workflow_id")
@client_command
def cancel_workflow(cli: Cli, workflow_id: str) -> None:
    """Cancel every waiting and running step of a workflow (running ones are told to stop)."""
    workflow = cli.client.cancel_workflow(ids.workflow_id(cli, workflow_id))
    if cli.as_json:
        cli.emit_json(workflow)
        return
    stdout().print(f"cancelled workflow [bold]{workflow.id}[/bold]")
    stdout().print(_tree(workflow))


@click.command("retry-workflow")
@click.argument("workflow_id")
@client_command
def retry_workflow(cli: Cli, workflow_id: str) -> None:
    """Re-run the failed, timed-out, cancelled and skipped steps of an ended workflow and
    every step that depends on them; steps that succeeded are kept, and their results are
    handed down again. Refused (409) while a step is still running or when every step
    succeeded."""
    workflow = cli.client.retry_workflow(workflow_id)
    if cli.as_json:
        cli.emit_json(workflow)
        return
    stdout().print(f"retrying workflow [bold]{workflow.id}[/bold]")
    stdout().print(_tree(workflow))


def _tree(workflow: Workflow) -> Tree:
    """Steps without parents at the root, each step under every one of its parents, a map
    child under its mapped step."""
    root = Tree(f"[bold]{escape(workflow.name)}[/bold] {styled(workflow.status)}")
    children: dict[str, list[WorkflowStep]] = {}
    for step in workflow.steps:
        for parent in step.depends_on if step.map_of is None else (step.map_of,):
            children.setdefault(parent, []).append(step)

    def add(node: Tree, step: WorkflowStep, path: tuple[str, ...]) -> None:
        branch = node.add(_label(step))
        if step.name in path:  # never, for a document the server accepted
            return
        for child in children.get(step.name, []):
            add(branch, child, (*path, step.name))

    for step in workflow.steps:
        if not step.depends_on and step.map_of is None:
            add(root, step, ())
    return root


def _label(step: WorkflowStep) -> str:
    task = step.task
    parts = [f"[bold]{escape(step.name)}[/bold]", styled(step.status)]
    if step.run_if != "all_succeeded":
        parts.append(f"(run_if {step.run_if})")
    if step.map_over is not None:
        parts.append(f"(map_over {escape(step.map_over)})")
    if task.started_at and task.finished_at:
        parts.append(f"{(task.finished_at - task.started_at).total_seconds():.2f} s")
    if task.result is not None:
        text = json.dumps(task.result, ensure_ascii=False)
        parts.append(escape(text if len(text) <= 60 else text[:59] + "…"))
    if task.error:
        parts.append(f"[red]{escape(task.error)}[/red]")
    return " ".join(parts)
