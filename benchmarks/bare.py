"""A bare Starlette app on uvicorn, the baseline of the ``edge`` scenario:
``python -m benchmarks.bare PORT``.

The same routes as the server's (``GET /healthz``, ``GET /api/tasks/{id}``, ``POST
/api/tasks``) answering fixed JSON of the same shape, run by uvicorn with the same loop, HTTP
parser and log level as ``hetuflow-server start`` in the suite: what the framework and the
HTTP server cost with nothing of hetuflow in them.
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime
from typing import Any

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


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/api/tasks/{task_id}", get_task),
        Route("/api/tasks", create_task, methods=["POST"]),
    ]
)


def main() -> None:
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")


if __name__ == "__main__":
    main()
