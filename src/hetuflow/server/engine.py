"""SchedulerEngine: owns the background loops of one server node.

PLACEHOLDER while the agents issue is built: runs no loop yet.
"""

from __future__ import annotations

import asyncio

from fastapi import WebSocket

from hetuflow.server.context import ServerContext


class _Gateway:
    async def endpoint(self, websocket: WebSocket) -> None:
        await websocket.close(code=1013)


class SchedulerEngine:
    def __init__(self, context: ServerContext) -> None:
        self.context = context
        self.started = asyncio.Event()
        self.gateway = _Gateway()

    async def run(self) -> None:
        self.started.set()
        await asyncio.Event().wait()
