"""An agent's reports about its own attempts may carry text no database can store (NUL, lone
surrogates, refused by the decoder) or numbers out of range: they are stored cleaned and never
hold up other agents' reports in a failing batch."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.models import TaskStatus

from .harness import Server, agent, fast_config, serve


@pytest.fixture
async def server(database: DatabaseConfig) -> AsyncIterator[Server]:
    async with serve(fast_config(database)) as running:
        yield running


async def test_unstorable_text_in_reports_does_not_poison_the_batch(server: Server) -> None:
    store = server.context.store
    async with agent(server, "echo", slots=1) as hostile, agent(server, "calm", slots=1) as calm:
        bad_id = await server.create_task(task_type="echo")
        good_id = await server.create_task(task_type="calm")
        [bad] = await hostile.dispatched(1)
        [good] = await calm.dispatched(1)
        bad_ref = f'"task_id":"{bad["task_id"]}","attempt":{bad["attempt"]}'
        good_ref = {"task_id": good["task_id"], "attempt": good["attempt"]}
        await hostile.send('{"type":"TaskLogs","lines":[{' + bad_ref + ',"line":"nul\\u0000!"}]}')
        await calm.send({"type": "TaskLogs", "lines": [{**good_ref, "line": "fine"}]})
        await hostile.send(
            '{"type":"TaskResult",' + bad_ref + ',"error":"bad\\u0000","outcome":"failed",'
            '"result":{"k\\u0000":"v\\u0000","n":1e400,"big":123456789012345678901234567890}}'
        )
        await calm.result(good, result={"ok": True})
        done = await server.wait_status(good_id, TaskStatus.SUCCEEDED)
        assert done.result == {"ok": True}
        assert [line.line for line in await store.list_logs(good_id)] == ["fine"]
        failed = await server.wait_status(bad_id, TaskStatus.FAILED)
        assert failed.error == "bad\ufffd"
        assert failed.result == {
            "k\ufffd": "v\ufffd",
            "n": None,
            "big": "123456789012345678901234567890",
        }
        lines = [line.line for line in await store.list_logs(bad_id)]
        assert lines == ["nul\ufffd!"]
        assert (await server.http.get(f"/api/tasks/{bad_id}")).status_code == 200


async def test_a_deeply_nested_result_is_cut_not_fatal(server: Server) -> None:
    async with agent(server, "echo", slots=1) as client:
        task_id = await server.create_task(task_type="echo")
        [task] = await client.dispatched(1)
        deep = "[" * 150 + "]" * 150
        await client.send(
            f'{{"type":"TaskResult","task_id":"{task["task_id"]}","attempt":{task["attempt"]},'
            f'"result":{deep},"finished_at":"0001-01-01T00:00:00+05:00"}}'
        )
        frame = await client.recv()  # refused at decode, or accepted and stored cut
        if frame["type"] == "Error":
            assert frame["code"] == "protocol_violation"
            await client.result(task, result={"ok": True})
        done = await server.wait_task(task_id, lambda t: t.status.is_terminal)
        assert done.status is TaskStatus.SUCCEEDED
