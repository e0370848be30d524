"""SqliteStore: the embedded default, one file in WAL mode with a single writer.

Each method is one transaction run on a dedicated thread (see ``_sqlite_db``): writes go
through the one writer thread, so claims, fences and unique keys are decided one at a time;
``BEGIN IMMEDIATE`` and the unique keys keep that true even if another process opens the file.
The SQL lives in ``_sqlite_tasks``, ``_sqlite_attempts``, ``_sqlite_agents`` and
``_sqlite_cron``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID

from hetuflow.config import (
    DEFAULT_MAX_AGENT_CRASHES_PER_TASK,
    DEFAULT_PRIORITY_AGING_SECONDS,
    DatabaseConfig,
)
from hetuflow.errors import StoreUnavailable
from hetuflow.models import (
    Agent,
    AgentRegistration,
    AgentStatus,
    Attempt,
    AttemptRef,
    AttemptResult,
    AttemptStart,
    BatchItem,
    BroadcastPolicy,
    ClaimGroup,
    ClaimRequest,
    ConcurrencyKeyUsage,
    ConcurrencyLimits,
    ConcurrencySummary,
    CronFire,
    CronJob,
    CronJobChanges,
    CronTick,
    Dispatch,
    DispatchOutlook,
    FinishOutcome,
    HeldTask,
    LogBudget,
    LogLine,
    NewAgent,
    NewBroadcast,
    NewCronJob,
    NewTask,
    Page,
    PendingGroup,
    RateLimit,
    RateLimitState,
    RateLimitUsage,
    Stats,
    Task,
    TaskCursor,
    TaskFilter,
    TaskStatus,
    TaskTypeStats,
    TickOutcome,
    TimelineBucket,
    offered_task_types,
)
from hetuflow.store import _sqlite_agents as agent_sql
from hetuflow.store import _sqlite_attempts as attempt_sql
from hetuflow.store import _sqlite_broadcast as broadcast_sql
from hetuflow.store import _sqlite_cron as cron_sql
from hetuflow.store import _sqlite_rate_limits as rates_sql
from hetuflow.store import _sqlite_search as search_sql
from hetuflow.store import _sqlite_task_stats as stats_sql
from hetuflow.store import _sqlite_tasks as task_sql
from hetuflow.store import _sqlite_tokens as token_sql
from hetuflow.store import _sqlite_triggers as trigger_sql
from hetuflow.store import _sqlite_usage as usage_sql
from hetuflow.store import _sqlite_webhooks as webhook_sql
from hetuflow.store import _sqlite_workflows as workflow_sql
from hetuflow.store._claims import Aging
from hetuflow.store._sqlite_db import SqliteDatabase
from hetuflow.store._workflow_rows import Committed, ignore_created, ignore_finished
from hetuflow.tokens import ApiToken, NewApiToken
from hetuflow.triggers import (
    EventDelivery,
    Hook,
    NewEvent,
    NewHook,
    NewTrigger,
    Trigger,
    TriggeredTask,
    TriggeredWorkflow,
)
from hetuflow.webhooks import DeliveryOutcome, WebhookDelivery
from hetuflow.workflows import NewStep, NewWorkflow, Workflow, WorkflowStatus, WorkflowSummary

logger = logging.getLogger(__name__)

SEARCH_INDEX_SECONDS = 1.0
"""How often the store moves the tasks whose text changed into the search index
(``_sqlite_search``): a search finds them at once either way, through ``LIKE`` until then."""


def _ping(connection: sqlite3.Connection) -> None:
    connection.execute("SELECT 1 FROM hetuflow_migrations LIMIT 1").fetchall()


class SqliteStore:
    def __init__(
        self,
        database: DatabaseConfig,
        *,
        priority_aging_seconds: float = DEFAULT_PRIORITY_AGING_SECONDS,
        max_agent_crashes_per_task: int = DEFAULT_MAX_AGENT_CRASHES_PER_TASK,
        search_index_seconds: float | None = SEARCH_INDEX_SECONDS,
    ) -> None:
        """``search_index_seconds``: how often the store indexes changed tasks for search by
        itself; None: never (the caller runs ``index_search``, as tests do)."""
        self.config = database
        self._db = SqliteDatabase(database.sqlite_path)
        self._aging = Aging.of(priority_aging_seconds)
        self._crash_limit = max_agent_crashes_per_task
        self._workflow_finished: Callable[[WorkflowStatus], None] = ignore_finished
        self._tasks_created: Callable[[str, int], None] = ignore_created
        self._index_every = search_index_seconds
        self._indexer: asyncio.Task[None] | None = None

    def on_workflow_finished(self, listener: Callable[[WorkflowStatus], None]) -> None:
        self._workflow_finished = listener

    def on_tasks_created(self, listener: Callable[[str, int], None]) -> None:
        self._tasks_created = listener

    def _report(self, committed: Committed) -> None:
        """Tell the listeners of the workflows a committed transaction ended and of the
        tasks it created (a fan-out's children)."""
        for status in committed.finished:
            self._workflow_finished(status)
        for task_type, count in committed.created.items():
            self._tasks_created(task_type, count)

    # --- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        await self._db.open()
        if self._index_every is not None:
            self._indexer = asyncio.create_task(self._index_search_regularly(self._index_every))

    async def close(self) -> None:
        if self._indexer is not None:
            self._indexer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._indexer
            self._indexer = None
        await self._db.close()

    async def index_search(self) -> int:
        """Move every task whose text changed into the search index now, a bounded batch per
        write transaction (other writes go in between); returns how many. The store does this
        every second by itself; searches are exact before it too."""
        moved = 0
        while True:
            batch = await self._db.write(search_sql.index_pending, search_sql.INDEX_BATCH)
            moved += batch
            if batch < search_sql.INDEX_BATCH:
                return moved

    async def _index_search_regularly(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                if await self._db.read(search_sql.any_pending):
                    await self.index_search()
            except (StoreUnavailable, sqlite3.Error) as error:  # the next round retries
                logger.warning("search indexing failed: %s", error)

    async def ping(self) -> None:
        await self._db.read(_ping)

    # --- tasks --------------------------------------------------------------------------------

    async def create_tasks(
        self, tasks: Sequence[NewTask], *, now: datetime
    ) -> list[tuple[Task, bool]]:
        return await self._db.write(task_sql.create_tasks, tasks, now, self._aging)

    async def create_and_claim_tasks(
        self, tasks: Sequence[NewTask], claim: ClaimRequest, *, now: datetime
    ) -> tuple[list[tuple[Task, bool]], list[Dispatch]]:
        if not tasks:
            return [], []
        # Rows and tasks are built here, on the event loop: the writer thread, which every
        # write waits for, only claims and inserts.
        prepared = task_sql.prepare_tasks(tasks, now, self._aging, claim=True)
        taken, dispatches = await self._db.write(task_sql.insert_prepared, prepared, claim)
        return task_sql.created(prepared, taken), dispatches

    async def get_task(self, task_id: UUID) -> Task | None:
        return await self._db.read(task_sql.get_task, task_id)

    async def get_task_and_agents(
        self, task_id: UUID, *, now: datetime
    ) -> tuple[Task | None, list[Agent] | None]:
        return await self._db.read(_task_and_agents, task_id, now)

    async def list_tasks(
        self,
        query: TaskFilter,
        *,
        limit: int,
        offset: int = 0,
        after: TaskCursor | None = None,
        with_total: bool = True,
    ) -> Page[Task]:
        return await self._db.read(task_sql.list_tasks, query, limit, offset, after, with_total)

    async def list_held(self, agent_ids: Sequence[UUID]) -> list[HeldTask]:
        if not agent_ids:
            return []
        return await self._db.read(task_sql.list_held, agent_ids)

    async def cancel_task(self, task_id: UUID, *, now: datetime, reason: str | None = None) -> Task:
        committed = Committed()
        task = await self._db.write(
            broadcast_sql.cancel_task, task_id, now, self._aging, reason, committed
        )
        self._report(committed)
        return task

    async def create_broadcast(
        self,
        task: NewTask,
        *,
        policy: BroadcastPolicy,
        now: datetime,
        start_deadline_seconds: float | None = None,
    ) -> tuple[Task, list[Task]]:
        broadcast = NewBroadcast(task, policy, start_deadline_seconds)
        return await self._db.write(broadcast_sql.create_broadcast, broadcast, now, self._aging)

    async def create_batch(
        self, items: Sequence[NewTask | NewBroadcast], *, now: datetime
    ) -> list[BatchItem]:
        if not items:
            return []
        return await self._db.write(broadcast_sql.create_batch, items, now, self._aging)

    async def expire_broadcast_children(self, *, now: datetime) -> list[Task]:
        if not await self._db.read(broadcast_sql.any_expired, now):
            return []
        return await self._db.write(broadcast_sql.expire_children, now)

    async def list_broadcast_children(self, parent_id: UUID) -> list[Task]:
        return await self._db.read(broadcast_sql.list_children, parent_id)

    async def list_keyed_tasks(self, key: str, *, statuses: Sequence[TaskStatus]) -> list[Task]:
        return await self._db.read(task_sql.list_keyed_tasks, key, statuses)

    async def claim_tasks(
        self,
        groups: Sequence[ClaimGroup],
        *,
        now: datetime,
        until: datetime | None = None,
        global_limit: int | None = None,
        key_limits: ConcurrencyLimits | None = None,
    ) -> list[Dispatch]:
        types = offered_task_types(groups)
        if not types:
            return []
        # No read of its own first: the dispatcher claims after its outlook (on the reader)
        # found something due, or right after a claim that filled every slot (a backlog).
        return await self._db.write(
            task_sql.claim_tasks, groups, now, until, global_limit, None, key_limits
        )

    async def count_active_by_key(self, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        return await self._db.read(task_sql.count_active_by_key, keys)

    async def dispatch_outlook(
        self, task_types: Sequence[str], *, now: datetime, until: datetime
    ) -> DispatchOutlook:
        return await self._db.read(task_sql.dispatch_outlook, task_types, now, until)

    # --- rate limits ----------------------------------------------------------------------------

    async def create_rate_limit(
        self, name: str, limit: int, per_seconds: float, *, now: datetime
    ) -> RateLimit:
        return await self._db.write(rates_sql.create_rate_limit, name, limit, per_seconds, now)

    async def list_rate_limits(self) -> list[RateLimit]:
        return await self._db.read(rates_sql.list_rate_limits)

    async def delete_rate_limit(self, name: str) -> None:
        await self._db.write(rates_sql.delete_rate_limit, name)

    async def rate_limit_states(
        self, names: Sequence[str], *, now: datetime
    ) -> dict[str, RateLimitState]:
        if not names:
            return {}
        return await self._db.read(rates_sql.rate_limit_states, names, now)

    # --- flow control in use ---------------------------------------------------------------

    async def rate_limit_usage(self, *, now: datetime) -> list[RateLimitUsage]:
        return await self._db.read(usage_sql.rate_limit_usage, now)

    async def concurrency_key_usage(
        self,
        *,
        limits: ConcurrencyLimits,
        now: datetime,
        prefix: str | None = None,
        key: str | None = None,
        limit: int,
    ) -> list[ConcurrencyKeyUsage]:
        return await self._db.read(
            usage_sql.concurrency_key_usage, limits, now, prefix=prefix, key=key, limit=limit
        )

    async def concurrency_summary(
        self, *, limits: ConcurrencyLimits, now: datetime
    ) -> ConcurrencySummary:
        return await self._db.read(usage_sql.concurrency_summary, limits, now)

    async def start_attempts(self, starts: Sequence[AttemptStart]) -> list[bool]:
        if not starts:
            return []
        return await self._db.write(attempt_sql.start_attempts, starts)

    async def finish_attempts(
        self, results: Sequence[AttemptResult], *, now: datetime
    ) -> list[FinishOutcome]:
        if not results:
            return []
        committed = Committed()
        outcomes = await self._db.write(
            attempt_sql.finish_attempts, results, now, self._aging, committed
        )
        self._report(committed)
        return outcomes

    async def set_progress(self, refs: Sequence[tuple[AttemptRef, float]]) -> None:
        if refs:
            await self._db.write(attempt_sql.set_progress, refs)

    async def release_agent(
        self,
        agent_id: UUID,
        *,
        now: datetime,
        keep: Sequence[AttemptRef] = (),
        session: int | None = None,
    ) -> list[UUID]:
        committed = Committed()
        pending = await self._db.write(
            agent_sql.release_agent,
            agent_id,
            now,
            keep,
            session,
            aging=self._aging,
            crash_limit=self._crash_limit,
            committed=committed,
        )
        self._report(committed)
        return pending

    async def list_attempts(self, task_id: UUID) -> list[Attempt]:
        return await self._db.read(attempt_sql.list_attempts, task_id)

    async def append_logs(
        self, lines: Sequence[LogLine], *, budget: LogBudget | None = None
    ) -> None:
        if lines:
            await self._db.write(attempt_sql.append_logs, lines, budget)

    async def list_logs(
        self, task_id: UUID, *, after_seq: int = 0, attempt: int | None = None, limit: int = 1000
    ) -> list[LogLine]:
        return await self._db.read(attempt_sql.list_logs, task_id, after_seq, attempt, limit)

    async def delete_finished_tasks(self, *, finished_before: datetime, limit: int) -> int:
        return await self._db.write(workflow_sql.delete_finished, finished_before, limit)

    async def count_tasks_by_type(self, *, statuses: Sequence[TaskStatus]) -> dict[str, int]:
        return await self._db.read(task_sql.count_tasks_by_type, statuses)

    async def count_finished_tasks(
        self, *, since: datetime, until: datetime
    ) -> list[tuple[datetime, TaskStatus, int]]:
        return await self._db.read(task_sql.count_finished_tasks, since, until)

    async def stats(self) -> Stats:
        return await self._db.read(task_sql.stats)

    # --- agents -------------------------------------------------------------------------------

    async def create_agent(self, agent: NewAgent, *, now: datetime) -> Agent:
        return await self._db.write(agent_sql.create_agent, agent, now)

    async def get_agent(self, agent_id: UUID) -> Agent | None:
        return await self._db.read(agent_sql.get_agent, agent_id)

    async def get_agent_by_name(self, name: str) -> Agent | None:
        return await self._db.read(agent_sql.get_agent_by_name, name)

    async def list_agents(self, *, statuses: Sequence[AgentStatus] = ()) -> list[Agent]:
        return await self._db.read(agent_sql.list_agents, statuses)

    async def delete_agent(self, agent_id: UUID, *, now: datetime) -> None:
        committed = Committed()
        await self._db.write(agent_sql.delete_agent, agent_id, now, committed)
        self._report(committed)

    async def connect_agent(
        self, registration: AgentRegistration, *, node_id: str, now: datetime
    ) -> Agent:
        return await self._db.write(agent_sql.connect_agent, registration, node_id, now)

    async def set_agent_status(
        self, agent_id: UUID, status: AgentStatus, *, session: int, now: datetime
    ) -> bool:
        return await self._db.write(agent_sql.set_agent_status, agent_id, status, session)

    async def set_agent_draining(self, agent_id: UUID, draining: bool, *, now: datetime) -> Agent:
        return await self._db.write(agent_sql.set_agent_draining, agent_id, draining)

    async def set_agent_enabled(self, agent_id: UUID, enabled: bool, *, now: datetime) -> Agent:
        return await self._db.write(agent_sql.set_agent_enabled, agent_id, enabled)

    async def prune_agents(
        self, *, offline_before: datetime, now: datetime, limit: int
    ) -> list[Agent]:
        committed = Committed()
        pruned = await self._db.write(agent_sql.prune_agents, offline_before, now, limit, committed)
        self._report(committed)
        return pruned

    async def record_heartbeats(self, agent_ids: Sequence[UUID], *, now: datetime) -> list[UUID]:
        if not agent_ids:
            return []
        return await self._db.write(agent_sql.record_heartbeats, agent_ids, now)

    async def reap_agents(self, *, stale_before: datetime, now: datetime) -> list[UUID]:
        committed = Committed()
        reaped = await self._db.write(
            agent_sql.reap_agents,
            stale_before,
            now,
            aging=self._aging,
            crash_limit=self._crash_limit,
            committed=committed,
        )
        self._report(committed)
        return reaped

    # --- cron jobs ----------------------------------------------------------------------------

    async def create_cron_job(
        self, job: NewCronJob, *, next_fire_at: datetime | None, now: datetime
    ) -> CronJob:
        return await self._db.write(cron_sql.create_cron_job, job, next_fire_at, now)

    async def get_cron_job(self, cron_job_id: UUID) -> CronJob | None:
        return await self._db.read(cron_sql.get_cron_job, cron_job_id)

    async def list_cron_jobs(self) -> list[CronJob]:
        return await self._db.read(cron_sql.list_cron_jobs)

    async def update_cron_job(
        self, cron_job_id: UUID, changes: CronJobChanges, *, now: datetime
    ) -> CronJob:
        return await self._db.write(cron_sql.update_cron_job, cron_job_id, changes, now)

    async def delete_cron_job(self, cron_job_id: UUID) -> None:
        await self._db.write(cron_sql.delete_cron_job, cron_job_id)

    async def due_cron_jobs(self, *, until: datetime, limit: int) -> list[CronJob]:
        return await self._db.read(cron_sql.due_cron_jobs, until, limit)

    async def fire_cron_tick(
        self,
        cron_job_id: UUID,
        *,
        tick_at: datetime,
        next_fire_at: datetime | None,
        task: NewTask | None,
        outcome: TickOutcome,
        reason: str | None,
        now: datetime,
    ) -> Task | None:
        return await self._db.write(
            cron_sql.fire_cron_tick,
            cron_job_id,
            tick_at,
            next_fire_at,
            task,
            outcome,
            reason,
            now,
            self._aging,
        )

    async def fire_cron_ticks(
        self, fires: Sequence[CronFire], *, now: datetime
    ) -> list[tuple[bool, Task | None]]:
        if not fires:
            return []
        return await self._db.write(cron_sql.fire_cron_ticks, fires, now, self._aging)

    async def list_cron_ticks(self, cron_job_id: UUID, *, limit: int) -> list[CronTick]:
        return await self._db.read(cron_sql.list_cron_ticks, cron_job_id, limit)

    # --- API and agent tokens -------------------------------------------------------------

    async def create_api_token(self, token: NewApiToken, *, now: datetime) -> ApiToken:
        return await self._db.write(token_sql.create_api_token, token, now)

    async def find_api_token(self, secret_hash: str) -> ApiToken | None:
        return await self._db.read(token_sql.find_api_token, secret_hash)

    async def list_api_tokens(self) -> list[ApiToken]:
        return await self._db.read(token_sql.list_api_tokens)

    async def revoke_api_token(self, token_id: UUID, *, now: datetime) -> ApiToken:
        return await self._db.write(token_sql.revoke_api_token, token_id, now)

    # --- replays and task type statistics (the console) -------------------------------------

    async def replay_task(self, task_id: UUID, *, now: datetime) -> Task:
        return await self._db.write(stats_sql.replay_task, task_id, now, self._aging)

    async def task_type_stats(self, *, since: datetime, limit: int) -> list[TaskTypeStats]:
        return await self._db.read(stats_sql.task_type_stats, since, limit)

    async def task_timeline(
        self, *, since: datetime, bucket_seconds: int, buckets: int, limit: int
    ) -> list[TimelineBucket]:
        return await self._db.read(stats_sql.task_timeline, since, bucket_seconds, buckets, limit)

    async def count_pending_groups(self, *, now: datetime, limit: int) -> list[PendingGroup]:
        return await self._db.read(stats_sql.count_pending_groups, now, limit)

    # --- workflows ----------------------------------------------------------------------------

    async def create_workflow(
        self, workflow: NewWorkflow, steps: Sequence[NewStep], *, now: datetime
    ) -> Workflow:
        return await self._db.write(workflow_sql.create_workflow, workflow, steps, now, self._aging)

    async def get_workflow(self, workflow_id: UUID) -> Workflow | None:
        return await self._db.read(workflow_sql.get_workflow, workflow_id)

    async def list_workflows(self, *, limit: int, offset: int) -> Page[WorkflowSummary]:
        return await self._db.read(workflow_sql.list_workflows, limit, offset)

    async def cancel_workflow(
        self, workflow_id: UUID, *, now: datetime
    ) -> tuple[Workflow, list[UUID]]:
        committed = Committed()
        cancelled = await self._db.write(workflow_sql.cancel_workflow, workflow_id, now, committed)
        self._report(committed)
        return cancelled

    async def retry_workflow(self, workflow_id: UUID, *, now: datetime) -> tuple[Workflow, int]:
        committed = Committed()
        retried = await self._db.write(
            workflow_sql.retry_workflow, workflow_id, now, self._aging, committed
        )
        self._report(committed)
        return retried

    async def workflow_of_step(self, task_id: UUID) -> UUID | None:
        return await self._db.read(workflow_sql.workflow_of_step, task_id)

    # --- triggers, hooks and events -----------------------------------------------------------

    async def create_trigger(self, trigger: NewTrigger, *, now: datetime) -> Trigger:
        return await self._db.write(trigger_sql.create_trigger, trigger, now)

    async def get_trigger(self, trigger_id: UUID) -> Trigger | None:
        return await self._db.read(trigger_sql.get_trigger, trigger_id)

    async def list_triggers(self, *, event_key: str | None = None) -> list[Trigger]:
        return await self._db.read(trigger_sql.list_triggers, event_key)

    async def delete_trigger(self, trigger_id: UUID) -> None:
        await self._db.write(trigger_sql.delete_trigger, trigger_id)

    async def create_hook(self, hook: NewHook, *, now: datetime) -> Hook:
        return await self._db.write(trigger_sql.create_hook, hook, now)

    async def get_hook(self, name: str) -> Hook | None:
        return await self._db.read(trigger_sql.get_hook, name)

    async def list_hooks(self) -> list[Hook]:
        return await self._db.read(trigger_sql.list_hooks)

    async def delete_hook(self, name: str) -> None:
        await self._db.write(trigger_sql.delete_hook, name)

    async def record_event(
        self,
        event: NewEvent,
        tasks: Sequence[TriggeredTask],
        *,
        now: datetime,
        workflows: Sequence[TriggeredWorkflow] = (),
    ) -> EventDelivery:
        return await self._db.write(
            trigger_sql.record_event, event, tasks, workflows, now, self._aging
        )

    async def get_event(self, event_id: str) -> EventDelivery | None:
        return await self._db.read(trigger_sql.get_event, event_id)

    # --- outgoing webhooks --------------------------------------------------------------------

    async def claim_webhook_deliveries(
        self, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[WebhookDelivery]:
        return await self._db.write(webhook_sql.claim_deliveries, now, lease_until, limit)

    async def record_webhook_attempt(
        self, delivery_id: UUID, claim_token: UUID, outcome: DeliveryOutcome, *, now: datetime
    ) -> bool:
        return await self._db.write(
            webhook_sql.record_attempt, delivery_id, claim_token, outcome, now
        )

    async def list_webhook_deliveries(self, task_id: UUID) -> list[WebhookDelivery]:
        return await self._db.read(webhook_sql.list_deliveries, task_id)

    async def next_webhook_attempt_at(self) -> datetime | None:
        return await self._db.read(webhook_sql.next_attempt_at)


def _task_and_agents(
    connection: sqlite3.Connection, task_id: UUID, now: datetime
) -> tuple[Task | None, list[Agent] | None]:
    """``get_task_and_agents`` in one read transaction."""
    task = task_sql.get_task(connection, task_id)
    if task is None or not task.is_due_pending(now):
        return task, None
    return task, agent_sql.list_agents(connection, [AgentStatus.ONLINE])
