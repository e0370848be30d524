"""The agent against a fake server over a real WebSocket: registration, dispatch, results,
batching, cancel, start_at, timeouts, slots, reconnect and drain."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hetuflow.agent import NO_FREE_SLOT, Agent, AgentRejected, TaskContext
from hetuflow.protocol import (
    PROTOCOL_VERSION,
    AgentCapabilities,
    AgentDraining,
    AgentHeartbeat,
    Error,
    Ping,
    Pong,
    RunningAttempt,
    TaskAccepted,
    TaskCancel,
    TaskLogs,
    TaskProgress,
    TaskResult,
    TaskResults,
    TaskStarted,
)

from .conftest import running
from .fake_server import FakeServer, ids, task


def make_agent(server: FakeServer, **options: Any) -> Agent:
    options.setdefault("name", "agent-under-test")
    options.setdefault("max_concurrent_tasks", 4)
    options.setdefault("shell", True)  # opt-in; most tests here just need some task type
    return Agent(server=server.url, reconnect_min_seconds=0.05, **options)


async def test_registers_with_its_capabilities_and_keeps_the_agent_id(server: FakeServer) -> None:
    agent = make_agent(server, capabilities=["chrome", "headless"], max_concurrent_tasks=3)

    @agent.handler("web-scraping")
    async def scrape(payload: dict[str, Any]) -> None:
        return None

    async with running(agent):
        hello = await server.next(AgentCapabilities)
        assert hello.capabilities.capabilities == ["chrome", "headless"]
        assert hello.capabilities.max_concurrent_tasks == 3
        assert sorted(hello.capabilities.supported_task_types) == ["shell", "web-scraping"]
        assert hello.name == "agent-under-test"
        assert hello.protocol_version == PROTOCOL_VERSION
        assert hello.agent_id is None
        assert hello.running == []
        assert agent.agent_id == server.agent_id


async def test_token_is_sent_as_a_bearer_header(server: FakeServer) -> None:
    async with running(make_agent(server, token="s3cret")):
        assert server.authorizations == ["Bearer s3cret"]


async def test_declared_task_types_limit_what_is_offered(server: FakeServer) -> None:
    agent = make_agent(server, task_types=["web-scraping", "no-such-handler"], shell=None)
    agent.add_handler("web-scraping", lambda payload: None)
    agent.add_handler("other", lambda payload: None)
    async with running(agent):
        hello = await server.next(AgentCapabilities)
        assert hello.capabilities.supported_task_types == ["web-scraping"]


async def test_heartbeats_carry_agent_id_and_running_attempts(server: FakeServer) -> None:
    server.heartbeat_interval_seconds = 0.05
    release = asyncio.Event()
    agent = make_agent(server)

    @agent.handler("wait")
    async def wait(payload: dict[str, Any]) -> None:
        await release.wait()

    async with running(agent):
        held = task("wait")
        await server.dispatch(held)
        await server.next(TaskStarted)
        beat = await server.next(AgentHeartbeat)
        while not beat.running:
            beat = await server.next(AgentHeartbeat)
        assert beat.agent_id == server.agent_id
        assert beat.timestamp is not None
        assert beat.running == [RunningAttempt(task_id=held.task_id, attempt=1)]
        release.set()
        await server.results(1)


async def test_ping_is_answered_with_pong(server: FakeServer) -> None:
    agent = make_agent(server)
    async with running(agent):
        await server.send(Ping(timestamp=datetime.now(UTC)))
        pong = await server.next(Pong)
        assert pong.timestamp is not None


async def test_dispatch_is_accepted_started_and_reported(server: FakeServer) -> None:
    release = asyncio.Event()
    agent = make_agent(server)

    @agent.handler("echo")
    async def echo(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        await release.wait()
        return {"echo": payload["value"], "task": ctx.task_id, "attempt": ctx.attempt}

    async with running(agent):
        dispatched = task("echo", {"value": 42}, attempt=2)
        await server.dispatch(dispatched)
        accepted = await server.next(TaskAccepted)
        started = await server.next(TaskStarted)
        assert (accepted.task_id, accepted.attempt) == (dispatched.task_id, 2)
        assert (started.task_id, started.attempt) == (dispatched.task_id, 2)
        assert started.started_at is not None
        release.set()
        result = await server.next(TaskResult)
        assert result.task_id == dispatched.task_id
        assert result.attempt == 2
        assert result.outcome == "succeeded"
        assert result.error is None
        assert result.result == {"echo": 42, "task": dispatched.task_id, "attempt": 2}
        assert result.finished_at is not None
        assert result.started_at == started.started_at


async def test_results_finishing_together_share_a_frame(server: FakeServer) -> None:
    agent = make_agent(server, max_concurrent_tasks=500)

    @agent.handler("noop")
    async def noop(payload: dict[str, Any]) -> int:
        return int(payload["n"])

    async with running(agent):
        frames_before = server.frames
        batch = [task("noop", {"n": n}) for n in range(200)]
        await server.dispatch(*batch)
        results = await server.results(200)
        assert ids(results) == {t.task_id for t in batch}
        assert all(entry.outcome == "succeeded" for entry in results)
        assert sorted(entry.result for entry in results) == list(range(200))
        assert all(entry.attempt == 1 and entry.started_at is not None for entry in results)
        assert server.frames - frames_before < 20  # not 200 results, let alone 600 frames
        assert server.all_of(TaskResults)


async def test_a_lone_result_is_not_held_back(server: FakeServer) -> None:
    agent = make_agent(server)
    agent.add_handler("noop", lambda payload: None)
    async with running(agent):
        for _ in range(3):
            sent = time.time()
            await server.dispatch(task("noop"))
            received = await server.next_received(TaskResult)
            assert received.at - sent < 0.25


async def test_sync_handlers_run_in_a_thread_and_errors_fail_the_task(server: FakeServer) -> None:
    agent = make_agent(server)
    threads: list[int] = []

    @agent.handler("sync-ok")
    def ok(payload: dict[str, Any], ctx: TaskContext) -> str:
        threads.append(threading.get_ident())
        ctx.log("from a thread")
        ctx.set_progress(0.5, "half")
        return "done"

    @agent.handler("sync-bad")
    def bad(payload: dict[str, Any]) -> None:
        raise ValueError("bad input")

    async with running(agent):
        good, broken = task("sync-ok"), task("sync-bad")
        await server.dispatch(good)
        [result] = await server.results(1)
        assert (result.task_id, result.outcome, result.result) == (
            good.task_id,
            "succeeded",
            "done",
        )
        assert threads
        assert threads[0] != threading.get_ident()
        await server.dispatch(broken)
        [failure] = await server.results(1)
        assert failure.task_id == broken.task_id
        assert failure.outcome == "failed"
        assert failure.error == "ValueError: bad input"
        lines = [line for logs in server.all_of(TaskLogs) for line in logs.lines]
        assert any(line.line == "from a thread" and line.task_id == good.task_id for line in lines)
        traceback = "\n".join(line.line for line in lines if line.task_id == broken.task_id)
        assert traceback.startswith("Traceback")
        assert traceback.endswith("ValueError: bad input")
        assert server.all_of(TaskProgress)[0].progress == 0.5


async def test_logs_and_progress_stream_while_the_task_runs(server: FakeServer) -> None:
    release = asyncio.Event()
    agent = make_agent(server)

    @agent.handler("chatty")
    async def chatty(payload: dict[str, Any], ctx: TaskContext) -> None:
        ctx.log("first line\nsecond line")
        ctx.logger.info("via logging %d", 3)
        await ctx.progress(0.25, "a quarter")
        await release.wait()

    async with running(agent):
        dispatched = task("chatty")
        await server.dispatch(dispatched)
        progress = await server.next(TaskProgress)
        assert (progress.task_id, progress.progress, progress.message) == (
            dispatched.task_id,
            0.25,
            "a quarter",
        )
        seen: list[str] = []
        while len(seen) < 3:
            logs = await server.next(TaskLogs)
            seen.extend(line.line for line in logs.lines if line.task_id == dispatched.task_id)
        assert seen == ["first line", "second line", "INFO via logging 3"]
        assert not server.result_entries()  # still running: logs did not wait for the end
        release.set()
        await server.results(1)


async def test_cancel_stops_async_and_sync_handlers(server: FakeServer) -> None:
    agent = make_agent(server)
    saw_cancel: list[str] = []

    @agent.handler("async-wait")
    async def async_wait(payload: dict[str, Any]) -> None:
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            saw_cancel.append("async")
            raise

    @agent.handler("sync-wait")
    def sync_wait(payload: dict[str, Any], ctx: TaskContext) -> None:
        if ctx.cancelled.wait(600):
            saw_cancel.append("sync")

    async with running(agent):
        first, second = task("async-wait"), task("sync-wait")
        await server.dispatch(first, second)
        await server.next(TaskStarted)
        await server.next(TaskStarted)
        await server.send(TaskCancel(task_id=first.task_id, attempt=1, reason="cancelled"))
        await server.send(TaskCancel(task_id=second.task_id, attempt=1, reason="cancelled"))
        results = await server.results(2)
        assert {(entry.task_id, entry.outcome) for entry in results} == {
            (first.task_id, "cancelled"),
            (second.task_id, "cancelled"),
        }
        assert sorted(saw_cancel) == ["async", "sync"]
        assert agent.running_count == 0


async def test_superseded_attempt_is_stopped_without_a_result(server: FakeServer) -> None:
    agent = make_agent(server)
    stopped = asyncio.Event()

    @agent.handler("wait")
    async def wait(payload: dict[str, Any]) -> None:
        try:
            await asyncio.sleep(600)
        finally:
            stopped.set()

    agent.add_handler("noop", lambda payload: "after")
    async with running(agent):
        old = task("wait")
        await server.dispatch(old)
        await server.next(TaskStarted)
        await server.send(TaskCancel(task_id=old.task_id, attempt=1, reason="superseded"))
        await asyncio.wait_for(stopped.wait(), 5)
        later = task("noop")
        await server.dispatch(later)
        [result] = await server.results(1)
        assert result.task_id == later.task_id
        assert old.task_id not in ids(server.result_entries())
        assert agent.running_count == 0


async def test_execution_timeout_ends_timed_out(server: FakeServer) -> None:
    agent = make_agent(server)

    @agent.handler("slow")
    async def slow(payload: dict[str, Any]) -> None:
        await asyncio.sleep(600)

    @agent.handler("slow-sync")
    def slow_sync(payload: dict[str, Any], ctx: TaskContext) -> None:
        ctx.cancelled.wait(600)

    async with running(agent):
        first = task("slow", timeout_seconds=0.2)
        second = task("slow-sync", timeout_seconds=0.2)
        started = time.monotonic()
        await server.dispatch(first, second)
        results = await server.results(2)
        assert {entry.outcome for entry in results} == {"timed_out"}
        assert all(entry.error == "timed out after 0.2 s" for entry in results)
        assert time.monotonic() - started < 5


async def test_handler_raising_its_own_timeout_error_fails(server: FakeServer) -> None:
    agent = make_agent(server)

    @agent.handler("network")
    async def network(payload: dict[str, Any]) -> None:
        raise TimeoutError("upstream did not answer")

    async with running(agent):
        await server.dispatch(task("network", timeout_seconds=60))
        [result] = await server.results(1)
        assert result.outcome == "failed"
        assert result.error == "TimeoutError: upstream did not answer"


async def test_start_at_is_waited_for_and_never_early(server: FakeServer) -> None:
    agent = make_agent(server)
    ran_at: list[float] = []

    @agent.handler("on-time")
    async def on_time(payload: dict[str, Any]) -> None:
        ran_at.append(time.time())

    async with running(agent):
        start_at = datetime.now(UTC) + timedelta(milliseconds=400)
        dispatched = task("on-time", start_at=start_at)
        await server.dispatch(dispatched)
        accepted = await server.next_received(TaskAccepted)
        assert accepted.at < start_at.timestamp()  # accepted at once, not at start_at
        [result] = await server.results(1)
        assert ran_at[0] >= start_at.timestamp()
        assert result.started_at is not None
        assert result.started_at >= start_at
        assert ran_at[0] - start_at.timestamp() < 0.2


async def test_dispatch_beyond_the_slots_fails_with_no_free_slot(server: FakeServer) -> None:
    release = asyncio.Event()
    agent = make_agent(server, max_concurrent_tasks=1)

    @agent.handler("wait")
    async def wait(payload: dict[str, Any]) -> None:
        await release.wait()

    async with running(agent):
        first, extra = task("wait"), task("wait")
        await server.dispatch(first, extra)
        [refused] = await server.results(1)
        assert (refused.task_id, refused.outcome) == (extra.task_id, "failed")
        assert refused.error == NO_FREE_SLOT
        assert agent.running_count == 1
        release.set()
        [done] = await server.results(1)
        assert (done.task_id, done.outcome) == (first.task_id, "succeeded")


async def test_unknown_task_type_fails_and_bad_frames_are_survived(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    agent = make_agent(server)
    agent.add_handler("noop", lambda payload: "ok")
    caplog.set_level(logging.WARNING, logger="hetuflow.agent")
    async with running(agent):
        await server.send("{not json")
        await server.send('{"type": "NoSuchMessage"}')
        await server.send(Error(code="protocol_violation", message="bad thing", task_id="t-1"))
        await server.dispatch(task("mystery"))
        [failed] = await server.results(1)
        assert failed.outcome == "failed"
        assert failed.error == "no handler for task type 'mystery' on this agent"
        await server.dispatch(task("noop"))
        [ok] = await server.results(1)
        assert ok.outcome == "succeeded"
        assert server.connection_count == 1
    messages = caplog.text
    assert "not valid JSON" in messages
    assert "NoSuchMessage" in messages
    assert "bad thing" in messages


async def test_reconnect_keeps_running_tasks_and_reports_them(server: FakeServer) -> None:
    release = asyncio.Event()
    agent = make_agent(server)

    @agent.handler("wait")
    async def wait(payload: dict[str, Any]) -> str:
        await release.wait()
        return "survived"

    async with running(agent):
        await server.next(AgentCapabilities)
        held = task("wait", attempt=3)
        await server.dispatch(held)
        await server.next(TaskStarted)
        hold = asyncio.Event()
        server.hold_registration = hold
        await server.drop()
        hello = await server.next(AgentCapabilities)
        assert hello.agent_id == server.agent_id  # from the first AgentRegistered
        assert hello.running == [RunningAttempt(task_id=held.task_id, attempt=3)]
        release.set()  # finishes while the agent is not registered
        await asyncio.sleep(0)
        hold.set()
        received = await server.next_received(TaskResult)
        assert received.connection == 2
        assert isinstance(received.message, TaskResult)
        assert (received.message.task_id, received.message.attempt) == (held.task_id, 3)
        assert received.message.result == "survived"
        assert agent.registrations == 2


async def test_registration_superseded_attempts_are_stopped(server: FakeServer) -> None:
    agent = make_agent(server)
    stopped = asyncio.Event()

    @agent.handler("wait")
    async def wait(payload: dict[str, Any]) -> None:
        try:
            await asyncio.sleep(600)
        finally:
            stopped.set()

    async with running(agent):
        held = task("wait")
        await server.dispatch(held)
        await server.next(TaskStarted)
        server.superseded_next = [RunningAttempt(task_id=held.task_id, attempt=1)]
        await server.drop()
        await asyncio.wait_for(stopped.wait(), 10)
        assert agent.running_count == 0
        agent.add_handler("noop", lambda payload: None)
        # the old connection's hello named it; the attempt then ended with no result
        await server.dispatch(task("noop"))
        await server.results(1)
        assert held.task_id not in ids(server.result_entries())


async def test_reconnects_with_backoff_after_the_server_goes_away() -> None:
    server = FakeServer()
    await server.start()
    url = server.url
    agent = Agent(
        server=url, name="a", shell=True, reconnect_min_seconds=0.05, reconnect_max_seconds=0.2
    )
    runner = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.wait_registered(), 10)
        await server.stop()
        # a new server on the same port: the agent finds it again
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        from websockets.asyncio.server import serve

        second = FakeServer()
        second._server = await serve(second._handle, "127.0.0.1", port, compression=None)
        try:
            hello = await second.next(AgentCapabilities, timeout_seconds=10)
            assert hello.agent_id == server.agent_id
        finally:
            await agent.stop()
            await second.stop()
    finally:
        await asyncio.wait_for(runner, 10)


async def test_drain_announces_lets_tasks_finish_then_returns(server: FakeServer) -> None:
    agent = make_agent(server, drain_grace_seconds=10)

    @agent.handler("short")
    async def short(payload: dict[str, Any]) -> str:
        await asyncio.sleep(0.2)
        return "finished"

    async with running(agent) as runner:
        dispatched = task("short")
        await server.dispatch(dispatched)
        await server.next(TaskStarted)
        drain = asyncio.create_task(agent.drain())
        await server.next(AgentDraining)
        await server.dispatch(task("short"))  # after draining: not taken
        [result] = await server.results(1)
        assert (result.task_id, result.result) == (dispatched.task_id, "finished")
        await asyncio.wait_for(drain, 10)
        await asyncio.wait_for(runner, 10)
        assert len(server.result_entries()) == 1


async def test_drain_grace_over_stops_tasks_without_reporting(server: FakeServer) -> None:
    agent = make_agent(server)
    stopped = asyncio.Event()

    @agent.handler("forever")
    async def forever(payload: dict[str, Any]) -> None:
        try:
            await asyncio.sleep(600)
        finally:
            stopped.set()

    async with running(agent) as runner:
        await server.dispatch(task("forever"))
        await server.next(TaskStarted)
        started = time.monotonic()
        await agent.drain(0.2)
        assert stopped.is_set()
        assert 0.2 <= time.monotonic() - started < 5
        await asyncio.wait_for(runner, 10)
        assert server.result_entries() == []


async def test_same_attempt_twice_runs_once_and_server_timeout_cancel(server: FakeServer) -> None:
    calls: list[str] = []
    agent = make_agent(server)

    @agent.handler("wait")
    async def wait(payload: dict[str, Any], ctx: TaskContext) -> None:
        calls.append(ctx.task_id)
        await asyncio.sleep(600)

    async with running(agent):
        held = task("wait")
        await server.dispatch(held)
        await server.dispatch(held)
        await server.next(TaskStarted)
        assert agent.running_count == 1
        await server.send(TaskCancel(task_id=held.task_id, attempt=1, reason="timed_out"))
        [result] = await server.results(1)
        assert (result.task_id, result.outcome, result.error) == (
            held.task_id,
            "timed_out",
            "timed out",
        )
        assert calls == [held.task_id]


async def test_drain_releases_attempts_waiting_for_start_at(server: FakeServer) -> None:
    agent = make_agent(server)
    ran: list[str] = []
    agent.add_handler("later", lambda payload: ran.append("ran"))
    async with running(agent) as runner:
        await server.dispatch(task("later", start_at=datetime.now(UTC) + timedelta(seconds=60)))
        await server.next(TaskAccepted)
        started = time.monotonic()
        await agent.drain(30)
        assert time.monotonic() - started < 5  # nothing running: no grace to wait out
        await asyncio.wait_for(runner, 10)
        assert ran == []
        assert server.result_entries() == []


async def test_taken_over_by_another_connection_stops_the_agent(server: FakeServer) -> None:
    agent = make_agent(server)
    stopped = asyncio.Event()

    @agent.handler("wait")
    async def wait(payload: dict[str, Any]) -> None:
        try:
            await asyncio.sleep(600)
        finally:
            stopped.set()

    runner = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.wait_registered(), 10)
    await server.dispatch(task("wait"))
    await server.next(TaskStarted)
    await server.drop(4000, "superseded by a newer connection of this agent")
    with pytest.raises(AgentRejected, match="another connection took over"):
        await asyncio.wait_for(runner, 10)
    assert stopped.is_set()
    assert server.connection_count == 1
    assert server.result_entries() == []


async def test_unknown_learned_agent_id_registers_anew(server: FakeServer) -> None:
    agent = make_agent(server)
    async with running(agent):
        await server.next(AgentCapabilities)
        await server.drop(4004, "unknown agent id")
        hello = await server.next(AgentCapabilities)
        assert hello.agent_id is None
        assert hello.name == "agent-under-test"


async def test_a_deleted_agent_stops_instead_of_coming_back(server: FakeServer) -> None:
    agent = make_agent(server)
    runner = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.wait_registered(), 10)
    await server.drop(4010, "agent deleted")
    with pytest.raises(AgentRejected, match="was deleted on the server"):
        await asyncio.wait_for(runner, 10)
    assert server.connection_count == 1


async def test_several_servers_the_first_that_answers_then_the_next_with_the_running_work() -> None:
    """Nodes of one cluster: a refused URL is passed over at once, and a lost connection moves
    to the next URL at once (the 5 s backoff would show), reporting the attempt it runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"
    first, second = FakeServer(), FakeServer()
    await first.start()
    await second.start()
    release = asyncio.Event()
    agent = Agent(
        server=[refused, first.url, second.url],
        name="a",
        reconnect_min_seconds=5,
        reconnect_max_seconds=5,
    )

    @agent.handler("wait")
    async def wait(payload: dict[str, Any]) -> str:
        await release.wait()
        return "carried over"

    try:
        async with running(agent):
            assert agent.registrations == 1
            await first.next(AgentCapabilities)
            held = task("wait", attempt=2)
            await first.dispatch(held)
            await first.next(TaskStarted)
            lost = time.monotonic()
            await first.stop()
            hello = await second.next(AgentCapabilities, timeout_seconds=10)
            assert time.monotonic() - lost < 2.0
            assert hello.agent_id == first.agent_id
            assert hello.running == [RunningAttempt(task_id=held.task_id, attempt=2)]
            release.set()
            result = await second.next(TaskResult)
            assert (result.task_id, result.attempt, result.result) == (
                held.task_id,
                2,
                "carried over",
            )
            assert agent.registrations == 2
    finally:
        await first.stop()
        await second.stop()


async def test_results_sent_just_before_a_connection_is_lost_are_sent_again(
    server: FakeServer,
) -> None:
    """A node that dies (no close frame) may not have written the results it was sent: the
    agent sends them again after it registers (the server fences a repeat). A clean close
    (the node wrote what it received) sends nothing again."""
    agent = make_agent(server)
    agent.add_handler("quick", lambda payload: "done")
    async with running(agent):
        await server.next(AgentCapabilities)
        lost = task("quick", attempt=4)
        await server.dispatch(lost)
        first = await server.next_received(TaskResult)
        assert first.connection == 1
        server._connections[-1].transport.abort()  # the node died: no close frame
        await server.next(AgentCapabilities)
        again = await server.next_received(TaskResult)
        assert again.connection == 2
        assert isinstance(again.message, TaskResult)
        assert (again.message.task_id, again.message.attempt) == (lost.task_id, 4)

        written = task("quick")
        await server.dispatch(written)
        await server.next(TaskResult)
        await server.drop(1001)  # a node shutting down writes what it received first
        await server.next(AgentCapabilities)
        await server.dispatch(task("quick"))
        await server.results(1)
        assert [e.task_id for e in server.result_entries()].count(written.task_id) == 1
