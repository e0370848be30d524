"""A cancel whose notification never reached the node holding the agent (published while
that node's PostgreSQL notifier was disconnected, or lost with a dropped connection) is sent
by the node's reconcile pass. Before, nothing ever re-sent it: the task stayed
``cancelling`` while the agent ran it to its end."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from hetuflow.config import DatabaseConfig
from hetuflow.models import TaskStatus

from .harness import agent, fast_config, serve


async def test_the_reconcile_pass_sends_a_cancel_the_notifier_lost(
    database: DatabaseConfig,
) -> None:
    # Heartbeat 5 s: the periodic pass (every 30 s) stays out of the way; the test runs it.
    config = fast_config(database, heartbeat_interval_seconds=5.0)
    async with serve(config) as server, agent(server, "work", slots=2) as client:
        task_id = await server.create_task(task_type="work")
        other_id = await server.create_task(task_type="work")
        tasks = await client.dispatched(2)
        for task in tasks:
            await client.send(
                {"type": "TaskStarted", "task_id": task["task_id"], "attempt": task["attempt"]}
            )
        await server.wait_status(task_id, TaskStatus.RUNNING)
        await server.wait_status(other_id, TaskStatus.RUNNING)
        # The cancel is committed, but its TASK_CANCEL notification is lost (not published).
        await server.context.store.cancel_task(task_id, now=datetime.now(UTC))
        assert (await server.task(task_id)).status is TaskStatus.CANCELLING
        assert await client.quiet(0.3) == []

        await server.engine.reconciler.reconcile_many(list(server.engine.agents))
        cancel = await client.expect("TaskCancel")
        assert (cancel["task_id"], cancel["attempt"], cancel["reason"]) == (
            str(task_id),
            1,
            "cancelled",
        )
        assert await client.quiet(0.3) == []  # the running one is left alone
        await client.send(
            {
                "type": "TaskResult",
                "task_id": str(task_id),
                "attempt": 1,
                "outcome": "cancelled",
                "error": "cancelled",
            }
        )
        done = await server.wait_status(task_id, TaskStatus.CANCELLED)
        assert done.status is TaskStatus.CANCELLED
        assert (await server.task(UUID(str(other_id)))).status is TaskStatus.RUNNING
