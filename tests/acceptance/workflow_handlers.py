"""Handlers of the worked example in docs/workflows.md (``--module workflow_handlers``):
fetch -> transform x3 -> aggregate -> notify, each step reading its parents' results from
``ctx.parents``. ``wf_transform`` fails when ``payload["fail"]`` is set, and on its first
attempt when ``payload["fail_first_attempt"]`` is (a workflow retry then succeeds)."""

from __future__ import annotations

from typing import Any

from hetuflow.agent import Handlers, TaskContext

handlers = Handlers()


@handlers.handler("wf_fetch")
def fetch(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    return {"items": list(range(1, int(payload["count"]) + 1))}


@handlers.handler("wf_transform")
def transform(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    if payload.get("fail") or (payload.get("fail_first_attempt") and ctx.attempt == 1):
        raise RuntimeError("transform refused")
    items = ctx.parents["fetch"]["items"][payload["part"] :: payload["of"]]
    return {"part": payload["part"], "sum_of_squares": sum(n * n for n in items)}


@handlers.handler("wf_aggregate")
def aggregate(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    return {
        "total": sum(result["sum_of_squares"] for result in ctx.parents.values()),
        "parts": sorted(ctx.parents),
    }


@handlers.handler("wf_notify")
def notify(payload: dict[str, Any], ctx: TaskContext) -> str:
    if payload.get("failure"):
        return "something failed upstream"
    return f"total is {ctx.parents['aggregate']['total']}"


# --- the fan-out example (docs/examples/workflow-map.json) ------------------------------------


@handlers.handler("wf_list")
def list_items(payload: dict[str, Any], ctx: TaskContext) -> list[int]:
    return list(range(1, int(payload["count"]) + 1))


@handlers.handler("wf_square")
def square(payload: dict[str, Any], ctx: TaskContext) -> int:
    assert ctx.parents["fetch"] == payload["item"]  # a child sees its own item as its parent's
    return int(payload["item"]) ** 2


@handlers.handler("wf_sum")
def sum_squares(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    return {"squares": ctx.parents["square"], "total": sum(ctx.parents["square"])}
