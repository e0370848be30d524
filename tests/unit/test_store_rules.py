"""The decisions both stores share (store/_rules.py): the fence, what an accepted result
does to a task, the agent status sources the SQL uses, tombstone names and the log budget."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from hetuflow.models import (
    AGENT_TRANSITIONS,
    AgentStatus,
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    LogBudget,
    LogLine,
    LogUsage,
    RetryPolicy,
    TaskStatus,
)
from hetuflow.store._rules import (
    ACTIVE_SQL,
    TOMBSTONE_NAME_LENGTH,
    Held,
    agent_sources,
    decide_finish,
    generated_agent_name,
    holds,
    tombstone_name,
)
from hetuflow.store._rules import charge_logs as charge

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
AGENT = uuid.uuid4()
TASK = uuid.uuid4()
RETRY_ONCE = RetryPolicy(max_retries=1, backoff_seconds=10, backoff_factor=2)


def held(status: TaskStatus, *, failures: int = 0, retry: RetryPolicy = RETRY_ONCE) -> Held:
    return Held(status, attempts=2, agent_id=AGENT, failures=failures, retry=retry)


def result(outcome: AttemptOutcome) -> AttemptResult:
    return AttemptResult(AttemptRef(TASK, 2, AGENT), outcome)


def test_active_sql_lists_the_active_statuses_sorted() -> None:
    assert ACTIVE_SQL == "('cancelling', 'dispatched', 'running')"


@pytest.mark.parametrize("status", list(TaskStatus))
def test_the_fence_holds_only_the_current_attempt_of_the_agent_of_an_active_task(
    status: TaskStatus,
) -> None:
    ref = AttemptRef(TASK, 2, AGENT)
    assert holds(held(status), ref, AGENT) is status.is_active
    assert not holds(held(status), AttemptRef(TASK, 1, AGENT), AGENT)
    assert not holds(held(status), ref, uuid.uuid4())


def test_success_succeeds() -> None:
    finish = decide_finish(held(TaskStatus.RUNNING), result(AttemptOutcome.SUCCEEDED), T0)
    assert (finish.status, finish.failures, finish.retry_at, finish.finished) == (
        TaskStatus.SUCCEEDED,
        0,
        None,
        True,
    )


@pytest.mark.parametrize("outcome", list(AttemptOutcome))
def test_anything_while_cancelling_cancels(outcome: AttemptOutcome) -> None:
    finish = decide_finish(held(TaskStatus.CANCELLING), result(outcome), T0)
    assert (finish.status, finish.finished) == (TaskStatus.CANCELLED, True)


def test_a_cancelled_outcome_cancels_a_running_task() -> None:
    finish = decide_finish(held(TaskStatus.RUNNING), result(AttemptOutcome.CANCELLED), T0)
    assert finish.status is TaskStatus.CANCELLED


@pytest.mark.parametrize("outcome", [AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT])
def test_a_failure_with_a_retry_left_goes_back_to_pending_after_the_backoff(
    outcome: AttemptOutcome,
) -> None:
    finish = decide_finish(held(TaskStatus.RUNNING), result(outcome), T0)
    assert (finish.status, finish.failures, finish.finished) == (TaskStatus.PENDING, 1, False)
    assert finish.retry_at == T0 + timedelta(seconds=10)


@pytest.mark.parametrize(
    ("outcome", "final"),
    [
        (AttemptOutcome.FAILED, TaskStatus.FAILED),
        (AttemptOutcome.TIMED_OUT, TaskStatus.TIMED_OUT),
    ],
)
def test_a_failure_past_the_retry_budget_is_final(
    outcome: AttemptOutcome, final: TaskStatus
) -> None:
    finish = decide_finish(held(TaskStatus.RUNNING, failures=1), result(outcome), T0)
    assert (finish.status, finish.failures, finish.retry_at, finish.finished) == (
        final,
        2,
        None,
        True,
    )


def test_a_lost_attempt_goes_back_to_pending_now_without_spending_the_budget() -> None:
    finish = decide_finish(held(TaskStatus.DISPATCHED, failures=1), result(AttemptOutcome.LOST), T0)
    assert (finish.status, finish.failures, finish.retry_at, finish.finished) == (
        TaskStatus.PENDING,
        1,
        T0,
        False,
    )


@pytest.mark.parametrize("target", list(AgentStatus))
def test_agent_sources_are_the_other_connected_statuses_the_table_allows(
    target: AgentStatus,
) -> None:
    allowed = {s for s, targets in AGENT_TRANSITIONS.items() if target in targets}
    assert agent_sources(target) == tuple(sorted(allowed - {target, AgentStatus.OFFLINE}))


def test_only_a_connection_brings_an_agent_back_from_offline() -> None:
    assert agent_sources(AgentStatus.ONLINE) == ("draining",)
    assert agent_sources(AgentStatus.DRAINING) == ("online",)  # offline -> draining: connect
    assert agent_sources(AgentStatus.OFFLINE) == ("draining", "online")


def test_generated_names_are_distinct_agent_names() -> None:
    first, second = generated_agent_name(), generated_agent_name()
    assert first != second
    assert first.startswith("agent-")
    assert len(first) == len("agent-") + 12


def test_a_tombstone_name_is_longer_than_any_agent_name_and_names_the_agent() -> None:
    agent_id = uuid.uuid4()
    name = tombstone_name(agent_id)
    assert len(name) == TOMBSTONE_NAME_LENGTH
    assert str(agent_id) in name
    assert tombstone_name(uuid.uuid4()) != name


def _line(text: str, attempt: int = 1) -> LogLine:
    return LogLine(TASK, attempt, "stdout", text, T0)


def test_lines_within_the_budget_are_kept_and_charged() -> None:
    budget = LogBudget(max_bytes=1000, max_lines=10, line_overhead_bytes=4)
    kept, usage = charge(budget, [_line("ab"), _line("cde")], {(TASK, 1): LogUsage()})
    assert [line.line for line in kept] == ["ab", "cde"]
    assert usage == {(TASK, 1): LogUsage(bytes=2 + 4 + 3 + 4, lines=2, truncated=False)}


def test_the_line_past_max_lines_becomes_the_marker_and_the_rest_is_dropped() -> None:
    budget = LogBudget(max_bytes=1000, max_lines=1, line_overhead_bytes=0)
    lines = [_line("a"), _line("b"), _line("c")]
    kept, usage = charge(budget, lines, {(TASK, 1): LogUsage()})
    assert [line.line for line in kept] == [
        "a",
        budget.marker("this attempt reached max_log_lines_per_attempt (1 lines)"),
    ]
    assert usage[(TASK, 1)] == LogUsage(bytes=1, lines=1, truncated=True)


def test_the_line_past_max_bytes_becomes_the_marker() -> None:
    budget = LogBudget(max_bytes=5, max_lines=100, line_overhead_bytes=0)
    kept, usage = charge(budget, [_line("abc"), _line("defg")], {(TASK, 1): LogUsage(bytes=1)})
    assert kept[0].line == "abc"
    assert kept[1].line.startswith("[hetuflow] log truncated: this attempt reached the log limit")
    assert usage[(TASK, 1)].truncated


def test_a_truncated_attempt_and_an_attempt_without_a_row_keep_nothing() -> None:
    budget = LogBudget(max_bytes=1000, max_lines=10)
    stored = {(TASK, 1): LogUsage(truncated=True)}
    kept, usage = charge(budget, [_line("a"), _line("b", attempt=2)], stored)
    assert kept == []
    assert usage == {}
