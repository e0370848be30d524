"""Route dependencies: the services wired by the app factory, looked up on ``app.state``.

They are ``async def`` although they never wait: FastAPI runs a plain ``def`` dependency on a
worker thread, and that hop per request cost more than the whole request on a busy server."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from hetuflow.server.context import ServerContext
from hetuflow.server.tasks import TaskQueue


async def get_context(request: Request) -> ServerContext:
    context: ServerContext = request.app.state.context
    return context


async def get_task_queue(request: Request) -> TaskQueue:
    queue: TaskQueue = request.app.state.task_queue
    return queue


Context = Annotated[ServerContext, Depends(get_context)]
Queue = Annotated[TaskQueue, Depends(get_task_queue)]
