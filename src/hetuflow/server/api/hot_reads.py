"""The hottest read, answered before FastAPI: ``GET /api/tasks/{id}``.

A client polling its task (the SDK's ``wait``, a dashboard) sends this more than anything
else. Through FastAPI it paid for route matching over some sixty routes, dependency solving
(``authorize`` and the path parameter), the exception middleware and the exit stacks: two
thirds of the request's CPU in process, more than the store read. ``HotReads`` is a pure
ASGI middleware inside ``EdgeGuard``, ``BodySizeLimit`` and ``CatchAll`` (so the host, origin
and proxy checks and the 500 shape apply as before) that answers exactly that request itself:

- the same token check as the ``authorize`` dependency (``Authenticator.check`` with the
  request's headers; a viewer token, 401 with ``WWW-Authenticate`` / 403 as before);
- the same body (``tasks.task_body``) and the same error answers
  (``errors.hetuflow_error_response``: 404 ``task_not_found``, 503, …);
- only a canonical 36-character id is taken here; any other path, method or id form (and
  so every validation error) goes on to FastAPI, whose route stays and documents this one
  in the OpenAPI document.
"""

from __future__ import annotations

from uuid import UUID

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from hetuflow.errors import HetuflowError
from hetuflow.server.api.errors import hetuflow_error_response
from hetuflow.server.api.tasks import task_body
from hetuflow.server.auth import Authenticator
from hetuflow.server.resilience import QuietLog
from hetuflow.server.tasks import TaskQueue
from hetuflow.tokens import Role

TASK_PREFIX = "/api/tasks/"
_ID_LENGTH = 36


class HotReads:
    """ASGI middleware: answer ``GET /api/tasks/{id}`` itself, pass everything else on."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        queue: TaskQueue,
        authenticator: Authenticator,
        unavailable_log: QuietLog,
    ) -> None:
        self.app = app
        self.queue = queue
        self.authenticator = authenticator
        self.unavailable_log = unavailable_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task_id = _task_id(scope)
        if task_id is None:
            await self.app(scope, receive, send)
            return
        try:
            if self.authenticator.enabled:
                await self.authenticator.check(Headers(scope=scope), Role.VIEWER)
            body = await task_body(self.queue, task_id)
        except HetuflowError as error:
            await hetuflow_error_response(self.unavailable_log, error)(scope, receive, send)
            return
        await Response(body, 200, media_type="application/json")(scope, receive, send)


def _task_id(scope: Scope) -> UUID | None:
    """The id of a ``GET /api/tasks/{id}`` with a canonical id; None for any other request."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return None
    path: str = scope["path"]
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
