"""Agent configuration: a TOML file, then the environment, then command-line flags.

The file holds the keys of ``AgentConfig`` in an ``[agent]`` table (top-level keys are accepted
too)::

    [agent]
    server = "ws://scheduler.internal:8080/ws"   # or a list: ["ws://a:8080/ws", "ws://b:8080/ws"]
    name = "scraper-1"
    capabilities = ["chrome", "headless"]
    task_types = ["shell", "web-scraping"]   # naming shell turns shell tasks on
    max_concurrent_tasks = 3
    modules = ["my_project.handlers"]

Every key can be set from the environment as ``HETUFLOW_AGENT_<KEY>``
(``HETUFLOW_AGENT_SERVER``, ``HETUFLOW_AGENT_NAME``, ``HETUFLOW_AGENT_MAX_CONCURRENT_TASKS``…);
lists there are separated by commas or spaces (``HETUFLOW_AGENT_SERVER="ws://a/ws,ws://b/ws"``).
``HETUFLOW_AGENT_CONFIG`` names the file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hetuflow.agent.environment import NEVER_PASSED
from hetuflow.errors import ConfigInvalid

ENV_PREFIX = "HETUFLOW_AGENT_"
CONFIG_ENV = "HETUFLOW_AGENT_CONFIG"


def _words(value: str) -> list[str]:
    """A list given as one string: items separated by commas or spaces."""
    return [word for word in value.replace(",", " ").split() if word]


class AgentConfig(BaseModel):
    """Everything an agent process can be configured with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server: list[str] = Field(default_factory=lambda: ["ws://127.0.0.1:8080/ws"], min_length=1)
    """The WebSocket endpoints of the server's nodes (one or more, a string is one; see
    ``Agent``): the agent connects to the first that answers and, when a connection is lost,
    tries the next ones in turn, keeping its running attempts across the switch."""
    name: str | None = Field(default=None, max_length=200)
    """The agent's name; with none the server registers a new agent under a generated name."""
    agent_id: str | None = None
    """Connect as this known agent (for example one made with ``POST /api/agents``)."""
    token: str | None = None
    """Sent as ``Authorization: Bearer <token>`` on the WebSocket handshake."""
    capabilities: list[str] = Field(default_factory=list)
    task_types: list[str] | None = None
    """Task types to declare; None: every task type with a handler. Naming ``shell`` here
    turns the built-in shell task type on (see ``shell``)."""
    max_concurrent_tasks: int = Field(default=1, ge=1, le=100_000)
    modules: list[str] = Field(default_factory=list)
    """Python modules imported at start that register handlers (see docs/agent.md)."""
    shell: bool | None = None
    """Offer the built-in ``shell`` task type, which runs any command an operator sends.
    None (the default): only when ``task_types`` names ``shell``; True: on; False: off even
    when ``task_types`` names it."""
    pass_env: list[str] = Field(default_factory=list)
    """Environment variables passed to shell tasks besides the minimal set (``PATH``, ``HOME``,
    ``LANG``, ``LC_*``, ``TZ``, ``TMPDIR``, ``USER``, ``LOGNAME``, ``SHELL``); ``NAME*`` passes
    every variable starting with ``NAME``. The agent's token is never passed."""
    kill_grace_seconds: float = Field(default=5.0, ge=0)
    """Between SIGTERM and SIGKILL when a shell task is stopped; also how long a sync handler
    has to notice a cancel before its outcome is reported anyway (its slot stays taken until
    its thread returns)."""
    drain_grace_seconds: float = Field(default=30.0, ge=0)
    """On SIGTERM/SIGINT, how long running tasks may finish before they are stopped."""
    reconnect_min_seconds: float = Field(default=0.1, gt=0)
    reconnect_max_seconds: float = Field(default=10.0, gt=0)
    max_frame_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    """Largest frame accepted from the server (a bigger one closes the connection, 1009)."""
    register_timeout_seconds: float = Field(default=10.0, gt=0)
    """How long to wait for ``AgentRegistered`` before reconnecting."""
    max_log_line_bytes: int = Field(default=16 * 1024, ge=80)
    """Longer log lines are cut and marked ``… [truncated]``."""
    log_flush_seconds: float = Field(default=0.02, ge=0)
    """Log lines wait at most this long to share a ``TaskLogs`` frame with later ones."""
    max_buffered_log_lines: int = Field(default=100_000, ge=100)
    """While disconnected, log lines past this many are dropped (oldest first)."""
    log_level: str = "info"
    log_format: str = "text"

    @property
    def shell_enabled(self) -> bool:
        """Whether the ``shell`` task type is offered (see ``shell``)."""
        if self.shell is not None:
            return self.shell
        return self.task_types is not None and "shell" in self.task_types

    @field_validator("server", "capabilities", "task_types", "modules", "pass_env", mode="before")
    @classmethod
    def _split_words(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _words(value)
        return value

    @field_validator("pass_env")
    @classmethod
    def _check_pass_env(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or "=" in name or "*" in name[:-1]:
                raise ValueError(f"{name!r} is not a variable name (or a NAME* prefix)")
            if name == "*":
                raise ValueError("'*' would pass the agent's whole environment: name variables")
            if name in NEVER_PASSED:
                raise ValueError(f"{name!r} may not be passed to tasks (the agent's token)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _token_out_of_the_url(cls, values: Any) -> Any:
        """``ws://host/ws?token=hf_…``: the token moves to the ``Authorization`` header (and
        out of the URL, which the agent logs and proxies write to their access logs). With
        several URLs the first token found is taken; every URL loses its own."""
        if not isinstance(values, dict):
            return values
        urls = values.get("server")
        if isinstance(urls, str):
            urls = _words(urls)
        if not isinstance(urls, list | tuple) or not all(isinstance(url, str) for url in urls):
            return values
        tokens: list[str] = []
        cleaned: list[str] = []
        for url in urls:
            parts = urlsplit(url)
            query = parse_qsl(parts.query, keep_blank_values=True)
            found = [value for key, value in query if key == "token"]
            if not found:
                cleaned.append(url)
                continue
            tokens += found
            rest = urlencode([(key, value) for key, value in query if key != "token"])
            cleaned.append(urlunsplit(parts._replace(query=rest)))
        if not tokens:
            return values
        moved = {**values, "server": cleaned}
        if not values.get("token"):
            moved["token"] = tokens[0]
        return moved

    @field_validator("server")
    @classmethod
    def _check_server(cls, value: list[str]) -> list[str]:
        for url in value:
            if urlsplit(url).scheme not in ("ws", "wss"):
                raise ValueError(f"{url!r} is not a WebSocket URL: use ws://host:port/ws")
        return list(dict.fromkeys(value))


def _explain(error: ValidationError, source: str) -> str:
    lines = [f"invalid agent configuration ({source}):"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "agent"
        lines.append(f"  {key}: {item['msg']}")
    return "\n".join(lines)


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigInvalid(f"agent config file {str(path)!r} does not exist", field="config")
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigInvalid(f"{path}: not valid TOML: {error}", field="config") from None
    table = values.get("agent", values)
    if not isinstance(table, dict):
        raise ConfigInvalid(f"{path}: [agent] must be a table", field="config")
    return dict(table)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in AgentConfig.model_fields:
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is not None and raw != "":
            values[key] = raw
    return values


def load_agent_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """File (``path``, else ``$HETUFLOW_AGENT_CONFIG``), then environment, then ``overrides``.

    ``overrides`` holds flag values; ``None`` values are ignored. Raises ``ConfigInvalid``
    naming the key and the problem.
    """
    environ = os.environ if env is None else env
    chosen = path if path is not None else environ.get(CONFIG_ENV) or None
    values: dict[str, Any] = {}
    source = "defaults"
    if chosen is not None:
        values.update(_read_file(Path(chosen)))
        source = str(chosen)
    from_env = _from_env(environ)
    if from_env:
        source += " + environment"
    values.update(from_env)
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    try:
        return AgentConfig.model_validate(values)
    except ValidationError as error:
        raise ConfigInvalid(_explain(error, source)) from None
