"""The SDK's trigger, event and hook methods against a real server (sync) and over ASGI
(async)."""

from __future__ import annotations

import time

import httpx
import pytest

from hetuflow.client import AsyncClient, Client, ClientError
from hetuflow.triggers import signature


def test_triggers_events_and_hooks(client: Client, server_url: str) -> None:
    trigger = client.create_trigger(
        "invoice", "order.created", {"task_type": "invoice"}, filter={"status": "paid"}
    )
    assert (trigger.name, trigger.event, trigger.filter) == (
        "invoice",
        "order.created",
        {"status": "paid"},
    )
    assert client.list_triggers() == [trigger]
    assert client.list_triggers(event="other") == []
    assert client.get_trigger(trigger.id) == trigger
    sent = client.send_event("order.created", {"status": "paid"}, event_id="o1")
    assert sent.created
    [task] = sent.tasks
    assert task.payload["event"]["data"] == {"status": "paid"}
    again = client.send_event("order.created", {"status": "paid"}, event_id="o1")
    assert not again.created
    assert [t.id for t in again.tasks] == [task.id]
    with pytest.raises(ClientError) as error:
        client.send_event("order.creatd")
    assert (error.value.status, error.value.code) == (422, "no_trigger")

    hook = client.create_hook("shop", "order.created")
    assert hook.secret is not None
    assert [h.name for h in client.list_hooks()] == ["shop"]
    assert client.list_hooks()[0].secret is None
    body = b'{"status": "paid"}'
    stamp = str(int(time.time()))
    called = httpx.post(
        f"{server_url}{hook.path}",
        content=body,
        headers={
            "X-Hetuflow-Timestamp": stamp,
            "X-Hetuflow-Signature": signature(hook.secret, stamp, body),
        },
    )
    assert called.status_code == 201, called.text
    client.delete_hook("shop")
    assert client.list_hooks() == []
    client.delete_trigger(trigger.id)
    assert client.list_triggers() == []


async def test_async_triggers(async_client: AsyncClient) -> None:
    trigger = await async_client.create_trigger("t", "k", {"task_type": "x"})
    assert [t.id for t in await async_client.list_triggers(event="k")] == [trigger.id]
    sent = await async_client.send_event("k", {"a": 1})
    assert [t.task_type for t in sent.tasks] == ["x"]
    hook = await async_client.create_hook("h", "k", secret="0123456789abcdef")
    assert hook.secret == "0123456789abcdef"
    assert [h.name for h in await async_client.list_hooks()] == ["h"]
    await async_client.delete_hook("h")
    assert (await async_client.get_trigger(trigger.id)).name == "t"
    await async_client.delete_trigger(trigger.id)
    assert await async_client.list_triggers() == []
    document = {"name": "w", "steps": [{"name": "a", "task_type": "x"}]}
    flow = await async_client.create_trigger("flow", "k", workflow=document)
    assert (flow.task, flow.workflow) == (None, document)
    started = await async_client.send_event("k")
    assert [w.name for w in started.workflows] == ["w"]
    assert started.workflows[0].step("a").task.payload["event"]["key"] == "k"
