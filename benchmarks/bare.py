"""A bare Starlette app on uvicorn, the baseline of the ``edge`` scenario:
``python -m benchmarks.bare PORT [DATABASE_URL]``.

The same routes as the server's (``GET /healthz``, ``GET /api/tasks/{id}``, ``POST
/api/tasks``) answering fixed JSON of the same shape, run by uvicorn with the same loop, HTTP
parser and log level as ``hetuflow-server start`` in the suite: what the framework and the
HTTP server cost with nothing of hetuflow in them.

Given a database (``sqlite:///PATH`` or ``postgresql://...``), ``POST /durable/tasks`` also
writes the task as one row before it answers, in a transaction of its own, as durably as the
server does (SQLite: WAL, ``synchronous=FULL``, on one writer thread; PostgreSQL: asyncpg, one
``INSERT`` in autocommit, ``synchronous_commit`` as the database has it). That is the floor of a
durable create on this machine: the framework and one durable commit, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

NOW = datetime.now(UTC).isoformat()
TASK: dict[str, Any] = {
    "id": str(uuid.uuid4()),
    "name": "bench",
    "task_type": "bench-noop",
    "priority": "normal",
    "payload": {},
    "required_capabilities": [],
    "status": "pending",
    "pending_reason": "queued",
    "scheduled_at": NOW,
    "timeout_seconds": None,
    "max_retries": 0,
    "retry_backoff_seconds": 5.0,
    "idempotency_key": None,
    "result": None,
    "error": None,
    "attempts": 0,
    "agent_id": None,
    "cron_job_id": None,
    "cron_tick_at": None,
    "progress": None,
    "created_at": NOW,
    "updated_at": NOW,
    "started_at": None,
    "finished_at": None,
}


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


async def healthz(request: Request) -> Response:
    return _json({"status": "ok"})


async def get_task(request: Request) -> Response:
    return _json({**TASK, "id": request.path_params["task_id"]})


async def create_task(request: Request) -> Response:
    body = orjson.loads(await request.body())
    return _json({**TASK, "id": str(uuid.uuid4()), "task_type": body["task_type"]}, 201)


TABLE = (
    "CREATE TABLE IF NOT EXISTS bare_tasks (id TEXT PRIMARY KEY, task_type TEXT NOT NULL,"
    " body TEXT NOT NULL, created_at TEXT NOT NULL)"
)
INSERT_SQLITE = "INSERT INTO bare_tasks VALUES (?, ?, ?, ?)"
INSERT_POSTGRES = "INSERT INTO bare_tasks VALUES ($1, $2, $3, $4)"

Insert = Callable[[tuple[str, str, str, str]], Awaitable[None]]


@contextlib.asynccontextmanager
async def _sqlite(path: str) -> AsyncIterator[Insert]:
    writer = ThreadPoolExecutor(max_workers=1)  # one connection, used by one thread
    loop = asyncio.get_running_loop()

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(TABLE)
        return connection

    connection = await loop.run_in_executor(writer, connect)

    def write(row: tuple[str, str, str, str]) -> None:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(INSERT_SQLITE, row)
        connection.execute("COMMIT")

    async def insert(row: tuple[str, str, str, str]) -> None:
        await loop.run_in_executor(writer, write, row)

    try:
        yield insert
    finally:
        await loop.run_in_executor(writer, connection.close)
        writer.shutdown()


@contextlib.asynccontextmanager
async def _postgres(url: str) -> AsyncIterator[Insert]:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    await pool.execute(TABLE)

    async def insert(row: tuple[str, str, str, str]) -> None:
        await pool.execute(INSERT_POSTGRES, *row)

    try:
        yield insert
    finally:
        await pool.close()


def build_app(database_url: str | None = None) -> Starlette:
    routes = [
        Route("/healthz", healthz),
        Route("/api/tasks/{task_id}", get_task),
        Route("/api/tasks", create_task, methods=["POST"]),
    ]
    if database_url is None:
        return Starlette(routes=routes)
    opened: dict[str, Insert] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if database_url.startswith("sqlite:///"):
            store = _sqlite(database_url.removeprefix("sqlite:///"))
        else:
            store = _postgres(database_url)
        async with store as insert:
            opened["insert"] = insert
            yield

    async def create_durable(request: Request) -> Response:
        body = orjson.loads(await request.body())
        task = {**TASK, "id": str(uuid.uuid4()), "task_type": body["task_type"]}
        task["created_at"] = datetime.now(UTC).isoformat()
        row = (task["id"], body["task_type"], orjson.dumps(body).decode(), task["created_at"])
        await opened["insert"](row)
        return _json(task, 201)

    routes.append(Route("/durable/tasks", create_durable, methods=["POST"]))
    return Starlette(routes=routes, lifespan=lifespan)


app = build_app()


def main() -> None:
    database_url = sys.argv[2] if len(sys.argv) > 2 else None
    uvicorn.run(
        build_app(database_url), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning"
    )


if __name__ == "__main__":
    main()
