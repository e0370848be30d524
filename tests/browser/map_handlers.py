"""The handler a real ``hetuflow-agent --module map_handlers`` runs for the console's
fan-out test: a shell task's result is an object, so the list a ``map_over`` step needs
comes from this Python handler (``browser_items``: ``payload["count"]`` words)."""

from __future__ import annotations

from typing import Any

from hetuflow.agent import Handlers

handlers = Handlers()


@handlers.handler("browser_items")
def items(payload: dict[str, Any]) -> list[str]:
    return [f"word-{n}" for n in range(int(payload["count"]))]
