"""The hottest routes, answered before FastAPI: ``GET /api/tasks/{id}``, ``POST /api/tasks``
and ``POST /api/tasks/batch``.

A producer creates its tasks one request each and polls them (the SDK's ``submit`` and
``wait``), or in batches (the SDK's coalesced ``submit`` of many threads, ``submit_many``);
nothing else is sent as often. Through FastAPI each paid for route matching over
some sixty routes, dependency solving (``authorize``, the path parameter, the body), the
exception middleware and the exit stacks: two thirds of a read's CPU in process, more than the
store read. ``HotRoutes`` is a pure ASGI middleware inside ``EdgeGuard``, ``BodySizeLimit``
and ``CatchAll`` (so the host, origin and proxy checks, the body limit and the 500 shape apply
as before) that answers exactly these requests itself, the way FastAPI would:

- the same token check as the ``authorize`` dependency (``Authenticator.check`` with the
  request's headers: a viewer token to read, an operator token to create; 401 with
  ``WWW-Authenticate`` / 403 as before), made where FastAPI makes it: after the body is read
  as JSON, before it is validated;
- the same bodies (``tasks.task_body``, ``tasks.created_body``, ``tasks.created_batch_body``)
  and the same answers to domain errors (``errors.hetuflow_error_response``: 404
  ``task_not_found``, 413, 409, 503…);
- everything else goes on to FastAPI, whose routes stay and document these in the
  OpenAPI document: any other path, method or form of id, a create whose ``Content-Type`` is
  not ``application/json``, and a create whose body is not valid JSON or not a valid task
  or batch (it is handed on as received, so FastAPI answers its 400 or 422 exactly as
  before).
"""

from __future__ import annotations

import json
from uuid import UUID

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hetuflow.errors import HetuflowError
from hetuflow.server.api.errors import hetuflow_error_response
from hetuflow.server.api.schemas import TaskBatchCreate, TaskCreate
from hetuflow.server.api.tasks import created_batch_body, created_body, task_body
from hetuflow.server.auth import Authenticator
from hetuflow.server.context import ServerContext
from hetuflow.server.resilience import QuietLog
from hetuflow.server.tasks import TaskQueue
from hetuflow.tokens import Role

TASKS_PATH = "/api/tasks"
BATCH_PATH = "/api/tasks/batch"
TASK_PREFIX = "/api/tasks/"
_CREATES = frozenset({TASKS_PATH, BATCH_PATH})
_ID_LENGTH = 36
_JSON_TYPES = (b"application/json", b"application/json; charset=utf-8")


class HotRoutes:
    """ASGI middleware: answer ``GET /api/tasks/{id}``, ``POST /api/tasks`` and ``POST
    /api/tasks/batch`` itself, pass everything else on."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        queue: TaskQueue,
        context: ServerContext,
        authenticator: Authenticator,
        unavailable_log: QuietLog,
    ) -> None:
        self.app = app
        self.queue = queue
        self.context = context
        self.authenticator = authenticator
        self.unavailable_log = unavailable_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            if method == "GET":
                task_id = _task_id(scope["path"])
                if task_id is not None:
                    await self._get_task(task_id, scope, receive, send)
                    return
            elif method == "POST" and scope["path"] in _CREATES and _sends_json(scope):
                await self._create(scope["path"] == BATCH_PATH, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _get_task(self, task_id: UUID, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._authorize(scope, Role.VIEWER)
            body = await task_body(self.queue, task_id)
        except HetuflowError as error:
            await self._refuse(error, scope, receive, send)
            return
        await Response(body, 200, media_type="application/json")(scope, receive, send)

    async def _create(self, batch: bool, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /api/tasks`` (or ``/batch`` when ``batch``)."""
        messages, received = await _read_body(receive)
        replay = _replaying(messages, receive)
        if received is None:  # the client left: FastAPI does what it did
            await self.app(scope, replay, send)
            return
        try:
            document = json.loads(received)  # as Starlette's ``Request.json``
        except Exception:  # not JSON, not UTF-8, too deep: FastAPI answers its 400
            await self.app(scope, replay, send)
            return
        try:
            await self._authorize(scope, Role.OPERATOR)
        except HetuflowError as error:
            await self._refuse(error, scope, receive, send)
            return
        try:  # as FastAPI's body field
            valid = (TaskBatchCreate if batch else TaskCreate).model_validate(document)
        except Exception:  # invalid: FastAPI answers its 422 (or its 400) as before
            await self.app(scope, replay, send)
            return
        try:
            if isinstance(valid, TaskBatchCreate):
                body, status = await created_batch_body(self.queue, self.context, valid), 201
            else:
                body, status = await created_body(self.queue, self.context, valid)
        except HetuflowError as error:
            await self._refuse(error, scope, receive, send)
            return
        await Response(body, status, media_type="application/json")(scope, receive, send)

    async def _authorize(self, scope: Scope, needed: Role) -> None:
        if self.authenticator.enabled:
            await self.authenticator.check(Headers(scope=scope), needed)

    async def _refuse(
        self, error: HetuflowError, scope: Scope, receive: Receive, send: Send
    ) -> None:
        await hetuflow_error_response(self.unavailable_log, error)(scope, receive, send)


def _task_id(path: str) -> UUID | None:
    """The id of ``/api/tasks/{id}`` with a canonical id; None for any other path."""
    if len(path) != len(TASK_PREFIX) + _ID_LENGTH or not path.startswith(TASK_PREFIX):
        return None
    text = path[len(TASK_PREFIX) :]
    if not _is_canonical_id(text):
        return None  # FastAPI answers it (a 404 naming the bad id, or another route)
    return UUID(text)


_HEX = frozenset("0123456789abcdefABCDEF")
_DASHES = (8, 13, 18, 23)


def _is_canonical_id(text: str) -> bool:
    """``xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`` in hex digits (either case)."""
    return all(text[i] == "-" for i in _DASHES) and _HEX.issuperset(text.replace("-", "", 4))


def _sends_json(scope: Scope) -> bool:
    """The request's ``Content-Type`` is JSON in one of its two usual spellings."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.lower() in _JSON_TYPES
    return False


async def _read_body(receive: Receive) -> tuple[list[Message], bytes | None]:
    """The messages of the whole request body, and the body; None when the client left
    before sending all of it. (``BodySizeLimit``'s receive stops it past the limit.)"""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        if not message.get("more_body", False):
            return messages, b"".join(m.get("body", b"") for m in messages)


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` again, then what the client sends next."""
    pending = messages[::-1]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay
