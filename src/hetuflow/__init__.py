"""hetuflow: a distributed task-scheduling server.

Clients submit tasks (REST, CLI, this package's ``Client``, cron jobs); the server stores them
durably and pushes each one to a capable agent over the agent's WebSocket.
"""

from __future__ import annotations

__version__ = "0.1.0"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hetuflow.client import AsyncClient, Client

__all__ = ["AsyncClient", "Client", "__version__"]


def __getattr__(name: str) -> object:
    # Lazy: ``import hetuflow`` stays light; ``from hetuflow import Client`` loads httpx.
    if name in ("Client", "AsyncClient"):
        from hetuflow import client

        return getattr(client, name)
    raise AttributeError(f"module 'hetuflow' has no attribute {name!r}")
