"""Errors over HTTP: the one table from error kinds to statuses, and the one JSON shape.

Every error response of the API, whatever raised it, has the body::

    {"error": {"code": "task_not_found", "message": "no task with id …", "field": "task_id"}}

``code`` is stable and machine-readable (the ``code`` of the ``HetuflowError`` subclass, or one
of the HTTP-level codes below), ``message`` is for people, ``field`` names the offending input
(``null`` when the problem is not about one field).

Two pure ASGI middlewares sit around the app: ``BodySizeLimit`` (413 beyond ``[server]
max_body_bytes``, counted as the body streams in, not trusting ``Content-Length``) and
``CatchAll`` (any unexpected exception is logged and answered with a 500 in the same shape,
never a bare traceback or an empty reply).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hetuflow.errors import (
    Conflict,
    HetuflowError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    TooLarge,
    Unauthenticated,
    Unavailable,
)
from hetuflow.server.resilience import QuietLog

log = logging.getLogger("hetuflow.api")

STATUS_BY_KIND: dict[type[HetuflowError], int] = {
    Unauthenticated: 401,
    PermissionDenied: 403,
    NotFound: 404,
    Conflict: 409,
    InvalidInput: 422,
    TooLarge: 413,
    Unavailable: 503,
}
"""The one table: the nearest kind in an error's class hierarchy decides its HTTP status.
A ``HetuflowError`` of no listed kind (a config or migration problem) is a 500."""

CODE_BY_STATUS: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}
"""Codes for errors raised by the HTTP layer itself (unknown route, wrong method, …)."""

_RESOURCE_BY_PATH_PARAM = {
    "task_id": "task",
    "agent_id": "agent",
    "cron_job_id": "cron_job",
    "token_id": "token",
    "trigger_id": "trigger",
    "name": "hook",  # /api/hooks/{name}: the one route addressed by a name
}


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable error code, e.g. `task_not_found`.")
    message: str = Field(description="What went wrong, for people.")
    field: str | None = Field(
        default=None,
        description="The input at fault (`name`, `tasks[2].payload`, `limit`, …), if any.",
    )


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


def status_for(error: HetuflowError) -> int:
    for kind in type(error).__mro__:
        status = STATUS_BY_KIND.get(kind)
        if status is not None:
            return status
    return 500


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field}}
    return JSONResponse(body, status_code=status, headers=headers)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the error shape for ``statuses``."""
    descriptions = {
        400: "Malformed JSON body",
        401: "No token, or an unknown, expired or revoked one (auth on)",
        403: "The token's role does not allow this",
        404: "No such resource",
        409: "Conflict with the resource's current state",
        413: "Request body larger than `[server] max_body_bytes`",
        422: "Invalid input; `field` names it",
        503: "The database is not reachable",
    }
    return {
        status: {"model": ErrorResponse, "description": descriptions.get(status, "Error")}
        for status in statuses
    }


# --- exception handlers -----------------------------------------------------------------------


async def _hetuflow_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HetuflowError)
    return hetuflow_error_response(request.app.state.unavailable_log, error)


def hetuflow_error_response(unavailable_log: QuietLog, error: HetuflowError) -> JSONResponse:
    """The answer to a domain error: its status from the one table, its code, its message;
    ``WWW-Authenticate`` on a 401. Also used by the routes answered outside FastAPI
    (``hot_routes``)."""
    status = status_for(error)
    if isinstance(error, Unavailable):
        # The database is away: every request says so; one line per kind, no traceback.
        unavailable_log.warning(error.code, f"requests answered 503 {error.code}: {error.message}")
    elif status >= 500:
        log.error("request failed: %s", error, exc_info=error)
    headers = {"WWW-Authenticate": 'Bearer realm="hetuflow"'} if status == 401 else None
    return error_response(status, error.code, error.message, error.field, headers)


def _field_name(loc: Sequence[int | str]) -> str | None:
    """``("body", "tasks", 2, "name")`` -> ``tasks[2].name``; ``("query", "limit")`` -> ``limit``"""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    if loc and loc[0] == "query":
        parts = [part for part in parts if not isinstance(part, int)]  # ?status=a&status=b
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or None


_MESSAGE_BY_TYPE = {"extra_forbidden": "unknown field", "missing": "required"}


