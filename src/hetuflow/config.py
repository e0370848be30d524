"""Server configuration: ``config.toml``, then the environment, then CLI flags.

The seed's sections and keys are kept exactly (``[server] bind_address, workers``,
``[database] type, host, port, database, max_connections``, ``[scheduler]
max_concurrent_tasks, retry_interval_seconds, cleanup_interval_seconds``); the rest is ours.
With no file at all the defaults give an embedded server: SQLite in ``./hetuflow.db`` on
127.0.0.1:8080.

Environment: ``DATABASE_URL`` (``postgresql://…`` or ``sqlite:///path``) and
``HETUFLOW_<SECTION>__<KEY>`` for any key, e.g. ``HETUFLOW_SERVER__BIND_ADDRESS``.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hetuflow.errors import ConfigInvalid
from hetuflow.webhooks import check_allowed_hosts

ENV_PREFIX = "HETUFLOW_"
DEFAULT_CONFIG_FILE = "config.toml"
DEFAULT_PRIORITY_AGING_SECONDS = 60.0
DEFAULT_MAX_AGENT_CRASHES_PER_TASK = 3


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    bind_address: str = "127.0.0.1:8080"
    workers: int = Field(default=1, ge=1, le=64)
    """Server processes. On PostgreSQL each is a node sharing the database; SQLite runs one."""
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_batch_tasks: int = Field(default=1000, ge=1, le=100_000)
    """Most tasks one ``POST /api/tasks/batch`` may create."""
    max_payload_bytes: int = Field(default=256 * 1024, ge=2)
    """Largest payload of one task, as compact JSON (413 ``payload_too_large`` beyond)."""
    max_frame_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024)
    """Largest WebSocket frame an agent may send (uvicorn closes the connection with 1009)."""
    max_bad_frames: int = Field(default=20, ge=1)
    """Bad frames an agent may send within ``bad_frame_window_seconds`` before it is
    disconnected (1008)."""
    bad_frame_window_seconds: float = Field(default=10.0, gt=0)
    tls_cert_file: str | None = None
    """Serve HTTPS and WSS with this PEM certificate (chain) and ``tls_key_file``."""
    tls_key_file: str | None = None
    node_id: str | None = None
    """Name of this node in a cluster; generated when absent."""
    log_format: Literal["text", "json"] = "text"
    log_level: str = "info"
    access_log: bool = False
    """One line per HTTP request (``uvicorn.access``, query strings cut off). Off by default:
    at ``info`` it cost each request more than the rest of uvicorn's work
    (docs/benchmarks.md); WebSocket handshakes and errors are logged either way."""
    trusted_hosts: tuple[str, ...] | None = None
    """Host names a request's ``Host`` header may carry (``example.com``, ``*.example.com``,
    ``*`` for any; no port). Unset: with auth off the loopback names and the bound address,
    with auth on any host. See docs/security.md."""
    allowed_origins: tuple[str, ...] = ()
    """Web origins (``https://tools.example.com``) besides the server's own whose pages may
    change state or open ``/ws``; a browser request from any other origin gets 403."""

    @field_validator("trusted_hosts", "allowed_origins", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        """The environment gives one string: ``a.example.com,b.example.com``."""
        if isinstance(value, str):
            return [item.strip() for item in value.replace(" ", ",").split(",") if item.strip()]
        return value

    @field_validator("trusted_hosts")
    @classmethod
    def _check_hosts(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        return tuple(check_host_pattern(item) for item in value)

    @field_validator("allowed_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_origin(item) for item in value)

    @field_validator("bind_address")
    @classmethod
    def _check_bind(cls, value: str) -> str:
        parse_bind(value)
        return value

    @property
    def host(self) -> str:
        return parse_bind(self.bind_address)[0]

    @property
    def port(self) -> int:
        return parse_bind(self.bind_address)[1]


class DatabaseConfig(_Section):
    type: Literal["sqlite", "postgres"] = "sqlite"
    host: str = "localhost"
    port: int = Field(default=5432, ge=1, le=65535)
    database: str = "hetuflow"
    user: str = "postgres"
    password: str = ""
    max_connections: int = Field(default=20, ge=1, le=10_000)
    path: str = "hetuflow.db"
    """SQLite file (``type = "sqlite"``)."""
    url: str | None = None
    """A full URL; wins over the separate keys. ``DATABASE_URL`` sets it."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None:
            scheme = urlsplit(value).scheme
            if scheme not in ("postgres", "postgresql", "sqlite"):
                raise ValueError(
                    f"unsupported scheme {scheme!r}: use postgresql://… or sqlite:///path"
                )
        return value

    @property
    def kind(self) -> Literal["sqlite", "postgres"]:
        if self.url is not None:
            return "sqlite" if self.url.startswith("sqlite") else "postgres"
        return self.type

    @property
    def dsn(self) -> str:
        """A PostgreSQL DSN (``kind == "postgres"``)."""
        if self.url is not None:
            return self.url
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(self.database, safe='')}"

    @property
    def sqlite_path(self) -> str:
        """The SQLite file (``kind == "sqlite"``); ``sqlite:///rel`` or ``sqlite:////abs``."""
        if self.url is not None:
            return unquote(self.url.removeprefix("sqlite://").removeprefix("/")) or self.path
        return self.path


