"""The server's edge: ``Host``, ``Origin`` and proxy headers, over ASGI and over real sockets.

With auth off on loopback, a web page must not reach the server: not by a name of its own that
resolves to 127.0.0.1 (DNS rebinding: its ``Host``), not by a cross-site request or WebSocket
(its ``Origin``), and not through a reverse proxy that would publish the open server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from hetuflow.agent.config import AgentConfig
from hetuflow.config import AuthConfig, Config, DatabaseConfig, ServerConfig, load_config
from hetuflow.errors import ConfigInvalid
from hetuflow.server.app import create_app
from hetuflow.server.auth import issue_token
from hetuflow.server.edge import EdgePolicy, parse_host
from hetuflow.tokens import Role

from .conftest import bearer, context_of

TASK = {"name": "t", "task_type": "shell", "payload": {"command": "touch /tmp/owned"}}
EVIL = "http://evil.example"
BIN = Path(sys.executable).parent


class Http(httpx.AsyncClient):
    """A client of one app through ASGI, with that app at hand."""

    app: FastAPI

    async def task_count(self) -> int:
        return sum((await context_of(self.app).store.stats()).tasks_by_status.values())


@contextlib.asynccontextmanager
async def client_of(config: Config, base_url: str) -> AsyncIterator[Http]:
    application = create_app(config)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with Http(transport=transport, base_url=base_url) as http:
            http.app = application
            yield http


def open_config(database: DatabaseConfig, **server: Any) -> Config:
    """The default: auth off on 127.0.0.1."""
    return Config(database=database, server=ServerConfig.model_validate(server))


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


# --- auth off: Host ---------------------------------------------------------------------------


async def test_a_foreign_host_is_refused_with_auth_off(sqlite_database: DatabaseConfig) -> None:
    async with client_of(open_config(sqlite_database), "http://evil.example:8080") as http:
        created = await http.post("/api/tasks", json=TASK, headers={"Origin": EVIL + ":8080"})
        assert created.status_code == 400
        assert error_code(created) == "host_not_trusted"
        assert "trusted_hosts" in created.json()["error"]["message"]
        assert (await http.get("/api/tasks")).status_code == 400  # reads too: DNS rebinding
        one = await http.get(f"/api/tasks/{uuid.uuid4()}")  # answered before FastAPI
        assert (one.status_code, error_code(one)) == (400, "host_not_trusted")
        assert (await http.get("/")).status_code == 400
        assert (await http.get("/healthz")).status_code == 200  # probes: no data, any Host
        assert await http.task_count() == 0


@pytest.mark.parametrize(
    "base_url", ["http://localhost:8080", "http://127.0.0.1:8080", "http://[::1]:8080"]
)
async def test_the_loopback_names_are_trusted(
    sqlite_database: DatabaseConfig, base_url: str
) -> None:
    async with client_of(open_config(sqlite_database), base_url) as http:
        assert (await http.post("/api/tasks", json=TASK)).status_code == 201  # curl, the CLI


async def test_configured_trusted_hosts_replace_the_default(
    sqlite_database: DatabaseConfig,
) -> None:
    config = open_config(sqlite_database, trusted_hosts=["*.internal", "box"])
    async with client_of(config, "http://sched.internal:8080") as http:
        assert (await http.get("/api/tasks")).status_code == 200
        assert (await http.get("/api/tasks", headers={"Host": "box"})).status_code == 200
        assert (await http.get("/api/tasks", headers={"Host": "localhost"})).status_code == 400
        assert (await http.get("/api/tasks", headers={"Host": "internal"})).status_code == 400


# --- auth off: Origin -------------------------------------------------------------------------


async def test_a_cross_origin_post_is_refused(sqlite_database: DatabaseConfig) -> None:
    async with client_of(open_config(sqlite_database), "http://127.0.0.1:8080") as http:
        for origin in (EVIL, "http://127.0.0.1:3000", "http://localhost:8080", "null"):
            refused = await http.post("/api/tasks", json=TASK, headers={"Origin": origin})
            assert refused.status_code == 403, origin
            assert error_code(refused) == "origin_not_allowed"
        for method in ("PUT", "PATCH", "DELETE"):
            response = await http.request(method, "/api/cron-jobs/x", headers={"Origin": EVIL})
            assert response.status_code == 403
        assert await http.task_count() == 0


async def test_same_origin_requests_of_the_console_pass(sqlite_database: DatabaseConfig) -> None:
    async with client_of(open_config(sqlite_database), "http://127.0.0.1:8080") as http:
        for origin in ("http://127.0.0.1:8080", "HTTP://127.0.0.1:8080"):
            created = await http.post("/api/tasks", json=TASK, headers={"Origin": origin})
            assert created.status_code == 201, created.text
        listed = await http.get("/api/tasks", headers={"Origin": EVIL})
        assert listed.status_code == 200  # a read: the browser keeps the answer from the page
        assert "access-control-allow-origin" not in listed.headers
        assert await http.task_count() == 2


async def test_allowed_origins_may_change_state(sqlite_database: DatabaseConfig) -> None:
    config = open_config(sqlite_database, allowed_origins=["https://Tools.example.com:443"])
    async with client_of(config, "http://localhost:8080") as http:
        origin = {"Origin": "https://tools.example.com"}
        assert (await http.post("/api/tasks", json=TASK, headers=origin)).status_code == 201
        other = {"Origin": "https://tools.example.com:8443"}
        assert (await http.post("/api/tasks", json=TASK, headers=other)).status_code == 403


# --- auth off: proxies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "scheduler.example.com"),
        ("Forwarded", "for=203.0.113.9"),
        ("X-Real-IP", "203.0.113.9"),
    ],
)
async def test_proxied_requests_are_refused_while_auth_is_off(
    sqlite_database: DatabaseConfig, header: tuple[str, str]
) -> None:
    async with client_of(open_config(sqlite_database), "http://127.0.0.1:8080") as http:
        created = await http.post("/api/tasks", json=TASK, headers=dict([header]))
        assert created.status_code == 403
        assert error_code(created) == "proxy_requires_auth"
        assert "[auth] enabled = true" in created.json()["error"]["message"]
        assert (await http.get("/api/stats", headers=dict([header]))).status_code == 403
        one = await http.get(f"/api/tasks/{uuid.uuid4()}", headers=dict([header]))
        assert (one.status_code, error_code(one)) == (403, "proxy_requires_auth")
        assert await http.task_count() == 0


async def test_a_webhook_delivery_cannot_act_on_a_hetuflow_server(
    sqlite_database: DatabaseConfig,
) -> None:
    """A task whose webhook_url names this server's own API (docs/webhooks.md#security): the
    delivery is refused before any route, with auth off or on, so it cannot retry, trigger
    or create anything (nor loop)."""
    delivery = {"X-Hetuflow-Delivery-Id": "0d3c8a43-5b2e-4c44-9a31-5f0f6d1c2b7e"}
    async with client_of(open_config(sqlite_database), "http://127.0.0.1:8080") as http:
        created = await http.post("/api/tasks", json=TASK)
        assert created.status_code == 201
        task_id = created.json()["id"]
        await http.delete(f"/api/tasks/{task_id}")
        for path in (f"/api/tasks/{task_id}/retry", f"/api/tasks/{task_id}/replay", "/api/tasks"):
            refused = await http.post(path, json=TASK, headers=delivery)
            assert (refused.status_code, error_code(refused)) == (403, "webhook_delivery_refused")
        assert "webhook_url" in refused.json()["error"]["message"]
        assert await http.task_count() == 1
    config = Config(database=sqlite_database, auth=AuthConfig(enabled=True))
    async with client_of(config, "http://scheduler.example.com") as http:
        context = context_of(http.app)
        secret, _ = await issue_token(
            context.store, name="op", role=Role.OPERATOR, now=context.clock.now()
        )
        refused = await http.post("/api/tasks", json=TASK, headers={**bearer(secret), **delivery})
        assert (refused.status_code, error_code(refused)) == (403, "webhook_delivery_refused")


# --- auth on ----------------------------------------------------------------------------------


async def test_with_auth_on_any_host_and_proxies_pass_but_origins_are_checked(
    sqlite_database: DatabaseConfig,
) -> None:
    config = Config(database=sqlite_database, auth=AuthConfig(enabled=True))
    async with client_of(config, "http://scheduler.example.com") as http:
        assert (await http.get("/api/tasks")).status_code == 401  # the token decides
        context = context_of(http.app)
        secret, _ = await issue_token(
            context.store, name="op", role=Role.OPERATOR, now=context.clock.now()
        )
        proxied = {**bearer(secret), "X-Forwarded-For": "203.0.113.9"}
        assert (await http.post("/api/tasks", json=TASK, headers=proxied)).status_code == 201
        # the console behind a TLS proxy: https origin, plain http to the server, same host
        console = {**proxied, "Origin": "https://scheduler.example.com"}
        assert (await http.post("/api/tasks", json=TASK, headers=console)).status_code == 201
        cross = {**bearer(secret), "Origin": EVIL}
        refused = await http.post("/api/tasks", json=TASK, headers=cross)
        assert (refused.status_code, error_code(refused)) == (403, "origin_not_allowed")


async def test_with_auth_on_configured_trusted_hosts_apply(sqlite_database: DatabaseConfig) -> None:
    config = Config(
        database=sqlite_database,
        server=ServerConfig(trusted_hosts=("scheduler.example.com",)),
        auth=AuthConfig(enabled=True),
    )
    async with client_of(config, "http://evil.example") as http:
        assert error_code(await http.get("/api/tasks")) == "host_not_trusted"
        good = await http.get("/api/tasks", headers={"Host": "scheduler.example.com"})
        assert good.status_code == 401


# --- real server processes -------------------------------------------------------------------


@dataclass
class Running:
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def server_process(tmp_path: Path, **env: str) -> AsyncIterator[Running]:
    """``hetuflow-server start`` on 127.0.0.1 with its own SQLite file; output in a file."""
    running = Running(free_port(), tmp_path / "server.log")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HETUFLOW_")}
    environ.pop("DATABASE_URL", None)
    database = f"sqlite:///{tmp_path / 'edge.db'}"
    argv = [str(BIN / "hetuflow-server"), "start", "--bind", f"127.0.0.1:{running.port}"]
    with running.log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *argv,
            "--database-url",
            database,
            cwd=tmp_path,
            env={**environ, "HETUFLOW_DATABASE__URL": database, **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=running.url) as http, asyncio.timeout(30):
            while True:
                assert process.returncode is None, running.log.read_text()
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


CAPABILITIES = {
    "type": "AgentCapabilities",
    "name": "local",
    "capabilities": {
        "capabilities": [],
        "max_concurrent_tasks": 1,
        "supported_task_types": ["shell"],
    },
}


async def frame_of(ws: ClientConnection, message_type: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            frame: dict[str, Any] = json.loads(await ws.recv())
            if frame["type"] == message_type:
                return frame


async def handshake_refused(url: str, **options: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url, open_timeout=5, close_timeout=1, **options):
            pass
    response = caught.value.response
    error: dict[str, Any] = json.loads(response.body)["error"]
    return response.status_code, error


async def test_a_cross_site_websocket_is_refused_before_registration(tmp_path: Path) -> None:
    async with server_process(tmp_path) as running, httpx.AsyncClient() as http:
        created = await http.post(running.url + "/api/tasks", json=TASK)
        assert created.status_code == 201
        cross = {"Origin": EVIL}
        status, error = await handshake_refused(running.ws_url, additional_headers=cross)
        assert (status, error["code"]) == (403, "origin_not_allowed")
        proxied = {"X-Forwarded-For": "203.0.113.9"}
        status, error = await handshake_refused(running.ws_url, additional_headers=proxied)
        assert (status, error["code"]) == (403, "proxy_requires_auth")
        rebound = f"ws://evil.example:{running.port}/ws"
        status, error = await handshake_refused(rebound, host="127.0.0.1", port=running.port)
        assert (status, error["code"]) == (400, "host_not_trusted")
        assert (await http.get(running.url + "/api/agents")).json()["items"] == []
        # an agent (no Origin) connects and gets the task; so does a page of the server itself
        async with connect(running.ws_url, open_timeout=5, close_timeout=1) as ws:
            await ws.send(json.dumps(CAPABILITIES))
            await frame_of(ws, "AgentRegistered")
            [task] = (await frame_of(ws, "TaskDispatch"))["tasks"]
            assert task["payload"] == TASK["payload"]
        own = {"Origin": running.url}
        async with connect(running.ws_url, additional_headers=own, open_timeout=5) as ws:
            await ws.send(json.dumps(CAPABILITIES))
            await frame_of(ws, "AgentRegistered")


async def test_tokens_never_reach_the_access_log(tmp_path: Path) -> None:
    """A token sent as ``?token=`` (tools that cannot set headers) is not written to the
    server's log; the access lines are still there, without their query strings."""
    env = {"HETUFLOW_AUTH__ENABLED": "true", "HETUFLOW_SERVER__ACCESS_LOG": "true"}
    async with server_process(tmp_path, **env) as running:
        made = await asyncio.create_subprocess_exec(
            str(BIN / "hetuflow-server"),
            "create-agent-token",
            "local",
            "--database-url",
            f"sqlite:///{tmp_path / 'edge.db'}",
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await made.communicate()
        assert made.returncode == 0, err
        secret = out.decode().strip()
        assert secret.startswith("hf_")
        async with connect(f"{running.ws_url}?token={secret}", open_timeout=5) as ws:
            await ws.send(json.dumps(CAPABILITIES))
            await frame_of(ws, "AgentRegistered")
        # with auth on a cross-site page may not open /ws even with a token
        status, error = await handshake_refused(
            f"{running.ws_url}?token={secret}", additional_headers={"Origin": EVIL}
        )
        assert (status, error["code"]) == (403, "origin_not_allowed")
        async with httpx.AsyncClient(base_url=running.url) as http:
            listed = await http.get(f"/api/agents?token={secret}&limit=5", headers=bearer(secret))
            assert listed.status_code == 403  # an agent token reads nothing
    log = running.log.read_text()
    assert '"WebSocket /ws" [accepted]' in log
    assert '"WebSocket /ws" 403' in log
    assert '"GET /api/agents HTTP/1.1" 403' in log
    assert secret not in log
    assert "token=" not in log


async def test_the_access_log_is_off_unless_asked_for(tmp_path: Path) -> None:
    """One line per request costs each request more than uvicorn's own work: off by default,
    ``[server] access_log = true`` turns it on. WebSocket handshakes are logged either way."""
    async with server_process(tmp_path) as running:
        async with httpx.AsyncClient(base_url=running.url) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/api/agents")).status_code == 200
        async with connect(running.ws_url, open_timeout=5) as ws:
            await ws.send(json.dumps(CAPABILITIES))
            await frame_of(ws, "AgentRegistered")
    log = running.log.read_text()
    assert '"WebSocket /ws" [accepted]' in log
    assert "GET /healthz" not in log
    assert "GET /api/agents" not in log


# --- the policy's small parts -----------------------------------------------------------------


def test_host_headers_are_parsed_strictly() -> None:
    assert parse_host("LocalHost:8080") == ("localhost", 8080)
    assert parse_host("[::1]:8080") == ("::1", 8080)
    assert parse_host("[0:0::1]") == ("::1", None)
    assert parse_host("127.0.0.1") == ("127.0.0.1", None)
    for bad in ("", ":80", "a:b", "::1", "[::1", "[nope]:80", "a b", "a:", "a:0", "ä.example"):
        assert parse_host(bad) is None, bad


def test_the_default_trusted_hosts_follow_auth_and_the_bind_address() -> None:
    default = EdgePolicy.of(Config())
    assert default.trusted_hosts == ("localhost", "127.0.0.1", "::1")
    assert default.refuse_proxied
    bound = EdgePolicy.of(Config(server=ServerConfig(bind_address="127.0.0.2:9000")))
    assert bound.trusted_hosts == ("localhost", "127.0.0.1", "::1", "127.0.0.2")
    public = EdgePolicy.of(Config(server=ServerConfig(bind_address="0.0.0.0:8080")))
    assert (public.trusted_hosts, public.refuse_proxied) == (None, False)  # auth is on
    star = Config(server=ServerConfig(trusted_hosts=("*",)), auth=AuthConfig(enabled=False))
    assert EdgePolicy.of(star).trusted_hosts is None


def test_bad_trusted_hosts_and_origins_are_config_errors() -> None:
    for key, value in (
        ("TRUSTED_HOSTS", "example.com:8080"),
        ("TRUSTED_HOSTS", "http://example.com"),
        ("ALLOWED_ORIGINS", "example.com"),
        ("ALLOWED_ORIGINS", "https://example.com/path"),
    ):
        with pytest.raises(ConfigInvalid, match=key.lower()):
            load_config(env={f"HETUFLOW_SERVER__{key}": value})
    loaded = load_config(
        env={
            "HETUFLOW_SERVER__TRUSTED_HOSTS": "Sched.example.com, [::1]",
            "HETUFLOW_SERVER__ALLOWED_ORIGINS": "https://a.example:443,http://b.example:8080",
        }
    )
    assert loaded.server.trusted_hosts == ("sched.example.com", "::1")
    assert loaded.server.allowed_origins == ("https://a.example", "http://b.example:8080")


def scope_of(method: str, headers: dict[str, str], kind: str = "http") -> dict[str, Any]:
    raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    return {"type": kind, "method": method, "path": "/api/tasks", "headers": raw}


def test_a_request_without_host_is_no_browser_but_its_origin_still_counts() -> None:
    policy = EdgePolicy.of(Config())
    assert policy.check(scope_of("POST", {})) is None  # HTTP/1.0 tools send no Host
    refused = policy.check(scope_of("POST", {"Origin": "http://127.0.0.1:8080"}))
    assert refused is not None
    assert refused.code == "origin_not_allowed"
    assert policy.check(scope_of("GET", {"Host": "127.0.0.1:8080", "Origin": EVIL})) is None
    websocket = scope_of("GET", {"Host": "127.0.0.1:8080", "Origin": EVIL}, "websocket")
    refused = policy.check(websocket)
    assert refused is not None
    assert "open a WebSocket" in refused.message


def test_an_agent_moves_a_token_from_its_url_to_the_header() -> None:
    config = AgentConfig(server="ws://127.0.0.1:8080/ws?token=hf_secret&x=1")
    assert (config.server, config.token) == (["ws://127.0.0.1:8080/ws?x=1"], "hf_secret")
    given = AgentConfig(server="wss://s.example/ws?token=hf_old", token="hf_flag")
    assert (given.server, given.token) == (["wss://s.example/ws"], "hf_flag")
    several = AgentConfig(server=["ws://a/ws", "ws://b/ws?token=hf_b"])
    assert (several.server, several.token) == (["ws://a/ws", "ws://b/ws"], "hf_b")