def _describe(item: dict[str, Any]) -> str:
    known = _MESSAGE_BY_TYPE.get(str(item.get("type")))
    if known is not None:
        return known
    message = str(item.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    items: list[dict[str, Any]] = list(error.errors())
    first = items[0] if items else {"loc": (), "msg": "invalid request", "type": ""}
    loc = tuple(first.get("loc", ()))
    kind = str(first.get("type", ""))
    if kind == "json_invalid":
        context = first.get("ctx")
        detail = context.get("error") if isinstance(context, dict) else None
        position = loc[1] if len(loc) > 1 else None
        where = f" at position {position}" if isinstance(position, int) else ""
        return error_response(
            400,
            "malformed_json",
            f"request body is not valid JSON{where}: {detail or 'decode error'}",
        )
    if loc and loc[0] == "path":
        param = str(loc[1]) if len(loc) > 1 else "id"
        resource = _RESOURCE_BY_PATH_PARAM.get(param, "resource")
        value = first.get("input")
        noun = resource.replace("_", " ")
        message = (
            f"no {noun} with id {value!r}: not a valid UUID"
            if param.endswith("_id")
            else f"no {noun} is named {value!r}: not a valid name"
        )
        return error_response(404, f"{resource}_not_found", message, param)
    field = _field_name(loc)
    if loc == ("body",) and kind == "missing":
        message = "request body is required: send a JSON object"
    elif loc == ("body",) and isinstance(first.get("input"), bytes | str):
        message = "request body must be a JSON object sent with Content-Type: application/json"
    elif loc == ("body",) and kind == "value_error":
        # A rule across fields (a model validator): its own words say what is wrong.
        message = _describe(first)
    elif loc == ("body",):
        message = f"request body must be a JSON object: {_describe(first)}"
    else:
        message = f"{field}: {_describe(first)}" if field else _describe(first)
    if len(items) > 1:
        message += f" (and {len(items) - 1} more problem{'s' if len(items) > 2 else ''})"
    return error_response(422, "invalid_input", message, None if field == "body" else field)


async def _http_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    status = error.status_code
    code = CODE_BY_STATUS.get(status, "error")
    message = error.detail if isinstance(error.detail, str) else code.replace("_", " ")
    if status == 404 and message == "Not Found":
        message = "no such route"
    elif status == 405 and message == "Method Not Allowed":
        message = "method not allowed on this route"
    return error_response(status, code, message, headers=dict(error.headers or {}))


async def _unicode_error(_: Request, error: Exception) -> JSONResponse:
    # pydantic-core cannot read a str holding a lone surrogate (JSON "\ud800"): it is input
    # that no store could keep either, so it is the client's mistake, not a server error.
    return error_response(
        422,
        "invalid_input",
        "request contains text that is not valid Unicode (a lone surrogate escape like \\ud800)",
    )


def unavailable_log(app: FastAPI) -> QuietLog:
    """The app's one log of 503 answers (one line per kind while the database is away)."""
    quiet: QuietLog | None = getattr(app.state, "unavailable_log", None)
    if quiet is None:
        quiet = app.state.unavailable_log = QuietLog(log)
    return quiet


def install_error_handlers(app: FastAPI) -> None:
    """Register the exception handlers and the two middlewares on ``app``."""
    unavailable_log(app)
    app.add_exception_handler(HetuflowError, _hetuflow_error)
    app.add_exception_handler(UnicodeEncodeError, _unicode_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(CatchAll)
    app.add_middleware(BodySizeLimit, max_bytes=app.state.context.config.server.max_body_bytes)


# --- middlewares ------------------------------------------------------------------------------


async def _send_json(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "field": None}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Answer 413 once a request body exceeds ``max_bytes``.

    A declared ``Content-Length`` over the limit is refused before reading; otherwise the bytes
    are counted as they arrive (chunked bodies, lying headers), and the app's own response is
    replaced by the 413 as soon as the limit is crossed.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body is larger than the limit of {self.max_bytes} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _send_json(send, 413, "payload_too_large", message)
                return
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            incoming = await receive()
            if incoming["type"] == "http.request":
                received += len(incoming.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return incoming

        async def guarded_send(outgoing: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's answer to a truncated body is replaced by the 413
            if outgoing["type"] == "http.response.start":
                started = True
            await send(outgoing)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, counting_receive, guarded_send)
        if exceeded and not started:
            await _send_json(send, 413, "payload_too_large", message)


class CatchAll:
    """Last line of defence: log an unexpected exception and answer 500 in the error shape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(outgoing: Message) -> None:
            nonlocal started
            if outgoing["type"] == "http.response.start":
                started = True
            await send(outgoing)

        try:
            await self.app(scope, receive, tracking_send)
        except _BodyTooLarge:
            raise
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _send_json(
                    send, 500, "internal_error", "internal server error (logged on the server)"
                )
