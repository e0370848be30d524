"""Light simulated agents: many WebSocket connections speaking the real protocol, one process.

``python -m benchmarks.simagents --url ws://127.0.0.1:8080/ws --count 5000 --prefix sim-0
--status status.json``

Each connection sends ``AgentCapabilities`` (task type ``bench-idle``, which no task has, so
nothing is ever dispatched to it), waits for ``AgentRegistered``, then sends an
``AgentHeartbeat`` every ``heartbeat_interval_seconds`` the server asked for and answers every
``Ping`` with a ``Pong``. The status file (JSON) says how many registered, failed, dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import connect

from benchmarks.harness import raise_fd_limit


class Fleet:
    def __init__(self, url: str, prefix: str, status: Path) -> None:
        self.url = url
        self.prefix = prefix
        self.status = status
        self.registered = 0
        self.failed = 0
        self.dropped = 0
        self.heartbeats = 0
        self.errors: dict[str, int] = {}
        self.started = time.monotonic()
        self.connect_seconds: float | None = None

    def write(self) -> None:
        body = {
            "registered": self.registered,
            "failed": self.failed,
            "dropped": self.dropped,
            "heartbeats": self.heartbeats,
            "errors": self.errors,
            "connect_seconds": self.connect_seconds,
        }
        temporary = self.status.with_suffix(".tmp")
        temporary.write_text(json.dumps(body))
        temporary.replace(self.status)

    async def agent(self, index: int, limit: asyncio.Semaphore) -> None:
        hello = orjson.dumps(
            {
                "type": "AgentCapabilities",
                "name": f"{self.prefix}-{index}",
                "capabilities": {"supported_task_types": ["bench-idle"], "max_concurrent_tasks": 1},
            }
        )
        registered = False
        try:
            async with limit:
                websocket = await connect(self.url, compression=None, open_timeout=120)
                await websocket.send(hello.decode())
                reply = orjson.loads(await websocket.recv())
                if reply.get("type") != "AgentRegistered":
                    raise RuntimeError(f"registration answered with {reply.get('type')}")
            registered = True
            self.registered += 1
            await self._serve(websocket, reply)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            key = f"{type(error).__name__}: {error}"[:120]
            self.errors[key] = self.errors.get(key, 0) + 1
            if registered:
                self.dropped += 1
            else:
                self.failed += 1

    async def _serve(self, websocket: Any, registered: dict[str, Any]) -> None:
        interval = float(registered["heartbeat_interval_seconds"])
        agent_id = registered["agent_id"]
        next_beat = time.monotonic() + random.uniform(0, interval)
        async with websocket:
            while True:
                try:
                    async with asyncio.timeout(max(next_beat - time.monotonic(), 0)):
                        frame = await websocket.recv()
                except TimeoutError:
                    now = datetime.now(UTC).isoformat()
                    beat = {"type": "AgentHeartbeat", "agent_id": agent_id, "timestamp": now}
                    await websocket.send(orjson.dumps(beat).decode())
                    self.heartbeats += 1
                    next_beat += interval
                    continue
                if b'"Ping"' in (frame if isinstance(frame, bytes) else frame.encode()):
                    pong = {"type": "Pong", "timestamp": datetime.now(UTC).isoformat()}
                    await websocket.send(orjson.dumps(pong).decode())


async def main_async(args: argparse.Namespace) -> None:
    fleet = Fleet(args.url, args.prefix, Path(args.status))
    limit = asyncio.Semaphore(args.in_flight)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    tasks = [asyncio.create_task(fleet.agent(i, limit)) for i in range(args.count)]

    async def report() -> None:
        while not stop.is_set():
            if fleet.connect_seconds is None and fleet.registered + fleet.failed >= args.count:
                fleet.connect_seconds = round(time.monotonic() - fleet.started, 2)
            fleet.write()
            await asyncio.sleep(0.5)

    reporter = asyncio.create_task(report())
    await stop.wait()
    reporter.cancel()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, reporter, return_exceptions=True)
    fleet.write()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--status", required=True)
    parser.add_argument("--in-flight", type=int, default=64, help="connections opening at once")
    args = parser.parse_args()
    raise_fd_limit()
    try:
        import uvloop

        uvloop.run(main_async(args))
    except ImportError:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
