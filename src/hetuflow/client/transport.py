"""What both clients share around httpx: base URL and headers, error mapping, decoding,
and Server-Sent Events parsing for ``follow_logs``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from hetuflow import __version__
from hetuflow.client.calls import Call, T
from hetuflow.client.errors import ClientError, ServerUnreachable
from hetuflow.client.http11 import Reply, WireError

DEFAULT_SERVER = "http://127.0.0.1:8080"
SERVER_ENV = "HETUFLOW_SERVER"
TOKEN_ENV = "HETUFLOW_TOKEN"


def client_options(server: str | None, token: str | None, timeout: float) -> dict[str, Any]:
    url = (server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER).rstrip("/")
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    headers = {"User-Agent": f"hetuflow-client/{__version__}", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return {"base_url": url, "headers": headers, "timeout": timeout}


def error_from(response: httpx.Response) -> ClientError:
    status = response.status_code
    try:
        detail = response.json().get("error")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, dict) and isinstance(detail.get("message"), str):
        field = detail.get("field")
        return ClientError(
            detail["message"],
            status=status,
            code=str(detail.get("code", "error")),
            field=field if isinstance(field, str) else None,
        )
    text = response.text.strip()[:200] or response.reason_phrase
    return ClientError(f"HTTP {status}: {text}", status=status, code=f"http_{status}")


def transport_error(base_url: str, error: httpx.TransportError) -> ClientError:
    reason = str(error) or type(error).__name__
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return ServerUnreachable(f"server not reachable at {base_url} ({reason})")
    return ClientError(f"request to {base_url} failed: {reason}", code="transport_error")


def decode(call: Call[T], response: httpx.Response) -> T:
    if response.status_code >= 400:
        raise error_from(response)
    if response.status_code == 204 or not response.content:
        return call.parse(None)
    try:
        data = response.json()
    except ValueError:
        raise ClientError(
            f"the server sent a response that is not JSON (HTTP {response.status_code})",
            status=response.status_code,
            code="bad_response",
        ) from None
    return call.parse(data)


def wire_error(base_url: str, error: WireError) -> ClientError:
    """``transport_error`` for the lean submit path (``http11``): the same errors."""
    if error.connect:
        return ServerUnreachable(f"server not reachable at {base_url} ({error})")
    return ClientError(f"request to {base_url} failed: {error}", code="transport_error")


def decode_reply(call: Call[T], reply: Reply) -> T:
    """``decode`` of an answer read by ``http11``."""
    if reply.status >= 400:
        raise error_from(httpx.Response(reply.status, headers=reply.headers, content=reply.body))
    if reply.status == 204 or not reply.body:
        return call.parse(None)
    try:
        data = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        raise ClientError(
            f"the server sent a response that is not JSON (HTTP {reply.status})",
            status=reply.status,
            code="bad_response",
        ) from None
    return call.parse(data)


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    event, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


class SseParser:
    """Incremental SSE parser for the async client."""

    def __init__(self) -> None:
        self.event = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        if not line:
            found = (self.event, "\n".join(self.data)) if self.data else None
            self.event, self.data = "message", []
            return found
        if line.startswith("event:"):
            self.event = line[6:].strip()
        elif line.startswith("data:"):
            self.data.append(line[5:].removeprefix(" "))
        return None


FOLLOW_TIMEOUT = httpx.Timeout(10.0, read=None)
FOLLOW_RETRIES = 3
STREAM_LOST = "the log stream of task {} kept closing before the task finished"
