"""A lean HTTP/1.1 keep-alive client for the submit path of ``Client`` and ``AsyncClient``.

One ``POST /api/tasks`` through httpx cost about 0.95 ms of the caller's CPU here (request and
URL objects, header classes, the connection pool's bookkeeping, h11's state machine), for a
request the server answers in well under a millisecond; the same request written and read by
hand costs a tenth of that. A serial producer waits for every one of those milliseconds, so
``submit`` and ``submit_many`` go through this module when it can serve the URL: plain
``http://`` without a proxy from the environment (httpx honours ``HTTP_PROXY`` and friends)
and no custom httpx transport. Everything else, and every other call, stays on httpx.

The connections are a pool: a caller takes an idle one or opens a new one (so threads or
tasks submitting at once each have their own), and gives it back after a complete answer. An
idle connection the server has closed (uvicorn closes them after 5 s) is readable: it is
dropped before reuse, as httpcore does. Nothing is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import socket
import threading
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 64 * 1024


class WireError(Exception):
    """The connection failed or the answer was not HTTP/1.1; ``connect`` says whether it was
    the connection attempt itself (nothing was sent)."""

    def __init__(self, message: str, *, connect: bool = False) -> None:
        super().__init__(message)
        self.connect = connect


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    prefix: str
    """The base URL's path, without its trailing slash."""
    headers: bytes
    """Host and the client's headers, each line ending in CRLF."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    reason: str


def endpoint(base_url: str, headers: dict[str, str]) -> Endpoint | None:
    """The endpoint for ``base_url``, or None when this module does not serve it (not plain
    http, or a proxy from the environment applies)."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname or parts.username or parts.query:
        return None
    proxies = urllib.request.getproxies_environment()
    if (proxies.get("http") or proxies.get("all")) and not urllib.request.proxy_bypass(
        parts.hostname
    ):
        return None
    port = parts.port or 80
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    lines = [f"Host: {host}" + (f":{parts.port}" if parts.port else "")]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += ["Content-Type: application/json", "Accept-Encoding: identity"]
    encoded = "".join(line + "\r\n" for line in lines).encode("latin-1")
    return Endpoint(parts.hostname, port, parts.path.rstrip("/"), encoded)


def json_body(value: Any) -> bytes:
    """The body exactly as httpx's ``json=`` writes it (NaN refused, UTF-8, compact)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def request_bytes(target: Endpoint, method: str, path: str, body: bytes) -> bytes:
    return (
        f"{method} {target.prefix}{path} HTTP/1.1\r\n".encode()
        + target.headers
        + b"Content-Length: "
        + str(len(body)).encode()
        + _HEAD_END
        + body
    )


def parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    """Status, reason and headers of a response head (without its blank line)."""
    try:
        text = head.decode("latin-1")
        status_line, *lines = text.split("\r\n")
        version, status, *reason = status_line.split(" ", 2)
        if not version.startswith("HTTP/1."):
            raise ValueError(version)
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status), reason[0] if reason else "", headers
    except ValueError as error:
        raise WireError(f"not an HTTP/1.1 answer ({error})") from None


def _reusable(headers: dict[str, str]) -> bool:
    return headers.get("connection", "").lower() != "close"


# --- synchronous ------------------------------------------------------------------------------


class _SyncConnection:
    def __init__(self, target: Endpoint, timeout: float) -> None:
        try:
            self.sock = socket.create_connection((target.host, target.port), timeout=timeout)
        except OSError as error:
            raise WireError(str(error) or type(error).__name__, connect=True) from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def stale(self) -> bool:
        """Readable while idle: closed by the server (or sending what nobody asked for)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable) or bool(self.buffer)

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise WireError("the server closed the connection before answering")
        self.buffer += chunk

    def exchange(self, data: bytes) -> tuple[Reply, bool]:
        self.sock.sendall(data)
        while (end := self.buffer.find(_HEAD_END)) < 0:
            if len(self.buffer) > _MAX_HEAD:
                raise WireError("the answer's head is too long")
            self._more()
        status, reason, headers = parse_head(self.buffer[:end])
        self.buffer = self.buffer[end + 4 :]
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._chunked()
        elif "content-length" in headers:
            length = int(headers["content-length"])
            while len(self.buffer) < length:
                self._more()
            body, self.buffer = self.buffer[:length], self.buffer[length:]
        else:  # the body runs to the end of the connection
            with contextlib.suppress(WireError):
                while True:
                    self._more()
            body, self.buffer = self.buffer, b""
            return Reply(status, headers, body, reason), False
        return Reply(status, headers, body, reason), _reusable(headers)

    def _chunked(self) -> bytes:
        body = b""
        while True:
            while (end := self.buffer.find(b"\r\n")) < 0:
                self._more()
            size = int(self.buffer[:end].split(b";", 1)[0], 16)
            self.buffer = self.buffer[end + 2 :]
            while len(self.buffer) < size + 2:
                self._more()
            body += self.buffer[:size]
            self.buffer = self.buffer[size + 2 :]
            if size == 0:
                return body

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class SyncPool:
    """Keep-alive connections to one endpoint, shared by threads."""

    def __init__(self, target: Endpoint, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self._idle: list[_SyncConnection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _take(self) -> _SyncConnection:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's sockets are not ours
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                connection = self._idle.pop()
                if not connection.stale():
                    return connection
                connection.close()
        return _SyncConnection(self.target, self.timeout)

    def request(self, method: str, path: str, body: bytes) -> Reply:
        connection = self._take()
        try:
            reply, reusable = connection.exchange(request_bytes(self.target, method, path, body))
        except WireError:
            connection.close()
            raise
        except (OSError, ValueError) as error:
            connection.close()
            raise WireError(str(error) or type(error).__name__) from None
        if reusable:
            with self._lock:
                self._idle.append(connection)
        else:
            connection.close()
        return reply

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


# --- asynchronous -----------------------------------------------------------------------------


class AsyncPool:
    """Keep-alive asyncio connections to one endpoint, shared by the tasks of one loop."""

    def __init__(self, target: Endpoint, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer = self._idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(self.target.host, self.target.port)
        except (OSError, TimeoutError) as error:
            raise WireError(str(error) or type(error).__name__, connect=True) from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    async def request(self, method: str, path: str, body: bytes) -> Reply:
        reader, writer = await self._take()
        try:
            async with asyncio.timeout(self.timeout):
                writer.write(request_bytes(self.target, method, path, body))
                reply, reusable = await _read_reply(reader)
        except BaseException as error:
            writer.close()
            if isinstance(error, WireError):
                raise
            if isinstance(error, OSError | ValueError | TimeoutError | asyncio.IncompleteReadError):
                raise WireError(str(error) or type(error).__name__) from None
            raise
        if reusable:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return reply

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()


async def _read_reply(reader: asyncio.StreamReader) -> tuple[Reply, bool]:
    try:
        head = await reader.readuntil(_HEAD_END)
    except asyncio.IncompleteReadError:
        raise WireError("the server closed the connection before answering") from None
    except asyncio.LimitOverrunError:
        raise WireError("the answer's head is too long") from None
    status, reason, headers = parse_head(head[:-4])
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            chunk = await reader.readexactly(size + 2)
            parts.append(chunk[:-2])
            if size == 0:
                break
        body = b"".join(parts)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        return Reply(status, headers, await reader.read(), reason), False
    return Reply(status, headers, body, reason), _reusable(headers)
