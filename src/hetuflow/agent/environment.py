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
from pathlib import Path

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


def secret_names(source: Mapping[str, str]) -> list[str]:
    """Names in ``source`` that hold secrets: ``DATABASE_URL``, ``PGPASSWORD`` and every
    ``HETUFLOW_*`` variable whose name looks secret (``TOKEN``, ``SECRET``, ``PASSWORD``,
    ``DATABASE``…)."""
    return [
        name
        for name, value in source.items()
        if value
        and (
            name.upper() in ("DATABASE_URL", "PGPASSWORD")
            or (name.upper().startswith("HETUFLOW_") and _SECRET_NAME.search(name.upper()))
        )
    ]


def secret_values(source: Mapping[str, str], token: str | None) -> list[str]:
    """What to scrub from task output: the agent's token and the values of
    ``secret_names(source)`` (values shorter than ``MIN_SECRET_CHARS`` are left)."""
    found = {token} if token else set()
    found.update(source[name] for name in secret_names(source))
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


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _environment_block() -> tuple[int, int]:
    """Where the environment this process started with lies in its memory (what
    ``/proc/<pid>/environ`` shows): fields ``env_start`` and ``env_end`` of
    ``/proc/self/stat``."""
    stat = Path("/proc/self/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[47]), int(fields[48])  # fields 50 and 51 of proc(5)


def hide_from_tasks(names: Iterable[str] = ()) -> None:
    """Keep this process's secrets from the processes it starts (Linux; no-op elsewhere).

    - The process becomes non-dumpable (``PR_SET_DUMPABLE`` 0): processes of the same
      non-root user, such as its own shell tasks, can no longer read its
      ``/proc/<pid>/environ`` nor attach a debugger. Tasks are not affected (``exec`` makes
      them dumpable again).
    - The values of ``names`` are overwritten in the environment block the process started
      with, which is what ``/proc/<pid>/environ`` shows even to root; the process keeps them
      (``os.environ`` and ``getenv`` see a private copy).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = _libc()
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
        start, end = _environment_block()
        libc.getenv.restype = ctypes.c_void_p
        libc.getenv.argtypes = [ctypes.c_char_p]
        for name in names:
            value = os.environ.get(name)
            address = libc.getenv(os.fsencode(name))
            if value is None or address is None or not start <= address < end:
                continue  # not from the original block: nothing shows it
            size = len(os.fsencode(value))
            ctypes.memset(address, ord("*"), min(size, end - address))
            os.environ[name] = value  # setenv: getenv now returns a private copy
    except (OSError, AttributeError, ValueError, IndexError) as error:  # pragma: no cover
        log.warning("cannot hide the agent's environment from its tasks: %s", error)
