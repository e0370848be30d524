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
    FailureKind,
    LogBudget,
    LogLine,
    LogUsage,
    RetryPolicy,
    TaskStatus,
    retry_on_of,
)
from hetuflow.store._rules import (
    ACTIVE_SQL,
    LOST_NOT_RETRIED,
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


# --- backoff, jitter and retry_on (docs/guarantees.md#retries) -------------------------------


def test_the_backoff_grows_by_the_factor_up_to_the_cap() -> None:
    policy = RetryPolicy(
        max_retries=10, backoff_seconds=10, backoff_factor=2, max_backoff_seconds=45
    )
    delays = [policy.delay_after(n).total_seconds() for n in range(1, 6)]
    assert delays == [10, 20, 40, 45, 45]


def test_a_cap_below_the_base_makes_every_wait_the_cap() -> None:
    policy = RetryPolicy(backoff_seconds=60, max_backoff_seconds=5)
    assert policy.delay_after(1) == policy.delay_after(3) == timedelta(seconds=5)


def test_a_huge_exponent_is_the_cap_not_an_overflow() -> None:
    policy = RetryPolicy(backoff_seconds=1, backoff_factor=10, max_backoff_seconds=100)
    assert policy.delay_after(10_000) == timedelta(seconds=100)


@pytest.mark.parametrize(
    ("jitter", "draw", "seconds"),
    [
        (0.0, 0.99, 40.0),  # no jitter: the draw changes nothing
        (1.0, 0.0, 40.0),  # full jitter, lowest draw: the whole delay
        (1.0, 0.5, 20.0),  # full jitter: anywhere from 0 to the delay
        (1.0, 0.999, 0.04),
        (0.25, 0.5, 35.0),  # a quarter: within the last quarter before the delay
        (0.25, 1.0, 30.0),
    ],
)
def test_jitter_takes_a_drawn_fraction_off_the_delay(
    jitter: float, draw: float, seconds: float
) -> None:
    policy = RetryPolicy(backoff_seconds=10, backoff_factor=2, jitter=jitter)
    assert policy.delay_after(3, draw).total_seconds() == pytest.approx(seconds)


def test_jitter_never_goes_past_the_cap_nor_below_zero() -> None:
    policy = RetryPolicy(backoff_seconds=10, backoff_factor=2, max_backoff_seconds=15, jitter=1.0)
    for draw in (-1.0, 0.0, 0.3, 0.999, 2.0):
        assert timedelta(0) <= policy.delay_after(5, draw) <= timedelta(seconds=15)


def test_the_finish_applies_the_jitter_draw() -> None:
    retry = RetryPolicy(max_retries=3, backoff_seconds=10, backoff_factor=2, jitter=0.5)
    finish = decide_finish(
        held(TaskStatus.RUNNING, failures=1, retry=retry), result(AttemptOutcome.FAILED), T0, 0.5
    )
    assert finish.status is TaskStatus.PENDING
    assert finish.retry_at == T0 + timedelta(seconds=20 * 0.75)


def test_retry_on_is_deduplicated_in_a_fixed_order_and_refuses_unknown_kinds() -> None:
    assert retry_on_of(["agent_lost", "failed", "agent_lost"]) == (
        FailureKind.FAILED,
        FailureKind.AGENT_LOST,
    )
    assert retry_on_of([]) == ()
    with pytest.raises(ValueError, match="'cancelled' is not a failure kind"):
        retry_on_of(["cancelled"])


@pytest.mark.parametrize(
    ("outcome", "kind", "final"),
    [
        (AttemptOutcome.FAILED, "failed", TaskStatus.FAILED),
        (AttemptOutcome.TIMED_OUT, "timed_out", TaskStatus.TIMED_OUT),
    ],
)
def test_a_failure_kind_not_in_retry_on_ends_the_task_at_once_saying_so(
    outcome: AttemptOutcome, kind: str, final: TaskStatus
) -> None:
    others = tuple(k for k in FailureKind if k != kind)
    retry = RetryPolicy(max_retries=5, retry_on=others)
    failed = AttemptResult(AttemptRef(TASK, 2, AGENT), outcome, error="boom")
    finish = decide_finish(held(TaskStatus.RUNNING, retry=retry), failed, T0)
    assert (finish.status, finish.failures, finish.retry_at, finish.finished) == (
        final,
        1,
        None,
        True,
    )
    assert finish.error == f"boom (not retried: retry_on does not include {kind})"


def test_a_failure_kind_in_retry_on_is_retried_and_keeps_its_error() -> None:
    retry = RetryPolicy(max_retries=5, retry_on=(FailureKind.TIMED_OUT,))
    timed_out = AttemptResult(AttemptRef(TASK, 2, AGENT), AttemptOutcome.TIMED_OUT, error="slow")
    finish = decide_finish(held(TaskStatus.RUNNING, retry=retry), timed_out, T0)
    assert (finish.status, finish.error) == (TaskStatus.PENDING, "slow")


def test_a_lost_attempt_without_agent_lost_in_retry_on_fails_the_task() -> None:
    retry = RetryPolicy(max_retries=5, retry_on=(FailureKind.FAILED,))
    finish = decide_finish(held(TaskStatus.RUNNING, retry=retry), result(AttemptOutcome.LOST), T0)
    assert (finish.status, finish.finished, finish.failures) == (TaskStatus.FAILED, True, 0)
    assert finish.error == LOST_NOT_RETRIED
    assert LOST_NOT_RETRIED.endswith("(not retried: retry_on does not include agent_lost)")


def test_an_empty_retry_on_retries_nothing_whatever_max_retries_says() -> None:
    retry = RetryPolicy(max_retries=5, retry_on=())
    for outcome in (AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT, AttemptOutcome.LOST):
        finish = decide_finish(held(TaskStatus.RUNNING, retry=retry), result(outcome), T0)
        assert finish.finished


def test_success_and_cancel_ignore_retry_on() -> None:
    retry = RetryPolicy(retry_on=())
    assert (
        decide_finish(
            held(TaskStatus.RUNNING, retry=retry), result(AttemptOutcome.SUCCEEDED), T0
        ).status
        is TaskStatus.SUCCEEDED
    )
    assert (
        decide_finish(
            held(TaskStatus.CANCELLING, retry=retry), result(AttemptOutcome.FAILED), T0
        ).status
        is TaskStatus.CANCELLED
    )
