"""Prometheus metrics of one server node, in a registry owned by the app (no global state).

The components that see an event call one ``Metrics`` method (``docs/monitoring.md`` lists
which component calls which). Values that live in the database (pending tasks by task type)
are read from the Store when ``/metrics`` is scraped, so every node reports the same numbers
for them (flow control, ``set_flow``: rate limits by name, concurrency keys in aggregate, at
most once per ``flow_ttl_seconds``); counters and histograms count what happened on this node,
and Prometheus sums them across nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

from hetuflow.errors import HetuflowError
from hetuflow.models import ConcurrencyLimits, ConcurrencySummary, RateLimitUsage, TaskStatus
from hetuflow.store.base import Store

Direction = Literal["in", "out"]

DISPATCH_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
RUN_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)
FLOW_TTL_SECONDS = 5.0
"""The flow control gauges are read from the store at most this often (a scrape in between
shows the last reading): their read grows with the unfinished keyed tasks."""


class Metrics:
    """Every hetuflow metric, registered in ``self.registry`` (one per app)."""

    def __init__(self, *, flow_ttl_seconds: float = FLOW_TTL_SECONDS) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self._submitted = Counter(
            "hetuflow_tasks_submitted",
            "Tasks created (REST, CLI, SDK or cron), by task type.",
            ["task_type"],
            registry=registry,
        )
        self._dispatched = Counter(
            "hetuflow_tasks_dispatched",
            "Attempts handed to an agent, by task type.",
            ["task_type"],
            registry=registry,
        )
        self._started = Counter(
            "hetuflow_tasks_started",
            "Attempts an agent reported started, by task type.",
            ["task_type"],
            registry=registry,
        )
        self._finished = Counter(
            "hetuflow_tasks_finished",
            "Attempts that ended, by task type and outcome "
            "(succeeded, failed, timed_out, cancelled, lost).",
            ["task_type", "outcome"],
            registry=registry,
        )
        self._dispatch_latency = Histogram(
            "hetuflow_task_dispatch_latency_seconds",
            "From the moment a task was due (created or scheduled_at) to its dispatch.",
            ["task_type"],
            buckets=DISPATCH_LATENCY_BUCKETS,
            registry=registry,
        )
        self._run_duration = Histogram(
            "hetuflow_task_run_duration_seconds",
            "From an attempt's start to its result, by task type and outcome.",
            ["task_type", "outcome"],
            buckets=RUN_DURATION_BUCKETS,
            registry=registry,
        )
        self._pending = Gauge(
            "hetuflow_tasks_pending",
            "Tasks waiting to be dispatched, by task type (read from the database at scrape).",
            ["task_type"],
            registry=registry,
        )
        self._quarantined = Gauge(
            "hetuflow_tasks_quarantined",
            "Poison tasks: quarantined after crashing [scheduler] max_agent_crashes_per_task "
            "agents, by task type (read from the database at scrape; kept until retention).",
            ["task_type"],
            registry=registry,
        )
        self._quarantined_types: set[str] = set()
        self._agents_connected = Gauge(
            "hetuflow_agents_connected",
            "Agents whose WebSocket is open on this node.",
            registry=registry,
        )
        self._cron_fires = Counter(
            "hetuflow_cron_fires",
            "Cron ticks that created a task.",
            registry=registry,
        )
        self._cron_misfires = Counter(
            "hetuflow_cron_misfires",
            "Cron ticks not fired on time, by what the misfire or overlap policy did "
            "(skipped, run_once, catch_up, overlap_skipped, ...).",
            ["action"],
            registry=registry,
        )
        self._fenced_reports = Counter(
            "hetuflow_reports_fenced",
            "Starts and results an agent sent for an attempt that is no longer its own (a stale"
            " attempt: fenced by the database, the agent told to stop it), by report.",
            ["report"],
            registry=registry,
        )
        self._ws_messages = Counter(
            "hetuflow_ws_messages",
            "WebSocket messages by direction (in: from an agent, out: to an agent) and type.",
            ["direction", "type"],
            registry=registry,
        )
        self._database_errors = Counter(
            "hetuflow_database_errors",
            "Store calls that failed because the database did not answer or refused, by operation.",
            ["operation"],
            registry=registry,
        )
        self._workflows_created = Counter(
            "hetuflow_workflows_created",
            "Workflows submitted (REST, CLI, SDK).",
            registry=registry,
        )
        self._workflows_finished = Counter(
            "hetuflow_workflows_finished",
            "Workflows that ended, by status (succeeded, failed, cancelled), counted by the node"
            " whose transaction ended the last step; a retried workflow counts again.",
            ["status"],
            registry=registry,
        )
        for status in ("succeeded", "failed", "cancelled"):
            self._workflows_finished.labels(status)
        self._rate_limit_units = Gauge(
            "hetuflow_rate_limit_units",
            "Units a rate limit allows per window, by name (read from the database at scrape).",
            ["name"],
            registry=registry,
        )
        self._rate_limit_window = Gauge(
            "hetuflow_rate_limit_window_seconds",
            "A rate limit's window, by name.",
            ["name"],
            registry=registry,
        )
        self._rate_limit_used = Gauge(
            "hetuflow_rate_limit_used_units",
            "Units of a rate limit dispatched in the window that ends at the scrape, by name.",
            ["name"],
            registry=registry,
        )
        self._rate_limit_waiting = Gauge(
            "hetuflow_rate_limit_waiting_tasks",
            "Due pending tasks a rate limit holds back (they ask more units than it has left),"
            " by name.",
            ["name"],
            registry=registry,
        )
        self._rate_limit_names: set[str] = set()
        self._keys_active = Gauge(
            "hetuflow_concurrency_keys_active",
            "Concurrency keys with at least one active task (dispatched, running, cancelling).",
            registry=registry,
        )
        self._keys_at_limit = Gauge(
            "hetuflow_concurrency_keys_at_limit",
            "Concurrency keys with their limit of tasks active.",
            registry=registry,
        )
        self._key_waiting = Gauge(
            "hetuflow_concurrency_waiting_tasks",
            "Due pending tasks their concurrency key's limit holds back (pending_reason "
            "concurrency_limit), by task type.",
            ["task_type"],
            registry=registry,
        )
        self._key_waiting_types: set[str] = set()
        self._flow_ttl_seconds = flow_ttl_seconds
        self._flow_read_at: float | None = None
        self._webhook_deliveries = Counter(
            "hetuflow_webhook_deliveries",
            "POSTs of outgoing webhooks (docs/webhooks.md) by outcome: delivered (2xx), "
            "retried (failed, another attempt is due later), given_up (failed, no attempt left).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("delivered", "retried", "given_up"):
            self._webhook_deliveries.labels(outcome)
        self._pending_types: set[str] = set()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: the hot path counts every task, and
        ``labels`` builds and locks its lookup each time."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # --- tasks ------------------------------------------------------------------------------

    def task_submitted(self, task_type: str, count: int = 1) -> None:
        """``count`` new tasks of ``task_type`` were created (not idempotent replays)."""
        self._child(self._submitted, task_type).inc(count)

    def task_dispatched(self, task_type: str, latency_seconds: float) -> None:
        """One attempt was dispatched, ``latency_seconds`` after the task became due."""
        self._child(self._dispatched, task_type).inc()
        self._child(self._dispatch_latency, task_type).observe(max(latency_seconds, 0.0))

    def task_started(self, task_type: str) -> None:
        """An agent reported that an attempt started."""
        self._child(self._started, task_type).inc()

    def task_finished(self, task_type: str, outcome: str, run_seconds: float | None) -> None:
        """An attempt ended with ``outcome`` (an ``AttemptOutcome`` value).

        ``run_seconds`` is the time from its start to its result (None if it never started).
        """
        self._child(self._finished, task_type, outcome).inc()
        if run_seconds is not None:
            self._child(self._run_duration, task_type, outcome).observe(max(run_seconds, 0.0))

    def set_pending(self, counts: dict[str, int]) -> None:
        """Pending tasks by task type; task types that are gone drop to zero."""
        for task_type in self._pending_types - counts.keys():
            self._pending.labels(task_type).set(0)
        for task_type, count in counts.items():
            self._pending.labels(task_type).set(count)
        self._pending_types |= counts.keys()

    def set_quarantined(self, counts: dict[str, int]) -> None:
        """Quarantined tasks by task type; task types that are gone drop to zero."""
        for task_type in self._quarantined_types - counts.keys():
            self._quarantined.labels(task_type).set(0)
        for task_type, count in counts.items():
            self._quarantined.labels(task_type).set(count)
        self._quarantined_types |= counts.keys()

    def set_flow(self, rate_limits: Sequence[RateLimitUsage], keys: ConcurrencySummary) -> None:
        """Rate limits by name (a deleted one's series go) and concurrency keys in aggregate
        (task types with no task held back drop to zero)."""
        names = {usage.state.limit.name for usage in rate_limits}
        for gone in self._rate_limit_names - names:
            for gauge in (
                self._rate_limit_units,
                self._rate_limit_window,
                self._rate_limit_used,
                self._rate_limit_waiting,
            ):
                gauge.remove(gone)
        for usage in rate_limits:
            limit = usage.state.limit
            self._rate_limit_units.labels(limit.name).set(limit.limit)
            self._rate_limit_window.labels(limit.name).set(limit.per_seconds)
            self._rate_limit_used.labels(limit.name).set(usage.state.used)
            self._rate_limit_waiting.labels(limit.name).set(usage.waiting)
        self._rate_limit_names = names
        self._keys_active.set(keys.keys_active)
        self._keys_at_limit.set(keys.keys_at_limit)
        self._set_by_type(self._key_waiting, self._key_waiting_types, keys.waiting_by_task_type)

    @staticmethod
    def _set_by_type(gauge: Gauge, seen: set[str], counts: Mapping[str, int]) -> None:
        for task_type in seen - counts.keys():
            gauge.labels(task_type).set(0)
        for task_type, count in counts.items():
            gauge.labels(task_type).set(count)
        seen |= counts.keys()

    # --- workflows ---------------------------------------------------------------------------

    def workflow_created(self) -> None:
        """A workflow was submitted (its steps count as submitted tasks too)."""
        self._workflows_created.inc()

    def workflow_finished(self, status: str) -> None:
        """A workflow ended with ``status`` (a ``WorkflowStatus`` value), in a transaction of
        this node (``Store.on_workflow_finished``)."""
        self._child(self._workflows_finished, status).inc()

    # --- agents, cron, transport ------------------------------------------------------------

    def agent_connected(self) -> None:
        self._agents_connected.inc()

    def agent_disconnected(self) -> None:
        self._agents_connected.dec()

    def cron_fired(self, count: int = 1) -> None:
        """``count`` cron ticks created a task."""
        self._cron_fires.inc(count)

    def cron_misfired(self, action: str, count: int = 1) -> None:
        """``count`` ticks were late or blocked; ``action`` says what the policy did."""
        self._cron_misfires.labels(action).inc(count)

    def report_fenced(self, report: Literal["start", "result"]) -> None:
        """The database refused a start or result of a superseded attempt (a late report)."""
        self._child(self._fenced_reports, report).inc()

    def ws_message(self, direction: Direction, message_type: str) -> None:
        """One WebSocket message went ``in`` (from an agent) or ``out`` (to an agent)."""
        self._ws_messages.labels(direction, message_type).inc()

    def ws_messages(self, direction: Direction, message_types: Iterable[str]) -> None:
        """Several messages at once (e.g. one per item of a batched frame)."""
        for message_type in message_types:
            self._ws_messages.labels(direction, message_type).inc()

    def webhook_delivery(self, outcome: Literal["delivered", "retried", "given_up"]) -> None:
        """One webhook POST ended so (a delivery given up counts once, at its last POST)."""
        self._child(self._webhook_deliveries, outcome).inc()

    def database_error(self, operation: str) -> None:
        """A Store call failed (``StoreUnavailable`` or a driver error); ``operation`` names it."""
        self._database_errors.labels(operation).inc()

    # --- scrape -----------------------------------------------------------------------------

    async def refresh_from_store(
        self,
        store: Store,
        *,
        now: datetime,
        monotonic: float,
        limits: ConcurrencyLimits | None = None,
    ) -> None:
        """Read the values that live in the database (the flow control ones unless read less
        than ``flow_ttl_seconds`` before ``monotonic``, with ``limits`` the ``[concurrency]``
        limits). A failing store counts a database error and leaves the previous values, so a
        scrape still answers."""
        try:
            counts = await store.count_tasks_by_type(statuses=(TaskStatus.PENDING,))
            quarantined = await store.count_tasks_by_type(statuses=(TaskStatus.QUARANTINED,))
            flow = None
            last = self._flow_read_at
            if last is None or monotonic - last >= self._flow_ttl_seconds:
                flow = (
                    await store.rate_limit_usage(now=now),
                    await store.concurrency_summary(limits=limits or ConcurrencyLimits(), now=now),
                )
        except (HetuflowError, OSError):
            self.database_error("metrics_scrape")
            return
        self.set_pending(counts)
        self.set_quarantined(quarantined)
        if flow is not None:
            self.set_flow(*flow)
            self._flow_read_at = monotonic

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


router = APIRouter(tags=["monitoring"])


@router.get("/metrics", include_in_schema=False)
async def scrape_metrics(request: Request) -> Response:
    """Prometheus scrape endpoint (text exposition format)."""
    context = request.app.state.context
    metrics: Metrics = context.metrics
    await metrics.refresh_from_store(
        context.store,
        now=context.clock.now(),
        monotonic=context.clock.monotonic(),
        limits=ConcurrencyLimits(dict(context.config.concurrency)),
    )
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
