"""A server with open Server-Sent Events streams (a console tab: ``/api/events``, a task's
live log) stops at once on SIGTERM: the streams end instead of holding the graceful shutdown
for its whole timeout, and nothing is cancelled with a traceback."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hetuflow.config import DatabaseConfig

from .conftest import Running, free_port, launch, stop, workdir

STOP_WITHIN_SECONDS = 2.5


@contextlib.contextmanager
def _open_streams(running: Running) -> Iterator[list[Iterator[bytes]]]:
    """``/api/events`` and the log stream of a task that stays pending, both open and read."""
    with httpx.Client(base_url=running.url, timeout=30) as http:
        created = http.post("/api/tasks", json={"task_type": "nobody-runs-this"})
        assert created.status_code == 201, created.text
        paths = ["/api/events", f"/api/tasks/{created.json()['id']}/logs/stream"]
        with contextlib.ExitStack() as streams:
            opened = [streams.enter_context(http.stream("GET", path)) for path in paths]
            readers = []
            for response in opened:
                assert response.status_code == 200
                reader = response.iter_raw()
                assert next(reader)  # the stream has started
                readers.append(reader)
            yield readers


def _assert_stops_promptly(running: Running) -> None:
    with _open_streams(running) as streams:
        signalled = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        code = running.process.wait(timeout=30)
        took = time.monotonic() - signalled
        for reader in streams:  # what is left of each stream
            with contextlib.suppress(httpx.HTTPError):
                for _ in reader:
                    pass
    output = running.output()
    assert took < STOP_WITHIN_SECONDS, f"stopped after {took:.1f} s\n{output}"
    assert code == 0, output
    assert "Traceback" not in output, output
    assert "timeout graceful shutdown exceeded" not in output, output


def test_open_streams_do_not_hold_the_server_on_sigterm(tmp_path: Path) -> None:
    running = launch(workdir(tmp_path), "./hetuflow-server start", free_port())
    try:
        _assert_stops_promptly(running)
    finally:
        stop(running)


@pytest.mark.postgres
def test_open_streams_do_not_hold_worker_processes_on_sigterm(
    tmp_path: Path, pg_database: DatabaseConfig
) -> None:
    command = f"./hetuflow-server start --workers 2 --database-url '{pg_database.dsn}'"
    running = launch(workdir(tmp_path), command, free_port())
    try:
        _assert_stops_promptly(running)
    finally:
        stop(running)