class SchedulerConfig(_Section):
    max_concurrent_tasks: int = Field(default=100, ge=0)
    """Tasks held by agents at once, across all nodes. 0: no global limit (each agent's slots
    still hold); on PostgreSQL claims then skip the cluster-wide advisory lock and the count
    of active tasks that keep the limit exact (docs/deploy.md, "Where the bound moves")."""
    retry_interval_seconds: float = Field(default=60, ge=0)
    """Default base of the retry backoff."""
    cleanup_interval_seconds: float = Field(default=3600, gt=0)
    retention_seconds: float = Field(default=7 * 24 * 3600, gt=0)
    """Finished tasks older than this are deleted by the cleanup loop."""
    prune_offline_agents_after_seconds: float = Field(default=7 * 24 * 3600, ge=0)
    """Agents offline (not heard from) for longer than this are deleted by the cleanup loop,
    as ``DELETE /api/agents/{id}`` does: their tasks' history stays. 0: never."""
    heartbeat_interval_seconds: float = Field(default=5, gt=0)
    heartbeat_misses: int = Field(default=3, ge=1)
    """An agent silent for ``heartbeat_interval_seconds * heartbeat_misses`` is offline."""
    reconnect_grace_seconds: float = Field(default=1.0, ge=0)
    """After a disconnect, how long an agent's attempts wait for it to come back."""
    dispatch_lookahead_seconds: float = Field(default=2.0, ge=0)
    """Tasks due within this window are handed out early and started on time by the agent."""
    priority_aging_seconds: float = Field(
        default=DEFAULT_PRIORITY_AGING_SECONDS, ge=0, le=1_000_000_000
    )
    """What one priority level is worth in waiting: a task that has been due this long ranks
    with one a level higher just created, so a steady flow of urgent tasks cannot starve the
    rest (docs/guarantees.md, "Ordering and aging"). 0: strict priority. Applies to tasks
    created from then on (each task's standing is computed when it is inserted)."""
    max_agent_crashes_per_task: int = Field(default=DEFAULT_MAX_AGENT_CRASHES_PER_TASK, ge=0)
    """A poison task: when a task's attempt is lost with its agent (the agent process crashed,
    was killed, or was cut off past the grace) for this many times, the task ends
    ``quarantined`` ("crashed N agents") instead of being dispatched again, so one bad task
    cannot take the whole fleet down. 0: never quarantine."""
    max_log_bytes_per_attempt: int = Field(default=10 * 1024 * 1024, ge=0)
    """Log volume one attempt may store; each line counts its UTF-8 bytes plus
    ``LOG_LINE_OVERHEAD_BYTES`` (64), so empty lines are not free. Past it: one marker line."""
    max_log_lines_per_attempt: int = Field(default=100_000, ge=1)
    """Log lines one attempt may store, whatever their size. Past it: one marker line."""
    max_log_line_bytes: int = Field(default=16 * 1024, ge=80)
    """Longer lines are cut (and say so)."""


class AuthConfig(_Section):
    enabled: bool | None = None
    """None: on when the server listens on a non-loopback address."""
    metrics_open: bool = False
    """With auth on, serve ``/metrics`` without a token (else a viewer token is needed)."""


MIN_WEBHOOK_SECRET_LENGTH = 16


