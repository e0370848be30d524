"""The hetuflow agent: connects to the server, runs tasks with registered handlers.

Public API::

    from hetuflow.agent import Agent, TaskContext, TaskFailed

    agent = Agent(server="ws://127.0.0.1:8080/ws", name="a1", max_concurrent_tasks=3)

    @agent.handler("web-scraping")
    async def scrape(payload: dict, ctx: TaskContext) -> dict: ...

    agent.run_forever()

See docs/agent.md. This package imports neither ``hetuflow.server`` nor ``hetuflow.store``.
"""

from __future__ import annotations

from hetuflow.agent.config import AgentConfig, load_agent_config
from hetuflow.agent.context import TaskContext
from hetuflow.agent.handlers import Handler, Handlers
from hetuflow.agent.runtime import Agent
from hetuflow.agent.slots import NO_FREE_SLOT
from hetuflow.errors import AgentRejected, TaskFailed, TaskTimedOut

__all__ = [
    "NO_FREE_SLOT",
    "Agent",
    "AgentConfig",
    "AgentRejected",
    "Handler",
    "Handlers",
    "TaskContext",
    "TaskFailed",
    "TaskTimedOut",
    "load_agent_config",
]
