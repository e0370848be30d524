"""What task processes inherit from the agent, and what never leaves it: the task environment,
secret redaction of log lines, and hiding the agent's own process from its tasks.

A shell task does not inherit the agent's environment. It gets only:

- ``PATH``, ``HOME``, ``LANG``, ``LC_*``, ``TZ``, ``TMPDIR``, ``USER``, ``LOGNAME``, ``SHELL``
  (those the agent has; ``PATH`` falls back to the system default);
- the names the agent passes on purpose (``--pass-env NAME``, ``pass_env = [...]``; a name
  ending in ``*`` passes every variable with that prefix), except the agent's token
  variable, which is never passed;
- the task payload's own ``env``.

So a variable like ``DATABASE_URL``, ``HETUFLOW_DATABASE__URL`` or ``HETUFLOW_AGENT_TOKEN`` in
the agent's environment never reaches a task unless an operator writes its value into a
payload. As a second line, every log line and error of a task is scrubbed of the secrets the
agent knows (its token and the values of secret-looking variables, see ``secret_values``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence

log = logging.getLogger("hetuflow.agent")

TASK_ENV_NAMES = ("PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL")
"""Variables every task gets from the agent (when the agent has them)."""
TASK_ENV_PREFIXES = ("LC_",)
NEVER_PASSED = frozenset({"HETUFLOW_AGENT_TOKEN"})
"""Not passed to tasks even when named with ``--pass-env``."""
REDACTED = "[redacted]"
MIN_SECRET_CHARS = 8
"""Shorter values are not redacted (they would blank out ordinary words)."""
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|DATABASE|DSN|CREDENTIAL|_KEY$")
_PR_SET_DUMPABLE = 4


def _wanted(name: str, pass_env: Sequence[str]) -> bool:
    if name in NEVER_PASSED:
        return False
    if name in TASK_ENV_NAMES or name.startswith(TASK_ENV_PREFIXES):
        return True
    for pattern in pass_env:
        if pattern.endswith("*"):
            if name.startswith(pattern[:-1]):
                return True
        elif name == pattern:
            return True
    return False


def base_task_environment(source: Mapping[str, str], pass_env: Sequence[str]) -> dict[str, str]:
    """The variables of ``source`` that tasks get (see the module docstring)."""
    env = {name: value for name, value in source.items() if _wanted(name, pass_env)}
    env.setdefault("PATH", os.defpath)
    return env


def secret_values(source: Mapping[str, str], token: str | None) -> list[str]:
    """What to scrub from task output: the agent's token and the values of ``DATABASE_URL``,
    ``PG*`` passwords and every ``HETUFLOW_*`` variable whose name looks secret (``TOKEN``,
    ``SECRET``, ``PASSWORD``, ``DATABASE``…)."""
    found = {token} if token else set()
    for name, value in source.items():
        upper = name.upper()
        if (
            upper in ("DATABASE_URL", "PGPASSWORD")
            or (upper.startswith("HETUFLOW_") and _SECRET_NAME.search(upper))
        ) and value:
            found.add(value)
    return sorted((value for value in found if len(value) >= MIN_SECRET_CHARS), key=len)[::-1]


class Redactor:
    """Replaces each known secret in a text with ``[redacted]``; the longest first."""

    __slots__ = ("_pattern",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted(set(secrets), key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, values))) if values else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def __bool__(self) -> bool:
        return self._pattern is not None


def hide_from_tasks() -> None:
    """Make this process non-dumpable (Linux ``PR_SET_DUMPABLE`` 0): processes of the same
    user, such as the agent's own shell tasks, can then no longer read its
    ``/proc/<pid>/environ`` (where the token may sit) nor attach a debugger to it. Tasks
    are not affected (``exec`` makes them dumpable again). No-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
    except (OSError, AttributeError) as error:  # pragma: no cover - exotic libc
        log.warning("cannot hide the agent's environment from its tasks: %s", error)