class WebhooksConfig(_Section):
    """``[webhooks]``: outgoing webhooks (docs/webhooks.md)."""

    secret: str | None = None
    """Signs every delivery (HMAC-SHA256, as incoming hook calls are signed); the same on
    every node. Unset: tasks and cron jobs with a ``webhook_url`` are refused (422) and
    nothing is delivered. Never shown in an answer or a log."""
    max_attempts: int = Field(default=10, ge=1, le=1000)
    """POSTs of one delivery before it is given up."""
    backoff_seconds: float = Field(default=10.0, ge=0, le=86_400)
    """Wait after the first failed POST, doubled after each next one..."""
    max_backoff_seconds: float = Field(default=3600.0, ge=0, le=7 * 86_400)
    """...up to this."""
    jitter: float = Field(default=0.2, ge=0, le=1)
    """The random fraction of each wait (as a task's ``retry_jitter``)."""
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    """One POST's limit (connect, send, answer); a claim's lease is this plus 30 s."""
    poll_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    """Longest sleep between looks at the outbox. A new delivery wakes PostgreSQL nodes at
    once (NOTIFY); on SQLite it is sent within this interval. A retry is timed exactly."""
    max_in_flight: int = Field(default=16, ge=1, le=1000)
    """POSTs one node sends at once."""
    allowed_hosts: tuple[str, ...] = ()
    """If set, a ``webhook_url`` must name one of these hosts (``hooks.example.com``,
    ``*.example.com``, an IP address or a CIDR network): others are refused (422) at create
    and given up at delivery. Empty: any host."""

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: str | None) -> str | None:
        if value is not None and len(value) < MIN_WEBHOOK_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_WEBHOOK_SECRET_LENGTH} characters")
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        """The environment gives one string: ``a.example.com,10.0.0.0/8``."""
        if isinstance(value, str):
            return [item.strip() for item in value.replace(" ", ",").split(",") if item.strip()]
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_allowed_hosts(value)

    def __repr_args__(self) -> Any:
        """Everything but the secret (a config printed in a log or a traceback)."""
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "secret" and value is not None else value)


class Config(_Section):
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    auth: AuthConfig = AuthConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    concurrency: dict[str, Annotated[int, Field(ge=1, le=1_000_000)]] = Field(default_factory=dict)
    """``[concurrency]``: the limit of a concurrency key by task type (``"report" = 2``), for
    a keyed task that names no ``max_concurrent_per_key``; a type not listed: 1."""

    @model_validator(mode="after")
    def _check_tls(self) -> Config:
        server = self.server
        if (server.tls_cert_file is None) != (server.tls_key_file is None):
            raise ValueError("[server] tls_cert_file and tls_key_file go together: set both")
        return self

    @property
    def auth_enabled(self) -> bool:
        """``[auth] enabled``, or when unset: on unless the server listens on loopback only."""
        if self.auth.enabled is not None:
            return self.auth.enabled
        return not is_loopback(self.server.host)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``; ``0.0.0.0``, ``::`` and names are not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host_pattern(value: str) -> str:
    """A ``trusted_hosts`` entry, lower-cased: a host name or IP address (IPv6 with or without
    brackets), ``*.domain`` or ``*``; never a port, scheme or path."""
    pattern = value.strip().lower()
    if pattern == "*":
        return pattern
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(pattern.removeprefix("[").removesuffix("]")))
    name = pattern.removeprefix("*.")
    if not name or any(char in name for char in ":/*@ ?#[]"):
        raise ValueError(
            f"trusted host {value!r} must be a host name without port (example.com),"
            " *.example.com or *"
        )
    return pattern


def check_origin(value: str) -> str:
    """An ``allowed_origins`` entry, normalised: ``scheme://host[:port]``, lower case, no
    default port, no path."""
    normal = normalize_origin(value)
    if normal is None:
        raise ValueError(
            f"allowed origin {value!r} must be scheme://host[:port],"
            " e.g. https://tools.example.com (no path)"
        )
    return normal


DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(value: str) -> str | None:
    """``HTTPS://Example.com:443`` -> ``https://example.com``; None when it is no origin."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in DEFAULT_PORTS or not host or parts.username or parts.password:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    host = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


def parse_bind(value: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:8080``) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bind address {value!r} must be HOST:PORT, e.g. 0.0.0.0:8080")
    return host.strip("[]") or "0.0.0.0", int(port)


def _set_path(target: dict[str, Any], section: str, key: str, value: Any) -> None:
    target.setdefault(section, {})[key] = value


Origins = dict[tuple[str, ...], str]
"""Where each ``(section, key)`` (and each ``(section,)``) came from: a file, an environment
variable, a flag; for error messages."""


def _from_env(env: Mapping[str, str], origins: Origins) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
            _set_path(raw, section, key, value)
            origins[(section, key)] = f"environment variable {name}"
            origins.setdefault((section,), f"environment variable {name}")
    if url := env.get("DATABASE_URL"):
        _set_path(raw, "database", "url", url)
        origins[("database", "url")] = "environment variable DATABASE_URL"
    return raw


def _note_origins(values: Mapping[str, Any], origin: str, origins: Origins) -> None:
    for section, table in values.items():
        origins[(section,)] = origin
        if isinstance(table, Mapping):
            for key in table:
                origins[(section, key)] = origin


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Sections of ``extra`` over those of ``base``, key by key (a section that is not a table
    is kept as it is, for validation to name)."""
    merged = {
        section: dict(values) if isinstance(values, Mapping) else values
        for section, values in base.items()
    }
    for section, values in extra.items():
        current = merged.get(section)
        if isinstance(current, dict) and isinstance(values, Mapping):
            current.update(values)
        else:
            merged[section] = dict(values) if isinstance(values, Mapping) else values
    return merged


