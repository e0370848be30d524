"""SDK: ``submit(dispatch="all")`` makes a broadcast (sent alone, even with coalescing on),
``children`` lists its children; no matching agent is a 409 ``ClientError``."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from hetuflow import AsyncClient
from hetuflow.client import ClientError
from hetuflow.models import AgentRegistration, BroadcastPolicy, TaskStatus
from hetuflow.server.context import ServerContext


async def test_submit_all_makes_a_broadcast(async_client: AsyncClient, app: FastAPI) -> None:
    with pytest.raises(ClientError) as nobody:
        await async_client.submit("probe", dispatch="all")
    assert (nobody.value.status, nobody.value.code) == (409, "no_agent_for_broadcast")
    context: ServerContext = app.state.context
    agents = [
        await context.store.connect_agent(
            AgentRegistration((), ("probe",), 1, name=name),
            node_id="node-elsewhere",
            now=context.clock.now(),
        )
        for name in ("a", "b")
    ]
    parent = await async_client.submit("probe", {"n": 1}, dispatch="all", broadcast_policy="any")
    assert (parent.status, parent.broadcast_policy) == (TaskStatus.WAITING, BroadcastPolicy.ANY)
    children = await async_client.children(parent.id)
    assert [child.pinned_agent_id for child in children] == [agent.id for agent in agents]
    assert {child.broadcast_of for child in children} == {parent.id}
    assert await async_client.children(children[0].id) == []
