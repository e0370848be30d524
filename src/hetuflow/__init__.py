"""hetuflow: a distributed task-scheduling server.

Clients submit tasks (REST, CLI, this package's ``Client``, cron jobs); the server stores them
durably and pushes each one to a capable agent over the agent's WebSocket.
"""

from __future__ import annotations

__version__ = "0.1.0"