_EXPECTED = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dict_type": "a table",
}


def _shown(value: Any) -> str:
    """An input value as the user wrote it: strings in double quotes, booleans as in TOML."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a table"
    return repr(value)


def _suggest(word: str, choices: list[str], show: Callable[[str], str] = str) -> str:
    """`` (did you mean bind_address?)`` by difflib, else the choices when they are few."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        if len(choices) <= 8:
            return f" (known: {', '.join(show(choice) for choice in choices)})"
        return ""
    return f" (did you mean {show(close[0])}?)"


def _section_fields(section: str) -> list[str]:
    annotation = Config.model_fields[section].annotation
    assert isinstance(annotation, type)
    assert issubclass(annotation, BaseModel)
    return list(annotation.model_fields)


def _problem(item: Any, origins: Origins) -> str:
    """One validation error as one line: where the value came from, the key, what is wrong."""
    loc = tuple(str(part) for part in item["loc"])
    kind = item["type"]
    origin = origins.get(loc) or (origins.get(loc[:1]) if loc else None)
    prefix = f"{origin}: " if origin else ""
    from_env = bool(origin and origin.startswith("environment variable"))
    key = ".".join(loc)
    if kind == "extra_forbidden":
        section = loc[0]
        if len(loc) == 1:

            def show_section(name: str) -> str:
                return f"{ENV_PREFIX}{name.upper()}__…" if from_env else f"[{name}]"

            hint = _suggest(section, list(Config.model_fields), show_section)
            return f"{prefix}unknown section [{section}]{hint}"

        def show_key(name: str) -> str:
            return f"{ENV_PREFIX}{section.upper()}__{name.upper()}" if from_env else name

        hint = _suggest(loc[-1], _section_fields(section), show_key)
        return f"{prefix}unknown key {key}{hint}"
    got = _shown(item.get("input"))
    if kind in _EXPECTED:
        return f"{prefix}{key}: expected {_EXPECTED[kind]}, got {got}"
    if kind == "literal_error":
        return f"{prefix}{key}: expected {item['ctx']['expected']}, got {got}"
    message = str(item["msg"]).removeprefix("Value error, ")
    if kind != "value_error":
        message = message.replace("Input should be", "should be") + f", got {got}"
    return f"{prefix}{key}: {message}" if key else f"{prefix}{message}"


def explain(error: ValidationError, origins: Origins) -> str:
    """A ``ValidationError`` of the configuration as lines people read, one per problem:
    ``config.toml: unknown key server.bind_adress (did you mean bind_address?)``,
    ``environment variable HETUFLOW_DATABASE__PORT: database.port: expected an integer,
    got "abc"``."""
    return "\n".join(_problem(item, origins) for item in error.errors())


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """File (``path``, else ``./config.toml`` if present), then environment, then overrides.

    Raises ``ConfigInvalid`` naming the key and the problem.
    """
    environ = os.environ if env is None else env
    file_values: dict[str, Any] = {}
    origins: Origins = {}
    candidate = Path(path) if path is not None else Path(DEFAULT_CONFIG_FILE)
    if path is not None and not candidate.is_file():
        raise ConfigInvalid(f"config file {str(candidate)!r} does not exist", field="config")
    if candidate.is_file():
        try:
            file_values = tomllib.loads(candidate.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ConfigInvalid(f"{candidate}: not valid TOML: {error}") from None
        _note_origins(file_values, str(candidate), origins)
    from_env = _from_env(environ, origins)
    _note_origins(overrides or {}, "command line", origins)
    raw = _merge(_merge(file_values, from_env), overrides or {})
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigInvalid(explain(error, origins)) from None
