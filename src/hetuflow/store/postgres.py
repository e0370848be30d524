"""PostgresStore: the production store, shared by every server node (asyncpg pool).

Each write method is one transaction on a pooled connection. Exclusivity comes from the
database: ``FOR UPDATE SKIP LOCKED`` for claims (plus a transaction-scoped advisory lock when a
global limit must be exact across nodes), conditional updates for fences, unique keys for
names, idempotency keys and cron ticks. The SQL lives in ``_pg_tasks``, ``_pg_attempts``,
``_pg_agents`` and ``_pg_cron``. Beside the pool, an open store runs one task of its own:
the check that keeps young tables' planner statistics up (``_pg_statistics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID

from hetuflow.config import (
    DEFAULT_MAX_AGENT_CRASHES_PER_TASK,
    DEFAULT_PRIORITY_AGING_SECONDS,
    DatabaseConfig,
)
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
from hetuflow.store import _pg_agents as agent_sql
from hetuflow.store import _pg_attempts as attempt_sql
from hetuflow.store import _pg_broadcast as broadcast_sql
from hetuflow.store import _pg_cron as cron_sql
from hetuflow.store import _pg_rate_limits as rates_sql
from hetuflow.store import _pg_statistics as planner_sql
from hetuflow.store import _pg_task_stats as stats_sql
from hetuflow.store import _pg_tasks as task_sql
from hetuflow.store import _pg_tokens as token_sql
from hetuflow.store import _pg_triggers as trigger_sql
from hetuflow.store import _pg_usage as usage_sql
from hetuflow.store import _pg_webhooks as webhook_sql
from hetuflow.store import _pg_workflows as workflow_sql
from hetuflow.store._claims import Aging
from hetuflow.store._pg_db import CLAIM_LOCK, PgDatabase
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

STATISTICS_SECONDS = 5.0
"""How often an open store checks whether young tables outgrew their planner statistics."""
PLACE_BACKOFF_SECONDS = 0.1
"""After a create found ``place_at_create``'s gate closed (a stored task due first, or the
global limit), creates make the whole claim for this long before trying the one statement
again: a closed gate costs its round trip on top of the claim's four. Short: with 8 producer
threads the gate closed 5 times in 1,768 creates (a queue a moment longer than the slots),
and a 1 s pause sent 786 creates the long way; where it stays closed (keyed tasks waiting for
their key) it costs at most ten round trips a second."""


class PostgresStore:
    def __init__(
        self,
        database: DatabaseConfig,
        *,
        priority_aging_seconds: float = DEFAULT_PRIORITY_AGING_SECONDS,
        max_agent_crashes_per_task: int = DEFAULT_MAX_AGENT_CRASHES_PER_TASK,
        statistics_seconds: float | None = STATISTICS_SECONDS,
    ) -> None:
        """``statistics_seconds``: how often the store checks whether the busiest tables
        outgrew their planner statistics (``_pg_statistics``); None: never."""
        self.config = database
        self._db = PgDatabase(database.dsn, database.max_connections)
        self._aging = Aging.of(priority_aging_seconds)
        self._crash_limit = max_agent_crashes_per_task
        self._workflow_finished: Callable[[WorkflowStatus], None] = ignore_finished
        self._tasks_created: Callable[[str, int], None] = ignore_created
        self._statistics_every = statistics_seconds
        self._statistics: asyncio.Task[None] | None = None
        self._place_closed_until = 0.0
        """``time.monotonic()`` until which creates skip ``place_at_create``."""

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
        if self._statistics_every is not None:
            self._statistics = asyncio.create_task(
                self._keep_statistics(self._statistics_every), name="hetuflow-pg-statistics"
            )

    async def close(self) -> None:
        if self._statistics is not None:
            self._statistics.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._statistics
            self._statistics = None
        await self._db.close()

    async def analyze_outgrown_tables(self) -> list[str]:
        """ANALYZE the busiest tables that outgrew their planner statistics; returns which
        (none when another node was at it). The store does this every few seconds itself."""
        async with self._db.connection() as c:
            tables = await planner_sql.outgrown(c)
        if not tables:
            return []
        async with self._db.transaction() as c:
            return tables if await planner_sql.analyze(c, tables) else []

    async def _keep_statistics(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.analyze_outgrown_tables()
            except Exception as error:  # the database is away, a deadlock...: the next round
                logger.warning("analyzing outgrown tables failed: %s", error)

    async def ping(self) -> None:
        async with self._db.connection() as connection:
            await connection.fetchval("SELECT 1 FROM hetuflow_migrations LIMIT 1")

    # --- tasks --------------------------------------------------------------------------------

    async def create_tasks(
        self, tasks: Sequence[NewTask], *, now: datetime
    ) -> list[tuple[Task, bool]]:
        if not tasks:
            return []
        if all(task.idempotency_key is None and not task.rate_limits for task in tasks):
            # One INSERT statement, atomic on its own (all the rows or none): no BEGIN and
            # COMMIT round trips around it. An idempotency key may need a second statement
            # (reading the existing tasks), rate limits one more (checking their units):
            # then a transaction.
            async with self._db.connection() as c:
                return await task_sql.insert_tasks(c, tasks, now, self._aging)
        async with self._db.transaction() as c:
            return await task_sql.insert_tasks(c, tasks, now, self._aging)

    async def create_and_claim_tasks(
        self, tasks: Sequence[NewTask], claim: ClaimRequest, *, now: datetime
    ) -> tuple[list[tuple[Task, bool]], list[Dispatch]]:
        if not tasks:
            return [], []
        placeable = all(task.placeable_at_create for task in tasks)
        if claim.groups and placeable and time.monotonic() >= self._place_closed_until:
            async with self._db.connection() as c:
                done = await task_sql.place_at_create(c, tasks, claim, now, self._aging)
            if done is not None:
                return done
            self._place_closed_until = time.monotonic() + PLACE_BACKOFF_SECONDS
        if claim.global_limit is None:
            async with self._db.transaction() as c:
                return await task_sql.create_and_claim_tasks(c, tasks, claim, now, self._aging)
        async with self._db.locked_transaction(CLAIM_LOCK) as c:  # the claim's first step
            return await task_sql.create_and_claim_tasks(
                c, tasks, claim, now, self._aging, locked=True
            )

    async def get_task(self, task_id: UUID) -> Task | None:
        async with self._db.connection() as c:
            return await task_sql.get_task(c, task_id)

    async def get_task_and_agents(
        self, task_id: UUID, *, now: datetime
    ) -> tuple[Task | None, list[Agent] | None]:
        async with self._db.connection() as c:
            return await agent_sql.get_task_and_agents(c, task_id, now)

    async def list_tasks(
        self,
        query: TaskFilter,
        *,
        limit: int,
        offset: int = 0,
        after: TaskCursor | None = None,
        with_total: bool = True,
    ) -> Page[Task]:
        async with self._db.transaction() as c:
            return await task_sql.list_tasks(c, query, limit, offset, after, with_total)

    async def list_held(self, agent_ids: Sequence[UUID]) -> list[HeldTask]:
        if not agent_ids:
            return []
        async with self._db.connection() as c:
            return await task_sql.list_held(c, agent_ids)

    async def cancel_task(self, task_id: UUID, *, now: datetime, reason: str | None = None) -> Task:
        committed = Committed()
        async with self._db.transaction() as c:
            await broadcast_sql.lock_children(c, task_id)  # a broadcast's, before the parent
            task = await workflow_sql.cancel_task(c, task_id, now, self._aging, reason, committed)
            if task.broadcast_policy is not None:
                await broadcast_sql.cancel_children(c, task.id, now)
            elif task.broadcast_of is not None and task.status is TaskStatus.CANCELLED:
                await broadcast_sql.settle(c, [task.broadcast_of], now)
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
        async with self._db.transaction() as c:
            return await broadcast_sql.create_broadcast(c, broadcast, now, self._aging)

    async def create_batch(
        self, items: Sequence[NewTask | NewBroadcast], *, now: datetime
    ) -> list[BatchItem]:
        if not items:
            return []
        async with self._db.transaction() as c:
            return await broadcast_sql.create_batch(c, items, now, self._aging)

    async def expire_broadcast_children(self, *, now: datetime) -> list[Task]:
        async with self._db.connection() as c:
            if not await broadcast_sql.any_expired(c, now):
                return []
        async with self._db.transaction() as c:
            return await broadcast_sql.expire_children(c, now)

    async def list_broadcast_children(self, parent_id: UUID) -> list[Task]:
        async with self._db.connection() as c:
            return await broadcast_sql.list_children(c, parent_id)

    async def list_keyed_tasks(self, key: str, *, statuses: Sequence[TaskStatus]) -> list[Task]:
        async with self._db.connection() as c:
            return await task_sql.list_keyed_tasks(c, key, statuses)

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
        # No read of its own first: the dispatcher claims after its outlook found something
        # due, or right after a claim that filled every slot (a backlog).
        if global_limit is None:
            async with self._db.transaction() as c:
                return await task_sql.claim_tasks(
                    c, groups, now, until, global_limit, key_limits=key_limits
                )
        async with self._db.locked_transaction(CLAIM_LOCK) as c:  # the claim's first step
            return await task_sql.claim_tasks(
                c, groups, now, until, global_limit, key_limits=key_limits, locked=True
            )

    async def count_active_by_key(self, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        async with self._db.connection() as c:
            return await task_sql.count_active_by_key(c, keys)

    async def dispatch_outlook(
        self, task_types: Sequence[str], *, now: datetime, until: datetime
    ) -> DispatchOutlook:
        async with self._db.connection() as c:
            return await task_sql.dispatch_outlook(c, task_types, now, until)

    # --- rate limits ----------------------------------------------------------------------------

    async def create_rate_limit(
        self, name: str, limit: int, per_seconds: float, *, now: datetime
    ) -> RateLimit:
        async with self._db.connection() as c:
            return await rates_sql.create_rate_limit(c, name, limit, per_seconds, now)

    async def list_rate_limits(self) -> list[RateLimit]:
        async with self._db.connection() as c:
            return await rates_sql.list_rate_limits(c)

    async def delete_rate_limit(self, name: str) -> None:
        async with self._db.transaction() as c:
            await rates_sql.delete_rate_limit(c, name)

    async def rate_limit_states(
        self, names: Sequence[str], *, now: datetime
    ) -> dict[str, RateLimitState]:
        if not names:
            return {}
        async with self._db.connection() as c:
            return await rates_sql.rate_limit_states(c, names, now)

    # --- flow control in use ---------------------------------------------------------------

    async def rate_limit_usage(self, *, now: datetime) -> list[RateLimitUsage]:
        async with self._db.connection() as c:
            return await usage_sql.rate_limit_usage(c, now)

    async def concurrency_key_usage(
        self,
        *,
        limits: ConcurrencyLimits,
        now: datetime,
        prefix: str | None = None,
        key: str | None = None,
        limit: int,
    ) -> list[ConcurrencyKeyUsage]:
        async with self._db.connection() as c:
            return await usage_sql.concurrency_key_usage(
                c, limits, now, prefix=prefix, key=key, limit=limit
            )

    async def concurrency_summary(
        self, *, limits: ConcurrencyLimits, now: datetime
    ) -> ConcurrencySummary:
        async with self._db.connection() as c:
            return await usage_sql.concurrency_summary(c, limits, now)

    async def start_attempts(self, starts: Sequence[AttemptStart]) -> list[bool]:
        if not starts:
            return []
        async with self._db.transaction(generic_plans=True) as c:
            return await attempt_sql.start_attempts(c, starts)

    async def finish_attempts(
        self, results: Sequence[AttemptResult], *, now: datetime
    ) -> list[FinishOutcome]:
        if not results:
            return []
        # Plain successes in one statement first; what it leaves (failures, workflow steps,
        # broadcast children, fenced results) in one transaction after it. Each result is
        # written whole either way; the two parts are two transactions.
        async with self._db.connection() as c:
            done = await attempt_sql.finish_succeeded(c, results, now)
        rest = [result for index, result in enumerate(results) if index not in done]
        later: list[FinishOutcome] = []
        if rest:
            committed = Committed()
            async with self._db.transaction(generic_plans=True) as c:
                later = await attempt_sql.finish_attempts(c, rest, now, self._aging, committed)
            self._report(committed)
        remaining = iter(later)
        return [done[index] if index in done else next(remaining) for index in range(len(results))]

    async def set_progress(self, refs: Sequence[tuple[AttemptRef, float]]) -> None:
        if refs:
            async with self._db.transaction(generic_plans=True) as c:
                await attempt_sql.set_progress(c, refs)

    async def release_agent(
        self,
        agent_id: UUID,
        *,
        now: datetime,
        keep: Sequence[AttemptRef] = (),
        session: int | None = None,
    ) -> list[UUID]:
        committed = Committed()
        async with self._db.transaction(generic_plans=True) as c:
            pending = await agent_sql.release_agent(
                c,
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
        async with self._db.connection() as c:
            return await attempt_sql.list_attempts(c, task_id)

    async def append_logs(
        self, lines: Sequence[LogLine], *, budget: LogBudget | None = None
    ) -> None:
        if lines:
            async with self._db.transaction(generic_plans=True) as c:
                await attempt_sql.append_logs(c, lines, budget)

    async def list_logs(
        self, task_id: UUID, *, after_seq: int = 0, attempt: int | None = None, limit: int = 1000
    ) -> list[LogLine]:
        async with self._db.connection() as c:
            return await attempt_sql.list_logs(c, task_id, after_seq, attempt, limit)

    async def delete_finished_tasks(self, *, finished_before: datetime, limit: int) -> int:
        async with self._db.transaction() as c:
            return await workflow_sql.delete_finished(c, finished_before, limit)

    async def count_tasks_by_type(self, *, statuses: Sequence[TaskStatus]) -> dict[str, int]:
        async with self._db.connection() as c:
            return await task_sql.count_tasks_by_type(c, statuses)

    async def count_finished_tasks(
        self, *, since: datetime, until: datetime
    ) -> list[tuple[datetime, TaskStatus, int]]:
        async with self._db.connection() as c:
            return await task_sql.count_finished_tasks(c, since, until)

    async def stats(self) -> Stats:
        async with self._db.connection() as c:
            return await task_sql.stats(c)

    # --- agents -------------------------------------------------------------------------------

    async def create_agent(self, agent: NewAgent, *, now: datetime) -> Agent:
        async with self._db.transaction() as c:
            return await agent_sql.create_agent(c, agent, now)

    async def get_agent(self, agent_id: UUID) -> Agent | None:
        async with self._db.connection() as c:
            return await agent_sql.get_agent(c, agent_id)

    async def get_agent_by_name(self, name: str) -> Agent | None:
        async with self._db.connection() as c:
            return await agent_sql.get_agent_by_name(c, name)

    async def list_agents(self, *, statuses: Sequence[AgentStatus] = ()) -> list[Agent]:
        async with self._db.connection() as c:
            return await agent_sql.list_agents(c, statuses)

    async def delete_agent(self, agent_id: UUID, *, now: datetime) -> None:
        committed = Committed()
        async with self._db.transaction() as c:
            await agent_sql.delete_agent(c, agent_id, now, committed)
        self._report(committed)

    async def connect_agent(
        self, registration: AgentRegistration, *, node_id: str, now: datetime
    ) -> Agent:
        async with self._db.transaction() as c:
            return await agent_sql.connect_agent(c, registration, node_id, now)

    async def set_agent_status(
        self, agent_id: UUID, status: AgentStatus, *, session: int, now: datetime
    ) -> bool:
        async with self._db.transaction() as c:
            return await agent_sql.set_agent_status(c, agent_id, status, session)

    async def set_agent_draining(self, agent_id: UUID, draining: bool, *, now: datetime) -> Agent:
        async with self._db.transaction() as c:
            return await agent_sql.set_agent_draining(c, agent_id, draining)

    async def set_agent_enabled(self, agent_id: UUID, enabled: bool, *, now: datetime) -> Agent:
        async with self._db.transaction() as c:
            return await agent_sql.set_agent_enabled(c, agent_id, enabled)

    async def prune_agents(
        self, *, offline_before: datetime, now: datetime, limit: int
    ) -> list[Agent]:
        committed = Committed()
        async with self._db.transaction() as c:
            pruned = await agent_sql.prune_agents(c, offline_before, now, limit, committed)
        self._report(committed)
        return pruned

    async def record_heartbeats(self, agent_ids: Sequence[UUID], *, now: datetime) -> list[UUID]:
        if not agent_ids:
            return []
        async with self._db.transaction() as c:
            return await agent_sql.record_heartbeats(c, agent_ids, now)

    async def reap_agents(self, *, stale_before: datetime, now: datetime) -> list[UUID]:
        committed = Committed()
        async with self._db.transaction() as c:
            reaped = await agent_sql.reap_agents(
                c,
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
        async with self._db.transaction() as c:
            return await cron_sql.create_cron_job(c, job, next_fire_at, now)

    async def get_cron_job(self, cron_job_id: UUID) -> CronJob | None:
        async with self._db.connection() as c:
            return await cron_sql.get_cron_job(c, cron_job_id)

    async def list_cron_jobs(self) -> list[CronJob]:
        async with self._db.connection() as c:
            return await cron_sql.list_cron_jobs(c)

    async def update_cron_job(
        self, cron_job_id: UUID, changes: CronJobChanges, *, now: datetime
    ) -> CronJob:
        async with self._db.transaction() as c:
            return await cron_sql.update_cron_job(c, cron_job_id, changes, now)

    async def delete_cron_job(self, cron_job_id: UUID) -> None:
        async with self._db.transaction() as c:
            await cron_sql.delete_cron_job(c, cron_job_id)

    async def due_cron_jobs(self, *, until: datetime, limit: int) -> list[CronJob]:
        async with self._db.connection() as c:
            return await cron_sql.due_cron_jobs(c, until, limit)

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
        async with self._db.transaction() as c:
            return await cron_sql.fire_cron_tick(
                c, cron_job_id, tick_at, next_fire_at, task, outcome, reason, now, self._aging
            )

    async def fire_cron_ticks(
        self, fires: Sequence[CronFire], *, now: datetime
    ) -> list[tuple[bool, Task | None]]:
        if not fires:
            return []
        async with self._db.transaction() as c:
            return await cron_sql.fire_cron_ticks(c, fires, now, self._aging)

    async def list_cron_ticks(self, cron_job_id: UUID, *, limit: int) -> list[CronTick]:
        async with self._db.connection() as c:
            return await cron_sql.list_cron_ticks(c, cron_job_id, limit)

    # --- API and agent tokens -------------------------------------------------------------

    async def create_api_token(self, token: NewApiToken, *, now: datetime) -> ApiToken:
        async with self._db.transaction() as c:
            return await token_sql.create_api_token(c, token, now)

    async def find_api_token(self, secret_hash: str) -> ApiToken | None:
        async with self._db.connection() as c:
            return await token_sql.find_api_token(c, secret_hash)

    async def list_api_tokens(self) -> list[ApiToken]:
        async with self._db.connection() as c:
            return await token_sql.list_api_tokens(c)

    async def revoke_api_token(self, token_id: UUID, *, now: datetime) -> ApiToken:
        async with self._db.transaction() as c:
            return await token_sql.revoke_api_token(c, token_id, now)

    # --- replays and task type statistics (the console) -------------------------------------

    async def replay_task(self, task_id: UUID, *, now: datetime) -> Task:
        async with self._db.transaction() as c:
            return await stats_sql.replay_task(c, task_id, now, self._aging)

    async def task_type_stats(self, *, since: datetime, limit: int) -> list[TaskTypeStats]:
        async with self._db.connection() as c:
            return await stats_sql.task_type_stats(c, since, limit)

    async def task_timeline(
        self, *, since: datetime, bucket_seconds: int, buckets: int, limit: int
    ) -> list[TimelineBucket]:
        async with self._db.connection() as c:
            return await stats_sql.task_timeline(c, since, bucket_seconds, buckets, limit)

    async def count_pending_groups(self, *, now: datetime, limit: int) -> list[PendingGroup]:
        async with self._db.connection() as c:
            return await stats_sql.count_pending_groups(c, now, limit)

    # --- workflows ----------------------------------------------------------------------------

    async def create_workflow(
        self, workflow: NewWorkflow, steps: Sequence[NewStep], *, now: datetime
    ) -> Workflow:
        async with self._db.transaction() as c:
            return await workflow_sql.create_workflow(c, workflow, steps, now, self._aging)

    async def get_workflow(self, workflow_id: UUID) -> Workflow | None:
        async with self._db.transaction() as c:  # one snapshot of the workflow and its steps
            await c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            return await workflow_sql.get_workflow(c, workflow_id)

    async def list_workflows(self, *, limit: int, offset: int) -> Page[WorkflowSummary]:
        async with self._db.transaction() as c:
            return await workflow_sql.list_workflows(c, limit, offset)

    async def cancel_workflow(
        self, workflow_id: UUID, *, now: datetime
    ) -> tuple[Workflow, list[UUID]]:
        committed = Committed()
        async with self._db.transaction() as c:
            cancelled = await workflow_sql.cancel_workflow(c, workflow_id, now, committed)
        self._report(committed)
        return cancelled

    async def retry_workflow(self, workflow_id: UUID, *, now: datetime) -> tuple[Workflow, int]:
        committed = Committed()
        async with self._db.transaction() as c:
            retried = await workflow_sql.retry_workflow(c, workflow_id, now, self._aging, committed)
        self._report(committed)
        return retried

    async def workflow_of_step(self, task_id: UUID) -> UUID | None:
        async with self._db.connection() as c:
            return await workflow_sql.workflow_of_step(c, task_id)

    # --- triggers, hooks and events -----------------------------------------------------------

    async def create_trigger(self, trigger: NewTrigger, *, now: datetime) -> Trigger:
        async with self._db.connection() as c:
            return await trigger_sql.create_trigger(c, trigger, now)

    async def get_trigger(self, trigger_id: UUID) -> Trigger | None:
        async with self._db.connection() as c:
            return await trigger_sql.get_trigger(c, trigger_id)

    async def list_triggers(self, *, event_key: str | None = None) -> list[Trigger]:
        async with self._db.connection() as c:
            return await trigger_sql.list_triggers(c, event_key)

    async def delete_trigger(self, trigger_id: UUID) -> None:
        async with self._db.connection() as c:
            await trigger_sql.delete_trigger(c, trigger_id)

    async def create_hook(self, hook: NewHook, *, now: datetime) -> Hook:
        async with self._db.connection() as c:
            return await trigger_sql.create_hook(c, hook, now)

    async def get_hook(self, name: str) -> Hook | None:
        async with self._db.connection() as c:
            return await trigger_sql.get_hook(c, name)

    async def list_hooks(self) -> list[Hook]:
        async with self._db.connection() as c:
            return await trigger_sql.list_hooks(c)

    async def delete_hook(self, name: str) -> None:
        async with self._db.connection() as c:
            await trigger_sql.delete_hook(c, name)

    async def record_event(
        self,
        event: NewEvent,
        tasks: Sequence[TriggeredTask],
        *,
        now: datetime,
        workflows: Sequence[TriggeredWorkflow] = (),
    ) -> EventDelivery:
        async with self._db.transaction() as c:
            return await trigger_sql.record_event(c, event, tasks, workflows, now, self._aging)

    async def get_event(self, event_id: str) -> EventDelivery | None:
        async with self._db.transaction() as c:  # the event and its tasks in one snapshot
            await c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            return await trigger_sql.get_event(c, event_id)

    # --- outgoing webhooks --------------------------------------------------------------------

    async def claim_webhook_deliveries(
        self, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[WebhookDelivery]:
        async with self._db.transaction() as c:
            return await webhook_sql.claim_deliveries(c, now, lease_until, limit)

    async def record_webhook_attempt(
        self, delivery_id: UUID, claim_token: UUID, outcome: DeliveryOutcome, *, now: datetime
    ) -> bool:
        async with self._db.connection() as c:
            return await webhook_sql.record_attempt(c, delivery_id, claim_token, outcome, now)

    async def list_webhook_deliveries(self, task_id: UUID) -> list[WebhookDelivery]:
        async with self._db.connection() as c:
            return await webhook_sql.list_deliveries(c, task_id)

    async def next_webhook_attempt_at(self) -> datetime | None:
        async with self._db.connection() as c:
            return await webhook_sql.next_attempt_at(c)
