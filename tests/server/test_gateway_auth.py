"""Agent auth over a real socket: the handshake needs a token, an agent token binds the
connection to its agent, and an agent can only report on attempts dispatched to it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote
from uuid import UUID

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from hetuflow.config import AuthConfig, DatabaseConfig
from hetuflow.models import AgentStatus, NewAgent, TaskStatus
from hetuflow.server.auth import issue_token
from hetuflow.tokens import Role

from .harness import Agent, Server, capabilities, eventually, fast_config, serve


@pytest.fixture
async def server(database: DatabaseConfig) -> AsyncIterator[Server]:
    config = fast_config(database).model_copy(update={"auth": AuthConfig(enabled=True)})
    async with serve(config) as running:
        running.http.headers["Authorization"] = f"Bearer {await api_token(running, Role.ADMIN)}"
        yield running


async def agent_token(server: Server, name: str, **options: Any) -> tuple[UUID, str]:
    store, now = server.context.store, server.context.clock.now()
    agent = await store.get_agent_by_name(name) or await store.create_agent(NewAgent(name), now=now)
    secret, _ = await issue_token(
        store, name=name, role=Role.AGENT, now=now, agent_id=agent.id, **options
    )
    return agent.id, secret


async def api_token(server: Server, role: Role) -> str:
    context = server.context
    secret, _ = await issue_token(context.store, name=role, role=role, now=context.clock.now())
    return secret


@contextlib.asynccontextmanager
async def connected(
    server: Server, secret: str | None, *, query: bool = False
) -> AsyncIterator[Agent]:
    url = server.ws_url
    headers = {}
    if secret is not None and query:
        url += "?token=" + quote(secret)
    elif secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    async with connect(url, additional_headers=headers, open_timeout=5, close_timeout=1) as ws:
        yield Agent(ws)


async def refused(server: Server, secret: str | None, status: int) -> dict[str, Any]:
    with pytest.raises(InvalidStatus) as caught:
        async with connected(server, secret):
            pass
    response = caught.value.response
    assert response.status_code == status
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    error: dict[str, Any] = json.loads(response.body)["error"]
    return error


async def test_without_a_valid_token_the_handshake_is_refused(server: Server) -> None:
    await server.create_task(task_type="shell", payload={"command": "echo secret"})
    assert (await refused(server, None, 401))["code"] == "unauthorized"
    assert "not valid" in (await refused(server, "hf_guess", 401))["message"]
    viewer = await api_token(server, Role.VIEWER)
    operator = await api_token(server, Role.OPERATOR)
    for secret in (viewer, operator):
        assert "agent token" in (await refused(server, secret, 403))["message"]
    now = server.context.clock.now()
    _, expired = await agent_token(server, "old", expires_at=now - timedelta(seconds=1))
    assert "expired" in (await refused(server, expired, 401))["message"]
    agent_id, revoked = await agent_token(server, "gone")
    [token] = [t for t in await server.context.store.list_api_tokens() if t.agent_id == agent_id]
    await server.context.store.revoke_api_token(token.id, now=now)
    assert "revoked" in (await refused(server, revoked, 401))["message"]
    # none of them was ever online, and the task still waits
    agents = await server.context.store.list_agents(statuses=[AgentStatus.ONLINE])
    assert agents == []
    assert (await server.context.store.stats()).tasks_by_status[TaskStatus.PENDING] == 1


async def test_an_agent_token_registers_as_its_agent(server: Server) -> None:
    agent_id, secret = await agent_token(server, "agent-1")
    for query in (False, True):
        async with connected(server, secret, query=query) as client:
            await client.send(capabilities(["echo"]))  # no name, no id: the token says who
            answer = await client.expect("AgentRegistered")
            assert (answer["agent_id"], answer["name"]) == (str(agent_id), "agent-1")
    async with connected(server, secret) as client:
        await client.send(capabilities(["echo"], name="agent-1"))
        assert (await client.expect("AgentRegistered"))["agent_id"] == str(agent_id)
        task_id = await server.create_task(task_type="echo")
        [task] = await client.dispatched(1)
        await client.result(task)
        await server.wait_status(task_id, TaskStatus.SUCCEEDED)


@pytest.mark.parametrize("claim", ["name", "agent_id", "id_as_name"])
async def test_an_agent_token_cannot_register_as_another_agent(server: Server, claim: str) -> None:
    _, secret = await agent_token(server, "agent-1")
    other_id, _ = await agent_token(server, "agent-2")
    await server.create_task(task_type="echo")
    options: dict[str, Any] = {
        "name": {"name": "agent-2"},
        "agent_id": {"agent_id": str(other_id)},
        "id_as_name": {"agent_id": "agent-2"},
    }[claim]
    async with connected(server, secret) as client:
        await client.send(capabilities(["echo"], **options))
        error = await client.expect("Error")
        assert error["code"] == "agent_token_mismatch"
        assert await client.closed() == (4001, "the token belongs to another agent")
    assert not [frame for frame in client.frames if frame["type"] == "TaskDispatch"]
    assert await server.context.store.list_agents(statuses=[AgentStatus.ONLINE]) == []


async def test_an_admin_token_may_connect_any_agent(server: Server) -> None:
    admin = await api_token(server, Role.ADMIN)
    async with connected(server, admin) as client:
        await client.send(capabilities(["echo"], name="anything"))
        assert (await client.expect("AgentRegistered"))["name"] == "anything"


async def test_an_agent_cannot_report_on_another_agents_attempt(server: Server) -> None:
    store = server.context.store
    _, first_secret = await agent_token(server, "agent-1")
    _, second_secret = await agent_token(server, "agent-2")
    async with connected(server, first_secret) as first:
        await first.send(capabilities(["echo"], slots=1))
        await first.expect("AgentRegistered")
        task_id = await server.create_task(task_type="echo")
        [task] = await first.dispatched(1)
        async with connected(server, second_secret) as second:
            await second.send(capabilities(["other"], slots=1))
            await second.expect("AgentRegistered")
            ref = {"task_id": task["task_id"], "attempt": task["attempt"]}
            await second.send({"type": "TaskStarted", **ref})
            await second.send({"type": "TaskProgress", **ref, "progress": 0.9})
            await second.send({"type": "TaskLogs", "lines": [{**ref, "line": "forged"}]})
            await second.send({"type": "TaskResult", **ref, "result": {"forged": True}})
            cancel = await second.expect("TaskCancel")
            assert (cancel["task_id"], cancel["reason"]) == (task["task_id"], "superseded")

            async def forged_result_was_rejected() -> bool:
                attempts = await store.list_attempts(task_id)
                return attempts[0].outcome is None

            await eventually(forged_result_was_rejected)
        current = await server.task(task_id)
        assert current.status is TaskStatus.DISPATCHED
        assert (current.result, current.progress) == (None, None)
        assert await store.list_logs(task_id) == []
        await first.result(task, result={"real": True})
        done = await server.wait_status(task_id, TaskStatus.SUCCEEDED)
        assert done.result == {"real": True}
