"""Short ids on the command line, like git's: a task, agent or cron job id may be given as its
first few hex digits (at least ``MIN_PREFIX``), as long as they match one id only.

Tables print ids as their first ``SHORT`` digits, which are almost always unique; an agent or
a cron job may also be named by its (unique) name. Lookups:

- tasks: ``GET /api/tasks?id_prefix=…`` (the server finds the ids in its index);
- agents and cron jobs: their whole list (a few hundred at most), matched here.

A full UUID is used as given, without a lookup; text that is not hex is sent as it is, for
the server to refuse (``not a valid UUID``).
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from hetuflow.cli.common import EXIT_USAGE, Cli, fail

MIN_PREFIX = 6
"""Fewest hex digits a short id may have."""
SHORT = 8
"""Hex digits of an id in tables."""
SHOWN_CANDIDATES = 5
"""Candidates an "ambiguous" error lists."""

_HEX = frozenset("0123456789abcdef")


def short(value: UUID | str | None) -> str:
    """The first ``SHORT`` digits of an id, ``-`` for none."""
    return "-" if value is None else str(value)[:SHORT]


def _digits(text: str) -> str | None:
    """The hex digits of a would-be prefix, or None when ``text`` is not one."""
    digits = text.replace("-", "").lower()
    return digits if digits and _HEX.issuperset(digits) and len(digits) <= 32 else None


def _full(text: str) -> str | None:
    try:
        return str(UUID(text))
    except ValueError:
        return None


def _check_length(noun: str, text: str, digits: str) -> None:
    if len(digits) < MIN_PREFIX:
        fail(
            f"{noun} id {text!r} is too short: give at least {MIN_PREFIX} characters of it"
            f" (or the whole id)",
            EXIT_USAGE,
        )


def _pick(noun: str, text: str, candidates: list[tuple[str, str]], total: int) -> str:
    """The one candidate ``(id, label)``, else a one-line error naming the candidates."""
    if not candidates:
        fail(f"no {noun} with an id starting with {text!r}")
    if total == 1:
        return candidates[0][0]
    listed = ", ".join(
        f"{candidate} ({label})" if label else candidate
        for candidate, label in candidates[:SHOWN_CANDIDATES]
    )
    more = f" and {total - SHOWN_CANDIDATES} more" if total > SHOWN_CANDIDATES else ""
    fail(
        f"{noun} id {text!r} is ambiguous: it matches {total} {noun}s: {listed}{more};"
        f" give more characters"
    )


def task_id(cli: Cli, text: str) -> str:
    """A task's full id from its id or a unique prefix of it."""
    full = _full(text)
    digits = _digits(text)
    if full is not None or digits is None:
        return full or text
    _check_length("task", text, digits)
    page = cli.client.list_tasks(id_prefix=digits, limit=SHOWN_CANDIDATES, include_total=True)
    candidates = [(str(task.id), task.name) for task in page.items]
    total = page.total if page.total is not None else len(candidates)
    return _pick("task", text, candidates, total)


def _named(noun: str, text: str, known: Iterable[tuple[str, str]]) -> str:
    """For agents and cron jobs: ``known`` holds every ``(id, name)``; an exact name wins."""
    everything = list(known)
    for candidate, name in everything:
        if name == text:
            return candidate
    digits = _digits(text)
    if digits is None:
        fail(f"no {noun} named {text!r} (nor with such an id)")
    _check_length(noun, text, digits)
    candidates = [
        (candidate, name)
        for candidate, name in everything
        if candidate.replace("-", "").startswith(digits)
    ]
    return _pick(noun, text, candidates, len(candidates))


def agent_id(cli: Cli, text: str) -> str:
    """An agent's full id from its name, its id or a unique prefix of the id."""
    full = _full(text)
    if full is not None:
        return full
    return _named("agent", text, ((str(a.id), a.name) for a in cli.client.list_agents()))


def cron_job_id(cli: Cli, text: str) -> str:
    """A cron job's full id from its name, its id or a unique prefix of the id."""
    full = _full(text)
    if full is not None:
        return full
    return _named("cron job", text, ((str(j.id), j.name) for j in cli.client.list_cron_jobs()))


def agent_names(cli: Cli) -> dict[str, str]:
    """Every agent's name by id, for tables that show who ran what."""
    return {str(agent.id): agent.name for agent in cli.client.list_agents()}


WORKFLOWS_SEARCHED = 1000
"""A workflow's short id or name is looked up among the newest this many workflows."""


def workflow_id(cli: Cli, text: str) -> str:
    """A workflow's full id from its id, a unique prefix of it or its exact name (among the
    newest ``WORKFLOWS_SEARCHED`` workflows)."""
    full = _full(text)
    if full is not None:
        return full
    page = cli.client.list_workflows(limit=WORKFLOWS_SEARCHED)
    return _named("workflow", text, ((str(w.id), w.name) for w in page.items))


def trigger_id(cli: Cli, text: str) -> str:
    """A trigger's full id from its name, its id or a unique prefix of the id."""
    full = _full(text)
    if full is not None:
        return full
    return _named("trigger", text, ((str(t.id), t.name) for t in cli.client.list_triggers()))
