"""A real HTTP receiver for webhook tests: a ``ThreadingHTTPServer`` on 127.0.0.1 (port 0)
that records every POST (headers and raw body) and answers the status codes it is given, in
order (the last one repeats)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    def __init__(self, statuses: Sequence[int]) -> None:
        self.statuses = list(statuses)
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self.url = ""

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            self.received.append(Received(path, headers, body, time.monotonic()))
            index = min(len(self.received), len(self.statuses)) - 1
            return self.statuses[index]

    async def wait_for(self, count: int, *, within: float = 10.0) -> list[Received]:
        """The first ``count`` POSTs, once they have arrived (``TimeoutError`` after
        ``within`` seconds otherwise)."""
        deadline = time.monotonic() + within
        while True:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received[:count])
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.received)} of {count} POSTs arrived")
            await asyncio.sleep(0.02)


@contextmanager
def receiving(statuses: Sequence[int] = (200,)) -> Iterator[Receiver]:
    """Serve a ``Receiver`` for the ``with`` block; ``receiver.url`` is its base URL."""
    receiver = Receiver(statuses)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            status = receiver.answer(self.path, dict(self.headers.items()), body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
