"""Handlers of the trigger acceptance test (``--module trigger_handlers``): ``tr_invoice``
answers what its triggered payload carried (its spec's own keys and the event)."""

from __future__ import annotations

from typing import Any

from hetuflow.agent import Handlers, TaskContext

handlers = Handlers()


@handlers.handler("tr_invoice")
def invoice(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    event = payload["event"]
    return {"copies": payload["copies"], "key": event["key"], "order": event["data"]["order"]}
