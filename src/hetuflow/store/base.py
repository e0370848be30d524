"""The Store seam: durable state in domain terms, one implementation per database.

Every method is a coroutine and a single transaction unless said otherwise. The docstrings say
what concurrent callers (other coroutines, other server processes on the same PostgreSQL) can
rely on. Exclusivity comes from the database (unique keys, conditional updates,
``FOR UPDATE SKIP LOCKED``), never from check-then-write in Python.

Batching is the norm on hot paths: methods that the dispatcher and gateway call per task take
sequences, so one call (one round trip, one commit) serves many tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

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
)
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


class Store(Protocol):
    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (create the pool / open the file). Does not migrate."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the database answers a trivial query."""
        ...

    def on_workflow_finished(self, listener: Callable[[WorkflowStatus], None]) -> None:
        """Call ``listener`` with a workflow's status each time a transaction of this store
        ends its last unfinished step (a result, a cancel, a release of a lost agent's
        attempts, a workflow cancel or retry), once that transaction has committed: each end
        of a workflow is reported once, by the store instance (node) that committed it. A
        retried workflow that ends again is reported again. The listener must not block."""
        ...

    def on_tasks_created(self, listener: Callable[[str, int], None]) -> None:
        """Call ``listener`` with a task type and a count each time a transaction of this
        store creates tasks that no ``create_tasks`` or ``create_workflow`` call asked for:
        the children of a fan-out (``map_over``, made in the transaction that records the
        mapped-over parent's result), once that transaction has committed, by the store
        instance (node) that committed it. The listener must not block."""
        ...

    # --- tasks ----------------------------------------------------------------------------

    async def create_tasks(
        self, tasks: Sequence[NewTask], *, now: datetime
    ) -> list[tuple[Task, bool]]:
        """Insert tasks in one transaction, in order; return each with ``created``.

        A task whose ``idempotency_key`` already exists is not inserted: the existing task is
        returned with ``created=False``. Two concurrent calls with the same key yield one task
        (the unique key decides). ``scheduled_at`` None means ``now``. All or nothing.
        """
        ...

    async def create_and_claim_tasks(
        self, tasks: Sequence[NewTask], claim: ClaimRequest, *, now: datetime
    ) -> tuple[list[tuple[Task, bool]], list[Dispatch]]:
        """``create_tasks`` and a ``claim_tasks`` round with ``claim``, in one transaction.

        The claim sees the new tasks as if they had been inserted first: in claim order
        (claim key, then id), stored tasks and new ones alike. A new task it takes is inserted
        already dispatched, with its attempt row, and comes back dispatched. New tasks with
        an idempotency key are only inserted (pending); a later claim takes them.
        """
        ...

    async def get_task(self, task_id: UUID) -> Task | None: ...

    async def get_task_and_agents(
        self, task_id: UUID, *, now: datetime
    ) -> tuple[Task | None, list[Agent] | None]:
        """The task, and when it is pending and due at ``now`` (why it waits may depend on
        the agents) the online agents as ``list_agents`` gives them; None otherwise. One read
        of both (``GET /api/tasks/{id}``, its hot path): one snapshot on SQLite, one pooled
        connection on PostgreSQL."""
        ...

    async def list_tasks(
        self,
        query: TaskFilter,
        *,
        limit: int,
        offset: int = 0,
        after: TaskCursor | None = None,
        with_total: bool = True,
    ) -> Page[Task]:
        """Newest first (``created_at`` descending, then id), one page.

        ``after`` (keyset paging): only tasks after that position, i.e. older than the last
        task of the page it came from, read from the ``(created_at, id)`` index however deep
        the page is; following ``Page.next`` from the first page lists every task that existed
        when the walk began exactly once, whatever is inserted meanwhile (newer tasks sort
        before the walk). ``offset`` skips that many more (the older way: its cost grows with
        the offset). ``Page.next`` is None on the last page. ``with_total`` adds the count of
        every match (``Page.total``; a second read whose cost grows with the matches).
        ``query.final`` lists dead letters (``TaskFilter.final``: a probe of the
        ``tasks_replay_of`` index per ended task). One snapshot read on PostgreSQL; no lock.
        """
        ...

    async def list_held(self, agent_ids: Sequence[UUID]) -> list[HeldTask]:
        """The active tasks (dispatched, running, cancelling) that these agents hold: id,
        agent, current attempt, status and task type, nothing else, read through the index
        on the holding agent (its cost is the number of held tasks, not of all tasks).
        Reconciliation compares them with what the agents report. No lock: a task may
        change right after; the fenced writes (release, finish) decide."""
        ...

    async def cancel_task(self, task_id: UUID, *, now: datetime, reason: str | None = None) -> Task:
        """Cancel one task with a conditional update.

        pending or waiting (a workflow step) -> cancelled at once (``reason``, if given,
        becomes its ``error``), and a step's workflow
        settles in the same transaction (see ``create_workflow``); dispatched/running ->
        cancelling (the agent holding it must stop it and confirm through
        ``finish_attempts``); cancelling -> unchanged.
        A broadcast parent cancels its children in the same transaction (pending ->
        cancelled, held -> cancelling); a broadcast child cancelled at once may end its
        parent (see ``create_broadcast``).
        Raises ``TaskNotFound``, or ``TaskAlreadyFinished`` for a terminal task.
        """
        ...

    async def create_broadcast(
        self,
        task: NewTask,
        *,
        policy: BroadcastPolicy,
        now: datetime,
        start_deadline_seconds: float | None = None,
    ) -> tuple[Task, list[Task]]:
        """Create a broadcast in one transaction: the parent (``waiting``, never dispatched)
        and one pending child per agent that is online, enabled, not deleted, runs
        ``task.task_type`` and has every required capability at that moment, pinned to it
        (``pinned_agent_id``: ``claim_tasks`` gives it to that agent only). The parent ends in
        the transaction that ends its last child, whichever path ends it (``finish_attempts``,
        ``release_agent``, ``cancel_task``, ``delete_agent``, which cancels the deleted
        agent's pending children, ``expire_broadcast_children``): per ``policy``, succeeded or
        failed, its result ``{agent name: child's result}``. Of children ending concurrently
        (PostgreSQL, any number of nodes) exactly one settles the parent. Raises
        ``NoAgentForBroadcast`` (nothing written) when no agent matches. ``task`` carries no
        idempotency or concurrency key (``TaskQueue`` refuses them).

        ``start_deadline_seconds``: the parent and children get ``start_deadline_at``, that
        long after the start time (``task.scheduled_at``, or ``now`` if later or None)."""
        ...

    async def create_batch(
        self, items: Sequence[NewTask | NewBroadcast], *, now: datetime
    ) -> list[BatchItem]:
        """Create plain tasks (as ``create_tasks``) and broadcasts (as ``create_broadcast``)
        in one transaction, all or none; one result per item, in order (a broadcast's: its
        parent, True, its children). A broadcast that no agent matches raises
        ``NoAgentForBroadcast`` naming its item (``tasks[i]``) and nothing is written."""
        ...

    async def expire_broadcast_children(self, *, now: datetime) -> list[Task]:
        """End the broadcast children still ``pending`` at their ``start_deadline_at``:
        ``failed``, their ``error`` starting ``not started by its start deadline`` and naming
        the agent and how it was (offline, draining, disabled, online but busy). Their
        parents settle in the same transaction. Conditional on ``pending``: a child a claim
        took first is left to run; on PostgreSQL a child locked by a claim is skipped (the
        next call ends it if it is still pending), so concurrent callers end each once."""
        ...

    async def list_broadcast_children(self, parent_id: UUID) -> list[Task]:
        """A broadcast's children, by agent name (empty for any other task)."""
        ...

    async def claim_tasks(
        self,
        groups: Sequence[ClaimGroup],
        *,
        now: datetime,
        until: datetime | None = None,
        global_limit: int | None = None,
        key_limits: ConcurrencyLimits | None = None,
    ) -> list[Dispatch]:
        """Claim pending tasks for connected agents, atomically.

        For each group, take up to ``group.free_slots`` pending tasks with
        ``scheduled_at <= until`` (default ``now``; a later ``until`` hands tasks out ahead so
        the agent starts them at ``scheduled_at``), ``task_type`` in the group's task types and
        every required capability in the group's capabilities; smallest claim key first (the
        instant a task became due minus its priority rank times the aging step, computed
        when it was inserted: see ``_claims``), then id. Assign them with
        ``assign_least_loaded`` (a task pinned to an agent, a broadcast child, is read only
        for a group offering that agent a free slot and goes to it), set them dispatched to
        that agent, increment ``attempts`` and insert the attempt row.

        Never lets the number of active tasks (dispatched, running, cancelling) across all
        nodes exceed ``global_limit``. A task is claimed by at most one caller, even with
        several server processes claiming at once (``FOR UPDATE SKIP LOCKED`` on PostgreSQL;
        the single writer on SQLite).

        Never lets the active tasks with one ``concurrency_key`` exceed that key's limit
        (the task's ``max_concurrent_per_key``, else ``key_limits`` by task type, else 1),
        across all nodes: keyed claims are serialised by an advisory lock on PostgreSQL
        (unkeyed claims take none). A key at its limit is passed over, not waited on: the
        tasks behind it are claimed (``_concurrency``).

        Never dispatches more units of a rate limit in any window of its ``per_seconds`` than
        its ``limit``: each dispatch of a task naming it records a spend at ``now`` in the
        claim's transaction, and claims that meet such tasks are serialised by the same lock
        (``_rate_limits``). A limit without units left is passed over too.
        """
        ...

    async def list_keyed_tasks(self, key: str, *, statuses: Sequence[TaskStatus]) -> list[Task]:
        """The tasks with concurrency key ``key`` in ``statuses`` (unfinished ones only),
        oldest (created first) first."""
        ...

    async def count_active_by_key(self, keys: Sequence[str]) -> dict[str, int]:
        """How many active tasks (dispatched, running, cancelling) each of ``keys`` has; keys
        with none are left out. A snapshot: for explaining, not for deciding."""
        ...

    async def dispatch_outlook(
        self, task_types: Sequence[str], *, now: datetime, until: datetime
    ) -> DispatchOutlook:
        """In one read: whether a pending task of ``task_types`` is due by ``until`` (a claim
        could take it, capabilities allowing), the earliest ``scheduled_at`` after ``until``
        among pending tasks, and the earliest instant after ``now`` when a spend leaves the
        window of a rate limit that pending tasks name: the dispatcher's check before a claim
        and its timer after one. A snapshot: a task made pending after it wakes the
        dispatcher again once committed."""
        ...

    # --- rate limits (docs/guarantees.md#rate-limits) -----------------------------------------

    async def create_rate_limit(
        self, name: str, limit: int, per_seconds: float, *, now: datetime
    ) -> RateLimit:
        """Store a named rate limit; ``RateLimitNameTaken`` if the name exists."""
        ...

    async def list_rate_limits(self) -> list[RateLimit]:
        """Every rate limit, by name."""
        ...

    async def delete_rate_limit(self, name: str) -> None:
        """Delete a rate limit with its spends; the tasks that named it are no longer held
        back by it; in the same transaction it is taken out of the cron jobs and the
        triggers' task templates that name it. ``RateLimitNotFound`` if there is none."""
        ...

    async def rate_limit_states(
        self, names: Sequence[str], *, now: datetime
    ) -> dict[str, RateLimitState]:
        """The limits of ``names`` that exist, with the units dispatched in the window that
        ends at ``now`` and when its oldest spend leaves it. A snapshot: for explaining;
        the claim reads its own under its lock."""
        ...

    # --- flow control in use (the console and /metrics) --------------------------------------

    async def rate_limit_usage(self, *, now: datetime) -> list[RateLimitUsage]:
        """Every rate limit, by name, with its window ending at ``now`` (as
        ``rate_limit_states``) and how many due pending tasks it holds back: those that name
        it and ask more units than it has left. One read (a range read of the spends per
        limit, the pending tasks' rate limits); no lock; a snapshot."""
        ...

    async def concurrency_key_usage(
        self,
        *,
        limits: ConcurrencyLimits,
        now: datetime,
        prefix: str | None = None,
        key: str | None = None,
        limit: int,
    ) -> list[ConcurrencyKeyUsage]:
        """The concurrency keys that have unfinished tasks (those starting with ``prefix``,
        or only ``key``), busiest first (most active, then most waiting, then by key), at
        most ``limit``: each with its active, pending and waiting tasks (due pending ones
        its limit holds back, the claim's test with ``limits``) and its limit. One read over
        the unfinished keyed tasks (the partial index ``tasks_concurrency_open``); no lock."""
        ...

    async def concurrency_summary(
        self, *, limits: ConcurrencyLimits, now: datetime
    ) -> ConcurrencySummary:
        """Keys with active tasks, keys at their limit, and the due pending tasks held back
        by their key by task type, over every key: one read, as ``concurrency_key_usage``,
        whose answer does not grow with the number of keys."""
        ...

    async def start_attempts(self, starts: Sequence[AttemptStart]) -> list[bool]:
        """Mark attempts started: dispatched -> running, only when the attempt is current and
        held by that agent. Returns, per start, whether it was accepted. Idempotent."""
        ...

    async def finish_attempts(
        self, results: Sequence[AttemptResult], *, now: datetime
    ) -> list[FinishOutcome]:
        """Record attempt results (fenced by attempt number and agent), each result whole and
        decided as if in one transaction in batch order. (SQLite writes the batch in one
        transaction; PostgreSQL writes plain successes in one statement first and the rest in
        one transaction after it: a failure between the two leaves the first part written.)

        Accepted only when the attempt is the task's current one, held by that agent, and the
        task is active. Then: succeeded -> task succeeded with the result; cancelled, or any
        outcome while cancelling -> cancelled; failed/timed_out -> pending again with
        ``scheduled_at = now + retry.delay_after(failures, u)`` (``u`` a jitter draw) if the
        kind is in ``retry.retry_on`` and ``retry.allows_retry_after``, else failed/timed_out
        (``store._rules.decide_finish``; a kind not in ``retry_on`` says so in ``error``).
        Rejected results change nothing. A second identical result is
        rejected (the attempt already ended).

        A workflow step that ends here settles its workflow in the same transaction (see
        ``create_workflow``): its waiting children are released (pending, with their
        parents' results in ``parents``), skipped or failed.
        """
        ...

    async def set_progress(self, refs: Sequence[tuple[AttemptRef, float]]) -> None:
        """Store the latest progress (0..1) of current attempts; others are ignored."""
        ...

    async def release_agent(
        self,
        agent_id: UUID,
        *,
        now: datetime,
        keep: Sequence[AttemptRef] = (),
        session: int | None = None,
    ) -> list[UUID]:
        """Give back the active attempts an agent holds, except those in ``keep``.

        Their attempts end ``lost``; dispatched/running tasks go back to pending (ready now,
        retry budget untouched), or end ``failed`` when their ``retry_on`` lacks
        ``agent_lost`` (``_rules.LOST_NOT_RETRIED``); cancelling ones become cancelled. A task
        whose attempt is
        thereby lost for the ``max_agent_crashes_per_task``-th time (the store's setting; 0:
        never) ends ``quarantined`` instead, error "crashed N agents" (a poison task). A
        workflow step that ends so (cancelled, failed or quarantined) settles its workflow in
        the same transaction (as ``finish_attempts`` does). Returns the ids of the tasks that
        went back to pending, and of the workflow steps that settle released (so the caller
        wakes the dispatchers). Safe to call concurrently and repeatedly.

        With ``session``, nothing is released unless that is still the agent's current
        connection session, checked in the same transaction: a release decided for a dropped
        connection cannot take the attempts of the agent's newer connection (on any node).
        """
        ...

    async def list_attempts(self, task_id: UUID) -> list[Attempt]: ...

    async def append_logs(
        self, lines: Sequence[LogLine], *, budget: LogBudget | None = None
    ) -> None:
        """Append log lines (one insert for the batch); ``seq`` is assigned per task; lines
        of tasks that no longer exist are dropped.

        With ``budget``, each attempt's usage (bytes, lines, whether it was truncated) is
        kept in its attempt row and charged in the same transaction: a line past the budget
        becomes one marker line (``LogBudget.marker``), later ones are dropped, lines of an
        attempt with no attempt row are dropped. Concurrent calls for one attempt (another
        node, a restart) serialise on the task row, so the budget holds across them.
        """
        ...

    async def list_logs(
        self, task_id: UUID, *, after_seq: int = 0, attempt: int | None = None, limit: int = 1000
    ) -> list[LogLine]:
        """Log lines of a task in ``seq`` order, after ``after_seq``."""
        ...

    async def delete_finished_tasks(self, *, finished_before: datetime, limit: int) -> int:
        """Delete up to ``limit`` terminal tasks finished before the instant, with their
        attempts and logs; return how many. Short transactions: never blocks dispatch long.
        Workflow steps go only with their workflow, once every step of it has ended before
        the instant (the workflow row and all its steps at once, counted in the total, which
        may then pass ``limit``); a running or recent workflow keeps every step."""
        ...

    async def stats(self) -> Stats: ...

    async def count_tasks_by_type(self, *, statuses: Sequence[TaskStatus]) -> dict[str, int]:
        """How many tasks are in any of ``statuses``, by task type (``/metrics`` pending gauge).

        Task types with no such task are absent. One read; no lock; a snapshot that concurrent
        writes may change right after.
        """
        ...

    async def count_finished_tasks(
        self, *, since: datetime, until: datetime
    ) -> list[tuple[datetime, TaskStatus, int]]:
        """Terminal tasks by the minute they finished, for the console's throughput chart.

        Counts tasks with a terminal status whose ``finished_at`` is in ``[since, until)``,
        grouped by ``finished_at`` truncated to the whole UTC minute and by status. Returns
        ``(minute, status, count)`` with ``minute`` aware UTC (seconds and microseconds zero),
        ordered by minute then status; minutes and statuses with no task are absent. One read;
        no lock. (Tasks deleted by the cleanup loop are no longer counted.)
        """
        ...

    # --- agents ---------------------------------------------------------------------------

    async def create_agent(self, agent: NewAgent, *, now: datetime) -> Agent:
        """Pre-create an agent, offline until it connects; ``AgentNameTaken`` if the name exists."""
        ...

    async def get_agent(self, agent_id: UUID) -> Agent | None:
        """The agent, or None (also for a deleted one)."""
        ...

    async def get_agent_by_name(self, name: str) -> Agent | None: ...

    async def list_agents(self, *, statuses: Sequence[AgentStatus] = ()) -> list[Agent]:
        """Agents by name, with ``running`` counted from their active tasks (deleted ones
        are never listed)."""
        ...

    async def delete_agent(self, agent_id: UUID, *, now: datetime) -> None:
        """Delete an offline agent: its row becomes a tombstone (``deleted_at`` set, its name
        freed for a new agent), its remaining active attempts are released and its tokens
        deleted, in one transaction. The agent is then neither found nor listed, and
        ``connect_agent`` with its id raises ``AgentDeleted``.

        ``AgentOnline`` if the store records a connection (status ``online`` or
        ``draining``): deleting goes by the store's record, not by any node's memory. A
        concurrent ``connect_agent`` of the agent is ordered against it (the conditional
        update locks the row): either the connect wins and the delete is refused, or the
        delete wins and the connect is refused. ``AgentNotFound`` if there is no such (live)
        agent."""
        ...

    async def connect_agent(
        self, registration: AgentRegistration, *, node_id: str, now: datetime
    ) -> Agent:
        """Record a connection: find the agent by id, else by name, else create it (generated
        name when none given); update its declared capabilities; set it online on ``node_id``;
        bump ``session``. Concurrent connects of one agent serialise; the last one wins.
        Raises ``AgentDeleted`` for the id of a deleted agent, ``AgentNotFound`` for an
        unknown ``agent_id``."""
        ...

    async def set_agent_status(
        self, agent_id: UUID, status: AgentStatus, *, session: int, now: datetime
    ) -> bool:
        """Change the connection status if ``session`` is still the agent's current one
        (a stale connection cannot mark a newer one offline). Returns whether it changed."""
        ...

    async def set_agent_draining(self, agent_id: UUID, draining: bool, *, now: datetime) -> Agent:
        """An operator drains (``online`` -> ``draining``) or resumes (``draining`` ->
        ``online``) an agent, whatever its connection session; return the agent.

        The drain is kept with the agent (``drained``) until resumed: ``connect_agent`` of a
        drained agent makes it ``draining``, on any node. Only a connected agent can be
        drained (an offline one is returned unchanged); a resume clears the drain of an
        offline agent too. One conditional update. ``AgentNotFound`` if there is no such
        agent.
        """
        ...

    async def set_agent_enabled(self, agent_id: UUID, enabled: bool, *, now: datetime) -> Agent:
        """An operator enables or disables an agent (connected or not); return it. A
        disabled agent is given no task; what it runs finishes as usual. One update, whatever
        the agent's connection; ``AgentNotFound`` if there is no such (live) agent."""
        ...

    async def prune_agents(
        self, *, offline_before: datetime, now: datetime, limit: int
    ) -> list[Agent]:
        """Delete (as ``delete_agent``: tombstone, release, tokens) up to ``limit`` agents
        that are offline and were last heard from (last heartbeat, else connection, else
        creation) before ``offline_before``; return them as they were. One transaction; the
        conditional update orders it against a concurrent ``connect_agent`` like
        ``delete_agent``: an agent connecting meanwhile is not pruned."""
        ...

    async def record_heartbeats(self, agent_ids: Sequence[UUID], *, now: datetime) -> list[UUID]:
        """Set ``last_heartbeat_at`` for many agents in one statement; return those of them
        that are deleted or unknown (a node still holding their connection must drop it).
        A second read runs only when the statement missed some of them."""
        ...

    async def reap_agents(self, *, stale_before: datetime, now: datetime) -> list[UUID]:
        """Mark online/draining agents whose last heartbeat is older than ``stale_before``
        offline and release their attempts, in one transaction; return their ids. Only one
        concurrent caller gets each agent."""
        ...

    # --- cron jobs ------------------------------------------------------------------------

    async def create_cron_job(
        self, job: NewCronJob, *, next_fire_at: datetime | None, now: datetime
    ) -> CronJob:
        """``CronJobNameTaken`` if the name exists."""
        ...

    async def get_cron_job(self, cron_job_id: UUID) -> CronJob | None: ...

    async def list_cron_jobs(self) -> list[CronJob]: ...

    async def update_cron_job(
        self, cron_job_id: UUID, changes: CronJobChanges, *, now: datetime
    ) -> CronJob:
        """Set the fields ``changes`` does not leave ``UNSET`` (and ``updated_at``), in one
        conditional update: concurrent callers each apply theirs whole, the last one wins.

        Raises ``CronJobNotFound`` or ``CronJobNameTaken``.
        """
        ...

    async def delete_cron_job(self, cron_job_id: UUID) -> None: ...

    async def due_cron_jobs(self, *, until: datetime, limit: int) -> list[CronJob]:
        """Enabled jobs whose ``next_fire_at <= until``, earliest first."""
        ...

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
        """Record one tick, create its task (if ``task``), advance the job to ``next_fire_at``.

        Exactly once per (job, tick) across all nodes: the tick's unique key decides; a caller
        that loses returns None and changes nothing.
        """
        ...

    async def fire_cron_ticks(
        self, fires: Sequence[CronFire], *, now: datetime
    ) -> list[tuple[bool, Task | None]]:
        """Settle many ticks (at most one per job) in one transaction, each as
        ``fire_cron_tick`` would; return, per fire and in order, (won, task created).

        Exactly once per (job, tick) across all nodes, as for one tick: each tick's unique key
        decides (``ON CONFLICT DO NOTHING``). A fire that loses, or whose job no longer exists,
        comes back ``(False, None)`` and changes nothing; the others are recorded with
        ``recorded_at = now``. Ticks are inserted in (job, tick) order, so two nodes settling
        overlapping batches wait for each other instead of deadlocking.
        """
        ...

    async def list_cron_ticks(self, cron_job_id: UUID, *, limit: int) -> list[CronTick]:
        """Newest first."""
        ...

    # --- API and agent tokens ---------------------------------------------------------------

    async def create_api_token(self, token: NewApiToken, *, now: datetime) -> ApiToken:
        """Store a token: its hash, never its secret. Raises ``AgentNotFound`` when an agent
        token names no agent. Two tokens never share a hash (unique key)."""
        ...

    async def find_api_token(self, secret_hash: str) -> ApiToken | None:
        """The token whose secret hashes to ``secret_hash``, revoked and expired ones too
        (the caller decides); one indexed read, no lock. Sees a revocation as soon as it is
        committed, on any node."""
        ...

    async def list_api_tokens(self) -> list[ApiToken]:
        """Every token, revoked and expired ones included, newest first."""
        ...

    async def revoke_api_token(self, token_id: UUID, *, now: datetime) -> ApiToken:
        """Mark a token revoked at ``now`` and return it. Idempotent: an already revoked
        token keeps its first ``revoked_at``. Raises ``TokenNotFound``."""
        ...

    # --- replays and task type statistics (the console) -------------------------------------

    async def replay_task(self, task_id: UUID, *, now: datetime) -> Task:
        """Create a new task with the spec of a finished one (``spec_of``: due now, no
        idempotency key, no cron link), its ``replay_of`` naming the original; one
        transaction. ``TaskNotFound``; ``TaskNotFinished`` unless the task is terminal (a
        terminal status never changes, so the check cannot race; on PostgreSQL the original
        is share-locked against a concurrent delete by the cleanup loop)."""
        ...

    async def task_type_stats(self, *, since: datetime, limit: int) -> list[TaskTypeStats]:
        """Per task type, over the newest ``limit`` tasks created at or after ``since``:
        counts by status, queue wait and run time p50/p95 (nearest rank), by task type name.

        Queue wait: from when a task became due (the later of ``created_at`` and
        ``scheduled_at``; from ``created_at`` when a retry moved ``scheduled_at`` past its
        first start) to its first start. Run time: from its first start to its finish,
        retries included. One read; no lock; statuses with no task are absent."""
        ...

    async def task_timeline(
        self, *, since: datetime, bucket_seconds: int, buckets: int, limit: int
    ) -> list[TimelineBucket]:
        """Tasks that finished in ``[since, since + buckets * bucket_seconds)`` (the newest
        ``limit`` of them), by bucket of ``bucket_seconds`` from ``since``: counts by terminal
        status, and queue wait and run time p50/p95 (nearest rank, measured as in
        ``task_type_stats``) of the tasks that started. Buckets with no task are absent;
        ordered by index. One read; no lock."""
        ...

    async def count_pending_groups(self, *, now: datetime, limit: int) -> list[PendingGroup]:
        """Due pending tasks (``scheduled_at <= now``) counted by (task type, required
        capabilities), largest groups first, at most ``limit`` groups. One read over the
        pending tasks (the partial index on pending ``scheduled_at``); no lock."""
        ...

    # --- workflows (docs/workflows.md) -------------------------------------------------------

    async def create_workflow(
        self, workflow: NewWorkflow, steps: Sequence[NewStep], *, now: datetime
    ) -> Workflow:
        """Insert a workflow and every one of its steps (``steps``: checked, parents first,
        ``workflows.check_workflow``) in one transaction, all or nothing: steps without
        parents pending (dispatchers should be woken), the others ``waiting``.

        A waiting step changes only in the transaction that ends the last of its parents
        (``finish_attempts``, ``cancel_task``), or the first that did not succeed when it
        runs only if all succeeded: that transaction releases it (pending), skips it or fails
        it (its parents' results too large), exactly once even when parents end at the same
        instant on several nodes (PostgreSQL: the workflow row is locked first). Under
        ``on_failure: stop`` a step that fails for good also skips every waiting step of its
        workflow that runs only if all succeeded.
        """
        ...

    async def get_workflow(self, workflow_id: UUID) -> Workflow | None:
        """The workflow and its steps (document order), read in one snapshot."""
        ...

    async def list_workflows(self, *, limit: int, offset: int) -> Page[WorkflowSummary]:
        """Newest first, with their steps counted by status, and the total count."""
        ...

    async def cancel_workflow(
        self, workflow_id: UUID, *, now: datetime
    ) -> tuple[Workflow, list[UUID]]:
        """Mark the workflow cancelled and cancel its waiting and pending steps in one
        transaction; return it and its active steps' ids, which the caller cancels with
        ``cancel_task`` (their agents are told to stop). ``WorkflowNotFound``;
        ``WorkflowAlreadyFinished`` when every step has ended (and it was not cancelled)."""
        ...

    async def retry_workflow(self, workflow_id: UUID, *, now: datetime) -> tuple[Workflow, int]:
        """Start over, in one transaction, every step that did not succeed (failed, timed
        out, cancelled, skipped) and every descendant of theirs, keeping what succeeded:
        each back to waiting (results, errors and retry budget cleared), then released or
        decided as on the first run against its kept parents; the workflow is no longer
        cancelled. Return it and how many steps became pending. ``WorkflowNotFound``;
        ``WorkflowNotRetryable`` while a step has not ended or when every step succeeded.
        Ordered against settles and cancels of the workflow (PostgreSQL: its row lock)."""
        ...

    async def workflow_of_step(self, task_id: UUID) -> UUID | None:
        """The workflow the task is a step of; None for a task that is no step."""
        ...

    # --- triggers, hooks and events (docs/triggers.md) ---------------------------------------

    async def create_trigger(self, trigger: NewTrigger, *, now: datetime) -> Trigger:
        """``TriggerNameTaken`` if the name exists (unique key)."""
        ...

    async def get_trigger(self, trigger_id: UUID) -> Trigger | None: ...

    async def list_triggers(self, *, event_key: str | None = None) -> list[Trigger]:
        """By name; only those bound to ``event_key`` when given (an indexed read)."""
        ...

    async def delete_trigger(self, trigger_id: UUID) -> None:
        """``TriggerNotFound``. Tasks it created are kept."""
        ...

    async def create_hook(self, hook: NewHook, *, now: datetime) -> Hook:
        """``HookNameTaken`` if the name exists (unique key)."""
        ...

    async def get_hook(self, name: str) -> Hook | None: ...

    async def list_hooks(self) -> list[Hook]:
        """By name."""
        ...

    async def delete_hook(self, name: str) -> None:
        """``HookNotFound``."""
        ...

    async def record_event(
        self,
        event: NewEvent,
        tasks: Sequence[TriggeredTask],
        *,
        now: datetime,
        workflows: Sequence[TriggeredWorkflow] = (),
    ) -> EventDelivery:
        """Deliver an event once: record it and create ``tasks`` (trigger name, task) and
        ``workflows`` (trigger name, workflow, its checked steps: as ``create_workflow``), in
        one transaction, all or nothing; return the delivery (``created`` True).

        Exactly once per event id, across all nodes: the event's primary key decides
        (``ON CONFLICT DO NOTHING``; a concurrent delivery of the same id waits for the
        first one's commit). A later delivery creates nothing and returns the first one's
        (``created`` False, its still existing tasks); ``EventIdReused`` when that first
        delivery had another key.
        """
        ...

    async def get_event(self, event_id: str) -> EventDelivery | None:
        """The delivery of ``event_id`` as a replay would see it (``created`` False)."""
        ...

    # --- outgoing webhooks (docs/webhooks.md) -------------------------------------------------
    #
    # A task with a ``webhook_url`` that changes into a final status gets one delivery row in
    # the transaction that changes it, whatever the path (``finish_attempts``,
    # ``release_agent``, ``cancel_task``, a workflow or broadcast settle...): a database
    # trigger writes it, so no path can forget it and none writes it twice. Deleting the task
    # (``delete_finished_tasks``) deletes its deliveries.

    async def claim_webhook_deliveries(
        self, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[WebhookDelivery]:
        """Take up to ``limit`` pending deliveries due at ``now`` (oldest due first): count an
        attempt, set ``next_attempt_at = lease_until`` and a new ``claim_token`` on each, in
        one transaction. A delivery is claimed by one caller at a time across all nodes
        (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; the single writer on SQLite); once its
        lease ends without an outcome recorded (the claimer died), it is due again."""
        ...

    async def record_webhook_attempt(
        self, delivery_id: UUID, claim_token: UUID, outcome: DeliveryOutcome, *, now: datetime
    ) -> bool:
        """Record what the claimed POST came to (state, next attempt, HTTP status, error),
        only if ``claim_token`` is still the delivery's and it is pending: a claimer whose
        lease ended and whose delivery was claimed again changes nothing. Returns whether it
        was recorded."""
        ...

    async def list_webhook_deliveries(self, task_id: UUID) -> list[WebhookDelivery]:
        """The task's deliveries, oldest first (one per time it ended; empty without a
        ``webhook_url``)."""
        ...

    async def next_webhook_attempt_at(self) -> datetime | None:
        """The earliest ``next_attempt_at`` of a pending delivery (maybe past: due now), or
        None: when the delivery service looks again. One indexed read."""
        ...


class Notifier(Protocol):
    """Wakes engine loops, in this process and on other nodes. Separate from state.

    ``publish`` after a commit; subscribers get the channel's payloads. Delivery is a hint: a
    loop that wakes must re-read the Store, and must also be correct if a wake-up is lost.
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(
        self, channel: str, payload: str = "", *, within_seconds: float = 0.0
    ) -> None:
        """Wake this process's subscribers now, and the other nodes' at most
        ``within_seconds`` later: repeats published meanwhile reach them once."""
        ...

    def subscribe(self, channel: str, callback: NotifyCallback) -> None:
        """Call ``callback(payload)`` (synchronously, on the event loop) for each message."""
        ...


class NotifyCallback(Protocol):
    def __call__(self, payload: str, /) -> None: ...


# Channels
TASKS_READY = "hetuflow_tasks_ready"
"""New pending tasks (or tasks back to pending): dispatchers should claim. Payload ``""``, or
``SLOTS_FREED``."""
SLOTS_FREED = "slots"
"""``TASKS_READY``'s payload when attempts ended and made no task pending (no retry, no
workflow step): slots are free, and under a global limit the cluster has room. A dispatcher
whose last round found nothing due for the task types it offers, and that was not woken
since, has nothing to claim for them and skips the round (``TaskDispatcher.wake``)."""
TASK_CANCEL = "hetuflow_task_cancel"
"""Payload ``<task_id>:<attempt>:<agent_id>``: the node holding that agent sends TaskCancel."""
CRON_CHANGED = "hetuflow_cron_changed"
WEBHOOKS_DUE = "hetuflow_webhooks_due"
"""A delivery was written (PostgreSQL: ``pg_notify`` by the outbox trigger, at commit): the
delivery services should claim. SQLite publishes nothing: its service polls."""
AGENT_DRAIN_CHANGED = "hetuflow_agent_drain_changed"
"""Payload ``<agent_id>:1`` (drained by an operator) or ``<agent_id>:0`` (resumed): the node
holding that agent's connection stops or starts dispatching to it."""
"""A cron job was created or changed: cron loops should re-read the next fire time."""
