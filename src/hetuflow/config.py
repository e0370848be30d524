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

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
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

ENV_PREFIX = "HETUFLOW_"
DEFAULT_CONFIG_FILE = "config.toml"
DEFAULT_PRIORITY_AGING_SECONDS = 60.0


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
    max_concurrent_tasks: int = Field(default=100, ge=1)
    """Tasks held by agents at once, across all nodes."""
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
    max_log_bytes_per_attempt: int = Field(default=10 * 1024 * 1024, ge=0)
    max_log_line_bytes: int = Field(default=16 * 1024, ge=80)


class AuthConfig(_Section):
    enabled: bool | None = None
    """None: on when the server listens on a non-loopback address."""
    metrics_open: bool = False
    """With auth on, serve ``/metrics`` without a token (else a viewer token is needed)."""


class Config(_Section):
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    auth: AuthConfig = AuthConfig()

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


def parse_bind(value: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:8080``) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bind address {value!r} must be HOST:PORT, e.g. 0.0.0.0:8080")
    return host.strip("[]") or "0.0.0.0", int(port)


def _set_path(target: dict[str, Any], section: str, key: str, value: Any) -> None:
    target.setdefault(section, {})[key] = value


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
            if section in Config.model_fields:
                _set_path(raw, section, key, value)
    if url := env.get("DATABASE_URL"):
        _set_path(raw, "database", "url", url)
    return raw


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = {section: dict(values) for section, values in base.items()}
    for section, values in extra.items():
        merged.setdefault(section, {}).update(values)
    return merged


def _explain(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        lines.append(f"  {key}: {item['msg']}")
    return "\n".join(lines)


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
    source = "defaults"
    candidate = Path(path) if path is not None else Path(DEFAULT_CONFIG_FILE)
    if path is not None and not candidate.is_file():
        raise ConfigInvalid(f"config file {str(candidate)!r} does not exist", field="config")
    if candidate.is_file():
        source = str(candidate)
        try:
            file_values = tomllib.loads(candidate.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ConfigInvalid(f"{candidate}: not valid TOML: {error}") from None
    raw = _merge(_merge(file_values, _from_env(environ)), overrides or {})
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigInvalid(_explain(error, source)) from None
