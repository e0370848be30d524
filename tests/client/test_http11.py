"""The SDK's lean submit path (``hetuflow.client.http11``): what it must do like httpx.

Against a real server (the ``client`` fixture) and against a scripted HTTP/1.1 peer, for the
cases a real uvicorn does not produce on demand: a keep-alive connection the server closed
while idle, a chunked answer, a body that is not JSON.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import TypeAdapter

from hetuflow import AsyncClient, Client
from hetuflow.client import ClientError, ServerUnreachable
from hetuflow.client.http11 import endpoint, request_bytes

from .conftest import free_port

NOW = datetime.now(UTC).isoformat()


def _task(task_type: str) -> bytes:
    return json.dumps(
        {
            "id": str(uuid.uuid4()),
            "name": task_type,
            "task_type": task_type,
            "priority": "normal",
            "payload": {},
            "required_capabilities": [],
            "status": "pending",
            "scheduled_at": NOW,
            "created_at": NOW,
            "updated_at": NOW,
        }
    ).encode()


Answer = Callable[[bytes], bytes]
"""The request's body -> the whole HTTP response."""


def _plain(body: bytes) -> bytes:
    answer = _task(json.loads(body)["task_type"])
    return b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)


def _chunked(body: bytes) -> bytes:
    answer = _task(json.loads(body)["task_type"])
    half = len(answer) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (answer[:half], answer[half:]))
    return b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"


class Peer:
    """A scripted HTTP/1.1 server: answers each request with ``answer``; with
    ``close_after_answer`` it closes the connection after every answer (as a server does with
    an idle keep-alive connection), without saying so in the answer."""

    def __init__(self, answer: Answer, *, close_after_answer: bool) -> None:
        self.answer = answer
        self.close_after_answer = close_after_answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.closed = threading.Semaphore(0)
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connection, args=(connection,), daemon=True).start()

    def _connection(self, connection: socket.socket) -> None:
        buffer = b""
        with connection:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(buffer) < length:
                    buffer += connection.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                self.requests.append(head + b"\r\n\r\n" + body)
                connection.sendall(self.answer(body))
                if self.close_after_answer:
                    connection.shutdown(socket.SHUT_RDWR)
                    self.closed.release()
                    return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def closing_peer() -> Iterator[Peer]:
    peer = Peer(_plain, close_after_answer=True)
    yield peer
    peer.close()


def test_submit_after_the_server_closed_the_idle_connection(closing_peer: Peer) -> None:
    with Client(closing_peer.url) as client:
        first = client.submit("a")
        assert closing_peer.closed.acquire(timeout=5)
        second = client.submit("b")
    assert (first.task_type, second.task_type) == ("a", "b")
    assert closing_peer.connections == 2


async def test_async_submit_after_the_server_closed_the_idle_connection(
    closing_peer: Peer,
) -> None:
    async with AsyncClient(closing_peer.url) as client:
        first = await client.submit("a")
        assert closing_peer.closed.acquire(timeout=5)
        for _ in range(100):  # the loop reads the EOF once it runs
            if client._lean is None or all(r.at_eof() for r, _ in client._lean._idle):
                break
            await asyncio.sleep(0.01)
        second = await client.submit("b")
    assert (first.task_type, second.task_type) == ("a", "b")
    assert closing_peer.connections == 2


def test_keep_alive_connection_is_reused_and_chunked_answers_are_read() -> None:
    peer = Peer(_chunked, close_after_answer=False)
    try:
        with Client(peer.url, token="t0k") as client:
            tasks = [client.submit(f"t{i}", {"n": i}) for i in range(3)]
    finally:
        peer.close()
    assert [task.task_type for task in tasks] == ["t0", "t1", "t2"]
    assert peer.connections == 1
    head, _, body = peer.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /api/tasks HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer t0k" in head
    assert json.loads(body)["payload"] == {"n": 0}


async def test_async_chunked_answers_are_read() -> None:
    peer = Peer(_chunked, close_after_answer=False)
    try:
        async with AsyncClient(peer.url) as client:
            tasks = [await client.submit(f"t{i}") for i in range(3)]
    finally:
        peer.close()
    assert [task.task_type for task in tasks] == ["t0", "t1", "t2"]
    assert peer.connections == 1


def test_an_answer_that_is_not_json_is_a_client_error() -> None:
    peer = Peer(
        lambda _: b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nnot", close_after_answer=False
    )
    try:
        with Client(peer.url) as client, pytest.raises(ClientError) as error:
            client.submit("t")
    finally:
        peer.close()
    assert error.value.code == "bad_response"


def test_submit_to_nothing_is_server_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url) as client, pytest.raises(ServerUnreachable) as error:
        client.submit("t")
    assert f"server not reachable at {url}" in str(error.value)


async def test_async_submit_to_nothing_is_server_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncClient(url) as client:
        with pytest.raises(ServerUnreachable):
            await client.submit("t")


def test_server_errors_keep_status_code_and_field(client: Client) -> None:
    assert client._lean is not None  # the real server's URL is served by the lean path
    with pytest.raises(ClientError) as invalid:
        client.submit("t", priority="urgent")
    assert (invalid.value.status, invalid.value.code, invalid.value.field) == (
        422,
        "invalid_input",
        "priority",
    )
    with pytest.raises(ValueError, match="JSON compliant"):  # as httpx json=: NaN is no JSON
        client.submit("t", {"x": float("nan")})


def test_threads_sharing_a_client_each_get_their_task(client: Client) -> None:
    found: dict[int, str] = {}

    def work(index: int) -> None:
        for n in range(5):
            found[index * 10 + n] = client.submit(f"type-{index}-{n}").task_type

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found == {i * 10 + n: f"type-{i}-{n}" for i in range(4) for n in range(5)}


def test_a_proxy_or_https_falls_back_to_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    assert endpoint("https://example.org", {}) is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert endpoint("http://example.org", {}) is None
    monkeypatch.setenv("NO_PROXY", "example.org")
    assert endpoint("http://example.org", {}) is not None


def test_the_base_url_path_prefixes_the_request() -> None:
    target = endpoint("http://example.org:8000/hetuflow/", {"User-Agent": "x"})
    assert target is not None
    data = request_bytes(target, "POST", "/api/tasks", b"{}")
    assert data.startswith(b"POST /hetuflow/api/tasks HTTP/1.1\r\nHost: example.org:8000\r\n")
    assert data.endswith(b"Content-Length: 2\r\n\r\n{}")


def test_answers_are_parsed_without_building_a_validator_per_call(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building a pydantic ``TypeAdapter`` generates its whole schema: ``Task``'s cost about
    0.6 ms, more than the rest of a ``submit``. The SDK builds one per type, once."""
    from hetuflow.client import calls

    built: list[str] = []
    real = calls._new_adapter

    def counted(kind: Any) -> TypeAdapter[Any]:
        built.append(getattr(kind, "__name__", repr(kind)))
        return real(kind)

    monkeypatch.setattr(calls, "_adapter", functools.cache(counted))
    first = [client.submit("cached-adapter") for _ in range(3)]
    assert [client.get_task(task.id).id for task in first] == [task.id for task in first]
    assert built == ["Task"]
    assert client.list_tasks(task_type="cached-adapter").items
    client.list_tasks(task_type="cached-adapter")
    assert built == ["Task", "TaskPage"]
