"""Acceptance: an event and a signed hook call start a task that a real agent runs with the
event in its payload; a replayed event id starts nothing. A real server process, a real agent
process, the real CLI. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.triggers import signature

from .processes import BIN, api, cluster

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]


async def cli(server_url: str, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "hetuflow-server"),
        *args,
        "--server",
        server_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_events_and_hook_calls_run_their_tasks_once(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        await c.agent("worker", task_types="tr_invoice", modules=("trigger_handlers",))
        async with api(server) as http:
            await http.wait_agents_online(1)
            code, out = await cli(
                server.http_url,
                "create-trigger",
                "--name",
                "invoice",
                "--event",
                "order.paid",
                "--filter",
                '{"currency": "EUR"}',
                "--task-type",
                "tr_invoice",
                "--payload",
                '{"copies": 2}',
            )
            assert code == 0, out
            code, out = await cli(
                server.http_url,
                *("send-event", "order.paid", "--id", "o-1", "--json"),
                *("--data", '{"order": 1, "currency": "EUR"}'),
            )
            assert code == 0, out
            [task] = json.loads(out)["tasks"]
            done = await http.wait_status(task["id"], "succeeded")
            assert done["result"] == {"copies": 2, "key": "order.paid", "order": 1}

            # The same id again (a producer's retry): nothing new runs.
            code, out = await cli(
                server.http_url, "send-event", "order.paid", "--id", "o-1", "--json"
            )
            assert code == 0, out
            assert json.loads(out)["created"] is False
            # Another currency: the filter refuses it.
            code, out = await cli(
                server.http_url,
                *("send-event", "order.paid", "--json"),
                *("--data", '{"order": 2, "currency": "USD"}'),
            )
            assert json.loads(out)["matched"] == 0

            code, out = await cli(
                server.http_url, "create-hook", "--name", "shop", "--event", "order.paid", "--json"
            )
            assert code == 0, out
            secret = json.loads(out)["secret"]
            body = b'{"order": 3, "currency": "EUR"}'
            stamp = str(int(time.time()))
            headers = {
                "X-Hetuflow-Timestamp": stamp,
                "X-Hetuflow-Signature": signature(secret, stamp, body),
            }
            wrong = await http.http.post(
                "/api/hooks/shop", content=body, headers={**headers, "X-Hetuflow-Timestamp": "1"}
            )
            assert wrong.status_code == 401
            called = await http.http.post("/api/hooks/shop", content=body, headers=headers)
            assert called.status_code == 201, called.text
            [hooked] = called.json()["tasks"]
            done = await http.wait_status(hooked["id"], "succeeded")
            assert done["result"] == {"copies": 2, "key": "order.paid", "order": 3}
            again = await http.http.post("/api/hooks/shop", content=body, headers=headers)
            assert again.status_code == 200
            listed = (await http.http.get("/api/tasks")).json()
            assert listed["total"] == 2
